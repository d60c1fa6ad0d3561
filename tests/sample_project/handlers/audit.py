"""``record``: every change as one JSON line; records that cannot be written are reported
back with ``batchItemFailures`` (the trigger declares ReportBatchItemFailures)."""

from __future__ import annotations

import json
import os
from typing import Any


def record(event: dict[str, Any], context: Any) -> dict[str, Any]:
    failures = []
    lines = []
    for item in event["Records"]:
        ddb = item["dynamodb"]
        image = ddb.get("NewImage") or ddb.get("OldImage") or {}
        if "BOOL" in image.get("corrupt", {}) and image["corrupt"]["BOOL"]:
            failures.append({"itemIdentifier": ddb["SequenceNumber"]})
            break  # Lambda retries from the first failure on: stop here
        lines.append(
            json.dumps(
                {
                    "event": item["eventName"],
                    "order": ddb["Keys"]["pk"]["S"],
                    "sequence": ddb["SequenceNumber"],
                }
            )
        )
    if lines:
        with open(os.environ["AUDIT_LOG"], "a", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
    return {"batchItemFailures": failures}


def export(event: dict[str, Any], context: Any) -> None:
    """The trigger of a retired export; disabled in triggers.json."""
    raise RuntimeError("the export is retired")
