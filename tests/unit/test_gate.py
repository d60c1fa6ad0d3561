"""The sink gate: ``max_in_flight`` across every shard and lane, ``retry_after`` for every lane."""

from __future__ import annotations

import math
from collections.abc import Sequence

import anyio
import pytest

from fanout.delivery import Route, ShardDispatch, SinkGate
from fanout.delivery.deadletter import SinkDeadLetter
from fanout.delivery.gate import retry_after
from fanout.errors import SinkUnavailable
from fanout.observe.metrics import Metrics
from fanout.records import Record
from fanout.retry import MAX_RETRY_AFTER_S, RetryPolicy, no_wait
from fanout.sink import Failure, Failures
from tests.unit.delivery_fakes import (
    FakeClock,
    MemoryDeadLetter,
    ScriptedSink,
    make_route,
    progress,
    rec,
    seq_of,
    seqs,
    sink_config,
)


async def run_shards(routes: list[Route], shards: int, records_per_shard: int) -> None:
    """One page per shard, every shard's lanes running at once, until all are drained."""
    dispatches = [
        ShardDispatch(progress(f"shardId-{n:05d}"), routes, routes[0].metrics)
        for n in range(shards)
    ]
    async with anyio.create_task_group() as tg:
        for dispatch in dispatches:
            tg.start_soon(dispatch.run)
        for n, dispatch in enumerate(dispatches):
            page = [rec(n * records_per_shard + i) for i in range(records_per_shard)]
            await dispatch.submit(page, page[-1]["dynamodb"]["SequenceNumber"])
        for dispatch in dispatches:
            dispatch.close()
    assert all(not d.progress.pending for d in dispatches)


# -- max_in_flight ---------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1, 4])
async def test_max_in_flight_bounds_the_sends_of_100_shards_to_one_sink(factor):
    sink = ScriptedSink(ordered=False, pause=5)
    route = make_route(sink, batch_size=5, max_in_flight=4, parallelization_factor=factor)
    await run_shards([route], shards=100, records_per_shard=20)
    assert sink.max_in_flight == 4  # the limit is reached, never passed
    assert sorted(seqs(sink.delivered)) == [seq_of(i) for i in range(2000)]


async def test_without_max_in_flight_the_shards_send_at_once():
    sink = ScriptedSink(ordered=False, pause=5)
    route = make_route(sink, batch_size=5)
    await run_shards([route], shards=100, records_per_shard=20)
    assert sink.max_in_flight > 4


async def test_max_in_flight_holds_through_retries_and_bisection():
    def flaky(batch: Sequence[Record]) -> Failures:
        if any(int(r["dynamodb"]["SequenceNumber"]) % 7 == 0 for r in batch):
            raise ConnectionError("reset")
        return {}

    sink = ScriptedSink(ordered=True, behaviour=flaky, pause=3)
    route = make_route(sink, batch_size=8, max_in_flight=3, retry={"max_attempts": 2})
    await run_shards([route], shards=40, records_per_shard=16)
    assert sink.max_in_flight == 3


