"""Backfill progress in the DynamoDB checkpoint store (``fanout.progress.dynamodb``).

Backfills live in a partition of their own, ``app#<application>#backfill``, so lease scans
never read them: ``backfill#<id>`` (what it loads, its version time, its owner) and
``backfill#<id>#<segment>`` (how far the segment is settled). A backfill is claimed with a
conditional update on its owner and ``owner_at``; its progress is saved in transactions of
at most 99 segment rows and the backfill's row, each conditional on the owner.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fanout.progress.dynamodb_items import backfill_from_item, n, s, segment_from_item
from fanout.progress.dynamodb_table import DynamoDBTable, Rejected, counted
from fanout.progress.store import BackfillRow, BackfillState, SegmentRow


class DynamoDBBackfills(DynamoDBTable):
    """The backfill rows of one application (part of ``DynamoDBCheckpointStore``)."""

    def _backfill_key(self, sk: str) -> dict[str, Any]:
        return {"pk": s(self.backfill_pk), "sk": s(sk)}

    @counted
    async def backfills(self) -> list[BackfillState]:
        items = await self._query("backfill#", pk=self.backfill_pk)
        states: dict[str, BackfillState] = {}
        segments: list[SegmentRow] = []
        for item in items:
            rest = str(item["sk"]["S"]).removeprefix("backfill#")
            backfill_id, _, segment = rest.partition("#")
            if not segment:
                states[backfill_id] = BackfillState(backfill_from_item(item))
                continue
            segments.append(segment_from_item(backfill_id, segment, item))
        for seg in segments:
            state = states.get(seg.backfill_id)
            if state is not None:
                state.segments[seg.segment] = seg
        return [states[key] for key in sorted(states)]

    @counted
    async def claim_backfill(
        self, row: BackfillRow, expected: BackfillRow | None
    ) -> BackfillRow | None:
        names = {"#own": "owner", "#at": "owner_at"}
        values: dict[str, Any] = {":at": n(float(row.owner_at))}
        sets = ["#at = :at"]
        removes: list[str] = []
        if row.owner is None:
            removes.append("#own")
        else:
            sets.append("#own = :own")
            values[":own"] = s(row.owner)
        if expected is None:
            condition = "attribute_not_exists(pk)"
            fields = {
                "stream": s(row.stream),
                "table_name": s(row.table),
                "sinks": s(row.sinks),
                "segments": n(row.segments),
                "version_time": n(row.version_time),
                "created_at": n(float(row.created_at)),
                "origin": s(row.origin),
                "done": {"BOOL": row.done},
            }
            for i, (name, value) in enumerate(fields.items()):
                names[f"#f{i}"] = name
                values[f":f{i}"] = value
                sets.append(f"#f{i} = :f{i}")
        else:
            values[":was_at"] = n(float(expected.owner_at))
            if expected.owner is None:
                condition = "attribute_not_exists(#own) AND #at = :was_at"
            else:
                condition = "#own = :was AND #at = :was_at"
                values[":was"] = s(expected.owner)
        expression = "SET " + ", ".join(sets)
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        try:
            answer = await self._call(
                "update_item",
                TableName=self.table,
                Key=self._backfill_key(f"backfill#{row.backfill_id}"),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except Rejected:
            return None
        return backfill_from_item(answer["Attributes"])

    @counted
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
        sets = ["#at = :at"]
        values: dict[str, Any] = {":at": n(float(when)), ":me": s(owner)}
        names = {"#own": "owner", "#at": "owner_at"}
        if done:
            sets.append("#done = :true")
            values[":true"] = {"BOOL": True}
            names["#done"] = "done"
        expression = "SET " + ", ".join(sets) + (" REMOVE #own" if release else "")
        job = {
            "Update": {
                "TableName": self.table,
                "Key": self._backfill_key(f"backfill#{backfill_id}"),
                "UpdateExpression": expression,
                "ConditionExpression": "#own = :me",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }
        rows = [self._segment_update(backfill_id, seg) for seg in segments]
        # One transaction per 99 segments, each conditional on the owner: a save that
        # returned True was written while this owner ran the backfill. The job row goes
        # last, so a release or done is written with the last segments.
        chunks = [rows[i : i + 99] for i in range(0, len(rows), 99)] or [[]]
        try:
            for i, chunk in enumerate(chunks):
                last = i == len(chunks) - 1
                head = job if last else _condition_only(job)
                await self._call("transact_write_items", TransactItems=[*chunk, head])
        except Rejected:
            return False
        return True

    def _segment_update(self, backfill_id: str, seg: SegmentRow) -> dict[str, Any]:
        """The transaction's update of one segment's row."""
        return {
            "Update": {
                "TableName": self.table,
                "Key": self._backfill_key(f"backfill#{backfill_id}#{seg.segment:07d}"),
                "UpdateExpression": "SET #items = :items, #done = :done"
                + (", #pos = :pos" if seg.position is not None else " REMOVE #pos"),
                "ExpressionAttributeNames": {
                    "#items": "items",
                    "#done": "done",
                    "#pos": "position",
                },
                "ExpressionAttributeValues": {
                    ":items": n(seg.items),
                    ":done": {"BOOL": seg.done},
                    **({":pos": s(seg.position)} if seg.position is not None else {}),
                },
            }
        }


def _condition_only(job: dict[str, Any]) -> dict[str, Any]:
    """The owner condition of a backfill's row, refreshing only its ``owner_at``."""
    update = job["Update"]
    return {
        "Update": {
            **update,
            "UpdateExpression": "SET #at = :at",
            "ExpressionAttributeNames": {"#own": "owner", "#at": "owner_at"},
            "ExpressionAttributeValues": {
                ":at": update["ExpressionAttributeValues"][":at"],
                ":me": update["ExpressionAttributeValues"][":me"],
            },
        }
    }
