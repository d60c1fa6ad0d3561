"""Connections of the SQLite checkpoint store (``fanout.progress.sqlite``).

``SQLiteDatabase`` opens the file (``fanout.progress.sqlite_schema``), runs the store's calls
in a worker thread of its own, one at a time, writes in ``BEGIN IMMEDIATE`` transactions
(atomic between processes) and reads the readiness probe on a connection and thread of its
own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread

from fanout.errors import CheckpointError
from fanout.isolation import Offload
from fanout.progress.sqlite_schema import SCHEMA, connect, create_private, migrate

T = TypeVar("T")


class SQLiteDatabase:
    """One application's view of a checkpoint database file: its connections and threads.

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
                db = connect(self.path)
                migrate(db, self._application, self.path)
                db.executescript(SCHEMA)
            except (sqlite3.Error, OSError) as exc:
                raise CheckpointError(f"cannot open checkpoint store {self.path}: {exc}") from exc
            self._db = db
        return self._db

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

    def _probe(self) -> None:
        if self._probe_db is None:
            create_private(self.path)
            self._probe_db = sqlite3.connect(self.path, check_same_thread=False)
        self._probe_db.execute("SELECT count(*) FROM sqlite_master").fetchone()
