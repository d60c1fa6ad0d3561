"""The ``file`` dead-letter destination: JSON lines, appended and fsynced; read back, with the
keys of redriven entries in a ``.redriven`` sidecar file next to it."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import anyio
import anyio.to_thread
import orjson

from fanout.delivery.deadletter.base import Entry, Letter, entry_key
from fanout.errors import DeadLetterError

log = logging.getLogger("fanout.deadletter")

SIDECAR_SUFFIX = ".redriven"


def _append_synced(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class FileDeadLetter:
    """JSON lines appended to a file, flushed and fsynced before ``write`` returns.

    Each write is one ``write()`` call of whole lines on a file opened for appending, so
    concurrent writers never interleave within a line; a line cut short by a crash was never
    acknowledged (its records were not settled) and readers skip it.

    Reading never rewrites the file: ``acknowledge`` appends the keys of redriven entries to
    the sidecar (``<file>.redriven``), and ``read`` marks the entries whose key is there.
    """

    def __init__(self, path: str | Path, name: str = "file") -> None:
        self.path = Path(path)
        self.name = f"{name}:{self.path}" if name == "file" else name
        self.sidecar = Sidecar(self.path)
        self._lock = anyio.Lock()
        self._acknowledged: set[str] | None = None  # keys in the sidecar, once read

    @property
    def location(self) -> str:
        """The file's path."""
        return str(self.path)

    async def write(self, entries: list[Entry]) -> None:
        """Append ``entries`` as JSON lines and fsync."""
        data = b"".join(orjson.dumps(e) + b"\n" for e in entries)
        async with self._lock:
            try:
                await anyio.to_thread.run_sync(_append_synced, self.path, data)
            except OSError as exc:
                raise DeadLetterError(f"dead-letter file {self.path}: {exc}") from exc

    async def aclose(self) -> None:
        """Nothing to release: the file is opened for each write."""
        return None

    # -- reading --------------------------------------------------------------------------------

    async def read(self) -> AsyncIterator[list[Letter]]:
        """Every entry of the file, oldest first, as one batch (none if there is no file);
        entries redriven before are marked ``acknowledged``."""
        try:
            entries = await anyio.to_thread.run_sync(read_entries, self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise DeadLetterError(f"dead-letter file {self.path}: {exc}") from exc
        done = await self._keys()
        yield [Letter(item, acknowledged=entry_key(item) in done) for item in entries]

    async def acknowledge(self, letters: list[Letter], *, target: str) -> None:
        """Append the keys of ``letters`` (those not there yet) to the sidecar, fsynced."""
        done = await self._keys()
        keys: list[str] = []
        for letter in letters:
            if letter.entry is None:
                continue
            key = entry_key(letter.entry)
            if key not in done:
                done.add(key)
                keys.append(key)
        try:
            await self.sidecar.add(keys, target)
        except OSError as exc:
            raise DeadLetterError(f"redrive sidecar {self.sidecar.path}: {exc}") from exc

    async def release(self, letters: list[Letter]) -> None:
        """Nothing to do: entries not acknowledged stay pending in the file."""
        return None

    async def _keys(self) -> set[str]:
        if self._acknowledged is None:
            self._acknowledged = await anyio.to_thread.run_sync(self.sidecar.keys)
        return self._acknowledged


class Sidecar:
    """``<dead-letter file>.redriven``: one JSON line per redriven record key, fsynced."""

    def __init__(self, dlq_path: Path) -> None:
        self.path = dlq_path.with_name(dlq_path.name + SIDECAR_SUFFIX)

    def keys(self) -> set[str]:
        """Keys of every record redriven so far."""
        if not self.path.exists():
            return set()
        done: set[str] = set()
        for line in self.path.read_bytes().splitlines():
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # cut short by a crash: that batch counts as not recorded
            if isinstance(item, dict) and isinstance(item.get("key"), str):
                done.add(item["key"])
        return done

    async def add(self, keys: Iterable[str], target: str) -> None:
        """Record ``keys`` as redriven to ``target``."""
        now = time.time()
        data = b"".join(orjson.dumps({"key": k, "to": target, "at": now}) + b"\n" for k in keys)
        if data:
            await anyio.to_thread.run_sync(_append_synced, self.path, data)


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
