"""The SQLite checkpoint store: one file, shared by the worker processes of one host.

Every application's checkpoints, leases and worker rows live in one file; the worker
processes on it coordinate through the lease protocol of ``fanout.progress.leases`` exactly
as workers on a DynamoDB table do. Conditional writes run as ``BEGIN IMMEDIATE``
transactions (read, check, write, with the rules of ``fanout.progress.rules``), so they are
atomic between processes.

The store is put together from its parts: ``fanout.progress.sqlite_schema`` (the tables,
the file's creation and upgrade), ``fanout.progress.sqlite_db`` (connections, threads and
transactions), ``fanout.progress.sqlite_windows`` (window states) and
``fanout.progress.sqlite_backfill`` (backfill progress); this module holds checkpoints,
leases and worker rows.
"""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from fanout.errors import CheckpointError
from fanout.progress import rules
from fanout.progress.sqlite_backfill import SQLiteBackfills
from fanout.progress.sqlite_schema import connect
from fanout.progress.sqlite_windows import SQLiteWindows
from fanout.progress.store import (
    NO_WORKER_ROW,
    Checkpoint,
    CheckpointRow,
    Claim,
    LeaseToken,
    Release,
    Snapshot,
    WorkerRow,
)

_COLUMNS = (
    "stream_arn, shard_id, sequence_number, finished, updated_at, owner, counter, taken_at, "
    "handoff_to"
)


def _row(r: Sequence[Any]) -> Checkpoint:
    return Checkpoint(r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6], r[7], r[8])


