"""Whole workers sharing one in-memory store: shards split by leases, a lost lease stops its
shard, a graceful stop hands the shards over, a finished parent's children follow it."""

from __future__ import annotations

import logging
import time
from collections import Counter

import anyio
import pytest

from fanout.progress.store import Checkpoint, WorkerRow
from tests.unit.stream_fakes import (
    Deliveries,
    FakeStreams,
    MemoryCheckpointStore,
    running,
    wait_delivered,
    wait_for,
    worker_config,
)

LEASES = {"lease_duration": 0.6}  # renewal every 0.2 s


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fanout")


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == name]


def row_of(store: MemoryCheckpointStore, arn: str, shard_id: str) -> Checkpoint:
    row = store.get(arn, shard_id)
    assert row is not None
    return row


def config(tmp_path, into: Deliveries, arn: str, **more):
    return worker_config(
        tmp_path,
        into,
        stream_arn=arn,
        checkpoints={"path": str(tmp_path / "fanout.db"), "interval": 0.01, **LEASES},
        **more,
    )


async def test_two_workers_split_the_shards_and_deliver_every_record_once(tmp_path):
    streams, store = FakeStreams(page_size=10), MemoryCheckpointStore()
    stream = streams.add_stream("Orders", shards=6)
    written = []
    for sh in stream.shards.values():
        written += streams.put(sh, [f"{sh.shard_id}-{i}" for i in range(20)])
    into_a, into_b = Deliveries(), Deliveries()
    async with (
        running(config(tmp_path, into_a, stream.arn), streams, store, worker_id="a") as a,
        running(config(tmp_path, into_b, stream.arn), streams, store, worker_id="b") as b,
    ):
        await wait_for(
            lambda: sorted(Counter(store.owners(stream.arn).values()).values()) == [3, 3],
            5,
        )
        for sh in stream.shards.values():
            written += streams.put(sh, [f"{sh.shard_id}-late-{i}" for i in range(5)])
        await wait_for(lambda: set(written) <= into_a.distinct() | into_b.distinct(), 5)
        assert a.worker.leases.live_workers() == b.worker.leases.live_workers() == 2
    delivered = into_a.seqs + into_b.seqs
    assert set(delivered) == set(written)
    # a hand-over settles and checkpoints before the lease moves: nothing twice
    assert len(delivered) == len(written)
    shard_of = {seq: sh.shard_id for sh in stream.shards.values() for seq in sh.sequence_numbers}
    late = {d.seq for d in into_b.items if "late" in d.key}
    assert {shard_of[s] for s in late}.isdisjoint(
        {shard_of[d.seq] for d in into_a.items if "late" in d.key}
    )


async def test_a_lost_lease_stops_the_shard_and_its_checkpoint(tmp_path, caplog):
    streams, store = FakeStreams(page_size=10), MemoryCheckpointStore()
    stream = streams.add_stream("Orders")
    shard = next(iter(stream.shards.values()))
    first = streams.put(shard, [f"k{i}" for i in range(5)])
    into = Deliveries()
    async with running(config(tmp_path, into, stream.arn), streams, store, worker_id="a") as run:
        await wait_delivered(into, first)
        await wait_for(lambda: row_of(store, stream.arn, shard.shard_id).sequence == first[-1])
        row = row_of(store, stream.arn, shard.shard_id)
        # another worker takes the lease (as after a pause past the lease)
        store.rows[(stream.arn, shard.shard_id)] = Checkpoint(
            stream.arn, shard.shard_id, row.sequence, False, row.updated_at, "z", row.counter + 1
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(beat, store, "z")  # z is alive: a must not take the shard back
            await wait_for(lambda: bool(events(caplog, "lease_lost")), 3)
            later = streams.put(shard, [f"late{i}" for i in range(5)])
            await anyio.sleep(0.5)
            assert not set(later) & into.distinct()
            assert row_of(store, stream.arn, shard.shard_id).sequence == first[-1]
            assert shard.shard_id not in run.stream.running
            assert run.sample("fanout_lease_events_total", event="lost") == 1
            tg.cancel_scope.cancel()


async def beat(store: MemoryCheckpointStore, worker: str) -> None:
    """Keep a worker row beating, as a live peer does."""
    count = 0
    while True:
        count += 1
        store.workers[worker] = WorkerRow(worker, count, time.time(), time.time())
        await anyio.sleep(0.05)


async def test_a_graceful_stop_releases_so_a_peer_takes_over_without_waiting(tmp_path, caplog):
    streams, store = FakeStreams(page_size=10), MemoryCheckpointStore()
    stream = streams.add_stream("Orders", shards=4)
    into_a, into_b = Deliveries(), Deliveries()
    slow = {"lease_duration": 3.0}  # expiry would take 3 s; a release is seen in one cycle
    cfg_a = worker_config(
        tmp_path, into_a, stream_arn=stream.arn, checkpoints={"interval": 0.01, **slow}
    )
    cfg_b = worker_config(
        tmp_path, into_b, stream_arn=stream.arn, checkpoints={"interval": 0.01, **slow}
    )
    async with running(cfg_b, streams, store, worker_id="b"):
        async with running(cfg_a, streams, store, worker_id="a"):
            await wait_for(lambda: set(store.owners(stream.arn).values()) == {"a", "b"}, 10)
        stopped = anyio.current_time()
        assert "a" not in store.workers
        await wait_for(lambda: set(store.owners(stream.arn).values()) == {"b"}, 3)
        assert anyio.current_time() - stopped < 1.5  # one renewal interval, not an expiry
        written = []
        for sh in stream.shards.values():
            written += streams.put(sh, ["x", "y"])
        await wait_delivered(into_b, written)
    assert len(events(caplog, "leases_released")) == 2


async def test_a_child_waits_for_a_parent_finished_by_another_worker(tmp_path):
    streams, store = FakeStreams(page_size=10), MemoryCheckpointStore()
    stream = streams.add_stream("Orders", shards=2)
    p1, p2 = stream.shards.values()
    streams.put(p1, ["a1"])
    streams.put(p2, ["b1"])
    c1 = streams.rollover(p1)
    c2 = streams.rollover(p2)
    streams.put(c1, ["a2"])
    streams.put(c2, ["b2"])
    into = Deliveries()  # both workers' sinks append here: one global order
    async with (
        running(config(tmp_path, into, stream.arn), streams, store, worker_id="a"),
        running(config(tmp_path, into, stream.arn), streams, store, worker_id="b"),
    ):
        await wait_for(lambda: len(into.distinct()) == 4, 5)
    order = [d.key for d in into.items]
    assert sorted(order) == ["a1", "a2", "b1", "b2"]
    assert order.index("a1") < order.index("a2")
    assert order.index("b1") < order.index("b2")
    assert row_of(store, stream.arn, p1.shard_id).finished
    assert row_of(store, stream.arn, p2.shard_id).finished
