"""The seam between progress tracking and storage: ``CheckpointStore`` and its rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """One checkpoint to write.

    Attributes:
        stream_arn: the stream the shard belongs to.
        shard_id: the shard.
        sequence: the last settled sequence number; None keeps the stored one.
        finished: the shard was read to its end and every record settled (never undone).
    """

    stream_arn: str
    shard_id: str
    sequence: str | None
    finished: bool = False


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One stored checkpoint, with when it was last written (epoch seconds)."""

    stream_arn: str
    shard_id: str
    sequence: str | None
    finished: bool
    updated_at: float


class CheckpointStore(Protocol):
    """Durable per-shard positions, plus the stored start time of each stream.

    ``open()`` once before any other call, ``aclose()`` once at the end. Every call may
    raise ``fanout.errors.CheckpointError``; callers retry. A ``save()`` that returned is
    durable: a crash right after it resumes from what it wrote.
    """

    async def open(self) -> None:
        """Connect, creating what is missing."""
        ...

    async def aclose(self) -> None:
        """Release the connection. Idempotent."""
        ...

    async def load(self, stream_arn: str) -> dict[str, Checkpoint]:
        """Every checkpoint of one stream, by shard id."""
        ...

    async def save(self, rows: Sequence[CheckpointRow]) -> None:
        """Write ``rows`` atomically (all or none)."""
        ...

    async def stream_start(self, stream_arn: str, timestamp: float) -> tuple[float, bool]:
        """The stream's stored start time; stores ``timestamp`` on the very first call.

        Returns:
            ``(start_timestamp, created)``; created is True only for the first call.
        """
        ...

    async def prune(self, stream_arn: str, keep: Sequence[str]) -> int:
        """Delete finished checkpoints of shards not in ``keep``; returns how many."""
        ...

    async def all(self) -> list[Checkpoint]:
        """Every checkpoint of every stream, ordered by stream ARN and shard id."""
        ...
