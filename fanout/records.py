"""Change records: the Lambda event record dict, kept exactly as parsed from the wire."""

from __future__ import annotations

import base64
import decimal
from typing import Any

import orjson

# A stream record in the Lambda event shape:
# {"eventID", "eventName", "eventVersion", "eventSource", "awsRegion", "eventSourceARN",
#  "dynamodb": {"ApproximateCreationDateTime", "Keys", "NewImage", "OldImage",
#               "SequenceNumber", "SizeBytes", "StreamViewType"}}
# AttributeValues stay typed ({"S": "x"}, {"N": "1"}); nothing is decoded unless a sink asks.
Record = dict[str, Any]


def approximate_creation_time(record: Record) -> float | None:
    """ApproximateCreationDateTime as epoch seconds, if present."""
    value = record.get("dynamodb", {}).get("ApproximateCreationDateTime")
    if isinstance(value, int | float):
        return float(value)
    return None


def change_time(record: Record) -> float | None:
    """When the change was seen (epoch s): a backfilled record's read time
    (``fanout.read_at``), else its ApproximateCreationDateTime. Record age (``max_record_age``)
    and lag are measured from it; a backfilled record's creation time is its version, set
    before the backfill started (``docs/backfill.md``)."""
    marker = record.get("fanout")
    if isinstance(marker, dict) and marker.get("backfill") is True:
        read_at = marker.get("read_at")
        if isinstance(read_at, int | float) and not isinstance(read_at, bool):
            return float(read_at)
    return approximate_creation_time(record)


def item_key(record: Record) -> bytes:
    """A stable identity of the item the record is about (its Keys), for per-key ordering."""
    return orjson.dumps(record["dynamodb"]["Keys"], option=orjson.OPT_SORT_KEYS)


def deserialize(value: dict[str, Any]) -> Any:
    """Decode one typed AttributeValue into a plain Python value.

    Integral numbers become ``int``; others ``decimal.Decimal``, which keeps DynamoDB's
    38 digits of precision. Binary values are base64 on the wire and become ``bytes``.
    """
    ((tag, inner),) = value.items()
    if tag == "S":
        return inner
    if tag == "N":
        number = decimal.Decimal(inner)
        return int(number) if number == number.to_integral_value() else number
    if tag == "BOOL":
        return bool(inner)
    if tag == "NULL":
        return None
    if tag == "M":
        return {k: deserialize(v) for k, v in inner.items()}
    if tag == "L":
        return [deserialize(v) for v in inner]
    if tag == "SS":
        return set(inner)
    if tag == "NS":
        return {deserialize({"N": n}) for n in inner}
    if tag == "B":
        return base64.b64decode(inner)
    if tag == "BS":
        return {base64.b64decode(b) for b in inner}
    raise ValueError(f"unknown AttributeValue type {tag!r}")


def deserialize_image(image: dict[str, Any]) -> dict[str, Any]:
    """Decode a whole item image ({"attr": {"S": ...}, ...}) into plain values."""
    return {name: deserialize(value) for name, value in image.items()}


# orjson writes integers of up to 64 bits; larger ones (DynamoDB numbers have up to 38
# digits) stay Decimal and are written through orjson.Fragment, exactly as given.
_INT64 = 2**63


def plain_value(value: dict[str, Any]) -> Any:
    """Decode one typed AttributeValue into a JSON-ready value, for sinks that send JSON.

    Unlike ``deserialize``: numbers are ``int`` when integral and within 64 bits, otherwise
    ``decimal.Decimal`` (never float, so nothing is rounded); sets become lists in wire
    order; binary values stay base64 text as on the wire. ``dumps_plain`` writes the
    result with every number exact.
    """
    ((tag, inner),) = value.items()
    if tag == "S" or tag == "B":
        return inner
    if tag == "N":
        return _number(inner)
    if tag == "BOOL":
        return bool(inner)
    if tag == "NULL":
        return None
    if tag == "M":
        return {k: plain_value(v) for k, v in inner.items()}
    if tag == "L":
        return [plain_value(v) for v in inner]
    if tag == "SS" or tag == "BS":
        return list(inner)
    if tag == "NS":
        return [_number(n) for n in inner]
    raise ValueError(f"unknown AttributeValue type {tag!r}")


def plain_image(image: dict[str, Any]) -> dict[str, Any]:
    """``plain_value`` of every attribute of an item image."""
    return {name: plain_value(value) for name, value in image.items()}


def _number(text: str) -> int | decimal.Decimal:
    number = decimal.Decimal(text)
    if number == number.to_integral_value():
        integer = int(number)
        if -_INT64 <= integer < _INT64:
            return integer
    return number


def _exact(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps_plain(value: Any) -> bytes:
    """JSON of ``plain_value`` results (and anything orjson writes), Decimals as exact
    numbers."""
    return orjson.dumps(value, default=_exact)
