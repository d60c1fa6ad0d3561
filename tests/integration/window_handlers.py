"""A tumbling-window handler for worker-process tests: the Lambda documentation's example
(sum values into the state), logging every call to ``$FANOUT_TEST_OUT``."""

from __future__ import annotations

import os
from typing import Any

import orjson


def sum_values(event: dict[str, Any], context: Any) -> dict[str, Any]:
    state = event["state"]
    values = [int(r["dynamodb"]["NewImage"]["n"]["N"]) for r in event["Records"]]
    line = {
        "window": event["window"],
        "shard": event["shardId"],
        "arn": event["eventSourceARN"],
        "final": event["isFinalInvokeForWindow"],
        "early": event["isWindowTerminatedEarly"],
        "state_in": dict(state),
        "values": values,
    }
    with open(os.environ["FANOUT_TEST_OUT"], "ab") as out:
        out.write(orjson.dumps(line) + b"\n")
    if not event["isFinalInvokeForWindow"]:
        state["total"] = state.get("total", 0) + sum(values)
        state["count"] = state.get("count", 0) + len(values)
    return {"state": state}
