"""Handlers that misbehave, for the handler sink's isolation tests (imported by path)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from typing import Any

RELEASE = threading.Event()  # what hanging handlers wait for (in-process only)
HOARD: list[bytearray] = []


class Doom(BaseException):
    """Not an Exception: nothing in a worker should catch it."""


def exits(event: dict[str, Any], context: Any) -> None:
    sys.exit(0)


async def interrupts(event: dict[str, Any], context: Any) -> None:
    raise KeyboardInterrupt


def dooms(event: dict[str, Any], context: Any) -> None:
    raise Doom("the end")


def generator_exit(event: dict[str, Any], context: Any) -> None:
    raise GeneratorExit


async def cancels(event: dict[str, Any], context: Any) -> None:
    raise asyncio.CancelledError


def waits(event: dict[str, Any], context: Any) -> None:
    RELEASE.wait()


def naps(event: dict[str, Any], context: Any) -> dict[str, int]:
    start = context.get_remaining_time_in_millis()
    time.sleep(0.3)
    return {"remaining_at_start": start}


async def blocks_the_loop(event: dict[str, Any], context: Any) -> None:
    time.sleep(3600)


def spins(event: dict[str, Any], context: Any) -> None:
    while True:
        pass


def leaks(event: dict[str, Any], context: Any) -> None:
    while True:
        HOARD.append(bytearray(8 << 20))


def returns_an_object(event: dict[str, Any], context: Any) -> object:
    return object()


def dies(event: dict[str, Any], context: Any) -> None:
    os._exit(3)


def describes(event: dict[str, Any], context: Any) -> dict[str, Any]:
    print("a handler printing to stdout")  # must not break the worker process's protocol
    return {
        "pid": os.getpid(),
        "function_name": context.function_name,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "arn": context.invoked_function_arn,
        "remaining": context.get_remaining_time_in_millis(),
        "ids": [r["eventID"] for r in event["Records"]],
    }


async def describes_async(event: dict[str, Any], context: Any) -> dict[str, Any]:
    await asyncio.sleep(0)
    return describes(event, context)


def not_json(event: dict[str, Any], context: Any) -> Any:
    return {1, 2}


def takes_a_tenth(event: dict[str, Any], context: Any) -> None:
    time.sleep(0.1)
