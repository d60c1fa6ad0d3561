"""Unit tests of the fanout.filters API: compiling, validation errors, limits and robustness."""

from __future__ import annotations

import copy
import decimal
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from fanout.config import SinkConfig
from fanout.errors import ConfigError
from fanout.filters import (
    EXTENSION_OPERATORS,
    MAX_FIELDS_PER_BRANCH,
    MAX_OR_BRANCHES,
    compile_filters,
    compile_pattern,
    matches,
)
from tests.unit.filter_cases import INSERTED, REMOVED, SHIPPED, record

SHIPPED_FILTER: dict[str, Any] = {
    "eventName": ["INSERT", "MODIFY"],
    "dynamodb": {"NewImage": {"status": {"S": ["SHIPPED"]}}},
}


# --- compile_filters -------------------------------------------------------------------------


def test_no_filters_means_no_predicate():
    assert compile_filters(None) is None


def test_an_empty_filter_list_is_rejected():
    # Lambda's FilterCriteria needs at least one filter (CloudFormation: Filters, Minimum 1).
    with pytest.raises(ConfigError) as info:
        compile_filters([], path="sinks.audit.filters")
    assert info.value.path == "sinks.audit.filters"
    assert "at least one pattern" in str(info.value)


def test_filters_must_be_a_list():
    with pytest.raises(ConfigError) as info:
        compile_filters({"eventName": ["INSERT"]}, path="sinks.a.filters")  # type: ignore[arg-type]
    assert info.value.path == "sinks.a.filters"


def test_filters_are_ored():
    predicate = compile_filters(
        [{"eventName": ["REMOVE"]}, {"dynamodb": {"NewImage": {"status": {"S": ["SHIPPED"]}}}}]
    )
    assert predicate is not None
    assert predicate(REMOVED)
    assert predicate(INSERTED)
    assert not predicate(record("MODIFY", new={"status": {"S": "PAID"}}))


def test_one_bad_pattern_names_its_index():
    with pytest.raises(ConfigError) as info:
        compile_filters([SHIPPED_FILTER, {"eventName": "REMOVE"}], path="sinks.search.filters")
    assert info.value.path == "sinks.search.filters[1].eventName"
    assert str(info.value).startswith("sinks.search.filters[1].eventName: ")


def test_error_path_for_a_bad_numeric_on_a_dynamodb_attribute():
    pattern = {"dynamodb": {"NewImage": {"n": {"N": [{"numeric": [">", 5, "<", 1]}]}}}}
    with pytest.raises(ConfigError) as info:
        compile_filters([SHIPPED_FILTER, pattern], path="sinks.search.filters")
    assert info.value.path == "sinks.search.filters[1].dynamodb.NewImage.n.N[0].numeric"


def test_default_paths():
    with pytest.raises(ConfigError) as info:
        compile_filters([{"a": 1}])
    assert info.value.path == "filters[0].a"
    with pytest.raises(ConfigError) as info:
        compile_pattern({"a": 1})
    assert info.value.path == "filters[0].a"


def test_awkward_field_names_are_quoted_in_paths():
    with pytest.raises(ConfigError) as info:
        compile_pattern({"dynamodb": {"NewImage": {"a.b c": {"S": "x"}}}}, path="f")
    assert info.value.path == 'f.dynamodb.NewImage["a.b c"].S'


@pytest.mark.parametrize(
    ("text", "path", "words"),
    [
        ("dynamodb: {NewImage: {note: {NULL: [true]}}}", ".NewImage.note", 'write "NULL"'),
        ("dynamodb: {NewImage: {on: {S: [x]}}}", ".NewImage", "as booleans"),
        ("dynamodb: {NewImage: {1: {S: [x]}}}", ".NewImage", "quote the name"),
    ],
)
def test_field_names_yaml_did_not_keep_as_strings(text, path, words):
    with pytest.raises(ConfigError, match="field names must be strings") as info:
        compile_pattern(yaml.safe_load(text))
    assert info.value.path == "filters[0].dynamodb" + path
    assert words in info.value.message


