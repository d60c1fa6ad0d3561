"""Conformance of fanout.filters with AWS's documented examples and event-ruler's own tests."""

from __future__ import annotations

from typing import Any

import pytest

from fanout.errors import ConfigError
from fanout.filters import compile_filters, matches
from tests.unit.filter_cases import INVALID, VALID
from tests.unit.test_filters_properties import reference


def _id(index: int, case: dict[str, Any]) -> str:
    source = case["source"].rsplit("/", 1)[-1][:40]
    return f"{index:03d}-{source}"


def test_the_suite_is_big_enough_and_cites_its_sources():
    assert len(VALID) >= 150
    assert len(INVALID) >= 30
    for case in [*VALID, *INVALID]:
        assert case["source"].startswith(("https://", "docs/filters.md")), case
    assert any(case["match"] for case in VALID)
    assert any(not case["match"] for case in VALID)


@pytest.mark.parametrize("case", VALID, ids=[_id(i, c) for i, c in enumerate(VALID)])
def test_pattern_matches_as_aws_does(case):
    assert matches(case["pattern"], case["event"]) is case["match"]
    predicate = compile_filters([case["pattern"]], path="sinks.s.filters")
    assert predicate is not None
    assert predicate(case["event"]) is case["match"]


@pytest.mark.parametrize(
    "case",
    [c for c in VALID if isinstance(c["pattern"], dict) and "Pattern" not in c["pattern"]],
    ids=[
        _id(i, c)
        for i, c in enumerate(VALID)
        if isinstance(c["pattern"], dict) and "Pattern" not in c["pattern"]
    ],
)
def test_reference_model_agrees_with_the_documented_outcome(case):
    # The property tests trust this model; here it is checked against the sources.
    assert reference(case["pattern"], case["event"]) is case["match"]


@pytest.mark.parametrize("case", INVALID, ids=[_id(i, c) for i, c in enumerate(INVALID)])
def test_invalid_pattern_is_rejected_with_its_path(case):
    with pytest.raises(ConfigError) as info:
        compile_filters([case["pattern"]], path="filters")
    assert info.value.path == case["path"], str(info.value)
    assert str(info.value).startswith(case["path"] + ": ")
    assert case["words"] in info.value.message


@pytest.mark.parametrize("case", INVALID, ids=[_id(i, c) for i, c in enumerate(INVALID)])
def test_invalid_pattern_is_rejected_at_any_position_of_the_list(case):
    good = {"eventName": ["INSERT"]}
    with pytest.raises(ConfigError) as info:
        compile_filters([good, good, case["pattern"]], path="sinks.search.filters")
    assert info.value.path == "sinks.search.filters[2]" + case["path"].removeprefix("filters[0]")
