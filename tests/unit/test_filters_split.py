"""``compile_split``: one pass over a page gives each sink exactly what its own filter would."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.errors import ConfigError
from fanout.filters import compile_filters, compile_split
from fanout.records import Record
from tests.unit.filter_cases import INSERTED, REMOVED, SHIPPED, VALID, record
from tests.unit.test_filters_properties import EVENTS, PATTERNS, near_events

Predicate = Any  # a compiled filter, a hand-written one, or None


def expected(predicates: list[Predicate], records: list[Any]) -> list[list[Any]]:
    return [records if p is None else [r for r in records if p(r)] for p in predicates]


def assert_split(predicates: list[Predicate], records: list[Any]) -> None:
    """The split gives every sink the records its predicate keeps, the same objects, in
    order; a sink without a filter gets the page's own list."""
    parts, _ = compile_split(tuple(predicates))(records)
    assert len(parts) == len(predicates)
    for predicate, part, want in zip(predicates, parts, expected(predicates, records), strict=True):
        assert [id(r) for r in part] == [id(r) for r in want], predicate
        if predicate is None:
            assert part is records


# Sinks as a deployment has them: eventName plus an image attribute, sharing their fields.
COMMON = [
    [{"eventName": ["INSERT", "MODIFY"], "dynamodb": {"NewImage": {"status": {"S": ["SHIPPED"]}}}}],
    [{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"pk": {"S": [{"prefix": "order#"}]}}}}],
    [
        {
            "eventName": ["MODIFY", "REMOVE"],
            "dynamodb": {"OldImage": {"status": {"S": [{"anything-but": ["CANCELLED"]}]}}},
        }
    ],
]
PAGE = [SHIPPED, INSERTED, REMOVED, record("MODIFY", new={"status": {"S": "NEW"}})]


@pytest.mark.parametrize("case", VALID, ids=lambda case: case["source"].rsplit("/", 1)[-1])
def test_each_documented_case_beside_other_sinks(case: dict[str, Any]) -> None:
    own = compile_filters([case["pattern"]])  # every VALID pattern compiles (conformance)
    others = [compile_filters(patterns) for patterns in COMMON]
    records = [case["event"], *PAGE]
    assert_split([own, *others, None], records)
    assert_split([*others, own], records)
    parts, _ = compile_split((own,))([case["event"]])
    assert parts == [[case["event"]] if case["match"] else []]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(PATTERNS, min_size=1, max_size=2), min_size=1, max_size=4), st.data())
def test_any_sinks_on_any_records(sinks: list[list[Any]], data: st.DataObject) -> None:
    predicates = []
    for patterns in sinks:
        try:
            predicates.append(compile_filters(patterns))
        except ConfigError:
            continue
    if not predicates:
        return
    records: list[Any] = data.draw(st.lists(EVENTS, max_size=5))
    for patterns in sinks[:2]:
        records += [data.draw(near_events(pattern)) for pattern in patterns]
    assert_split(predicates, records)


def test_an_array_on_a_shared_path_is_decided_by_each_sinks_own_filter() -> None:
    # Two conditions under an array must hold in the same element (event-ruler's array
    # consistency): the loop leaves such a record to the compiled patterns.
    both = compile_filters([{"dynamodb": {"NewImage": {"a": ["1"], "b": ["2"]}}}])
    either = compile_filters([{"dynamodb": {"NewImage": {"a": ["1"]}}}])
    same = {"dynamodb": {"NewImage": [{"a": "1", "b": "2"}]}}
    apart = {"dynamodb": {"NewImage": [{"a": "1"}, {"b": "2"}]}}
    plain = {"dynamodb": {"NewImage": {"a": "1", "b": "3"}}}
    parts, _ = compile_split((both, either))([same, apart, plain])
    assert parts == [[same], [same, apart, plain]]


def test_missing_or_scalar_objects_fail_their_conditions_only() -> None:
    status = compile_filters([{"dynamodb": {"NewImage": {"status": {"S": ["A"]}}}}])
    name = compile_filters([{"eventName": ["INSERT"]}])
    records: list[Any] = [
        {"eventName": "INSERT"},
        {"eventName": "INSERT", "dynamodb": "text"},
        {"eventName": "INSERT", "dynamodb": {"NewImage": 7}},
        {"eventName": "INSERT", "dynamodb": {"NewImage": {"status": "A"}}},
        {"eventName": "MODIFY", "dynamodb": {"NewImage": {"status": {"S": "A"}}}},
    ]
    assert compile_split((status, name))(records)[0] == [[records[4]], records[:4]]


