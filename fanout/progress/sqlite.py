"""The SQLite checkpoint store: one file, shared by the worker processes of one host.

Every application's checkpoints, leases and worker rows live in one file; the worker
processes on it coordinate through the lease protocol of ``fanout.progress.leases`` exactly
as workers on a DynamoDB table do. Conditional writes run as ``BEGIN IMMEDIATE``
transactions (read, check, write, with the rules of ``fanout.progress.rules``), so they are
atomic between processes.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from fanout.errors import CheckpointError
from fanout.isolation import Offload
from fanout.progress import rules
from fanout.progress.store import (
    NO_WORKER_ROW,
    BackfillRow,
    BackfillState,
    Checkpoint,
    CheckpointRow,
    Claim,
    LeaseToken,
    Release,
    SegmentRow,
    Snapshot,
    WindowState,
    WorkerRow,
)

log = logging.getLogger("fanout.checkpoint")

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    application TEXT NOT NULL,
    stream_arn TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    sequence_number TEXT,
    finished INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    owner TEXT,
    counter INTEGER NOT NULL DEFAULT 0,
    taken_at REAL,
    handoff_to TEXT,
    PRIMARY KEY (application, stream_arn, shard_id)
);
CREATE TABLE IF NOT EXISTS stream_starts (
    application TEXT NOT NULL,
    stream_arn TEXT NOT NULL,
    start_timestamp REAL NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (application, stream_arn)
);
CREATE TABLE IF NOT EXISTS workers (
    application TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    heartbeat INTEGER NOT NULL,
    heartbeat_at REAL NOT NULL,
    started_at REAL NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    sinks TEXT NOT NULL,
    leases INTEGER NOT NULL,
    PRIMARY KEY (application, worker_id)
);
CREATE TABLE IF NOT EXISTS applications (
    application TEXT PRIMARY KEY,
    sinks TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS window_states (
    application TEXT NOT NULL,
    stream_arn TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    sink TEXT NOT NULL,
    state BLOB NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (application, stream_arn, shard_id, sink)
);
CREATE TABLE IF NOT EXISTS backfills (
    application TEXT NOT NULL,
    backfill_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    table_name TEXT NOT NULL,
    sinks TEXT NOT NULL,
    segments INTEGER NOT NULL,
    version_time INTEGER NOT NULL,
    created_at REAL NOT NULL,
    origin TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    owner_at REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (application, backfill_id)
);
CREATE TABLE IF NOT EXISTS backfill_segments (
    application TEXT NOT NULL,
    backfill_id TEXT NOT NULL,
    segment INTEGER NOT NULL,
    position TEXT,
    items INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (application, backfill_id, segment)
);
"""

_BACKFILL_COLUMNS = (
    "backfill_id, stream, table_name, sinks, segments, version_time, created_at, origin, done, "
    "owner, owner_at"
)

_COLUMNS = (
    "stream_arn, shard_id, sequence_number, finished, updated_at, owner, counter, taken_at, "
    "handoff_to"
)
# Another process holding the write lock waits this long before a call fails (and is retried).
_BUSY_TIMEOUT_S = 10.0


def _row(r: Sequence[Any]) -> Checkpoint:
    return Checkpoint(r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6], r[7], r[8])


DB_MODE = 0o600
"""Permissions of a checkpoint database this creates; SQLite gives its -wal and -shm files
the database file's own."""


def _create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 (whatever the umask) unless it exists: a database
    SQLite creates itself gets 0644 less the umask, readable by every user of the host."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DB_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, DB_MODE)
    finally:
        os.close(fd)


def _backfill_row(r: Sequence[Any]) -> BackfillRow:
    return BackfillRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]), r[9], r[10])


