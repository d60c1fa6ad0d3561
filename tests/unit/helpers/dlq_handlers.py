"""Handlers for dead-letter redrive tests (run in the test process)."""

from __future__ import annotations

from typing import Any

RECEIVED: list[dict[str, Any]] = []
REFUSE: set[str] = set()


def collect(event: dict[str, Any], context: Any) -> None:
    RECEIVED.extend(event["Records"])


def refuse_some(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Takes every record except those whose sequence number is in REFUSE."""
    failed = []
    for record in event["Records"]:
        seq = record["dynamodb"]["SequenceNumber"]
        if seq in REFUSE:
            failed.append({"itemIdentifier": seq})
        else:
            RECEIVED.append(record)
    return {"batchItemFailures": failed[:1]}