def test_anything_but_strings_let_other_values_through() -> None:
    predicate = compile_filters([{"a": [{"anything-but": ["x", "y"]}]}])
    values: list[Any] = ["x", "z", 5, None, True, ["x"], ["x", "z"], {}]
    records: list[Any] = [{"a": v} for v in values]
    records.append({})
    assert_split([predicate, compile_filters([{"a": ["z"]}])], records)
    kept = compile_split((predicate,))(records)[0][0]
    assert [r["a"] for r in kept] == ["z", 5, None, True, ["x", "z"]]


def test_records_that_are_not_objects_reach_only_sinks_without_filters() -> None:
    predicate = compile_filters([{"eventName": ["INSERT"]}])
    records: list[Any] = [INSERTED, ["INSERT"], "INSERT", None, 5]
    parts, _ = compile_split((predicate, None))(records)
    assert parts == [[INSERTED], records]


def test_sinks_with_absence_or_hand_written_filters_get_their_own_pass() -> None:
    absent = compile_filters([{"dynamodb": {"OldImage": {"status": [{"exists": False}]}}}])
    mixed = compile_filters([{"$or": [{"a": ["1"]}, {"a": {"b": ["2"]}}]}])

    def by_hand(r: Record) -> bool:
        return r.get("eventName") == "REMOVE"

    shared = compile_filters(COMMON[0])
    records = [*PAGE, {"a": "1"}, {"a": {"b": "2"}}, {"a": [{"b": "2"}]}]
    assert_split([absent, by_hand, shared, mixed, None], records)


def test_field_names_never_become_source_text() -> None:
    name = "k')\nraise SystemExit('x"
    predicate = compile_filters([{name: ["v"]}, {"eventName": [name]}])
    records = [{name: "v"}, {"eventName": name}, {"eventName": "v"}]
    parts, _ = compile_split((predicate, compile_filters([{name: ["w"]}])))(records)
    assert parts == [records[:2], []]


def test_the_split_is_compiled_once_for_the_same_sinks() -> None:
    predicates = tuple(compile_filters(patterns) for patterns in COMMON)
    assert compile_split(predicates) is compile_split(predicates)


def test_an_empty_page_splits_into_empty_parts() -> None:
    predicates = tuple(compile_filters(patterns) for patterns in COMMON)
    assert compile_split((*predicates, None))([]) == ([[], [], [], []], [])


def test_a_sink_with_many_or_combinations_still_gets_its_records() -> None:
    # 2 x 2 x ... = 128 combinations of 7 fields: more than the loop writes out.
    pattern = {
        "$or": [{"a": ["1"]}, {"b": ["1"]}],
        "c": {"$or": [{"d": ["1"]}, {"e": ["1"]}]},
        "f": {"$or": [{"g": ["1"]}, {"h": ["1"]}]},
    }
    for key in "ijkl":
        pattern[key] = {"$or": [{"x": ["1"]}, {"y": ["1"]}]}
    predicate = compile_filters([pattern])
    hit = {"a": "1", "c": {"e": "1"}, "f": {"g": "1"}, **{k: {"y": "1"} for k in "ijkl"}}
    miss = {**hit, "i": {"x": "2"}}
    shared = compile_filters([{"a": ["1"]}])
    assert compile_split((predicate, shared))([hit, miss])[0] == [[hit], [hit, miss]]


def test_the_records_no_sink_takes_are_known_when_every_sink_is_written_out() -> None:
    predicates = [compile_filters(patterns) for patterns in COMMON]
    records: list[Any] = [*PAGE, {"eventName": "OTHER"}, "not a record"]
    parts, unrouted = compile_split(tuple(predicates))(records)
    taken = {id(r) for part in parts for r in part}
    assert [id(r) for r in unrouted] == [id(r) for r in records if id(r) not in taken]
    assert len(unrouted) == 3  # the MODIFY without an old image, and the last two
    # A sink that takes everything, or one with a filter of its own: nothing is set apart.
    assert compile_split((*predicates, None))(records)[1] == []
    assert compile_split((*predicates, lambda r: False))(records)[1] == []