class SQLiteCheckpointStore:
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

    def __init__(self, path: str | Path, application: str = "fanout") -> None:
        self.path = Path(path)
        self._application = application
        self._db: sqlite3.Connection | None = None
        self._lock = anyio.Lock()
        # A thread of the store's own (never one a sink's slow call could take), and the
        # readiness probe's own connection and thread (never queued behind a write).
        self._limiter = anyio.CapacityLimiter(1)
        self._prober = Offload(1, "fanout-store-probe")
        self._probe_db: sqlite3.Connection | None = None
        # The heartbeat thread's own connection (writes one row; WAL lets it in beside the
        # event loop's connection, the busy timeout waits out a checkpoint transaction).
        self._beat_db: sqlite3.Connection | None = None

    @property
    def application(self) -> str:
        return self._application

    @property
    def describe(self) -> str:
        return str(self.path)

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                if self.path.parent != Path():
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                _create_private(self.path)
                db = sqlite3.connect(
                    self.path,
                    check_same_thread=False,
                    isolation_level=None,
                    timeout=_BUSY_TIMEOUT_S,
                )
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                self._migrate(db)
                db.executescript(_SCHEMA)
            except (sqlite3.Error, OSError) as exc:
                raise CheckpointError(f"cannot open checkpoint store {self.path}: {exc}") from exc
            self._db = db
        return self._db

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Adopt a file from before applications: its rows become this application's."""
        columns = {r[1] for r in db.execute("PRAGMA table_info(checkpoints)")}
        if not columns or "application" in columns:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            columns = {r[1] for r in db.execute("PRAGMA table_info(checkpoints)")}
            if "application" in columns:  # another process upgraded it meanwhile
                db.execute("ROLLBACK")
                return
            db.execute("ALTER TABLE checkpoints RENAME TO checkpoints_before_applications")
            starts = {r[1] for r in db.execute("PRAGMA table_info(stream_starts)")}
            if starts and "application" not in starts:
                db.execute("ALTER TABLE stream_starts RENAME TO stream_starts_before_applications")
            # executescript() would commit first: one statement at a time, in this transaction
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            app = self._application
            adopted = db.execute(
                "INSERT INTO checkpoints (application, stream_arn, shard_id, sequence_number, "
                "finished, updated_at) SELECT ?, stream_arn, shard_id, sequence_number, finished, "
                "updated_at FROM checkpoints_before_applications",
                (app,),
            ).rowcount
            if starts and "application" not in starts:
                db.execute(
                    "INSERT INTO stream_starts (application, stream_arn, start_timestamp, "
                    "created_at) SELECT ?, stream_arn, start_timestamp, created_at "
                    "FROM stream_starts_before_applications",
                    (app,),
                )
                db.execute("DROP TABLE stream_starts_before_applications")
            db.execute("DROP TABLE checkpoints_before_applications")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        log.warning(
            "checkpoints_adopted",
            extra={
                "application": app,
                "shards": adopted,
                "checkpoint_store": str(self.path),
                "note": "checkpoints written before applications existed now belong to this "
                "application",
            },
        )

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        async with self._lock:
            try:
                return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)
            except sqlite3.Error as exc:
                raise CheckpointError(f"checkpoint store {self.path}: {exc}") from exc

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction (the write lock from the start,
        so a read-check-write is atomic between processes)."""
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return result

    async def open(self) -> None:
        await self._call(self._connect)

    async def aclose(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            async with self._lock:
                await anyio.to_thread.run_sync(db.close, limiter=self._limiter)
        if self._beat_db is not None:
            beat, self._beat_db = self._beat_db, None
            beat.close()
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
            _create_private(self.path)
            self._probe_db = sqlite3.connect(self.path, check_same_thread=False)
        self._probe_db.execute("SELECT count(*) FROM sqlite_master").fetchone()

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

    def _put_window(
        self, db: sqlite3.Connection, row: CheckpointRow, window: WindowState, now: float
    ) -> None:
        db.execute(
            "INSERT INTO window_states (application, stream_arn, shard_id, sink, state, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (application, stream_arn, shard_id, sink) DO UPDATE SET "
            "state = excluded.state, updated_at = excluded.updated_at",
            (self._application, row.stream_arn, row.shard_id, window.sink, window.to_json(), now),
        )

    def _drop_windows(self, db: sqlite3.Connection, stream_arn: str, shard_id: str) -> None:
        db.execute(
            "DELETE FROM window_states WHERE application = ? AND stream_arn = ? AND shard_id = ?",
            (self._application, stream_arn, shard_id),
        )

    def _load_windows(self, stream_arn: str, shard_id: str) -> dict[str, WindowState]:
        rows = self._connect().execute(
            "SELECT sink, state FROM window_states WHERE application = ? AND stream_arn = ? "
            "AND shard_id = ?",
            (self._application, stream_arn, shard_id),
        )
        return {sink: WindowState.from_json(sink, data) for sink, data in rows}

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

    def _backfill(self, db: sqlite3.Connection, backfill_id: str) -> BackfillRow | None:
        r = db.execute(
            f"SELECT {_BACKFILL_COLUMNS} FROM backfills "  # noqa: S608
            "WHERE application = ? AND backfill_id = ?",
            (self._application, backfill_id),
        ).fetchone()
        return _backfill_row(r) if r is not None else None

    def _put_backfill(self, db: sqlite3.Connection, row: BackfillRow) -> None:
        db.execute(
            f"INSERT OR REPLACE INTO backfills (application, {_BACKFILL_COLUMNS}) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self._application,
                row.backfill_id,
                row.stream,
                row.table,
                row.sinks,
                row.segments,
                row.version_time,
                row.created_at,
                row.origin,
                int(row.done),
                row.owner,
                row.owner_at,
            ),
        )

    def _backfills(self) -> list[BackfillState]:
        db = self._connect()
        db.execute("BEGIN")
        try:
            rows = [
                _backfill_row(r)
                for r in db.execute(
                    f"SELECT {_BACKFILL_COLUMNS} FROM backfills "  # noqa: S608
                    "WHERE application = ? ORDER BY backfill_id",
                    (self._application,),
                )
            ]
            segments = db.execute(
                "SELECT backfill_id, segment, position, items, done FROM backfill_segments "
                "WHERE application = ? ORDER BY backfill_id, segment",
                (self._application,),
            ).fetchall()
        finally:
            db.execute("COMMIT")
        states = {row.backfill_id: BackfillState(row) for row in rows}
        for r in segments:
            state = states.get(r[0])
            if state is not None:
                state.segments[r[1]] = SegmentRow(r[0], r[1], r[2], r[3], bool(r[4]))
        return list(states.values())

    def _claim_backfill(self, row: BackfillRow, expected: BackfillRow | None) -> BackfillRow | None:
        def body(db: sqlite3.Connection) -> BackfillRow | None:
            new = rules.claim_backfill(self._backfill(db, row.backfill_id), row, expected)
            if new is not None:
                self._put_backfill(db, new)
            return new

        return self._write(body)

    def _save_backfill(
        self,
        backfill_id: str,
        owner: str,
        segments: Sequence[SegmentRow],
        done: bool,
        release: bool,
        now: float,
    ) -> bool:
        def body(db: sqlite3.Connection) -> bool:
            old = self._backfill(db, backfill_id)
            new = rules.save_backfill(old, owner, done=done, release=release, now=now)
            if new is None:
                return False
            self._put_backfill(db, new)
            db.executemany(
                "INSERT OR REPLACE INTO backfill_segments (application, backfill_id, segment, "
                "position, items, done) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        self._application,
                        backfill_id,
                        seg.segment,
                        seg.position,
                        seg.items,
                        int(seg.done),
                    )
                    for seg in segments
                ],
            )
            return True

        return self._write(body)

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

    async def load_windows(self, stream_arn: str, shard_id: str) -> dict[str, WindowState]:
        """The window states stored for one shard, by sink name."""
        return await self._call(self._load_windows, stream_arn, shard_id)

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
                _create_private(self.path)
                self._beat_db = sqlite3.connect(
                    self.path,
                    check_same_thread=False,
                    isolation_level=None,
                    timeout=_BUSY_TIMEOUT_S,
                )
                self._beat_db.execute("PRAGMA synchronous=FULL")
            self._heartbeat(worker, self._beat_db)
        except sqlite3.Error as exc:
            raise CheckpointError(f"checkpoint store {self.path}: {exc}") from exc

    async def remove_worker(self, worker_id: str, heartbeat: int | None = None) -> None:
        await self._call(self._remove_worker, worker_id, heartbeat)

    async def record_sinks(self, sinks: str) -> None:
        await self._call(self._record_sinks, sinks)

    async def backfills(self) -> list[BackfillState]:
        return await self._call(self._backfills)

    async def claim_backfill(
        self, row: BackfillRow, expected: BackfillRow | None
    ) -> BackfillRow | None:
        return await self._call(self._claim_backfill, row, expected)

    async def save_backfill(
        self,
        backfill_id: str,
        owner: str,
        segments: Sequence[SegmentRow],
        *,
        done: bool = False,
        release: bool = False,
        now: float | None = None,
    ) -> bool:
        when = time.time() if now is None else now
        return await self._call(
            self._save_backfill, backfill_id, owner, segments, done, release, when
        )
