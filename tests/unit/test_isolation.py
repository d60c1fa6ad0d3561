"""Blocking calls on threads of their own (Offload), and telling the worker's cancellation
from code that raises CancelledError itself."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import anyio
import pytest

from fanout.errors import CallCrashed, CallTimeout
from fanout.isolation import Offload, contained, own_cancellation


def offload_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"{name}-")]


async def test_calls_run_on_their_own_threads_and_return_or_raise():
    offload = Offload(2, "t-basic")
    main = threading.get_ident()
    assert await offload.run(threading.get_ident) != main
    assert await offload.run(pow, 2, 10) == 1024
    with pytest.raises(ZeroDivisionError):
        await offload.run(lambda: 1 / 0)
    assert offload.running == 0


async def test_a_base_exception_arrives_as_call_crashed():
    offload = Offload(1, "t-crash")
    with pytest.raises(CallCrashed, match="SystemExit: 3") as caught:
        await offload.run(sys.exit, 3)
    assert isinstance(caught.value.__cause__, SystemExit)
    assert await offload.run(lambda: "still works") == "still works"


async def test_a_timed_out_call_keeps_its_slot_so_threads_never_outnumber_size():
    release = threading.Event()
    offload = Offload(2, "t-bound")
    for _ in range(2):
        with pytest.raises(CallTimeout):
            await offload.run(release.wait, limit=0.05)
    assert offload.abandoned == 2
    assert offload.running == 2
    # Both slots are held by calls that go on: a third call waits instead of adding a thread.
    with anyio.move_on_after(0.2) as scope:
        await offload.run(lambda: None)
    assert scope.cancelled_caught
    assert len(offload_threads("t-bound")) == 2
    release.set()
    assert await offload.run(lambda: "free again") == "free again"
    # the other released call hands its slot back as soon as its thread gets to run
    with anyio.fail_after(5):
        while offload.abandoned:
            await anyio.sleep(0.01)
    assert offload.running == 0
    assert offload.threads == 2
    assert all(t.daemon for t in offload_threads("t-bound"))


async def test_the_limit_counts_from_when_the_call_starts_not_while_it_waits():
    offload = Offload(1, "t-queue")

    async def call() -> None:
        await offload.run(time.sleep, 0.3, limit=0.5)

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        tg.start_soon(call)  # waits 0.3 s for the thread, then runs 0.3 s: within its limit
    assert time.monotonic() - started >= 0.6


async def test_cancelling_the_caller_abandons_the_call_at_once():
    release = threading.Event()
    offload = Offload(1, "t-cancel")
    started = time.monotonic()
    with anyio.move_on_after(0.05):
        await offload.run(release.wait)
    assert time.monotonic() - started < 1
    assert offload.abandoned == 1
    release.set()
    await offload.run(lambda: None)
    assert offload.abandoned == 0


async def test_own_cancellation_tells_the_worker_from_code_that_raises_it():
    seen: list[bool] = []

    async def raises() -> None:
        raise asyncio.CancelledError

    try:
        await raises()
    except asyncio.CancelledError as exc:
        seen.append(own_cancellation(exc))
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.sleep(1)
        except asyncio.CancelledError as exc:
            seen.append(own_cancellation(exc))
            raise
    assert seen == [False, True]
    assert not own_cancellation(ValueError())


def test_contained_keeps_exceptions_and_wraps_the_rest():
    error = ValueError("x")
    assert contained(error, "sink a") is error
    crash = contained(KeyboardInterrupt(), "sink a")
    assert isinstance(crash, CallCrashed)
    assert str(crash) == "sink a raised KeyboardInterrupt"
