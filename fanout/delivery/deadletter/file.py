"""The ``file`` dead-letter destination: JSON lines, appended and fsynced."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import anyio
import anyio.to_thread
import orjson

from fanout.delivery.deadletter.base import Entry
from fanout.errors import DeadLetterError

log = logging.getLogger("fanout.deadletter")


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