class CountingSink:
    """Takes anything (records or dead-letter entries); counts sends at once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ordered = False
        self.in_flight = 0
        self.max_in_flight = 0
        self.received: list[object] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, batch: Sequence[object]) -> Failures:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        for _ in range(4):
            await anyio.lowlevel.checkpoint()
        self.in_flight -= 1
        self.received.extend(batch)
        return {}


async def test_dead_letter_writes_into_a_sink_count_against_its_max_in_flight():
    metrics = Metrics()
    archive = CountingSink("archive")
    archive_config = sink_config(batch_size=5, max_in_flight=2)
    archive_route = Route(
        name="archive",
        sink=archive,
        config=archive_config,
        predicate=None,
        dead_letter=MemoryDeadLetter(),
        backoff=RetryPolicy(0, 0, sleep=no_wait),
        metrics=metrics,
    )
    reject_all = ScriptedSink(
        "picky",
        ordered=False,
        behaviour=lambda batch: {i: Failure(False, "no") for i in range(len(batch))},
    )
    picky_route = make_route(
        reject_all, SinkDeadLetter(archive, archive_route.gate), metrics=metrics, batch_size=5
    )
    await run_shards([picky_route, archive_route], shards=30, records_per_shard=10)
    assert archive.max_in_flight == 2
    entries = [r for r in archive.received if isinstance(r, dict) and "error" in r]
    assert len(entries) == 300  # every record dead-lettered into the archive, too
    assert len(archive.received) == 600


async def test_a_gate_with_nothing_to_enforce_is_entered_without_waiting():
    # The hot path: no limit and no pause, or a limit with a free slot, suspends nothing.
    for gate in (SinkGate(), SinkGate(4)):
        entering = gate.__aenter__()
        with pytest.raises(StopIteration):
            entering.send(None)
        leaving = gate.__aexit__(None, None, None)
        with pytest.raises(StopIteration):
            leaving.send(None)
    assert SinkGate().idle  # lanes call the sink straight away
    limited = SinkGate(4)
    assert not limited.idle
    assert [limited.enter_nowait() for _ in range(5)] == [True] * 4 + [False]
    limited.leave()
    assert limited.enter_nowait()
    paused = SinkGate()
    paused.hold_off(1.0)
    assert not paused.idle
    assert not paused.enter_nowait()


# -- retry_after -----------------------------------------------------------------------------


def throttle_first_call(clock: FakeClock, times: list[float], how: str):
    def behaviour(batch: Sequence[Record]) -> Failures:
        times.append(clock.now)
        if len(times) > 1:
            return {}
        if how == "exception":
            raise SinkUnavailable("throttled", retry_after=2)
        return {i: Failure(True, "throttled", retry_after=2.0) for i in range(len(batch))}

    return behaviour


@pytest.mark.parametrize("how", ["failure", "exception"])
@pytest.mark.parametrize("ordered", [True, False])
async def test_a_sink_asking_to_retry_after_2s_is_not_called_sooner_by_any_lane(how, ordered):
    clock = FakeClock()
    times: list[float] = []
    sink = ScriptedSink(ordered=ordered, behaviour=throttle_first_call(clock, times, how))
    route = make_route(
        sink, clock=clock, batch_size=10, retry={"initial_backoff": 0.01, "max_backoff": 0.01}
    )
    first, second = progress("shardId-1"), progress("shardId-2")
    dispatches = [ShardDispatch(p, [route], route.metrics) for p in (first, second)]
    page1, page2 = [rec(i) for i in range(10)], [rec(i) for i in range(10, 20)]
    with anyio.fail_after(10):
        async with anyio.create_task_group() as clock_driver:
            async with anyio.create_task_group() as tg:
                for dispatch in dispatches:
                    tg.start_soon(dispatch.run)
                await dispatches[0].submit(page1, seq_of(9))
                while not times:  # the first shard's first send: "retry after 2 s"
                    await anyio.lowlevel.checkpoint()
                await dispatches[1].submit(page2, seq_of(19))  # another shard's lane
                for dispatch in dispatches:
                    dispatch.close()
                clock_driver.start_soon(clock.run)  # time passes from here on
            clock_driver.cancel_scope.cancel()
    assert times[0] == 0.0
    assert len(times) == 3
    assert all(t >= 2.0 for t in times[1:]), times
    # The batch's own retry waited at least as long (its backoff alone would be 10 ms).
    assert sink.events.sleeps[0] >= 2.0
    # Not split in halves: those would have called the sink sooner than it asked.
    assert [len(call) for call in sink.calls if seq_of(0) in call] == [10, 10]
    assert sorted(seqs(sink.delivered)) == [seq_of(i) for i in range(20)]
    assert first.frontier == seq_of(9)
    assert second.frontier == seq_of(19)


async def test_a_send_that_raises_without_retry_after_is_still_bisected():
    clock = FakeClock()
    calls: list[int] = []

    def behaviour(batch: Sequence[Record]) -> Failures:
        calls.append(len(batch))
        if len(calls) == 1:
            raise SinkUnavailable("down")
        return {}

    sink = ScriptedSink(ordered=True, behaviour=behaviour)
    route = make_route(sink, clock=clock, batch_size=8)
    dispatch = ShardDispatch(progress(), [route], route.metrics)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(dispatch.run)
            await dispatch.submit([rec(i) for i in range(8)], seq_of(7))
            dispatch.close()
    assert calls == [8, 4, 4]
    assert clock.now == 0.0  # no pause, no backoff: the halves went out at once


async def test_the_longest_pause_wins_and_a_gate_waits_it_out():
    clock = FakeClock()
    gate = SinkGate(clock=clock, sleep=clock.sleep)
    gate.hold_off(3.0)
    gate.hold_off(1.0)  # shorter: the 3 s pause stays
    gate.hold_off(None)
    assert gate.not_before == 3.0
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.run)
            async with gate:
                assert clock.now >= 3.0
            tg.cancel_scope.cancel()
    entered = clock.now
    async with gate:  # the pause is over
        assert clock.now == entered


def test_retry_after_is_read_from_failures_and_exceptions():
    assert retry_after({}) is None
    assert retry_after({0: Failure(True, "x"), 1: Failure(True, "y", retry_after=1.5)}) == 1.5
    assert retry_after({0: Failure(True, "x", 4), 1: Failure(True, "y", retry_after=1.5)}) == 4
    assert retry_after(SinkUnavailable("busy", retry_after=2)) == 2.0
    assert retry_after(SinkUnavailable("busy")) is None
    assert retry_after(ConnectionError("reset")) is None
    odd = ValueError("odd")
    for value in (True, -1, 0, "2", math.nan):
        odd.retry_after = value  # type: ignore[attr-defined]
        assert retry_after(odd) is None
    # No answer stops a sink for longer than an hour, however long it asks for.
    assert retry_after(SinkUnavailable("busy", retry_after=86_400 * 365)) == MAX_RETRY_AFTER_S
    assert retry_after({0: Failure(True, "x", retry_after=math.inf)}) == MAX_RETRY_AFTER_S


async def test_a_base_exception_from_a_sink_leaves_the_gate_as_call_crashed():
    from fanout.errors import CallCrashed

    class Exits:
        name = "exits"
        ordered = True

        async def send(self, batch: Sequence[Record]) -> Failures:
            raise SystemExit(2)

    gate = SinkGate(1)
    with pytest.raises(CallCrashed, match="sink exits raised SystemExit: 2"):
        await gate.send(Exits(), [])  # type: ignore[arg-type]
    assert gate.enter_nowait()  # its slot was given back
