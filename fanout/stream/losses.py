"""What a stream's listings say was lost: shards that vanished unread, a stream that is gone,
and checkpoints so old that records after them may have been trimmed.

Pure functions over what the shard graph (``fanout.stream.discovery``) knows; it counts the
gaps (``fanout.stream.gaps.record_loss``), writes the checkpoints and logs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fanout.progress.store import Checkpoint
from fanout.stream.gaps import Gap, unknown_gap


def vanished_shards(
    checkpoints: Mapping[str, Checkpoint],
    seen: Mapping[str, float],
    since: float,
    listed: set[str],
    done: Iterable[str],
) -> list[str]:
    """Shards with unread records that a listing started at ``since`` no longer has.

    Unfinished checkpoints count, and shards ``seen`` (first seen at their value) before the
    listing started: one found meanwhile (a child looked up at its parent's end) may be
    missing from pages read before it existed. ``done``: finished or being read here.
    """
    unfinished = {sid for sid, c in checkpoints.items() if not c.finished}
    earlier = {sid for sid, t in seen.items() if t < since}
    return sorted((earlier | unfinished) - listed - set(done))


def trimmed_shard_gap(shard_id: str, checkpoint: Checkpoint | None) -> Gap:
    """The loss of a shard that is no longer listed and was not read to its end."""
    return unknown_gap(
        shard_id,
        checkpoint.sequence if checkpoint else None,
        checkpoint.updated_at if checkpoint else None,
        "the shard is no longer listed (older than the stream's retention) "
        "and was not read to its end",
    )


def unread_shards(
    checkpoints: Mapping[str, Checkpoint],
    listed: Iterable[str],
    running: Iterable[str],
    finished: set[str],
) -> list[str]:
    """Shards not read to their end: listed, read here, or with an unfinished checkpoint."""
    unfinished = {sid for sid, c in checkpoints.items() if not c.finished}
    return sorted((set(listed) | unfinished | set(running)) - finished)


def stream_gone_gap(unread: list[str]) -> Gap:
    """The loss of a stream that is gone with ``unread`` shards."""
    return unknown_gap(
        ",".join(unread[:10]) + ("..." if len(unread) > 10 else ""),
        None,
        None,
        f"the stream is gone with {len(unread)} shard(s) not read to their end",
    )


def stale_checkpoints(
    checkpoints: Mapping[str, Checkpoint], oldest: float
) -> list[tuple[str, Checkpoint]]:
    """Unfinished checkpoints written before ``oldest`` (epoch seconds): records after them
    may have been trimmed."""
    return [
        (sid, cp)
        for sid, cp in checkpoints.items()
        if not cp.finished and cp.sequence is not None and cp.updated_at < oldest
    ]
