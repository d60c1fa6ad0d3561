"""Tumbling windows of handler sinks: window assignment, state across calls, final calls,
restore after a restart, the 1 MB limit and the configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from pydantic import ValidationError

from fanout.delivery.deadletter import FileDeadLetter
from fanout.delivery.route import Route
from fanout.delivery.windows import MAX_STATE_BYTES, WindowLane, iso, window_start
from fanout.errors import ConfigError
from fanout.observe.metrics import Metrics
from fanout.progress.store import WindowState
from fanout.progress.tracker import ShardProgress
from fanout.records import Record
from fanout.retry import RetryPolicy
from sinks.handler import HANDLER, HandlerSink, HandlerSinkConfig
from tests.unit.helpers import window_handlers

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/2026-01-01T00:00:00.000"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a multiple of every window size used here


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    window_handlers.CALLS.clear()


def record(i: int, created: float) -> Record:
    return {
        "eventID": f"id-{i}",
        "eventName": "INSERT",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": ARN,
        "dynamodb": {
            "ApproximateCreationDateTime": created,
            "Keys": {"pk": {"S": f"k{i}"}},
            "NewImage": {"pk": {"S": f"k{i}"}, "n": {"N": str(i)}},
            "SequenceNumber": f"{1000 + i:021d}",
            "SizeBytes": 20,
            "StreamViewType": "NEW_IMAGE",
        },
    }


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def window_lane(
    tmp_path: Path,
    handler: str,
    *,
    size: float = 5,
    stored: WindowState | None = None,
    clock: Clock | None = None,
    isolation: str = "thread",
    **options: Any,
) -> tuple[WindowLane, HandlerSink, ShardProgress]:
    config = HandlerSinkConfig(
        type="handler",
        handler=handler,
        tumbling_window=size,
        isolation=isolation,
        max_concurrency=1,
        **options,
    )
    sink = HandlerSink("sums", config)
    await sink.start()
    route = Route(
        name="sums",
        sink=sink,
        config=config,
        predicate=None,
        dead_letter=FileDeadLetter(tmp_path / "dlq.jsonl"),
        backoff=RetryPolicy(0, 0),
        metrics=Metrics(),
    )
    progress = ShardProgress("orders", ARN, "shard-1", None)
    persisted: list[WindowState] = []

    async def persist() -> None:
        persisted.append(lane.snapshot())

    lane = WindowLane(route, progress, size, stored, persist, clock or Clock(T0))
    lane.persisted = persisted  # type: ignore[attr-defined]
    return lane, sink, progress


async def feed(lane: WindowLane, progress: ShardProgress, *pages: list[Record]) -> None:
    """Run the lane over ``pages`` until each is settled, then close it."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(lane.run)
        for page in pages:
            ticket = progress.open(page[-1]["dynamodb"]["SequenceNumber"])
            ticket.pending += len(page)
            await lane.put(ticket, page)
            ticket.settle(1)
        await progress.drained()
        lane.close()


def calls() -> list[tuple[list[int], Any, bool, bool, str]]:
    """(record numbers, state given, final, terminated early, window start) of each call."""
    return [
        (
            [int(r["dynamodb"]["NewImage"]["n"]["N"]) for r in c["Records"]],
            {k: v for k, v in c["state"].items() if k != "seen"},
            c["isFinalInvokeForWindow"],
            c["isWindowTerminatedEarly"],
            c["window"]["start"],
        )
        for c in window_handlers.CALLS
    ]


# -- assignment ---------------------------------------------------------------------------


def test_windows_are_aligned_on_their_size_and_spelled_as_lambda_does():
    assert window_start(T0 + 4.999, 5) == T0
    assert window_start(T0 + 5, 5) == T0 + 5
    assert window_start(T0 + 299, 300) == T0
    assert iso(T0) == "2026-01-01T00:00:00Z"
    assert iso(T0 + 2.5) == "2026-01-01T00:00:02.500Z"


async def test_records_go_to_the_window_of_their_creation_time(tmp_path):
    lane, _, _ = await window_lane(tmp_path, "tests.unit.helpers.window_handlers:sum_values")
    assert lane.assign(record(1, T0 + 7)) == T0 + 5
    lane.start = T0 + 10  # a record older than the open window joins it
    assert lane.assign(record(2, T0 + 7)) == T0 + 10
    assert lane.assign(record(3, T0 + 16)) == T0 + 15
    # A window that had its final call never opens again: its late records go to the
    # window of the current time.
    lane.start, lane.closed = None, T0 + 20
    assert lane.assign(record(4, T0 + 12)) == T0 + 20  # never before the closed one
    lane._clock = Clock(T0 + 42)
    assert lane.assign(record(4, T0 + 12)) == T0 + 40
    assert lane.assign(record(5, T0 + 51)) == T0 + 50


# -- calls --------------------------------------------------------------------------------


