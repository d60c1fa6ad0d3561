"""What each conditional write does to a shard row, for stores that apply conditions in Python.

The SQLite store applies these inside one ``BEGIN IMMEDIATE`` transaction per call (so the
read, the check and the write are atomic between processes); the in-memory store of the
tests applies them directly. The DynamoDB store expresses the same conditions as
``ConditionExpression``s. Each function returns the new row, or None when the condition
failed (the row is left as it is).
"""

from __future__ import annotations

from dataclasses import replace

from fanout.progress.store import (
    NO_WORKER_ROW,
    BackfillRow,
    Checkpoint,
    CheckpointRow,
    Claim,
    Release,
)


def new_row(stream_arn: str, shard_id: str, now: float) -> Checkpoint:
    """A shard row nobody holds, without a checkpoint."""
    return Checkpoint(stream_arn, shard_id, None, False, now)


def checkpoint(old: Checkpoint | None, row: CheckpointRow, now: float) -> Checkpoint | None:
    """Write a checkpoint: a None sequence keeps the stored one, ``finished`` never goes back.

    With a lease, only while the row holds that lease; a finished row then also releases it.
    """
    lease = row.lease
    if lease is not None and (old is None or old.lease != lease):
        return None
    base = old if old is not None else new_row(row.stream_arn, row.shard_id, now)
    updated = replace(
        base,
        sequence=row.sequence if row.sequence is not None else base.sequence,
        finished=base.finished or row.finished,
        updated_at=now,
    )
    if lease is not None and row.finished:
        updated = replace(
            updated, owner=None, counter=base.counter + 1, taken_at=None, handoff_to=None
        )
    return updated


def take(
    old: Checkpoint | None, claim: Claim, owner: str, heartbeat: int, now: float
) -> Checkpoint | None:
    """Take a lease; ``heartbeat`` is the claimed owner's heartbeat now (``NO_WORKER_ROW``
    when it has no worker row)."""
    if old is None or old.finished or old.counter != claim.counter or old.owner != claim.owner:
        return None
    if claim.heartbeat is not None and heartbeat != claim.heartbeat:
        return None
    return replace(old, owner=owner, counter=old.counter + 1, taken_at=now, handoff_to=None)


def release(old: Checkpoint | None, rel: Release, now: float) -> Checkpoint | None:
    """Give a held lease up, to nobody or to ``rel.to``."""
    if old is None or old.lease != rel.lease:
        return None
    return replace(
        old,
        owner=rel.to,
        counter=old.counter + 1,
        taken_at=now if rel.to is not None else None,
        handoff_to=None,
    )


def request_handoff(old: Checkpoint | None, owner: str, counter: int, to: str) -> Checkpoint | None:
    """Mark a held lease as asked for by ``to`` (the owner keeps it until it releases)."""
    if old is None or old.finished or old.owner != owner or old.counter != counter:
        return None
    return replace(old, handoff_to=to)


def claim_backfill(
    old: BackfillRow | None, row: BackfillRow, expected: BackfillRow | None
) -> BackfillRow | None:
    """Create a backfill (``expected`` None: only while none has its id), or take it over
    (only while it has ``expected``'s owner and ``owner_at``)."""
    if expected is None:
        return row if old is None else None
    if old is None or (old.owner, old.owner_at) != (expected.owner, expected.owner_at):
        return None
    return replace(old, owner=row.owner, owner_at=row.owner_at)


def save_backfill(
    old: BackfillRow | None, owner: str, *, done: bool, release: bool, now: float
) -> BackfillRow | None:
    """Progress of a backfill, written by its owner only: ``owner_at``, ``done`` (never
    undone), and with ``release`` no owner any more."""
    if old is None or old.owner != owner:
        return None
    return replace(
        old,
        done=old.done or done,
        owner=None if release else owner,
        owner_at=now,
    )


__all__ = [
    "NO_WORKER_ROW",
    "checkpoint",
    "claim_backfill",
    "new_row",
    "release",
    "request_handoff",
    "save_backfill",
    "take",
]