class SQLiteCheckpointStore(SQLiteWindows, SQLiteBackfills):
    """Checkpoints and leases of one application in one SQLite file. Safe against
    ``kill -9`` at any moment.

    Writes are transactions in WAL mode with ``synchronous=FULL``: a checkpoint that
    ``save()`` returned for is on disk, and a crash mid-write leaves the previous one.
    Calls run in a worker thread of the store's own (never one a sink's slow call could
    take), so the event loop never waits on the disk. ``probe()`` reads on a connection and
    thread of its own, so a readiness probe never queues behind checkpoint writes.

    A file written before checkpoints had an application (one table keyed by stream and
    shard) is upgraded when first opened: its rows become the opening application's, once,
    and ``checkpoints_adopted`` is logged.

    Args:
        path: the database file (created with its directory if missing).
        application: whose rows this store reads and writes.
    """

    # -- sync bodies (run in a thread) ------------------------------------------------------

    def _get(self, db: sqlite3.Connection, stream_arn: str, shard_id: str) -> Checkpoint | None:
        r = db.execute(
            f"SELECT {_COLUMNS} FROM checkpoints "  # noqa: S608
            "WHERE application = ? AND stream_arn = ? AND shard_id = ?",
            (self._application, stream_arn, shard_id),
        ).fetchone()
        return _row(r) if r is not None else None

    def _put(self, db: sqlite3.Connection, row: Checkpoint) -> None:
        db.execute(
            "INSERT INTO checkpoints (application, stream_arn, shard_id, sequence_number, "
            "finished, updated_at, owner, counter, taken_at, handoff_to) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (application, stream_arn, shard_id) DO UPDATE SET "
            "sequence_number = excluded.sequence_number, finished = excluded.finished, "
            "updated_at = excluded.updated_at, owner = excluded.owner, "
            "counter = excluded.counter, taken_at = excluded.taken_at, "
            "handoff_to = excluded.handoff_to",
            (
                self._application,
                row.stream_arn,
                row.shard_id,
                row.sequence,
                int(row.finished),
                row.updated_at,
                row.owner,
                row.counter,
                row.taken_at,
                row.handoff_to,
            ),
        )

    def _load(self, stream_arn: str) -> dict[str, Checkpoint]:
        rows = self._connect().execute(
            f"SELECT {_COLUMNS} FROM checkpoints "  # noqa: S608
            "WHERE application = ? AND stream_arn = ?",
            (self._application, stream_arn),
        )
        return {r[1]: _row(r) for r in rows}

    def _save(self, rows: Sequence[CheckpointRow]) -> list[CheckpointRow]:
        def body(db: sqlite3.Connection) -> list[CheckpointRow]:
            now = time.time()
            rejected = []
            for row in rows:
                new = rules.checkpoint(self._get(db, row.stream_arn, row.shard_id), row, now)
                if new is None:
                    rejected.append(row)
                    continue
                self._put(db, new)
                if new.finished:  # a finished shard is never read again: its windows go
                    self._drop_windows(db, row.stream_arn, row.shard_id)
                    continue
                for window in row.windows:
                    self._put_window(db, row, window, now)
            return rejected

        return self._write(body)

    def _start(self, stream_arn: str, timestamp: float) -> tuple[float, bool]:
        def body(db: sqlite3.Connection) -> tuple[float, bool]:
            row = db.execute(
                "SELECT start_timestamp FROM stream_starts WHERE application = ? AND "
                "stream_arn = ?",
                (self._application, stream_arn),
            ).fetchone()
            if row is not None:
                return float(row[0]), False
            db.execute(
                "INSERT INTO stream_starts (application, stream_arn, start_timestamp, "
                "created_at) VALUES (?, ?, ?, ?)",
                (self._application, stream_arn, timestamp, time.time()),
            )
            return timestamp, True

        return self._write(body)

    def _prune(self, stream_arn: str, keep: Sequence[str]) -> int:
        marks = ",".join("?" * len(keep)) or "''"
        cursor = self._connect().execute(
            "DELETE FROM checkpoints WHERE application = ? AND stream_arn = ? "  # noqa: S608
            f"AND finished = 1 AND shard_id NOT IN ({marks})",
            (self._application, stream_arn, *keep),
        )
        return cursor.rowcount

    def _all(self) -> list[Checkpoint]:
        rows = self._connect().execute(
            f"SELECT {_COLUMNS} FROM checkpoints WHERE application = ? "  # noqa: S608
            "ORDER BY stream_arn, shard_id",
            (self._application,),
        )
        return [_row(r) for r in rows]

    def _scan(self) -> Snapshot:
        db = self._connect()
        # One read transaction: the shard rows and worker rows are of one moment.
        db.execute("BEGIN")
        try:
            shards = [
                _row(r)
                for r in db.execute(
                    f"SELECT {_COLUMNS} FROM checkpoints WHERE application = ? "  # noqa: S608
                    "ORDER BY stream_arn, shard_id",
                    (self._application,),
                )
            ]
            workers = [
                WorkerRow(*r)
                for r in db.execute(
                    "SELECT worker_id, heartbeat, heartbeat_at, started_at, host, pid, sinks, "
                    "leases FROM workers WHERE application = ? ORDER BY worker_id",
                    (self._application,),
                )
            ]
            sinks = db.execute(
                "SELECT sinks FROM applications WHERE application = ?", (self._application,)
            ).fetchone()
        finally:
            db.execute("COMMIT")
        return Snapshot(shards, workers, sinks[0] if sinks else None)

    def _ensure(self, stream_arn: str, shard_ids: Sequence[str]) -> dict[str, Checkpoint]:
        def body(db: sqlite3.Connection) -> dict[str, Checkpoint]:
            now = time.time()
            found = {}
            for sid in shard_ids:
                row = self._get(db, stream_arn, sid)
                if row is None:
                    row = rules.new_row(stream_arn, sid, now)
                    self._put(db, row)
                found[sid] = row
            return found

        return self._write(body)

    def _heartbeat_of(self, db: sqlite3.Connection, worker_id: str | None) -> int:
        if worker_id is None:
            return NO_WORKER_ROW
        r = db.execute(
            "SELECT heartbeat FROM workers WHERE application = ? AND worker_id = ?",
            (self._application, worker_id),
        ).fetchone()
        return int(r[0]) if r is not None else NO_WORKER_ROW

    def _take(self, claims: Sequence[Claim], owner: str) -> list[Checkpoint | None]:
        def body(db: sqlite3.Connection) -> list[Checkpoint | None]:
            now = time.time()
            taken: list[Checkpoint | None] = []
            for claim in claims:
                old = self._get(db, claim.stream_arn, claim.shard_id)
                beat = self._heartbeat_of(db, claim.owner) if claim.heartbeat is not None else 0
                new = rules.take(old, claim, owner, beat, now)
                if new is not None:
                    self._put(db, new)
                taken.append(new)
            return taken

        return self._write(body)

    def _release(self, releases: Sequence[Release]) -> list[bool]:
        def body(db: sqlite3.Connection) -> list[bool]:
            now = time.time()
            done = []
            for rel in releases:
                new = rules.release(self._get(db, rel.stream_arn, rel.shard_id), rel, now)
                if new is not None:
                    self._put(db, new)
                done.append(new is not None)
            return done

        return self._write(body)

    def _handoff(self, stream_arn: str, shard_id: str, lease: LeaseToken, to: str) -> bool:
        def body(db: sqlite3.Connection) -> bool:
            old = self._get(db, stream_arn, shard_id)
            new = rules.request_handoff(old, lease.owner, lease.counter, to)
            if new is not None:
                self._put(db, new)
            return new is not None

        return self._write(body)

    def _heartbeat(self, w: WorkerRow, db: sqlite3.Connection | None = None) -> None:
        (db or self._connect()).execute(
            "INSERT INTO workers (application, worker_id, heartbeat, heartbeat_at, started_at, "
            "host, pid, sinks, leases) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (application, worker_id) DO UPDATE SET heartbeat = excluded.heartbeat, "
            "heartbeat_at = excluded.heartbeat_at, leases = excluded.leases, "
            "sinks = excluded.sinks",
            (
                self._application,
                w.worker_id,
                w.heartbeat,
                w.heartbeat_at,
                w.started_at,
                w.host or socket.gethostname(),
                w.pid,
                w.sinks,
                w.leases,
            ),
        )

    def _remove_worker(self, worker_id: str, heartbeat: int | None) -> None:
        if heartbeat is None:
            self._connect().execute(
                "DELETE FROM workers WHERE application = ? AND worker_id = ?",
                (self._application, worker_id),
            )
        else:
            self._connect().execute(
                "DELETE FROM workers WHERE application = ? AND worker_id = ? AND heartbeat = ?",
                (self._application, worker_id, heartbeat),
            )

    def _record_sinks(self, sinks: str) -> None:
        self._connect().execute(
            "INSERT INTO applications (application, sinks, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (application) DO UPDATE SET sinks = excluded.sinks, "
            "updated_at = excluded.updated_at",
            (self._application, sinks, time.time()),
        )

    # -- async API --------------------------------------------------------------------------

    async def load(self, stream_arn: str) -> dict[str, Checkpoint]:
        """Every shard row of a stream, by shard id."""
        return await self._call(self._load, stream_arn)

    async def save(self, rows: Sequence[CheckpointRow]) -> list[CheckpointRow]:
        """Write ``rows`` in one transaction; returns the rows rejected (lease moved).

        A ``None`` sequence keeps the stored one; ``finished`` never goes back to False.
        """
        if not rows:
            return []
        return await self._call(self._save, rows)

    async def stream_start(self, stream_arn: str, timestamp: float) -> tuple[float, bool]:
        """The stream's stored start time (for LATEST); stores ``timestamp`` on first call.

        Returns:
            ``(start_timestamp, created)``: created is True only for the very first call.
        """
        return await self._call(self._start, stream_arn, timestamp)

    async def prune(self, stream_arn: str, keep: Sequence[str]) -> int:
        """Delete finished rows of shards not in ``keep`` (no longer listed)."""
        return await self._call(self._prune, stream_arn, keep)

    async def all(self) -> list[Checkpoint]:
        """Every shard row of the application, ordered by stream ARN and shard id."""
        return await self._call(self._all)

    async def scan(self) -> Snapshot:
        return await self._call(self._scan)

    async def ensure(self, stream_arn: str, shard_ids: Sequence[str]) -> dict[str, Checkpoint]:
        if not shard_ids:
            return {}
        return await self._call(self._ensure, stream_arn, shard_ids)

    async def take(self, claims: Sequence[Claim], owner: str) -> list[Checkpoint | None]:
        if not claims:
            return []
        return await self._call(self._take, claims, owner)

    async def release(self, releases: Sequence[Release]) -> list[bool]:
        if not releases:
            return []
        return await self._call(self._release, releases)

    async def request_handoff(
        self, stream_arn: str, shard_id: str, lease: LeaseToken, to: str
    ) -> bool:
        return await self._call(self._handoff, stream_arn, shard_id, lease, to)

    async def heartbeat(self, worker: WorkerRow) -> None:
        await self._call(self._heartbeat, worker)

    def heartbeat_sync(self, worker: WorkerRow) -> None:
        try:
            if self._beat_db is None:
                self._beat_db = connect(self.path, wal=False)
            self._heartbeat(worker, self._beat_db)
        except sqlite3.Error as exc:
            raise CheckpointError(f"checkpoint store {self.path}: {exc}") from exc

    async def remove_worker(self, worker_id: str, heartbeat: int | None = None) -> None:
        await self._call(self._remove_worker, worker_id, heartbeat)

    async def record_sinks(self, sinks: str) -> None:
        await self._call(self._record_sinks, sinks)
