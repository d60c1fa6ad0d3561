"""The lease protocol in-process: coordinators on one in-memory store, a clock the test moves."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from fanout.errors import ConfigError
from fanout.observe.metrics import Metrics
from fanout.progress.leases import LeaseCoordinator
from fanout.progress.renewals import HeldLease, LeaseTiming
from fanout.progress.store import Checkpoint, CheckpointRow, Claim, LeaseToken
from tests.unit.stream_fakes import MemoryCheckpointStore

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/2026-01-01T00:00:00.000"
SINKS = {"audit": "file", "search": "handler"}
DURATION = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Graph:
    """A stream being read, as the coordinator sees it."""

    shards: list[str]
    max_shards: int = 100
    reading: dict[str, HeldLease] = field(default_factory=dict)
    rows: dict[str, Checkpoint] = field(default_factory=dict)
    lost_ids: list[str] = field(default_factory=list)
    handed: list[str] = field(default_factory=list)
    finished: set[str] = field(default_factory=set)
    stream_name: str = "orders"
    stream_arn: str = ARN

    def wanted(self) -> list[str]:
        return [s for s in self.shards if s not in self.reading and s not in self.finished]

    def capacity(self) -> int:
        return self.max_shards - len(self.reading)

    def acquired(self, row: Checkpoint, lease: HeldLease) -> bool:
        self.reading[row.shard_id] = lease
        self.rows[row.shard_id] = row
        return True

    def lost(self, shard_id: str) -> None:
        self.reading.pop(shard_id, None)
        self.lost_ids.append(shard_id)

    async def hand_over(self, shard_id: str) -> None:
        self.reading.pop(shard_id, None)
        self.handed.append(shard_id)

    def observed(self, rows: dict[str, Checkpoint]) -> None:
        self.finished |= {sid for sid, r in rows.items() if r.finished}


SHARDS = [f"shardId-{i:03d}" for i in range(12)]


def coordinator(
    store: MemoryCheckpointStore,
    clock: Callable[[], float],
    name: str,
    *,
    sinks: dict[str, str] | None = None,
    group_size: int = 1,
) -> LeaseCoordinator:
    return LeaseCoordinator(
        store,
        Metrics(),
        sinks=sinks or SINKS,
        timing=LeaseTiming(DURATION),
        worker_id=name,
        clock=clock,
        group_size=group_size,
    )


async def started(
    store: MemoryCheckpointStore,
    clock: Callable[[], float],
    name: str,
    shards: list[str] | None = None,
) -> tuple[LeaseCoordinator, Graph]:
    c = coordinator(store, clock, name)
    await c.start()
    graph = Graph(list(SHARDS if shards is None else shards))
    c.subscribe(graph)
    return c, graph


async def rounds(*coordinators: LeaseCoordinator, clock: Clock, times: int = 1) -> None:
    """Each coordinator runs a full cycle, then the clock moves on a renewal interval."""
    for _ in range(times):
        for c in coordinators:
            await c.cycle(heartbeat=True)
        clock.advance(DURATION / 3)


def owners(store: MemoryCheckpointStore) -> dict[str, str | None]:
    return store.owners(ARN)


@pytest.fixture
def store() -> MemoryCheckpointStore:
    return MemoryCheckpointStore()


@pytest.fixture
def clock() -> Clock:
    return Clock()


# -- taking -----------------------------------------------------------------------------------


async def test_a_worker_alone_takes_every_readable_shard(store, clock):
    c, graph = await started(store, clock, "a")
    await c.cycle()
    assert set(graph.reading) == set(SHARDS)
    assert set(owners(store).values()) == {"a"}
    assert all(lease.token == LeaseToken("a", 1) for lease in graph.reading.values())


async def test_two_workers_split_the_shards_evenly(store, clock):
    a, ga = await started(store, clock, "a")
    b, gb = await started(store, clock, "b")
    await rounds(a, b, clock=clock, times=4)
    assert len(ga.reading) + len(gb.reading) == len(SHARDS)
    assert abs(len(ga.reading) - len(gb.reading)) <= 1
    assert not set(ga.reading) & set(gb.reading)


async def test_workers_started_together_wait_for_each_other_before_taking(store, clock):
    a = coordinator(store, clock, "a", group_size=2)
    b = coordinator(store, clock, "b", group_size=2)
    await a.start()
    ga = Graph(list(SHARDS))
    a.subscribe(ga)
    await a.cycle()
    assert not ga.reading  # alone so far: waits for its sibling
    await b.start()
    gb = Graph(list(SHARDS))
    b.subscribe(gb)
    await a.cycle()
    await b.cycle()
    assert (len(ga.reading), len(gb.reading)) == (6, 6)


async def test_a_shard_beyond_max_shards_is_left_for_others(store, clock):
    c, graph = await started(store, clock, "a")
    graph.max_shards = 5
    await c.cycle()
    assert len(graph.reading) == 5
    assert c.metrics.registry.get_sample_value("fanout_shards_unowned", {"stream": "orders"}) == 7


# -- expiry -----------------------------------------------------------------------------------


async def test_a_dead_workers_leases_are_taken_after_one_lease_duration_not_before(store, clock):
    a, ga = await started(store, clock, "a")
    b, gb = await started(store, clock, "b")
    await rounds(a, b, clock=clock, times=3)
    theirs = set(ga.reading)
    assert theirs
    last_beat = clock.now - DURATION / 3  # a's last cycle; then it stops beating
    while clock.now - last_beat < DURATION:
        await b.cycle()
        assert not theirs & set(gb.reading), "taken before the lease could have expired"
        clock.advance(0.5)
    await b.cycle()
    assert theirs <= set(gb.reading)
    assert set(owners(store).values()) == {"b"}


async def test_an_owner_that_renewed_after_the_taker_looked_keeps_its_lease(store, clock):
    a, _ = await started(store, clock, "a", shards=SHARDS[:1])
    await a.cycle()
    seen = store.workers["a"].heartbeat  # what a taker saw standing still
    row = store.get(ARN, SHARDS[0])
    clock.advance(2.0)
    await a.cycle()  # a renews before the take lands
    stale = Claim(ARN, SHARDS[0], "a", row.counter, seen)
    assert await store.take([stale], "b") == [None]
    assert store.get(ARN, SHARDS[0]).owner == "a"
    current = Claim(ARN, SHARDS[0], "a", row.counter, store.workers["a"].heartbeat)
    (taken,) = await store.take([current], "b")
    assert taken is not None
    assert (taken.owner, taken.counter) == ("b", row.counter + 1)


async def test_a_lease_not_renewed_in_time_is_dropped_before_a_peer_may_take_it(store, clock):
    a, ga = await started(store, clock, "a", shards=SHARDS[:3])
    await a.cycle()
    leases = list(ga.reading.values())
    assert all(lease.valid() for lease in leases)
    store.failures, store.fail_ops = 100, {"heartbeat"}
    clock.advance(DURATION - LeaseTiming(DURATION).margin + 0.01)
    await a.cycle()
    assert not any(lease.valid() for lease in leases)
    assert sorted(ga.lost_ids) == sorted(SHARDS[:3])
    assert not a.held
    events = a.metrics.registry.get_sample_value(
        "fanout_lease_events_total", {"stream": "orders", "event": "renew_failed"}
    )
    assert events == 1


async def test_renewal_does_not_revive_a_lease_that_lapsed_meanwhile(store, clock):
    a, ga = await started(store, clock, "a", shards=SHARDS[:1])
    await a.cycle()
    (lease,) = ga.reading.values()
    clock.advance(DURATION)  # paused (SIGSTOP) past the lease
    await a.cycle()  # the heartbeat succeeds now, but the lease lapsed before it started
    assert not lease.valid()
    assert ga.lost_ids == SHARDS[:1]


async def test_a_lease_moved_elsewhere_is_lost_at_the_next_scan(store, clock):
    a, ga = await started(store, clock, "a", shards=SHARDS[:2])
    await a.cycle()
    row = store.rows[(ARN, SHARDS[0])]
    store.rows[(ARN, SHARDS[0])] = Checkpoint(
        ARN, SHARDS[0], row.sequence, False, row.updated_at, "z", row.counter + 1
    )
    clock.advance(0.1)
    await a.cycle(heartbeat=False)
    assert ga.lost_ids == [SHARDS[0]]
    assert set(ga.reading) == {SHARDS[1]}


# -- checkpoints under leases -----------------------------------------------------------------


async def test_a_checkpoint_under_a_lease_that_moved_is_rejected(store, clock):
    a, ga = await started(store, clock, "a", shards=SHARDS[:1])
    await a.cycle()
    (lease,) = ga.reading.values()
    ok = await store.save([CheckpointRow(ARN, SHARDS[0], "100", False, lease.token)])
    assert ok == []
    b, gb = await started(store, clock, "b", shards=SHARDS[:1])
    clock.advance(DURATION + 1)
    await b.cycle()
    clock.advance(DURATION + 1)
    await b.cycle()
    assert set(gb.reading) == {SHARDS[0]}
    stale = CheckpointRow(ARN, SHARDS[0], "50", False, lease.token)
    assert await store.save([stale]) == [stale]
    assert store.get(ARN, SHARDS[0]).sequence == "100"
    a.rejected([stale])
    assert ga.lost_ids == [SHARDS[0]]


async def test_a_finished_row_written_with_its_lease_releases_it(store, clock):
    a, ga = await started(store, clock, "a", shards=SHARDS[:1])
    await a.cycle()
    (lease,) = ga.reading.values()
    await store.save([CheckpointRow(ARN, SHARDS[0], "7", True, lease.token)])
    row = store.get(ARN, SHARDS[0])
    assert (row.finished, row.owner, row.counter) == (True, None, lease.token.counter + 1)


# -- balancing --------------------------------------------------------------------------------


async def test_a_joining_worker_gets_its_share_through_hand_overs(store, clock):
    a, ga = await started(store, clock, "a")
    b, gb = await started(store, clock, "b")
    await rounds(a, b, clock=clock, times=3)
    c, gc = await started(store, clock, "c")
    await rounds(a, b, c, clock=clock, times=6)
    counts = sorted(len(g.reading) for g in (ga, gb, gc))
    assert counts == [4, 4, 4]
    assert ga.handed or gb.handed
    assert not ga.lost_ids  # handed over, never taken by force
    assert not gb.lost_ids
    held = [set(g.reading) for g in (ga, gb, gc)]
    assert sum(map(len, held)) == len(set().union(*held)) == len(SHARDS)


async def test_a_hand_over_that_never_comes_is_taken_after_one_lease_duration(store, clock):
    a, ga = await started(store, clock, "a")
    await a.cycle()
    b, gb = await started(store, clock, "b")

    async def refuse(shard_id: str) -> None:
        raise AssertionError("not handing over")

    await b.cycle()
    asked = {sid for sid, r in store.rows.items() if r.handoff_to == "b"}
    assert 0 < len(asked) <= 4
    a.stop_taking()  # a keeps renewing but never answers hand-over requests
    a._hand_over_asked = lambda view, rows: _nothing()  # type: ignore[method-assign]
    for _ in range(4):
        clock.advance(DURATION / 3)
        await a.cycle()
        await b.cycle()
    assert len(gb.reading) >= len(asked)
    await a.cycle()
    assert set(ga.lost_ids) >= {sid for _, sid in asked}


async def _nothing() -> None:
    return None


async def test_release_all_lets_a_peer_take_at_once(store, clock):
    a, ga = await started(store, clock, "a")
    b, gb = await started(store, clock, "b")
    await rounds(a, b, clock=clock, times=3)
    mine = set(ga.reading)
    await a.release_all()
    assert "a" not in store.workers
    await b.cycle()  # no waiting for expiry
    assert set(gb.reading) == set(SHARDS)
    assert mine <= set(gb.reading)
    released = a.metrics.registry.get_sample_value(
        "fanout_lease_events_total", {"stream": "orders", "event": "released"}
    )
    assert released == len(mine)


async def test_children_are_taken_at_once_by_the_worker_that_finished_the_parent(store, clock):
    a, ga = await started(store, clock, "a", shards=["parent"])
    b, _ = await started(store, clock, "b", shards=[])
    await rounds(a, b, clock=clock)
    (lease,) = ga.reading.values()
    await store.save([CheckpointRow(ARN, "parent", "9", True, lease.token)])
    a.finished(ARN, "parent")
    ga.reading.clear()
    ga.shards += ["child-1", "child-2"]
    await a.take_now(ARN, ["child-1", "child-2"])
    assert set(ga.reading) == {"child-1", "child-2"}


# -- the sink set -----------------------------------------------------------------------------


async def test_a_worker_with_other_sinks_than_a_live_worker_refuses_to_start(store, clock):
    a, _ = await started(store, clock, "a")
    other = coordinator(store, time.monotonic, "b", sinks={"audit": "file", "notify": "sqs"})

    async def beat() -> None:
        await a.cycle()

    # a keeps beating while b watches it
    import anyio

    async with anyio.create_task_group() as tg:

        async def keep_beating() -> None:
            for _ in range(50):
                await anyio.sleep(0.01)
                await beat()

        tg.start_soon(keep_beating)
        other.timing = LeaseTiming(0.3)
        with pytest.raises(ConfigError) as raised:
            await other.start()
        tg.cancel_scope.cancel()
    message = str(raised.value)
    assert raised.value.path == "sinks"
    assert "added notify" in message
    assert "removed search" in message
    assert "application 'fanout'" in message


async def test_changed_sinks_with_no_live_worker_are_logged_and_recorded(store, clock, caplog):
    a, _ = await started(store, clock, "a")
    await a.release_all()
    caplog.set_level(logging.WARNING, "fanout.leases")
    b = coordinator(store, clock, "b", sinks={"audit": "file", "notify": "sqs"})
    await b.start()
    (record,) = [r for r in caplog.records if r.getMessage() == "sinks_changed"]
    assert record.__dict__["added"] == ["notify"]
    assert record.__dict__["removed"] == ["search"]
    assert store.sinks == "audit=file,notify=sqs"


async def test_a_dead_worker_with_other_sinks_does_not_block_a_start(store):
    await started(store, time.monotonic, "a")  # registered, then never beats again
    b = coordinator(store, time.monotonic, "b", sinks={"audit": "file"})
    b.timing = LeaseTiming(0.2)
    await b.start()
    assert store.sinks == "audit=file"


# -- the heartbeat thread ---------------------------------------------------------------------


async def test_the_heartbeat_thread_renews_while_the_loop_is_busy_and_stops_if_it_is_wedged(
    store, caplog
):
    import anyio

    c = LeaseCoordinator(
        store, Metrics(), sinks=SINKS, timing=LeaseTiming(0.6), worker_id="a"
    )  # renewals every 0.2 s
    await c.start()
    first = store.workers["a"].heartbeat
    c.heartbeat.start()
    try:
        time.sleep(0.7)  # the loop does not run at all: the thread renews anyway
        assert store.workers["a"].heartbeat >= first + 2
        assert c.renewals.left() > 0
        c.heartbeat.loop_alive = time.monotonic() - 10  # no sign of the loop for 10 s: wedged
        await anyio.sleep(0.3)
        stuck = store.workers["a"].heartbeat
        time.sleep(0.5)
        assert store.workers["a"].heartbeat == stuck
        assert [r for r in caplog.records if r.getMessage() == "event_loop_blocked"]
        c.heartbeat.loop_alive = time.monotonic()
        await anyio.sleep(0.5)
        assert store.workers["a"].heartbeat > stuck
    finally:
        await c.heartbeat.stop()


async def test_leases_taken_after_a_slow_start_outlive_the_first_beat_of_the_thread(store, clock):
    """Registration renews once; the sinks may then take seconds to start. The first cycle
    must not take leases on that old renewal: they would lapse at the thread's first beat."""
    import anyio

    c, graph = await started(store, clock, "a")
    clock.advance(5.5)  # the sinks took 5.5 s to start: 2.5 s of validity left
    async with anyio.create_task_group() as tg:
        tg.start_soon(c.run)
        with anyio.fail_after(5):
            while len(graph.reading) < len(SHARDS):
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    # The thread's first beat, one renewal interval later, as it would write it.
    clock.advance(DURATION / 3)
    c.renewals.renewed(clock(), clock())
    assert all(lease.valid() for lease in graph.reading.values())
    c.holdings.expire()
    assert graph.lost_ids == []
