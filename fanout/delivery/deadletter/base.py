"""Dead-letter destinations: where a sink's given-up records are kept, whole.

Every destination implements ``DeadLetter``: ``write(entries)`` returns only once every entry
is stored durably, otherwise it raises ``DeadLetterError`` and the records stay unsettled
(their shard does not advance). A destination that stored some entries before failing
raises ``PartialDeadLetterError`` naming the rest, so a retry does not store the others twice.

Destinations that can give their entries back (file, SQS) also implement
``ReadableDeadLetter``: ``read()`` yields them as ``Letter``s, ``acknowledge`` marks letters
as redriven so later reads skip them, ``release`` leaves the others for the next reader. That
is what ``fanout dlq inspect|redrive`` uses, with the classes the worker writes with.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from fanout.errors import DeadLetterError
from fanout.records import Record

Entry = dict[str, Any]


class DeadLetter(Protocol):
    """Stores dead-letter entries. ``write`` returns only once they are durable, else raises.

    ``write`` may be called concurrently (one sink's lanes of many shards share one
    destination); ``aclose`` is called once, at shutdown.
    """

    name: str

    async def write(self, entries: list[Entry]) -> None:
        """Store ``entries`` durably.

        Raises:
            DeadLetterError: nothing is known to be stored, or (``PartialDeadLetterError``)
                only the entries it names are not.
        """
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True, slots=True)
class Letter:
    """One entry read back from a destination.

    Attributes:
        entry: the entry; None when what was stored cannot be read (``error`` says why).
        error: why it cannot be read.
        acknowledged: it was acknowledged (redriven) before; only destinations that keep
            acknowledged entries (files) return these.
        handle: what the destination needs to acknowledge or release it (its own business).
    """

    entry: Entry | None
    error: str = ""
    acknowledged: bool = False
    handle: object = None


class ReadableDeadLetter(DeadLetter, Protocol):
    """A destination whose entries can be read back, acknowledged and released.

    A reader ``read()``s letters, then for each either ``acknowledge``s it (it was dealt
    with: later reads skip it) or ``release``s it (it stays for the next reader).
    """

    @property
    def location(self) -> str:
        """Where the entries are: a file path or a queue URL."""
        ...

    def read(self) -> AsyncIterator[list[Letter]]:
        """Every stored letter, once, in batches.

        Raises:
            DeadLetterError: the destination cannot be read.
        """
        ...

    async def acknowledge(self, letters: list[Letter], *, target: str) -> None:
        """Mark ``letters`` as redriven (to the sink ``target``): later reads skip them.

        Raises:
            DeadLetterError: the destination cannot be written.
        """
        ...

    async def release(self, letters: list[Letter]) -> None:
        """Leave ``letters`` where they are, for the next reader."""
        ...


class PartialDeadLetterError(DeadLetterError):
    """Some entries of a write were stored; ``remaining`` are the ones that were not."""

    def __init__(self, message: str, remaining: list[Entry]) -> None:
        super().__init__(message)
        self.remaining = remaining


def entry(
    *,
    record: Record,
    sink: str,
    stream: str,
    stream_arn: str,
    shard_id: str,
    error_class: str,
    error_message: str,
    attempts: int,
    first_failure_at: float,
    last_failure_at: float,
) -> Entry:
    """One dead-letter entry: the whole record plus why and when it was given up on."""
    from fanout import __version__

    dynamodb = record.get("dynamodb") if isinstance(record, dict) else None
    return {
        "sink": sink,
        "stream": stream,
        "stream_arn": stream_arn,
        "shard_id": shard_id,
        "sequence_number": dynamodb.get("SequenceNumber") if isinstance(dynamodb, dict) else None,
        "error": {"class": error_class, "message": error_message},
        "attempts": attempts,
        "first_failure_at": first_failure_at,
        "last_failure_at": last_failure_at,
        "dead_lettered_at": time.time(),
        "fanout_version": __version__,
        "record": record,
    }


def entry_key(item: Entry) -> str:
    """What identifies one dead-lettered record: sink, stream ARN, shard, sequence number.

    A record dead-lettered twice (it was read again after a crash) has one key, so a redrive
    delivers it once. Entries without a sequence number (malformed records) fall back to
    the time they were dead-lettered.
    """
    seq = item.get("sequence_number")
    if seq is None:
        seq = f"@{item.get('dead_lettered_at')}"
    return f"{item.get('sink')}|{item.get('stream_arn')}|{item.get('shard_id')}|{seq}"


def safe_name(text: object) -> str:
    """``text`` as a file or object name part: letters, digits, ``.``, ``_`` and ``-`` only,
    at most 80 characters, never empty."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in str(text))[:80] or "_"
