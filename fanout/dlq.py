"""Dead-letter destinations: where a sink's given-up records are kept, whole."""

from __future__ import annotations

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


class DeadLetter(Protocol):
    """Stores dead-letter entries. ``write`` returns only once they are durable, else raises."""

    name: str

    async def write(self, entries: list[dict[str, Any]]) -> None: ...

    async def aclose(self) -> None: ...


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
) -> dict[str, Any]:
    """One dead-letter entry: the whole record plus why and when it was given up on."""
    from fanout import __version__

    return {
        "sink": sink,
        "stream": stream,
        "stream_arn": stream_arn,
        "shard_id": shard_id,
        "sequence_number": record.get("dynamodb", {}).get("SequenceNumber"),
        "error": {"class": error_class, "message": error_message},
        "attempts": attempts,
        "first_failure_at": first_failure_at,
        "last_failure_at": last_failure_at,
        "dead_lettered_at": time.time(),
        "fanout_version": __version__,
        "record": record,
    }


class FileDeadLetter:
    """JSON lines appended to a file, flushed and fsynced before ``write`` returns."""

    def __init__(self, path: str | Path, name: str = "file") -> None:
        self.path = Path(path)
        self.name = name
        self._lock = anyio.Lock()

    def _append(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    async def write(self, entries: list[dict[str, Any]]) -> None:
        data = b"".join(orjson.dumps(e) + b"\n" for e in entries)
        async with self._lock:
            try:
                await anyio.to_thread.run_sync(self._append, data)
            except OSError as exc:
                raise DeadLetterError(f"dead-letter file {self.path}: {exc}") from exc

    async def aclose(self) -> None:
        return None


class SinkDeadLetter:
    """Hands entries to another configured sink (which sees each entry as one record)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.name = f"sink:{sink.name}"

    async def write(self, entries: list[dict[str, Any]]) -> None:
        try:
            failures = await self.sink.send(entries)
        except Exception as exc:
            raise DeadLetterError(f"dead-letter sink {self.sink.name}: {exc!r}") from exc
        if failures:
            first = failures[min(failures)]
            raise DeadLetterError(
                f"dead-letter sink {self.sink.name} refused {len(failures)} entries: {first.reason}"
            )

    async def aclose(self) -> None:
        return None


def read_entries(path: str | Path) -> list[dict[str, Any]]:
    """Every entry of a dead-letter file, oldest first."""
    result: list[dict[str, Any]] = []
    with Path(path).open("rb") as fh:
        for line in fh:
            if line.strip():
                result.append(orjson.loads(line))
    return result