async def test_state_is_carried_across_calls_and_each_window_ends_with_one_final_call(tmp_path):
    lane, sink, progress = await window_lane(
        tmp_path, "tests.unit.helpers.window_handlers:sum_values", batch_size=2
    )
    # Windows of 5 s: records 1-3 in [T0, T0+5), 4-5 in [T0+5, T0+10).
    page = [record(1, T0), record(2, T0 + 1), record(3, T0 + 4), record(4, T0 + 5)]
    await feed(lane, progress, page, [record(5, T0 + 9)])
    await lane.end_shard()
    await sink.stop()
    w0, w1 = iso(T0), iso(T0 + 5)
    assert calls() == [
        ([1, 2], {}, False, False, w0),
        ([3], {"total": 3, "count": 2}, False, False, w0),
        ([], {"total": 6, "count": 3}, True, False, w0),
        ([4], {}, False, False, w1),
        ([5], {"total": 4, "count": 1}, False, False, w1),
        # The shard ended before its window did (the clock says T0): terminated early.
        ([], {"total": 9, "count": 2}, True, True, w1),
    ]
    first = window_handlers.CALLS[0]
    assert first["window"] == {"start": w0, "end": iso(T0 + 5)}
    assert (first["shardId"], first["eventSourceARN"]) == ("shard-1", ARN)
    assert lane.start is None
    assert lane.closed == T0 + 10
    assert lane.covered == page[-1]["dynamodb"]["SequenceNumber"][:-1] + "5"
    # Each final call was written at once, the window closed in it.
    assert [(w.start, w.closed) for w in lane.persisted] == [(None, T0 + 5), (None, T0 + 10)]  # type: ignore[attr-defined]
    assert progress.windows == [lane]


async def test_an_idle_window_is_closed_by_the_clock(tmp_path):
    clock = Clock(T0 + 1)
    lane, sink, progress = await window_lane(
        tmp_path, "tests.unit.helpers.window_handlers:sum_values", clock=clock
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(lane.run)
        ticket = progress.open(record(1, T0)["dynamodb"]["SequenceNumber"])
        ticket.pending += 1
        await lane.put(ticket, [record(1, T0)])
        ticket.settle(1)
        await progress.drained()
        assert [c[2] for c in calls()] == [False]
        clock.now = T0 + 7  # past the end and the grace: the lane closes it by itself
        lane._wakeup.set()
        with anyio.fail_after(5):
            while len(window_handlers.CALLS) < 2:
                await anyio.sleep(0.01)
        lane.close()
    await lane.end_shard()  # nothing open any more: no other call
    await sink.stop()
    assert [(c[2], c[3]) for c in calls()] == [(False, False), (True, False)]


async def test_a_restored_window_goes_on_and_skips_what_its_state_holds(tmp_path):
    stored = WindowState("sums", T0, {"total": 6, "count": 3}, f"{1000 + 3:021d}")
    lane, sink, progress = await window_lane(
        tmp_path, "tests.unit.helpers.window_handlers:sum_values", stored=stored
    )
    # After a crash the shard is read again from an older checkpoint: 1-3 are in the state.
    await feed(lane, progress, [record(i, T0 + i / 10) for i in range(1, 6)])
    await sink.stop()
    assert calls() == [([4, 5], {"total": 6, "count": 3}, False, False, iso(T0))]
    assert progress.frontier == f"{1000 + 5:021d}"
    assert lane.snapshot().state["total"] == 15


async def test_a_state_over_1_mb_dead_letters_the_batch_and_keeps_the_old_state(tmp_path):
    lane, sink, progress = await window_lane(
        tmp_path, "tests.unit.helpers.window_handlers:huge_state", retry={"max_attempts": 1}
    )
    await feed(lane, progress, [record(1, T0), record(2, T0)])
    await sink.stop()
    entries = [orjson.loads(line) for line in (tmp_path / "dlq.jsonl").read_bytes().splitlines()]
    assert [e["sequence_number"] for e in entries] == [f"{1000 + i:021d}" for i in (1, 2)]
    assert all(e["error"]["message"].startswith("WindowStateTooLarge") for e in entries)
    assert f"more than the {MAX_STATE_BYTES} bytes (1 MB)" in entries[0]["error"]["message"]
    assert lane.state == {}
    assert lane.covered is None
    assert progress.frontier == f"{1000 + 2:021d}"  # dead-lettered: settled, nothing lost


async def test_a_response_without_state_is_a_failed_call(tmp_path):
    lane, sink, progress = await window_lane(
        tmp_path, "tests.unit.helpers.window_handlers:no_state", retry={"max_attempts": 2}
    )
    await feed(lane, progress, [record(1, T0)])
    await sink.stop()
    entries = [orjson.loads(line) for line in (tmp_path / "dlq.jsonl").read_bytes().splitlines()]
    assert [e["error"]["class"] for e in entries] == ["InvalidResponse"]
    assert 'must return {"state"' in entries[0]["error"]["message"]


async def test_state_travels_through_a_worker_process(tmp_path):
    lane, sink, progress = await window_lane(
        tmp_path, "tests.unit.helpers.window_handlers:sum_values", isolation="process"
    )
    try:
        await feed(lane, progress, [record(1, T0), record(2, T0 + 1)], [record(3, T0 + 2)])
    finally:
        await sink.stop()
    assert lane.state["total"] == 6
    assert lane.state["count"] == 3
    assert lane.state["seen"] == [{"start": iso(T0), "end": iso(T0 + 5)}, "shard-1", ARN]


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 0.5, 901, "16m", "soon"])
def test_tumbling_window_must_be_1_to_900_seconds(value):
    with pytest.raises(ValidationError, match="tumbling_window"):
        HandlerSinkConfig(type="handler", handler="a:b", tumbling_window=value)


def test_tumbling_window_takes_seconds_or_a_duration():
    assert (
        HandlerSinkConfig(type="handler", handler="a:b", tumbling_window="5m").tumbling_window
        == 300
    )
    assert HandlerSinkConfig(type="handler", handler="a:b", tumbling_window=2).tumbling_window == 2


def test_a_tumbling_window_needs_parallelization_factor_1():
    config = HandlerSinkConfig(
        type="handler",
        handler="tests.unit.helpers.window_handlers:sum_values",
        tumbling_window=60,
        parallelization_factor=2,
    )
    with pytest.raises(ConfigError, match=r"sinks\.sums\.tumbling_window"):
        HANDLER.check("sums", config, "sinks.sums")
