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
