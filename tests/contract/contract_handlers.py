"""A Lambda-style handler for the handler sink's contract run (imported by path)."""

from __future__ import annotations

from typing import Any

# function name (the sink's name) -> eventIDs the handler was called with
ARRIVED: dict[str, list[str]] = {}


def receive(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Records what arrived, refuses records marked ``poison``, then scribbles over its event
    (the worker gives it records of its own)."""
    arrived = ARRIVED.setdefault(context.function_name, [])
    failures = []
    for record in event["Records"]:
        arrived.append(record["eventID"])
        if "poison" in record["dynamodb"].get("NewImage", {}):
            failures.append({"itemIdentifier": record["dynamodb"]["SequenceNumber"]})
        record["dynamodb"]["NewImage"] = {"scribbled": {"BOOL": True}}
        record.pop("eventSourceARN", None)
    event["Records"].clear()
    return {"batchItemFailures": failures}


def receive_in_a_worker_process(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """``receive`` for ``isolation: process``: what arrived is appended to the file
    ``$FANOUT_CONTRACT_OUT`` (the test reads it from the worker)."""
    import os

    ids = [r["eventID"] for r in event["Records"]]
    answer = receive(event, context)
    with open(os.environ["FANOUT_CONTRACT_OUT"], "a") as out:
        out.write("".join(f"{i}\n" for i in ids))
    return answer
