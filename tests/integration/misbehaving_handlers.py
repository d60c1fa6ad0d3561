"""Handlers that misbehave on purpose, run by real worker processes (imported by path).

Each one takes a batch without a ``bad-`` key the way a good handler does (one line per
record appended to ``$FANOUT_TEST_OUT``, with a single write) and misbehaves in its own way
when the batch holds one.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import orjson

HOARD: list[bytearray] = []


class Doom(BaseException):
    """Not an Exception: nothing in a worker should catch it."""


def _bad(event: dict[str, Any]) -> bool:
    return any(r["dynamodb"]["Keys"]["pk"]["S"].startswith("bad-") for r in event["Records"])


def _take(event: dict[str, Any]) -> None:
    data = b"".join(
        orjson.dumps({"key": r["dynamodb"]["Keys"]["pk"]["S"], "pid": os.getpid()}) + b"\n"
        for r in event["Records"]
    )
    with open(os.environ["FANOUT_TEST_OUT"], "ab") as out:
        out.write(data)


def exits(event: dict[str, Any], context: Any) -> None:
    if _bad(event):
        sys.exit(0)
    _take(event)


async def interrupts(event: dict[str, Any], context: Any) -> None:
    if _bad(event):
        raise KeyboardInterrupt
    _take(event)


def dooms(event: dict[str, Any], context: Any) -> None:
    if _bad(event):
        raise Doom("a BaseException of the handler's own")
    _take(event)


async def cancels(event: dict[str, Any], context: Any) -> None:
    if _bad(event):
        raise asyncio.CancelledError("not the worker's cancellation")
    _take(event)


def hangs(event: dict[str, Any], context: Any) -> None:
    """A plain function that never returns (it sleeps, so it costs no CPU)."""
    if _bad(event):
        while True:
            time.sleep(0.05)
    _take(event)


def spins(event: dict[str, Any], context: Any) -> None:
    """A plain function that never returns and burns a CPU doing so."""
    if _bad(event):
        while True:
            pass
    _take(event)


async def blocks_the_loop(event: dict[str, Any], context: Any) -> None:
    """An async handler calling a blocking function: its event loop stops."""
    if _bad(event):
        time.sleep(3600)
    _take(event)


def garbage(event: dict[str, Any], context: Any) -> Any:
    if _bad(event):
        return {"batchItemFailures": [{"itemIdentifier": 42}, "which one?"]}
    _take(event)
    return {"batchItemFailures": []}


def leaks(event: dict[str, Any], context: Any) -> None:
    """Keeps memory until something stops it."""
    if _bad(event):
        while True:
            HOARD.append(bytearray(16 << 20))
    _take(event)


def hangs_always(event: dict[str, Any], context: Any) -> None:
    while True:
        time.sleep(0.05)


def refuses_bad(event: dict[str, Any], context: Any) -> None:
    """An ordinary failure, for records that must end up dead-lettered."""
    if _bad(event):
        raise ValueError("refused")
