"""The store contract on the in-memory and SQLite stores; SQLite's upgrade of files from
before applications, and conditional writes between two processes on one file."""

from __future__ import annotations

import logging
import multiprocessing
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from fanout.progress.sqlite import SQLiteCheckpointStore
from fanout.progress.store import CheckpointStore, Claim
from tests.store_contract import ARN, CHECKS
from tests.unit.stream_fakes import MemoryCheckpointStore


@asynccontextmanager
async def memory_pair(tmp_path: Path) -> AsyncIterator[tuple[CheckpointStore, CheckpointStore]]:
    yield MemoryCheckpointStore("app"), MemoryCheckpointStore("other")


@asynccontextmanager
async def sqlite_pair(tmp_path: Path) -> AsyncIterator[tuple[CheckpointStore, CheckpointStore]]:
    store = SQLiteCheckpointStore(tmp_path / "fanout.db", "app")
    other = SQLiteCheckpointStore(tmp_path / "fanout.db", "other")
    await store.open()
    await other.open()
    try:
        yield store, other
    finally:
        await store.aclose()
        await other.aclose()


PAIRS = {"memory": memory_pair, "sqlite": sqlite_pair}


@pytest.mark.parametrize("kind", sorted(PAIRS))
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_store_contract(
    tmp_path: Path,
    kind: str,
    check: Callable[[CheckpointStore, CheckpointStore], Awaitable[None]],
) -> None:
    async with PAIRS[kind](tmp_path) as (store, other):
        await check(store, other)


def _old_file(path: Path) -> None:
    """A checkpoint file as fanout wrote it before applications existed."""
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE checkpoints (
            stream_arn TEXT NOT NULL, shard_id TEXT NOT NULL, sequence_number TEXT,
            finished INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL,
            PRIMARY KEY (stream_arn, shard_id));
        CREATE TABLE stream_starts (
            stream_arn TEXT PRIMARY KEY, start_timestamp REAL NOT NULL, created_at REAL NOT NULL);
        """
    )
    db.execute("INSERT INTO checkpoints VALUES (?, 'a', '150', 0, 10.0)", (ARN,))
    db.execute("INSERT INTO checkpoints VALUES (?, 'b', '8', 1, 11.0)", (ARN,))
    db.execute("INSERT INTO stream_starts VALUES (?, 5.0, 6.0)", (ARN,))
    db.commit()
    db.close()


async def test_a_file_from_before_applications_is_adopted_once(tmp_path, caplog):
    path = tmp_path / "fanout.db"
    _old_file(path)
    caplog.set_level(logging.INFO, "fanout.checkpoint")
    store = SQLiteCheckpointStore(path, "orders")
    rows = await store.load(ARN)
    assert (rows["a"].sequence, rows["a"].finished, rows["a"].updated_at) == ("150", False, 10.0)
    assert (rows["b"].sequence, rows["b"].finished) == ("8", True)
    assert await store.stream_start(ARN, 99.0) == (5.0, False)
    await store.aclose()
    (adopted,) = [r for r in caplog.records if r.getMessage() == "checkpoints_adopted"]
    assert (adopted.__dict__["application"], adopted.__dict__["shards"]) == ("orders", 2)
    # once: another application opening the file later starts empty
    other = SQLiteCheckpointStore(path, "audit")
    assert await other.load(ARN) == {}
    await other.aclose()
    again = SQLiteCheckpointStore(path, "orders")
    assert set(await again.load(ARN)) == {"a", "b"}
    await again.aclose()
    assert len([r for r in caplog.records if r.getMessage() == "checkpoints_adopted"]) == 1


def _take_all(path: str, owner: str, shards: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    async def main() -> int:
        store = SQLiteCheckpointStore(path, "app")
        won = 0
        for i in range(shards):
            taken = await store.take([Claim(ARN, f"s{i}", None, 0)], owner)
            won += taken[0] is not None
        await store.aclose()
        return won

    out.put(anyio.run(main))


async def test_two_processes_never_both_take_one_lease(tmp_path):
    path = tmp_path / "fanout.db"
    store = SQLiteCheckpointStore(path, "app")
    await store.ensure(ARN, [f"s{i}" for i in range(200)])
    await store.aclose()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_take_all, args=(str(path), n, 200, out)) for n in ("p1", "p2")]
    for p in procs:
        p.start()
    won = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert sum(won) == 200  # every lease taken exactly once
    check = SQLiteCheckpointStore(path, "app")
    owners = {r.owner for r in await check.all()}
    counters = {r.counter for r in await check.all()}
    await check.aclose()
    assert owners <= {"p1", "p2"}
    assert counters == {1}
