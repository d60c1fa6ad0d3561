from __future__ import annotations

import sqlite3

import anyio
import pytest

from fanout.errors import CheckpointError
from fanout.progress.sqlite import SQLiteCheckpointStore
from fanout.progress.store import CheckpointRow
from fanout.progress.tracker import ShardProgress

ARN = "arn:aws:dynamodb:us-east-1:1:table/T/stream/x"


def test_frontier_stops_at_first_unsettled_page():
    progress = ShardProgress("s", ARN, "shard-1", "10")
    first, second, third = progress.open("20"), progress.open("30"), progress.open("40")
    for ticket in (first, second, third):
        ticket.pending += 5
        ticket.settle(1)  # the reader's hold
    third.settle(5)
    second.settle(5)
    assert progress.frontier == "10"
    assert not progress.dirty
    first.settle(4)
    assert progress.frontier == "10"
    first.settle(1)
    assert progress.frontier == "40"
    assert progress.dirty
    assert not progress.pending


def test_reader_hold_keeps_a_page_open_until_every_sink_got_it():
    progress = ShardProgress("s", ARN, "shard-1", None)
    ticket = progress.open("20")
    ticket.pending += 3  # sink A's records
    ticket.settle(3)  # sink A delivers before sink B was handed its part
    assert progress.frontier is None
    ticket.pending += 2
    ticket.settle(1)
    ticket.settle(2)
    assert progress.frontier == "20"


async def test_drained_waits_for_every_ticket():
    progress = ShardProgress("s", ARN, "shard-1", None)
    ticket = progress.open("20")
    done = []

    async def waiter():
        await progress.drained()
        done.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.01)
        assert not done
        ticket.settle(1)
    assert done == [True]


async def test_store_round_trip_and_finished_is_sticky(tmp_path):
    store = SQLiteCheckpointStore(tmp_path / "sub" / "cp.db")
    await store.open()
    await store.save([CheckpointRow(ARN, "a", "100", False), CheckpointRow(ARN, "b", "7", False)])
    await store.save([CheckpointRow(ARN, "a", "150", False)])
    await store.save([CheckpointRow(ARN, "b", None, True)])
    await store.save([CheckpointRow(ARN, "b", "8", False)])  # finished never goes back
    loaded = await store.load(ARN)
    assert loaded["a"].sequence == "150"
    assert not loaded["a"].finished
    assert loaded["b"].sequence == "8"
    assert loaded["b"].finished
    assert await store.load("other") == {}
    await store.aclose()
    # A second process sees the same (the file is the truth).
    again = SQLiteCheckpointStore(tmp_path / "sub" / "cp.db")
    assert (await again.load(ARN))["a"].sequence == "150"
    assert len(await again.all()) == 2
    await again.aclose()


async def test_stream_start_is_stored_once(tmp_path):
    store = SQLiteCheckpointStore(tmp_path / "cp.db")
    assert await store.stream_start(ARN, 1000.0) == (1000.0, True)
    assert await store.stream_start(ARN, 2000.0) == (1000.0, False)
    await store.aclose()


async def test_prune_removes_only_finished_unlisted_shards(tmp_path):
    store = SQLiteCheckpointStore(tmp_path / "cp.db")
    await store.save(
        [
            CheckpointRow(ARN, "old", "1", True),
            CheckpointRow(ARN, "listed", "2", True),
            CheckpointRow(ARN, "open", "3", False),
        ]
    )
    assert await store.prune(ARN, ["listed"]) == 1
    assert set(await store.load(ARN)) == {"listed", "open"}
    await store.aclose()


async def test_store_errors_are_checkpoint_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = SQLiteCheckpointStore(blocker / "cp.db")
    with pytest.raises(CheckpointError):
        await store.open()


def test_kill_during_write_leaves_the_previous_checkpoint(tmp_path):
    # WAL + synchronous=FULL: an uncommitted transaction is invisible after a crash.
    path = tmp_path / "cp.db"

    async def setup():
        store = SQLiteCheckpointStore(path)
        await store.save([CheckpointRow(ARN, "a", "100", False)])
        await store.aclose()

    anyio.run(setup)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    db.execute("UPDATE checkpoints SET sequence_number = '999'")
    # no COMMIT: the process "dies" here
    other = sqlite3.connect(path)
    assert other.execute("SELECT sequence_number FROM checkpoints").fetchone() == ("100",)
    db.close()
    other.close()


async def test_the_database_and_its_wal_and_shm_are_readable_by_the_worker_only(tmp_path):
    import os
    import stat

    old = os.umask(0o022)  # the usual umask: SQLite alone would create them 0644
    try:
        store = SQLiteCheckpointStore(tmp_path / "cp.db")
        await store.open()
        await store.save([CheckpointRow(ARN, "a", "100", False)])
        files = sorted(p.name for p in tmp_path.iterdir())
        assert files == ["cp.db", "cp.db-shm", "cp.db-wal"]
        assert {stat.S_IMODE((tmp_path / f).stat().st_mode) for f in files} == {0o600}
        await store.aclose()
    finally:
        os.umask(old)


def _open_at(path: str, start: float) -> None:
    import time
    from pathlib import Path

    from fanout.progress.sqlite_schema import connect

    while time.time() < start:  # both at once, to the microsecond
        pass
    connect(Path(path)).close()


def test_two_processes_opening_a_new_database_at_once_both_get_it(tmp_path):
    # Both switch the new file to WAL mode, which SQLite refuses at once (no busy timeout)
    # to the one that comes second: it waits and tries again.
    import multiprocessing
    import time

    fork = multiprocessing.get_context("fork")
    for attempt in range(12):
        path = str(tmp_path / f"race{attempt}.db")
        start = time.time() + 0.1
        procs = [fork.Process(target=_open_at, args=(path, start)) for _ in range(2)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(30)
        assert [proc.exitcode for proc in procs] == [0, 0], f"attempt {attempt}"
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        db.close()
