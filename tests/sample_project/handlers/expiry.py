"""``archive``: orders that Time to Live deleted are copied to the archive table."""

from __future__ import annotations

import os
from typing import Any

from .dynamodb import client


def _expired(record: dict[str, Any]) -> bool:
    identity = record.get("userIdentity") or {}
    # DynamoDB Streams spells the members Type/PrincipalId; accept Lambda's spelling too.
    kind = identity.get("Type", identity.get("type"))
    principal = identity.get("PrincipalId", identity.get("principalId"))
    return kind == "Service" and principal == "dynamodb.amazonaws.com"


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
