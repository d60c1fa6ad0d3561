"""Backfilled records: a table item as an ``INSERT`` stream record, in the Lambda shape.

Every record carries ``"fanout": {"backfill": true, "backfill_id": ..., "read_at": ...}``
(sinks and handlers test ``record.get("fanout", {}).get("backfill")``), an ``eventID`` that
starts with ``backfill-``, the backfill's ``ApproximateCreationDateTime`` (its start minus
``VERSION_MARGIN_S``) and ``SequenceNumber`` ``"0"``: its version is below that of any
change made after the backfill started (``docs/backfill.md``).
"""

from __future__ import annotations

import base64
import hashlib
import math
from typing import Any

import orjson

from fanout.records import Record

VERSION_MARGIN_S = 120
"""Seconds between a backfill's start and the creation time its records carry: more than
DynamoDB's rounding of ``ApproximateCreationDateTime`` (a second; DynamoDB Local rounds to
the minute) plus the skew between this host's clock and DynamoDB's."""

EVENT_ID_PREFIX = "backfill-"
SEQUENCE_NUMBER = "0"


def version_time(started: float) -> int:
    """The ``ApproximateCreationDateTime`` of a backfill started at ``started`` (epoch s)."""
    return math.floor(started) - VERSION_MARGIN_S


def wire_value(value: dict[str, Any]) -> dict[str, Any]:
    """An AttributeValue as botocore parses it (binary as ``bytes``) in its wire form
    (binary as base64 text), the form stream records keep."""
    ((tag, inner),) = value.items()
    if tag == "B":
        return {"B": base64.b64encode(inner).decode()}
    if tag == "BS":
        return {"BS": [base64.b64encode(b).decode() for b in inner]}
    if tag == "M":
        return {"M": wire_item(inner)}
    if tag == "L":
        return {"L": [wire_value(v) for v in inner]}
    return value


def wire_item(item: dict[str, Any]) -> dict[str, Any]:
    """An item (or key) as botocore parses it, in its wire form."""
    return {name: wire_value(value) for name, value in item.items()}


def parsed_key(key: dict[str, Any]) -> dict[str, Any]:
    """A key in wire form as botocore takes it (binary as ``bytes``)."""
    out: dict[str, Any] = {}
    for name, value in key.items():
        ((tag, inner),) = value.items()
        out[name] = {"B": base64.b64decode(inner)} if tag == "B" else value
    return out


def is_backfilled(record: Record) -> bool:
    """True for a record a backfill made."""
    marker = record.get("fanout")
    return isinstance(marker, dict) and marker.get("backfill") is True


class RecordMaker:
    """Turns items of one table into backfilled records.

    Args:
        backfill_id: the backfill.
        key_names: the table's key attributes (``KeySchema``).
        stream_arn: the stream the records stand for (``eventSourceARN``).
        region: ``awsRegion``.
        created: the records' ``ApproximateCreationDateTime``.
    """

    def __init__(
        self,
        backfill_id: str,
        key_names: list[str],
        stream_arn: str,
        region: str,
        created: int,
    ) -> None:
        self.backfill_id = backfill_id
        self.key_names = key_names
        self.stream_arn = stream_arn
        self.region = region
        self.created = created
        self._salt = backfill_id.encode() + b"\0"

    def record(self, parsed: dict[str, Any], read_at: float) -> Record:
        """The record of an item as botocore parsed it."""
        item = wire_item(parsed)
        keys = {name: item[name] for name in self.key_names if name in item}
        key_bytes = orjson.dumps(keys, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.sha256(self._salt + key_bytes).hexdigest()[:32]
        return {
            "eventID": EVENT_ID_PREFIX + digest,
            "eventName": "INSERT",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": self.region,
            "eventSourceARN": self.stream_arn,
            "dynamodb": {
                "ApproximateCreationDateTime": self.created,
                "Keys": keys,
                "NewImage": item,
                "SequenceNumber": SEQUENCE_NUMBER,
                "SizeBytes": len(key_bytes) + len(orjson.dumps(item)),
                "StreamViewType": "NEW_IMAGE",
            },
            "fanout": {"backfill": True, "backfill_id": self.backfill_id, "read_at": read_at},
        }
