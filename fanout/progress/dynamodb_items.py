"""DynamoDB items of the checkpoint store (``fanout.progress.dynamodb``): attribute values
written and rows read back.

``n`` and ``s`` encode a number and a string as DynamoDB attribute values; ``num`` and
``string`` read them from an item. The ``*_from_item`` functions turn the items of the
table's rows (``docs/leases.md`` has the layout) into the store's rows.
"""

from __future__ import annotations

from typing import Any

from fanout.progress.store import BackfillRow, Checkpoint, SegmentRow, WorkerRow


def n(value: float) -> dict[str, str]:
    """A number attribute value."""
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def s(value: str) -> dict[str, str]:
    """A string attribute value."""
    return {"S": value}


def num(item: dict[str, Any], name: str, default: float = 0.0) -> float:
    """The number ``name`` of ``item``, ``default`` if it has none."""
    value = item.get(name)
    return float(value["N"]) if value else default


def string(item: dict[str, Any], name: str) -> str | None:
    """The string ``name`` of ``item``, None if it has none."""
    value = item.get(name)
    return str(value["S"]) if value else None


def flag(item: dict[str, Any], name: str) -> bool:
    """The boolean ``name`` of ``item``, False if it has none."""
    value = item.get(name)
    return bool(value["BOOL"]) if value else False


def shard_sk(stream_arn: str, shard_id: str) -> str:
    """The sort key of a shard's checkpoint and lease."""
    return f"shard#{stream_arn}#{shard_id}"


def checkpoint_from_item(item: dict[str, Any]) -> Checkpoint:
    """A ``shard#`` row: the checkpoint and lease of one shard."""
    arn, _, sid = str(item["sk"]["S"]).removeprefix("shard#").rpartition("#")
    taken = item.get("taken_at")
    return Checkpoint(
        stream_arn=arn,
        shard_id=sid,
        sequence=string(item, "seq"),
        finished=flag(item, "finished"),
        updated_at=num(item, "updated_at"),
        owner=string(item, "owner"),
        counter=int(num(item, "counter")),
        taken_at=float(taken["N"]) if taken else None,
        handoff_to=string(item, "handoff_to"),
    )


def worker_from_item(item: dict[str, Any]) -> WorkerRow:
    """A ``worker#`` row: one worker's heartbeat."""
    return WorkerRow(
        worker_id=str(item["sk"]["S"]).removeprefix("worker#"),
        heartbeat=int(num(item, "heartbeat")),
        heartbeat_at=num(item, "heartbeat_at"),
        started_at=num(item, "started_at"),
        host=string(item, "host") or "",
        pid=int(num(item, "pid")),
        sinks=string(item, "sinks") or "",
        leases=int(num(item, "leases")),
    )


def heartbeat_update(worker: WorkerRow) -> dict[str, Any]:
    """The ``UpdateItem`` arguments (but the table and key) that write a worker's row."""
    return {
        "UpdateExpression": "SET heartbeat = :beat, heartbeat_at = :at, "
        "started_at = :started, host = :host, pid = :pid, sinks = :sinks, "
        "leases = :leases",
        "ExpressionAttributeValues": {
            ":beat": n(worker.heartbeat),
            ":at": n(worker.heartbeat_at),
            ":started": n(worker.started_at),
            ":host": s(worker.host),
            ":pid": n(worker.pid),
            ":sinks": s(worker.sinks),
            ":leases": n(worker.leases),
        },
    }


def backfill_from_item(item: dict[str, Any]) -> BackfillRow:
    """A ``backfill#<id>`` row: what a backfill loads and who runs it."""
    return BackfillRow(
        backfill_id=str(item["sk"]["S"]).removeprefix("backfill#"),
        stream=string(item, "stream") or "",
        table=string(item, "table_name") or "",
        sinks=string(item, "sinks") or "",
        segments=int(num(item, "segments")),
        version_time=int(num(item, "version_time")),
        created_at=num(item, "created_at"),
        origin=string(item, "origin") or "",
        done=flag(item, "done"),
        owner=string(item, "owner"),
        owner_at=num(item, "owner_at"),
    )


def segment_from_item(backfill_id: str, segment: str, item: dict[str, Any]) -> SegmentRow:
    """A ``backfill#<id>#<segment>`` row: how far one segment is settled."""
    return SegmentRow(
        backfill_id,
        int(segment),
        string(item, "position"),
        int(num(item, "items")),
        flag(item, "done"),
    )
