"""The SQLite checkpoint store: one file, one worker."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.to_thread

from fanout.errors import CheckpointError
from fanout.isolation import Offload
from fanout.progress.store import Checkpoint, CheckpointRow

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    stream_arn TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    sequence_number TEXT,
    finished INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    PRIMARY KEY (stream_arn, shard_id)
);
CREATE TABLE IF NOT EXISTS stream_starts (
    stream_arn TEXT PRIMARY KEY,
    start_timestamp REAL NOT NULL,
    created_at REAL NOT NULL
);
"""


class SQLiteCheckpointStore:
    """Checkpoints in one SQLite file (one worker). Safe against ``kill -9`` at any moment.

    Writes are transactions in WAL mode with ``synchronous=FULL``: a checkpoint that
    ``save()`` returned for is on disk, and a crash mid-write leaves the previous one.
    Calls run in a worker thread of the store's own (never one a sink's slow call could
    take), so the event loop never waits on the disk. ``probe()`` reads on a connection and
    thread of its own, so a readiness probe never queues behind checkpoint writes.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock = anyio.Lock()
        self._limiter = anyio.CapacityLimiter(1)
        self._prober = Offload(1, "fanout-store-probe")
        self._probe_db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                if self.path.parent != Path():
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.executescript(_SCHEMA)
            except (sqlite3.Error, OSError) as exc:
                raise CheckpointError(f"cannot open checkpoint store {self.path}: {exc}") from exc
            self._db = db
        return self._db

    async def _run(self, fn: str, *args: object) -> object:
        async with self._lock:
            try:
                return await anyio.to_thread.run_sync(
                    getattr(self, fn), *args, limiter=self._limiter
                )
            except sqlite3.Error as exc:
                raise CheckpointError(f"checkpoint store {self.path}: {exc}") from exc

    async def open(self) -> None:
        await self._run("_connect")

    async def aclose(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            async with self._lock:
                await anyio.to_thread.run_sync(db.close, limiter=self._limiter)
        if self._probe_db is not None and not self._prober.running:
            probe_db, self._probe_db = self._probe_db, None
            await self._prober.run(probe_db.close)

    async def probe(self) -> None:
        """A cheap read on a connection of its own (WAL lets it in beside a write).

        Raises:
            CheckpointError: the store cannot be read.
        """
        try:
            await self._prober.run(self._probe)
        except sqlite3.Error as exc:
            raise CheckpointError(f"checkpoint store {self.path}: {exc}") from exc

    # -- sync bodies (run in a thread) ------------------------------------------------------

    def _probe(self) -> None:
        if self._probe_db is None:
            self._probe_db = sqlite3.connect(self.path, check_same_thread=False)
        self._probe_db.execute("SELECT count(*) FROM sqlite_master").fetchone()

    def _load(self, stream_arn: str) -> dict[str, Checkpoint]:
        rows = self._connect().execute(
            "SELECT shard_id, sequence_number, finished, updated_at FROM checkpoints "
            "WHERE stream_arn = ?",
            (stream_arn,),
        )
        return {r[0]: Checkpoint(stream_arn, r[0], r[1], bool(r[2]), r[3]) for r in rows}

    def _save(self, rows: Sequence[CheckpointRow]) -> None:
        db = self._connect()
        now = time.time()
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT INTO checkpoints (stream_arn, shard_id, sequence_number, finished, "
                "updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (stream_arn, shard_id) DO UPDATE "
                "SET sequence_number = COALESCE(excluded.sequence_number, sequence_number), "
                "finished = MAX(finished, excluded.finished), updated_at = excluded.updated_at",
                [(r.stream_arn, r.shard_id, r.sequence, int(r.finished), now) for r in rows],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _start(self, stream_arn: str, timestamp: float) -> tuple[float, bool]:
        db = self._connect()
        row = db.execute(
            "SELECT start_timestamp FROM stream_starts WHERE stream_arn = ?", (stream_arn,)
        ).fetchone()
        if row is not None:
            return float(row[0]), False
        db.execute(
            "INSERT INTO stream_starts (stream_arn, start_timestamp, created_at) VALUES (?, ?, ?)",
            (stream_arn, timestamp, time.time()),
        )
        return timestamp, True

    def _prune(self, stream_arn: str, keep: Sequence[str]) -> int:
        db = self._connect()
        marks = ",".join("?" * len(keep)) or "''"
        cursor = db.execute(
            f"DELETE FROM checkpoints WHERE stream_arn = ? AND finished = 1 "  # noqa: S608
            f"AND shard_id NOT IN ({marks})",
            (stream_arn, *keep),
        )
        return cursor.rowcount

    def _all(self) -> list[Checkpoint]:
        rows = self._connect().execute(
            "SELECT stream_arn, shard_id, sequence_number, finished, updated_at FROM checkpoints "
            "ORDER BY stream_arn, shard_id"
        )
        return [Checkpoint(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]

    # -- async API --------------------------------------------------------------------------

    async def load(self, stream_arn: str) -> dict[str, Checkpoint]:
        """Every checkpoint of a stream, by shard id."""
        result = await self._run("_load", stream_arn)
        assert isinstance(result, dict)
        return result

    async def save(self, rows: Sequence[CheckpointRow]) -> None:
        """Write ``rows`` in one transaction.

        A ``None`` sequence keeps the stored one; ``finished`` never goes back to False.
        """
        if rows:
            await self._run("_save", rows)

    async def stream_start(self, stream_arn: str, timestamp: float) -> tuple[float, bool]:
        """The stream's stored start time (for LATEST); stores ``timestamp`` on first call.

        Returns:
            ``(start_timestamp, created)``: created is True only for the very first call.
        """
        result = await self._run("_start", stream_arn, timestamp)
        assert isinstance(result, tuple)
        return result

    async def prune(self, stream_arn: str, keep: Sequence[str]) -> int:
        """Delete finished checkpoints of shards not in ``keep`` (no longer listed)."""
        result = await self._run("_prune", stream_arn, keep)
        assert isinstance(result, int)
        return result

    async def all(self) -> list[Checkpoint]:
        """Every checkpoint of every stream, ordered by stream ARN and shard id."""
        result = await self._run("_all")
        assert isinstance(result, list)
        return result