@pytest.mark.parametrize("number", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_numbers_are_rejected(number):
    with pytest.raises(ConfigError) as info:
        compile_pattern({"a": [number]})
    assert info.value.path == "filters[0].a[0]"
    with pytest.raises(ConfigError) as info:
        compile_pattern({"a": [{"numeric": [">", number]}]})
    assert info.value.path == "filters[0].a[0].numeric[1]"


def test_quoted_numbers_get_a_hint():
    with pytest.raises(ConfigError, match="YAML reads 1e3 as a string"):
        compile_pattern(yaml.safe_load("a: [{numeric: ['>', 1e3]}]"))


# --- compile_pattern / matches -----------------------------------------------------------------


def test_the_brief_example():
    assert matches(SHIPPED_FILTER, SHIPPED)
    assert matches(SHIPPED_FILTER, INSERTED)
    assert not matches(SHIPPED_FILTER, REMOVED)


def test_non_object_events_never_match():
    predicate = compile_pattern({"a": [{"exists": False}]})
    for event in [None, 5, "x", [], [{"b": 1}], ("a",)]:
        assert predicate(event) is False  # type: ignore[arg-type]
        assert matches({"a": [{"exists": False}]}, event) is False
    assert predicate({}) is True


def test_pattern_as_json_text_or_pasted_filter_entry():
    text = json.dumps(SHIPPED_FILTER)
    assert compile_pattern(text)(SHIPPED)
    assert compile_pattern({"Pattern": text})(SHIPPED)
    assert not compile_pattern({"Pattern": text})(REMOVED)
    with pytest.raises(ConfigError, match="not valid JSON"):
        compile_pattern("INSERT")
    with pytest.raises(ConfigError, match="must be an object"):
        compile_pattern("5")


def test_compiling_copies_what_it_needs():
    pattern = copy.deepcopy(SHIPPED_FILTER)
    predicate = compile_pattern(pattern)
    pattern["eventName"].append("REMOVE")
    pattern["dynamodb"]["NewImage"]["status"]["S"][0] = "PAID"
    assert predicate(SHIPPED)
    assert not predicate(REMOVED)


def test_matching_leaves_the_record_alone():
    event = copy.deepcopy(SHIPPED)
    predicate = compile_filters(
        [
            SHIPPED_FILTER,
            {
                "dynamodb": {
                    "NewImage": {
                        "items": {"L": {"M": {"sku": {"S": ["A1"]}, "x": [{"exists": False}]}}}
                    }
                }
            },
        ]
    )
    assert predicate is not None
    predicate(event)
    assert event == SHIPPED


def test_a_predicate_is_reusable_and_independent():
    first = compile_pattern({"eventName": ["INSERT"]})
    second = compile_pattern({"eventName": ["REMOVE"]})
    for _ in range(3):
        assert first(INSERTED)
        assert not first(REMOVED)
        assert second(REMOVED)
        assert not second(INSERTED)


def test_big_integers_compare_exactly_by_value():
    assert matches({"x": [10**400]}, {"x": 10**400})
    assert not matches({"x": [10**400]}, {"x": 10**400 + 1})
    with pytest.raises(ConfigError, match="not a finite double"):
        compile_pattern({"x": [{"numeric": [">", 10**400]}]})


def test_values_of_other_python_types_do_not_crash():
    odd = [b"bytes", decimal.Decimal("5"), {1, 2}, object(), 1 + 2j, float("nan"), float("inf")]
    patterns = [
        {"x": ["5"]},
        {"x": [5]},
        {"x": [{"numeric": [">", 0]}]},
        {"x": [{"fanout-numeric": [">", 0]}]},
        {"x": [{"prefix": "b"}]},
        {"x": [{"cidr": "10.0.0.0/8"}]},
        {"x": [{"wildcard": "*"}]},
        {"x": [{"equals-ignore-case": "x"}]},
    ]
    for pattern in patterns:
        predicate = compile_pattern(pattern)
        for value in odd:
            assert predicate({"x": value}) is False, (pattern, value)
            assert predicate({"x": [value]}) is False
    for value in odd:
        assert matches({"x": [{"exists": True}]}, {"x": value})
        assert matches({"x": [{"anything-but": "a"}]}, {"x": value})


def test_dotted_field_names_are_literal_keys():
    # event-ruler joins names with "." internally; fanout matches the key as written.
    assert matches({"a.b": ["x"]}, {"a.b": "x"})
    assert not matches({"a.b": ["x"]}, {"a": {"b": "x"}})


def test_too_many_or_combinations_are_rejected():
    branch = [{"a": ["1"]}, {"b": ["2"]}]
    pattern: dict[str, object] = {}
    node = pattern
    depth = 0
    while 2**depth <= MAX_OR_BRANCHES:
        inner: dict[str, object] = {}
        node["$or"] = branch
        node[f"k{depth}"] = inner
        node = inner
        depth += 1
    node["z"] = ["z"]
    with pytest.raises(ConfigError, match=r"\$or combinations") as info:
        compile_pattern(pattern, path="p")
    assert info.value.path.startswith("p")


def test_too_many_fields_are_rejected():
    fields = {f"f{i}": ["x"] for i in range(MAX_FIELDS_PER_BRANCH + 1)}
    with pytest.raises(ConfigError, match="at most 256 fields"):
        compile_pattern(fields)
    del fields["f0"]
    assert compile_pattern(fields)({f"f{i}": "x" for i in range(1, MAX_FIELDS_PER_BRANCH + 1)})


def test_many_or_combinations_still_match():
    pattern = {
        "$or": [{"a": ["1"]}, {"a": ["2"]}, {"a": ["3"]}],
        "x": {"$or": [{"b": ["1"]}, {"b": ["2"]}, {"c": [{"exists": False}]}]},
    }
    predicate = compile_pattern(pattern)
    assert predicate({"a": "2", "x": {"b": "2", "c": 1}})
    assert predicate({"a": "3", "x": {}})
    assert not predicate({"a": "4", "x": {"b": "1"}})


def test_extension_operators_are_listed():
    assert EXTENSION_OPERATORS == {"fanout-numeric"}


# --- Arrays and the name-ordered exists:false ----------------------------------------------------


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"d": [{"b": "x"}]}, True),
        ({"d": [{"a": 1, "b": "x"}]}, False),
        ({"d": [{"a": 1, "b": "y"}, {"b": "x"}]}, False),  # "d.a" is checked before "d.b"
        ({"d": [[{"b": "x"}], {"a": 1}]}, False),
        ({"d": []}, False),
        ({"d": [1, 2]}, False),
        ({"d": {"b": "x"}}, True),
    ],
)
def test_exists_false_before_the_selecting_field(event, expected):
    assert matches({"d": {"a": [{"exists": False}], "b": ["x"]}}, event) is expected


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"d": [{"z": 1, "b": "y"}, {"b": "x"}]}, True),  # "d.b" picks the element first
        ({"d": [{"z": 1, "b": "x"}]}, False),
        ({"d": [[{"b": "x"}], {"z": 1}]}, True),
        ({"d": [1, {"b": "x", "z": None}]}, False),
    ],
)
def test_exists_false_after_the_selecting_field(event, expected):
    assert matches({"d": {"z": [{"exists": False}], "b": ["x"]}}, event) is expected


