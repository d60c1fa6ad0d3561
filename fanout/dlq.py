"""Dead-letter destinations: where a sink's given-up records are kept, whole.

Every destination implements ``DeadLetter``: ``write(entries)`` returns only once every entry
is stored durably, otherwise it raises ``DeadLetterError`` and the records stay unsettled
(their shard does not advance). A destination that stored some entries before failing
raises ``PartialDeadLetterError`` naming the rest, so a retry does not store the others twice.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.to_thread
import orjson

from fanout.errors import DeadLetterError
from fanout.records import Record
from fanout.sink import Sink

log = logging.getLogger("fanout.dlq")

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


class FileDeadLetter:
    """JSON lines appended to a file, flushed and fsynced before ``write`` returns.

    Each write is one ``write()`` call of whole lines on a file opened for appending, so
    concurrent writers never interleave within a line; a line cut short by a crash was never
    acknowledged (its records were not settled) and readers skip it.
    """

    def __init__(self, path: str | Path, name: str = "file") -> None:
        self.path = Path(path)
        self.name = f"{name}:{self.path}" if name == "file" else name
        self._lock = anyio.Lock()

    def _append(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    async def write(self, entries: list[Entry]) -> None:
        """Append ``entries`` as JSON lines and fsync."""
        data = b"".join(orjson.dumps(e) + b"\n" for e in entries)
        async with self._lock:
            try:
                await anyio.to_thread.run_sync(self._append, data)
            except OSError as exc:
                raise DeadLetterError(f"dead-letter file {self.path}: {exc}") from exc

    async def aclose(self) -> None:
        """Nothing to release: the file is opened for each write."""
        return None


class SinkDeadLetter:
    """Hands entries to another configured sink (which sees each entry as one record)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.name = f"sink:{sink.name}"

    async def write(self, entries: list[Entry]) -> None:
        """Send ``entries`` to the sink; any entry it does not take fails the write."""
        try:
            failures = await self.sink.send(entries)
        except Exception as exc:
            raise DeadLetterError(f"dead-letter sink {self.sink.name}: {exc!r}") from exc
        if failures:
            first = failures[min(failures)]
            failed = [entries[i] for i in sorted(failures) if 0 <= i < len(entries)]
            message = (
                f"dead-letter sink {self.sink.name} refused {len(failures)} of {len(entries)} "
                f"entries: {first.reason}"
            )
            if self.sink.ordered:
                # An ordered sink holds back everything after its first failure.
                failed = entries[min(failures) :]
            raise PartialDeadLetterError(message, failed or entries)

    async def aclose(self) -> None:
        """The sink itself is stopped by the worker."""
        return None


def read_entries(path: str | Path) -> list[Entry]:
    """Every entry of a dead-letter file, oldest first.

    A line that is not valid JSON (cut short by a crash mid-write, so never acknowledged)
    is skipped with a warning.
    """
    result: list[Entry] = []
    with Path(path).open("rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                log.warning(
                    "dead_letter_line_unreadable", extra={"path": str(path), "line": number}
                )
                continue
            if isinstance(item, dict):
                result.append(item)
    return result
