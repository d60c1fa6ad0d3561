"""Tumbling-window handlers used by tests, shaped as the Lambda documentation's example."""

from __future__ import annotations

import copy
from typing import Any

CALLS: list[dict[str, Any]] = []


def sum_values(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Sums ``NewImage.n`` into the state; the final call returns the state unchanged."""
    CALLS.append(copy.deepcopy(event))
    state = event["state"]
    if event["isFinalInvokeForWindow"]:
        return {"state": state}
    for record in event["Records"]:
        state["total"] = state.get("total", 0) + int(record["dynamodb"]["NewImage"]["n"]["N"])
        state["count"] = state.get("count", 0) + 1
    # What the handler saw, kept in the state (a worker process's calls cannot be listed).
    state["seen"] = [event["window"], event["shardId"], event["eventSourceARN"]]
    return {"state": state}


def huge_state(event: dict[str, Any], context: Any) -> dict[str, Any]:
    CALLS.append(copy.deepcopy(event))
    if event["isFinalInvokeForWindow"]:
        return {"state": {}}
    return {"state": {"blob": "x" * (1024 * 1024)}}


def no_state(event: dict[str, Any], context: Any) -> dict[str, Any]:
    CALLS.append(copy.deepcopy(event))
    return {"batchItemFailures": []}
