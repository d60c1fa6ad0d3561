"""The SQLite checkpoint store's file (``fanout.progress.sqlite``): its schema, its
creation and the upgrade of files from before applications.

Tables: ``checkpoints`` (a shard's checkpoint and lease), ``stream_starts`` (LATEST /
AT_TIMESTAMP), ``workers`` (heartbeats), ``applications`` (the sink set),
``window_states`` (``tumbling_window`` sinks), ``backfills`` and ``backfill_segments``
(backfill progress). Every row belongs to an application. The file is created with mode
0600 and opened in WAL mode with ``synchronous=FULL``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

log = logging.getLogger("fanout.checkpoint")

# Another process holding the write lock waits this long before a call fails (and is retried).
BUSY_TIMEOUT_S = 10.0

SCHEMA = """
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

DB_MODE = 0o600
"""Permissions of a checkpoint database this creates; SQLite gives its -wal and -shm files
the database file's own."""


def create_private(path: Path) -> None:
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


def connect(path: Path, *, wal: bool = True) -> sqlite3.Connection:
    """A connection to ``path`` (created private if missing), autocommit, ``synchronous=FULL``;
    ``wal``: switch the file to WAL mode."""
    create_private(path)
    db = sqlite3.connect(
        path,
        check_same_thread=False,
        isolation_level=None,
        timeout=BUSY_TIMEOUT_S,
    )
    if wal:
        use_wal(db)
    db.execute("PRAGMA synchronous=FULL")
    return db


def use_wal(db: sqlite3.Connection, timeout: float = BUSY_TIMEOUT_S) -> None:
    """Switch the file to WAL mode, waiting up to ``timeout`` for other connections.

    The switch needs the file to itself, and SQLite answers "database is locked" at once,
    without the busy timeout, while another process opens a new file (two workers started
    together). Once the file is in WAL mode the switch is a no-op.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def migrate(db: sqlite3.Connection, application: str, path: Path) -> None:
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
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        app = application
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
            "checkpoint_store": str(path),
            "note": "checkpoints written before applications existed now belong to this "
            "application",
        },
    )
