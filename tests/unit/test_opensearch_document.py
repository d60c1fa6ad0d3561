"""The opensearch sink's documents, templates and versions (sinks.opensearch.document)."""

from __future__ import annotations

import base64
import json
import math
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks.opensearch.document import (
    EPOCH,
    MAX_VERSION,
    TIE_MASK,
    RecordError,
    Template,
    index_name_problem,
    is_ttl_delete,
    key_template,
    newer_than_version,
    plain_converter,
    stamp,
    stamp_of_version,
    version_of,
)

NOW = 1_767_225_600  # 2026-01-01


# -- versions -----------------------------------------------------------------------------------


def test_the_version_packs_seconds_since_2020_above_thirty_bits_of_the_sequence_number():
    seq = 4421584500000000017450439091
    version = version_of(NOW, seq)
    assert version == ((NOW - EPOCH) << 30) | (seq % 2**30)
    assert stamp_of_version(version) == (NOW, seq % 2**30)
    assert 0 <= version <= MAX_VERSION


def test_versions_fit_a_signed_64_bit_integer_for_centuries():
    year_2290 = EPOCH + int(270 * 365.25 * 86400)
    assert version_of(year_2290, 10**40 - 1) <= MAX_VERSION
    with pytest.raises(RecordError):
        version_of(EPOCH + (1 << 33), 0)
    with pytest.raises(RecordError):
        version_of(EPOCH - 1, 0)


@settings(max_examples=300)
@given(
    st.integers(EPOCH, EPOCH + 10**9),
    st.integers(EPOCH, EPOCH + 10**9),
    st.integers(10**20, 10**40 - 1),
    st.integers(10**20, 10**40 - 1),
)
def test_a_later_second_always_has_the_larger_version(a, b, seq_a, seq_b):
    if a < b:
        assert version_of(a, seq_a) < version_of(b, seq_b)


@settings(max_examples=300)
@given(st.integers(EPOCH, EPOCH + 10**9), st.integers(10**20, 10**40), st.integers(1, 2**29 - 1))
def test_within_a_second_the_version_orders_by_the_sequence_unless_the_low_bits_wrap(t, seq, gap):
    later = seq + gap
    wrapped = (seq & TIE_MASK) + gap > TIE_MASK
    assert (version_of(t, later) > version_of(t, seq)) == (not wrapped)


@settings(max_examples=300)
@given(st.integers(EPOCH, EPOCH + 10**9), st.integers(10**20, 10**40), st.integers(1, 2**29 - 1))
def test_a_tombstones_version_is_compared_exactly_within_half_the_tie_break_range(t, seq, gap):
    # wrapped or not, serial-number comparison of the low bits finds the newer change
    assert newer_than_version((t, seq + gap), version_of(t, seq))
    assert not newer_than_version((t, seq), version_of(t, seq + gap))
    assert not newer_than_version((t, seq), version_of(t, seq))  # the same change


def test_a_tombstone_from_another_second_is_ordered_by_the_second():
    assert newer_than_version((NOW + 1, 1), version_of(NOW, TIE_MASK))
    assert not newer_than_version((NOW - 1, TIE_MASK), version_of(NOW, 0))


def test_the_stamp_is_whole_seconds_and_the_full_sequence_number():
    record = {"dynamodb": {"ApproximateCreationDateTime": NOW + 0.9, "SequenceNumber": "0042"}}
    assert stamp(record) == (NOW, 42)
    for bad in ({"SequenceNumber": "1"}, {"ApproximateCreationDateTime": NOW}):
        with pytest.raises(RecordError):
            stamp({"dynamodb": bad})
    with pytest.raises(RecordError):
        stamp({"dynamodb": {"ApproximateCreationDateTime": True, "SequenceNumber": "1"}})
    with pytest.raises(RecordError):
        stamp({"dynamodb": {"ApproximateCreationDateTime": NOW, "SequenceNumber": "x"}})


