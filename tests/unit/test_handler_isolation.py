"""Whatever a handler does is at most a failed call: isolation thread and process."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import anyio
import pytest

from fanout.delivery.deadletter import read_entries
from fanout.errors import ConfigError
from sinks.handler import (
    HANDLER,
    HandlerCrashed,
    HandlerError,
    HandlerSink,
    HandlerSinkConfig,
    HandlerTimeout,
    InvalidResponse,
)
from tests.unit.delivery_fakes import through_lane
from tests.unit.helpers import rogue
from tests.unit.test_handler import wire_record

ROGUE = rogue.__name__


def sink(fn: str, **options: Any) -> HandlerSink:
    return HandlerSink("h", HandlerSinkConfig(type="handler", handler=f"{ROGUE}:{fn}", **options))


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(autouse=True)
def _release_hanging_handlers():
    rogue.RELEASE.clear()
    yield
    rogue.RELEASE.set()


# -- isolation: thread -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "raised"),
    [
        ("exits", "SystemExit: 0"),
        ("interrupts", "KeyboardInterrupt"),
        ("dooms", "Doom: the end"),
        ("generator_exit", "GeneratorExit"),
        ("cancels", "CancelledError"),
    ],
)
async def test_a_base_exception_from_a_handler_is_a_failed_call(fn, raised):
    h = sink(fn)
    await h.start()
    with pytest.raises(HandlerCrashed, match=f"handler raised {raised}"):
        await h.send([wire_record(1)])
    await h.stop()


async def test_the_workers_own_cancellation_still_goes_through_an_async_handler():
    h = sink("describes_async")
    await h.start()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await h.send([wire_record(1)])
    assert scope.cancelled_caught


async def test_a_hanging_plain_handler_fails_at_its_timeout_and_keeps_its_thread():
    h = sink("waits", timeout=0.1, max_concurrency=2)
    await h.start()
    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(HandlerTimeout, match="goes on in its thread"):
            await h.send([wire_record(1)])
        assert time.monotonic() - started < 1
    threads = h.threads
    assert threads is not None
    assert threads.abandoned == 2
    assert threads.threads == 2  # never more than max_concurrency, however many hang
    rogue.RELEASE.set()
    await h.stop()


async def test_the_timeout_measures_the_handler_not_the_wait_for_a_thread():
    # One thread, two batches at once: the second waits 0.3 s, then runs 0.3 s of its own.
    h = sink("naps", timeout=0.5, max_concurrency=1)
    await h.start()
    results: list[Any] = []

    async def send() -> None:
        results.append(await h.send([wire_record(1)]))

    async with anyio.create_task_group() as tg:
        tg.start_soon(send)
        tg.start_soon(send)
    assert results == [{}, {}]


async def test_plain_handlers_use_threads_of_their_own_sink():
    h = sink("describes", max_in_flight=3)
    await h.start()
    assert h.threads is not None
    assert h.threads.size == 3  # max_in_flight when max_concurrency is not set
    await h.send([wire_record(1)])
    assert any(t.name.startswith("fanout-handler-h-") for t in threading.enumerate())


@pytest.mark.parametrize("fn", ["returns_an_object", "not_json"])
async def test_a_response_that_is_not_json_fails_the_batch(fn):
    h = sink(fn)
    await h.start()
    with pytest.raises(InvalidResponse, match="not JSON"):
        await h.send([wire_record(1)])


async def test_a_crashing_handler_reaches_the_dead_letter_file_with_the_reason(tmp_path):
    h = sink("exits", batch_size=10)
    await h.start()
    config = HandlerSinkConfig(
        type="handler", handler="x:y", batch_size=10, retry={"max_attempts": 2}
    )
    dlq = tmp_path / "dlq.jsonl"
    batch = [wire_record(1)]
    _, progress = await through_lane(h, config, dlq, batch)
    (entry,) = read_entries(dlq)
    assert entry["error"]["class"] == "HandlerCrashed"
    assert "SystemExit" in entry["error"]["message"]
    assert entry["attempts"] == 2
    assert progress.frontier == batch[-1]["dynamodb"]["SequenceNumber"]


# -- isolation: process ------------------------------------------------------------------------


async def test_a_worker_process_calls_the_handler_as_lambda_does():
    h = sink("describes", isolation="process", timeout=7, memory_limit_in_mb=256)
    await h.start()
    pool = h.pool
    assert pool is not None
    batch = [wire_record(1), wire_record(2)]
    assert await h.send(batch) == {}
    answer = await pool.invoke(h._request(batch), 7)
    assert answer["pid"] != os.getpid()
    assert answer["pid"] in pool.pids
    assert answer["function_name"] == "h"
    assert answer["memory_limit_in_mb"] == 256
    assert answer["arn"].endswith(":function:h")
    assert 0 < answer["remaining"] <= 7000
    assert answer["ids"] == ["id-1", "id-2"]
    await h.stop()
    assert not alive(answer["pid"])


async def test_an_async_handler_runs_in_a_worker_process_too():
    h = sink("describes_async", isolation="process")
    await h.start()
    assert await h.send([wire_record(1)]) == {}
    await h.stop()


@pytest.mark.parametrize(
    ("fn", "error", "match"),
    [
        ("exits", HandlerCrashed, r"SystemExit: 0 \(.*rogue.py:\d+ in exits\)"),
        ("dooms", HandlerCrashed, "Doom: the end"),
        ("cancels", HandlerCrashed, "CancelledError"),
        ("dies", HandlerCrashed, "exited with code 3"),
        ("leaks", HandlerCrashed, r"ran out of memory \(memory_limit_in_mb: 200\)"),
        ("spins", HandlerTimeout, "was killed"),
        ("blocks_the_loop", HandlerTimeout, "was killed"),
        ("not_json", InvalidResponse, "not JSON"),
    ],
)
async def test_a_misbehaving_handler_in_a_worker_process_is_a_failed_call(fn, error, match):
    h = sink(fn, isolation="process", timeout=0.5, memory_limit_in_mb=200)
    await h.start()
    pool = h.pool
    assert pool is not None
    (first,) = pool.pids
    with pytest.raises(error, match=match):
        await h.send([wire_record(1)])
    if error is not InvalidResponse:  # a process that crashed or hung is replaced
        assert not alive(first)
        assert first not in pool.pids
    await h.stop()
    assert pool.pids == []


async def test_a_handler_exception_in_a_worker_process_names_its_type():
    h = sink("describes", isolation="process")
    await h.start()
    with pytest.raises(HandlerError, match=r"KeyError: 'Records'"):
        await h.pool.invoke(  # type: ignore[union-attr]
            b'{"event": {}, "context": {"function_name": "h", "memory_limit_in_mb": 1, '
            b'"region": "us-east-1", "timeout": 1}}',
            5,
        )
    await h.stop()


async def test_worker_processes_never_outnumber_max_concurrency():
    h = sink("naps", isolation="process", max_concurrency=2)
    await h.start()
    pool = h.pool
    assert pool is not None
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(h.send, [wire_record(1)])
        await anyio.sleep(0.5)
        assert len(pool.pids) <= 2
    assert len(pool.pids) == 2
    await h.stop()


async def test_cancelling_a_call_kills_its_worker_process():
    h = sink("spins", isolation="process", timeout=60)
    await h.start()
    pool = h.pool
    assert pool is not None
    (pid,) = pool.pids
    with anyio.move_on_after(0.5):
        await h.send([wire_record(1)])
    assert not alive(pid)
    await h.stop()


async def test_a_handler_that_cannot_be_imported_fails_start_up():
    h = HandlerSink(
        "h",
        HandlerSinkConfig(type="handler", handler=f"{ROGUE}:missing", isolation="process"),
    )
    with pytest.raises(ConfigError, match=r"sinks\.h\.handler: .*has no attribute"):
        await h.start()
    await h.stop()


def test_process_isolation_checks_the_module_without_importing_it():
    config = HandlerSinkConfig(
        type="handler", handler="no_such_module_here:fn", isolation="process"
    )
    with pytest.raises(ConfigError, match=r"sinks\.h\.handler: cannot find module"):
        HANDLER.check("h", config, "sinks.h")
    HANDLER.check(
        "h",
        HandlerSinkConfig(type="handler", handler=f"{ROGUE}:anything", isolation="process"),
        "sinks.h",
    )


async def test_many_shards_queueing_for_few_threads_never_time_out():
    # 40 shards' batches at once for 4 threads, each call 0.1 s under a 0.2 s timeout: the
    # last ones wait a second for a thread, and none of that counts against them.
    h = sink("takes_a_tenth", timeout=0.2, max_concurrency=4)
    await h.start()
    results: list[Any] = []

    async def send() -> None:
        results.append(await h.send([wire_record(1)]))

    async with anyio.create_task_group() as tg:
        for _ in range(40):
            tg.start_soon(send)
    assert results == [{}] * 40
    assert h.threads is not None
    assert h.threads.threads == 4
