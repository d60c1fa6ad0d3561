"""Handlers for the run tests (``tests/unit/test_handler_runs.py``): each records the
first sequence number of every batch it is called with, then does what its batch asks
(the first record's ``NewImage.do``)."""

from __future__ import annotations

import sys
import time
from typing import Any

CALLS: list[str] = []


def scripted(event: dict[str, Any], context: Any) -> Any:
    records = event["Records"]
    first = records[0]["dynamodb"]
    CALLS.append(first["SequenceNumber"])
    do = first.get("NewImage", {}).get("do", {}).get("S", "")
    if do == "raise":
        raise ValueError("this batch fails")
    if do == "exit":
        sys.exit(0)
    if do.startswith("sleep:"):
        time.sleep(float(do.removeprefix("sleep:")))
    if do == "fail-last":
        last = records[-1]["dynamodb"]["SequenceNumber"]
        return {"batchItemFailures": [{"itemIdentifier": last}]}
    return None