@pytest.mark.parametrize(
    ("identity", "ttl"),
    [
        ({"type": "Service", "principalId": "dynamodb.amazonaws.com"}, True),  # Lambda's shape
        ({"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}, True),  # the API's
        ({"type": "Service", "principalId": "other.amazonaws.com"}, False),
        (None, False),
    ],
)
def test_ttl_deletes_are_recognised_by_the_service_identity(identity, ttl):
    record: dict[str, Any] = {"eventName": "REMOVE"}
    if identity is not None:
        record["userIdentity"] = identity
    assert is_ttl_delete(record) is ttl


# -- plain JSON ---------------------------------------------------------------------------------


def test_every_attribute_type_becomes_plain_json():
    plain = plain_converter()
    image: dict[str, dict[str, Any]] = {
        "s": {"S": "x"},
        "n": {"N": "12"},
        "f": {"N": "1.25"},
        "b": {"B": base64.b64encode(b"\x00\x01").decode()},
        "t": {"BOOL": True},
        "z": {"NULL": True},
        "m": {"M": {"inner": {"L": [{"N": "1"}, {"S": "a"}, {"M": {}}]}}},
        "ss": {"SS": ["a", "b"]},
        "ns": {"NS": ["1", "2.5"]},
        "bs": {"BS": ["AAE="]},
    }
    doc = {k: plain(v) for k, v in image.items()}
    assert doc == {
        "s": "x",
        "n": 12,
        "f": 1.25,
        "b": "AAE=",
        "t": True,
        "z": None,
        "m": {"inner": [1, "a", {}]},
        "ss": ["a", "b"],
        "ns": [1, 2.5],
        "bs": ["AAE="],
    }
    assert orjson.loads(orjson.dumps(doc)) == doc


@pytest.mark.parametrize(
    ("text", "auto", "number", "string"),
    [
        ("0", 0, 0, "0"),
        ("-17", -17, -17, "-17"),
        ("9007199254740992", 2**53, 2**53, "9007199254740992"),
        ("9007199254740993", "9007199254740993", 2**53 + 1, "9007199254740993"),
        ("12345678901234567890123", "12345678901234567890123", 1.2345678901234568e22, None),
        ("0.1", 0.1, 0.1, "0.1"),
        ("1E+3", 1000, 1000, "1E+3"),
        ("3.14159265358979323846", "3.14159265358979323846", 3.141592653589793, None),
        ("-1.5E-7", -1.5e-7, -1.5e-7, "-1.5E-7"),
        ("1E+125", "1E+125", 1e125, "1E+125"),
    ],
)
def test_numbers_are_json_numbers_where_exact_unless_asked_otherwise(text, auto, number, string):
    value = {"N": text}
    assert plain_converter("auto")(value) == auto
    assert plain_converter("number")(value) == number
    assert plain_converter("string")(value) == text
    if string is not None:
        assert plain_converter("string")(value) == string


def test_number_mode_keeps_64_bit_integers_exact():
    assert plain_converter("number")({"N": str(2**63 - 1)}) == 2**63 - 1
    assert plain_converter("number")({"N": str(2**63)}) == float(2**63)
    assert plain_converter("auto")({"N": str(2**60)}) == str(2**60)


@settings(max_examples=500)
@given(
    st.one_of(
        st.integers(-(10**38), 10**38).map(str),
        st.decimals(allow_nan=False, allow_infinity=False, places=None)
        .filter(lambda d: d.is_finite() and d.adjusted() < 100)
        .map(lambda d: str(d.normalize())),
    )
)
def test_auto_mode_never_loses_a_digit(text):
    value = plain_converter("auto")({"N": text})
    encoded = orjson.dumps(value)
    back = json.loads(encoded, parse_float=Decimal, parse_int=Decimal)
    assert Decimal(back) == Decimal(text)
    if isinstance(value, float):
        assert math.isfinite(value)


def test_unknown_attribute_types_are_refused():
    with pytest.raises(RecordError):
        plain_converter()({"X": 1})
    with pytest.raises(RecordError):
        plain_converter()({})


# -- templates ----------------------------------------------------------------------------------


def test_templates_fill_fields_from_the_first_image_that_has_them():
    keys = {"pk": {"S": "USER#1"}, "sk": {"N": "7"}}
    image = {**keys, "region": {"S": "eu"}, "ok": {"BOOL": False}, "bin": {"B": "AAE="}}
    assert Template("{pk}#{sk}").render(keys, image) == "USER#1#7"
    assert Template("orders-{region}").render(image) == "orders-eu"
    assert Template("{ok}/{bin}").render(None, image) == "false/AAE="
    assert Template("{{literal}} {pk}").render(keys) == "{literal} USER#1"
    assert Template("plain").static
    assert Template("{ pk }").names == frozenset({"pk"})


@pytest.mark.parametrize("bad", ["{pk", "pk}", "{}", "a{b{c}}", "{ }"])
def test_malformed_templates_are_refused_when_configured(bad):
    with pytest.raises(ValueError, match=r"unbalanced|empty"):
        Template(bad)


def test_a_missing_or_non_scalar_attribute_refuses_the_record():
    with pytest.raises(RecordError, match="no attribute 'sk'"):
        Template("{pk}#{sk}").render({"pk": {"S": "a"}})
    with pytest.raises(RecordError, match="type M"):
        Template("{m}").render({"m": {"M": {}}})


def test_the_default_document_id_joins_the_key_attributes_sorted_by_name():
    keys = {"sk": {"S": "ORDER#2"}, "pk": {"S": "USER#1"}}
    assert key_template(keys).render(keys) == "USER#1#ORDER#2"
    assert key_template({"id": {"N": "5"}}).render({"id": {"N": "5"}}) == "5"


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("orders", True),
        ("orders-2026.01", True),
        ("Orders", False),
        ("_orders", False),
        ("a#b", False),
        ("a b", False),
        ("a:b", False),
        ("", False),
        ("..", False),
        ("x" * 256, False),
    ],
)
def test_index_names_follow_opensearch_rules(name, ok):
    assert (index_name_problem(name) is None) is ok
