"""Window states in the SQLite checkpoint store (``fanout.progress.sqlite``): the
``window_states`` table, one row per shard and sink, written in the transaction of the
shard's checkpoint and dropped when the shard is finished.
"""

from __future__ import annotations

import sqlite3

from fanout.progress.sqlite_db import SQLiteDatabase
from fanout.progress.store import CheckpointRow, WindowState


class SQLiteWindows(SQLiteDatabase):
    """The window states of one application (part of ``SQLiteCheckpointStore``)."""

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

    async def load_windows(self, stream_arn: str, shard_id: str) -> dict[str, WindowState]:
        """The window states stored for one shard, by sink name."""
        return await self._call(self._load_windows, stream_arn, shard_id)
