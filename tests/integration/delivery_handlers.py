"""Handlers for the delivery-semantics integration tests.

In-process ones keep state in module globals the test flips; the ones run by a worker
process append what they delivered to ``$FANOUT_TEST_OUT`` (one write per call).
"""

from __future__ import annotations

import os
import random
from typing import Any

import anyio
import orjson

DOWN = False
RECEIVED: dict[str, list[dict[str, Any]]] = {}


def reset() -> None:
    global DOWN
    DOWN = False
    RECEIVED.clear()


def _take(name: str, records: list[dict[str, Any]]) -> None:
    RECEIVED.setdefault(name, []).extend(records)


async def flaky(event: dict[str, Any], context: Any) -> None:
    """Raises while ``DOWN``; otherwise takes every record."""
    await anyio.sleep(0)
    if DOWN:
        raise ConnectionError("sink unreachable")
    _take(context.function_name, event["Records"])


async def broken(event: dict[str, Any], context: Any) -> None:
    """Always raises."""
    raise RuntimeError("this sink is broken")


async def refuse_poison(event: dict[str, Any], context: Any) -> None:
    """Raises for any batch holding an item whose key starts with ``poison`` (unless DOWN
    is cleared for redrive: see ``accept_all``)."""
    if any(r["dynamodb"]["Keys"]["pk"]["S"].startswith("poison") for r in event["Records"]):
        raise ValueError("poison record")
    _take(context.function_name, event["Records"])


async def accept_all(event: dict[str, Any], context: Any) -> None:
    _take(context.function_name, event["Records"])


_rng = random.Random(os.getpid())


def poison_and_flaky(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """For a worker process: a batch holding a ``poison`` key raises; otherwise about one
    record in six fails (Lambda partial batch response). Delivered records are appended to
    ``$FANOUT_TEST_OUT`` before returning."""
    records = event["Records"]
    if any(r["dynamodb"]["Keys"]["pk"]["S"].startswith("poison") for r in records):
        raise ValueError("poison record")
    first_failed = next((i for i in range(len(records)) if _rng.random() < 1 / 6), None)
    delivered = records if first_failed is None else records[:first_failed]
    data = b"".join(
        orjson.dumps({"id": r["eventID"], "seq": r["dynamodb"]["SequenceNumber"]}) + b"\n"
        for r in delivered
    )
    if data:
        with open(os.environ["FANOUT_TEST_OUT"], "ab") as out:
            out.write(data)
    if first_failed is None:
        return {"batchItemFailures": []}
    seq = records[first_failed]["dynamodb"]["SequenceNumber"]
    return {"batchItemFailures": [{"itemIdentifier": seq}]}
