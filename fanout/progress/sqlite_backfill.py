"""Backfill progress in the SQLite checkpoint store (``fanout.progress.sqlite``): the
``backfills`` table (what a backfill loads, its version time, its owner) and
``backfill_segments`` (how far each segment is settled). Claims and saves are checked
against the stored row with the rules of ``fanout.progress.rules`` in one transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from fanout.progress import rules
from fanout.progress.sqlite_db import SQLiteDatabase
from fanout.progress.store import BackfillRow, BackfillState, SegmentRow

_BACKFILL_COLUMNS = (
    "backfill_id, stream, table_name, sinks, segments, version_time, created_at, origin, done, "
    "owner, owner_at"
)


def _backfill_row(r: Sequence[Any]) -> BackfillRow:
    return BackfillRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]), r[9], r[10])


class SQLiteBackfills(SQLiteDatabase):
    """The backfills of one application (part of ``SQLiteCheckpointStore``)."""

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
