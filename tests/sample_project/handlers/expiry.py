"""``archive``: orders that Time to Live deleted are copied to the archive table."""

from __future__ import annotations

import os
from typing import Any

from .dynamodb import client


def _expired(record: dict[str, Any]) -> bool:
    identity = record.get("userIdentity") or {}
    # As Lambda events spell it (fanout delivers the same shape).
    return identity == {"type": "Service", "principalId": "dynamodb.amazonaws.com"}


def archive(event: dict[str, Any], context: Any) -> dict[str, int]:
    archived = 0
    for record in event["Records"]:
        if record["eventName"] != "REMOVE" or not _expired(record):
            continue
        client().put_item(
            TableName=os.environ["ARCHIVE_TABLE"], Item=record["dynamodb"]["OldImage"]
        )
        archived += 1
    return {"archived": archived}