def test_absence_only_pattern_on_arrays():
    pattern = {"d": {"a": [{"exists": False}]}}
    assert matches(pattern, {"d": [{"b": 1}, {"c": 2}]})
    assert not matches(pattern, {"d": [{"b": 1}, {"a": 2}]})
    assert matches(pattern, {"d": [1, 2]})
    assert matches(pattern, {"d": []})


def test_a_path_that_is_both_a_value_and_an_object():
    # Only reachable by merging $or branches: "a" must hold a value and "a.b" another.
    pattern = {"$or": [{"a": ["x"]}, {"c": ["y"]}], "a": {"b": ["z"]}}
    assert matches(pattern, {"a": ["x", {"b": "z"}]})
    assert not matches(pattern, {"a": [["x"], {"b": "z"}]})  # elements of one array
    assert matches(pattern, {"c": "y", "a": {"b": "z"}})
    assert not matches(pattern, {"a": {"b": "z"}})
    assert not matches(pattern, {"a": "x"})


# --- Documentation -----------------------------------------------------------------------------


def _doc_patterns() -> list[tuple[str, object]]:
    doc = Path(__file__).resolve().parents[2] / "docs" / "filters.md"
    blocks = doc.read_text(encoding="utf-8").split("```")
    found = []
    for block in blocks[1::2]:
        language, _, body = block.partition("\n")
        if language.strip() == "yaml" and "filters:" in body:
            found.append((body, yaml.safe_load(body)))
    return found


def test_the_yaml_examples_in_the_docs_compile():
    examples = _doc_patterns()
    assert len(examples) >= 5
    for body, data in examples:
        assert isinstance(data, dict), body
        if "sinks" in data:
            lists = [sink["filters"] for sink in data["sinks"].values()]
        else:
            lists = [data["filters"]]
        for filters in lists:
            # As the configuration loader sees them: the sink model first, then the compiler.
            sink = SinkConfig.model_validate({"type": "stdout", "filters": filters})
            assert compile_filters(sink.filters) is not None, body


def test_the_demo_config_filter_passes_shipped_orders():
    demo = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"
    sinks = yaml.safe_load(demo.read_text(encoding="utf-8"))["sinks"]
    for sink in sinks.values():
        if sink.get("filters") is not None:
            predicate = compile_filters(sink["filters"])
            assert predicate is not None
            assert predicate(SHIPPED)
            assert not predicate(REMOVED)


# --- Robustness --------------------------------------------------------------------------------


def _nested(depth: int, inner: object) -> object:
    value = inner
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "pattern",
    [
        {"d": {"a": ["x"]}},
        {"d": {"a": ["x"], "b": [{"exists": False}]}},
        {"d": {"b": [{"exists": False}], "a": [{"exists": True}]}},
        {"d": [{"exists": True}]},
    ],
)
def test_deeply_nested_arrays_do_not_exhaust_the_stack(pattern):
    event = {"d": _nested(5000, {"a": "x"})}
    assert compile_pattern(pattern)(event) in (True, False)
    assert compile_pattern(pattern)({"d": _nested(5000, "x")}) in (True, False)


def test_exists_false_search_over_a_long_list_stays_fast():
    lines = [{"M": {"sku": {"S": f"S{i}"}, "qty": {"N": "1"}}} for i in range(2000)]
    lines.append({"M": {"sku": {"S": "LAST"}, "qty": {"N": "2"}}})
    event = record(new={"lines": {"L": lines}})
    pattern = {
        "dynamodb": {
            "NewImage": {
                "lines": {
                    "L": {
                        "M": {
                            "gift": {"S": [{"exists": False}]},
                            "qty": {"N": ["2"]},
                            "sku": {"S": [{"prefix": "LAST"}]},
                        }
                    }
                }
            }
        }
    }
    predicate = compile_pattern(pattern)
    assert predicate(event)
    lines[-1]["M"]["gift"] = {"S": "yes"}
    assert not predicate(event)
