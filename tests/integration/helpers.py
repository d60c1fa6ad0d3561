"""Handlers the integration tests run inside a real worker process."""

from __future__ import annotations

import os
from typing import Any

import orjson


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    ddb = record["dynamodb"]
    image = ddb.get("NewImage") or {}
    return {
        "id": record["eventID"],
        "seq": ddb["SequenceNumber"],
        "key": ddb["Keys"]["pk"]["S"],
        "name": record["eventName"],
        "v": image.get("v", {}).get("N"),
        "arn": record.get("eventSourceARN"),
    }


def record(event: dict[str, Any], context: Any) -> None:
    """Append one line per record to $FANOUT_TEST_OUT, written with a single write()."""
    data = b"".join(orjson.dumps(_summary(r)) + b"\n" for r in event["Records"])
    with open(os.environ["FANOUT_TEST_OUT"], "ab") as out:
        out.write(data)
