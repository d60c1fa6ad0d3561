"""The checkpoint writer on the memory store: coalesced flushes, grouped shard ends, retried
writes, failure accounting and the shielded last flush."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from fanout.errors import CheckpointError
from fanout.observe.metrics import Metrics
from fanout.progress.store import CheckpointRow
from fanout.progress.tracker import ShardProgress
from fanout.progress.writer import CheckpointWriter
from tests.unit.stream_fakes import MemoryCheckpointStore, instant_retry

ARN = "arn:aws:dynamodb:us-east-1:1:table/Orders/stream/x"


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fanout")


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == name]


def progress(shard: str, frontier: str | None = None, stream: str = "orders") -> ShardProgress:
    p = ShardProgress(stream, ARN, shard, None)
    if frontier is not None:
        p.open(frontier).settle(1)  # settled up to it: dirty
    return p


def written(metrics: Metrics, stream: str = "orders") -> float:
    value = metrics.registry.get_sample_value(
        "fanout_checkpoints_written_total", {"stream": stream}
    )
    return value or 0.0


def failures(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("fanout_checkpoint_failures_total") or 0.0


class Setup:
    def __init__(self, shards: list[ShardProgress] | None = None, **kw: Any) -> None:
        self.store = MemoryCheckpointStore()
        self.metrics = Metrics()
        self.shards = shards if shards is not None else []
        self.flushed = 0
        self.writer = CheckpointWriter(
            self.store,
            self.metrics,
            shards=lambda: self.shards,
            interval=kw.get("interval", 60.0),
            retry=instant_retry(),
            on_flush=self.on_flush,
        )

    def on_flush(self) -> None:
        self.flushed += 1


async def test_a_flush_writes_the_moved_frontiers_in_one_transaction():
    a, b, idle = progress("a", "10"), progress("b", "20", stream="users"), progress("c")
    s = Setup([a, b, idle])
    s.metrics.checkpoint_current(0.0)
    await s.writer.flush()
    assert s.store.saves == [
        [CheckpointRow(ARN, "a", "10"), CheckpointRow(ARN, "b", "20")]
    ]  # the idle shard has nothing to write
    assert not a.dirty
    assert not b.dirty
    assert (written(s.metrics), written(s.metrics, "users")) == (1, 1)
    stamp = s.metrics.registry.get_sample_value("fanout_last_checkpoint_timestamp_seconds")
    assert stamp is not None
    assert stamp > 0
    await s.writer.flush()  # nothing moved since: nothing written
    assert len(s.store.saves) == 1


async def test_a_failed_flush_writes_its_rows_next_time():
    a = progress("a", "10")
    s = Setup([a])
    s.store.failures = 1
    with pytest.raises(CheckpointError):
        await s.writer.flush()
    assert a.dirty
    assert s.store.saves == []
    await s.writer.flush()
    assert s.store.saves == [[CheckpointRow(ARN, "a", "10")]]


async def test_the_periodic_flush_counts_and_logs_failures_and_refreshes_gauges(caplog):
    a = progress("a", "10")
    s = Setup([a], interval=0.001)
    s.store.failures = 2
    async with anyio.create_task_group() as tg:
        tg.start_soon(s.writer.run)
        while not s.store.saves:
            await anyio.sleep(0.001)
        tg.cancel_scope.cancel()
    assert failures(s.metrics) == 2
    assert len(events(caplog, "checkpoint_failed")) == 2
    assert s.flushed >= 3
    assert s.store.saves == [[CheckpointRow(ARN, "a", "10")]]


async def test_close_writes_even_when_the_caller_is_cancelled():
    a = progress("a", "10")
    s = Setup([a])
    with anyio.CancelScope() as scope:
        scope.cancel()
        await s.writer.close()
    assert s.store.saves == [[CheckpointRow(ARN, "a", "10")]]


async def test_shards_that_end_meanwhile_share_one_transaction():
    shards = [progress(f"s{i}", str(i)) for i in range(4)]
    s = Setup(list(shards))
    gate = anyio.Event()
    save = s.store.save
    calls = 0

    async def slow_first(rows: Any) -> list[CheckpointRow]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await gate.wait()
        return await save(rows)

    s.store.save = slow_first  # type: ignore[method-assign]
    done: list[str] = []

    async def finish(p: ShardProgress) -> None:
        await s.writer.finish(p)
        done.append(p.shard_id)

    async with anyio.create_task_group() as tg:
        tg.start_soon(finish, shards[0])
        await anyio.sleep(0.01)
        for p in shards[1:]:
            tg.start_soon(finish, p)
        await anyio.sleep(0.01)
        assert done == []  # nothing returns before its row is durable
        gate.set()
    assert [[r.shard_id for r in rows] for rows in s.store.saves] == [["s0"], ["s1", "s2", "s3"]]
    assert all(r.finished for rows in s.store.saves for r in rows)
    assert sorted(done) == ["s0", "s1", "s2", "s3"]
    assert not any(p.dirty for p in shards)
    assert written(s.metrics) == 4


async def test_a_finished_write_is_retried_until_the_store_takes_it(caplog):
    a = progress("a", "10")
    s = Setup()
    s.store.failures = 3
    await s.writer.finish(a)
    assert s.store.get(ARN, "a").finished  # type: ignore[union-attr]
    assert failures(s.metrics) == 3
    failed = events(caplog, "checkpoint_failed")
    assert [(r.__dict__["shard"], r.__dict__["attempt"]) for r in failed] == [
        ("a", 1),
        ("a", 2),
        ("a", 3),
    ]


async def test_a_cancelled_finished_write_is_taken_by_the_next_one():
    a, b = progress("a", "10"), progress("b", "20")
    s = Setup()
    s.store.failures = 10**6  # the store is down
    with anyio.move_on_after(0.01):
        await s.writer.finish(a)
    s.store.failures = 0
    await s.writer.finish(b)
    assert [[r.shard_id for r in rows] for rows in s.store.saves] == [["a", "b"]]


async def test_direct_writes_and_reads_are_retried_and_logged(caplog):
    s = Setup()
    s.store.failures = 2
    await s.writer.save([CheckpointRow(ARN, "a", None, True)], stream="orders")
    s.store.failures = 1
    loaded = await s.writer.call(lambda: s.store.load(ARN), stream="orders")
    assert loaded["a"].finished
    assert failures(s.metrics) == 3
    logged = events(caplog, "checkpoint_store_failed")
    assert [(r.__dict__["stream"], r.__dict__["attempt"]) for r in logged] == [
        ("orders", 1),
        ("orders", 2),
        ("orders", 1),
    ]
