"""The ``file`` dead-letter destination: JSON lines, appended and fsynced; read back, with the
keys of redriven entries in a ``.redriven`` sidecar file next to it.

Every file operation runs on the destination's own thread (never anyio's shared ones, never
the event loop), and a write that fails part way is cut back to where it started
(``fanout.appendfile``), so its retry never glues onto a fragment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import IO

import anyio
import orjson

from fanout.appendfile import DEFAULT_MODE, AppendFile
from fanout.delivery.deadletter.base import Entry, Letter, entry_key
from fanout.errors import DeadLetterError
from fanout.isolation import Offload

log = logging.getLogger("fanout.deadletter")

SIDECAR_SUFFIX = ".redriven"


class FileDeadLetter:
    """JSON lines appended to a file, flushed and fsynced before ``write`` returns.

    Writes are whole lines, one at a time, on the destination's one thread; a write that
    fails is cut back to where it started, and a line cut short by a crash (never
    acknowledged: its records were not settled) is cut off before the next write. Readers
    count only whole lines that parse (``iter_entries``).

    Reading never rewrites the file: ``acknowledge`` appends the keys of redriven entries to
    the sidecar (``<file>.redriven``), and ``read`` marks the entries whose key is there.

    Args:
        path: the file.
        name: names the destination in logs (default ``file:<path>``).
        mode: permissions of the file (and its sidecar) when this creates it.
    """

    def __init__(self, path: str | Path, name: str = "file", mode: int = DEFAULT_MODE) -> None:
        self.path = Path(path)
        self.name = f"{name}:{self.path}" if name == "file" else name
        self._offload = Offload(1, f"fanout-dlq-{self.path.name}")
        self._file = AppendFile(self.path, mode)
        self.sidecar = Sidecar(self.path, self._offload, mode)
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
                await self._offload.run(self._file.append, data)
            except OSError as exc:
                raise DeadLetterError(f"dead-letter file {self.path}: {exc}") from exc

    async def aclose(self) -> None:
        """Close the file (unless a write still holds the thread: the process is ending)."""
        if not self._offload.running:
            await self._offload.run(self._file.close)

    # -- reading --------------------------------------------------------------------------------

    async def read(self) -> AsyncIterator[list[Letter]]:
        """Every entry of the file, oldest first, as one batch (none if there is no file);
        entries redriven before are marked ``acknowledged``."""
        try:
            entries = await self._offload.run(read_entries, self.path)
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
            self._acknowledged = await self._offload.run(self.sidecar.keys)
        return self._acknowledged


class Sidecar:
    """``<dead-letter file>.redriven``: one JSON line per redriven record key, fsynced."""

    def __init__(
        self, dlq_path: Path, offload: Offload | None = None, mode: int = DEFAULT_MODE
    ) -> None:
        self.path = dlq_path.with_name(dlq_path.name + SIDECAR_SUFFIX)
        self._offload = offload or Offload(1, f"fanout-dlq-{self.path.name}")
        self._file = AppendFile(self.path, mode)

    def keys(self) -> set[str]:
        """Keys of every record redriven so far."""
        if not self.path.exists():
            return set()
        with self.path.open("rb") as fh:
            return {item["key"] for item in iter_entries(fh) if isinstance(item.get("key"), str)}

    async def add(self, keys: Iterable[str], target: str) -> None:
        """Record ``keys`` as redriven to ``target``."""
        now = time.time()
        data = b"".join(orjson.dumps({"key": k, "to": target, "at": now}) + b"\n" for k in keys)
        if data:
            await self._offload.run(self._write, data)

    def _write(self, data: bytes) -> None:
        try:
            self._file.append(data)
        finally:
            self._file.close()  # the redrive command writes it a few times, then exits


def iter_entries(fh: IO[bytes], path: str | Path = "") -> Iterator[Entry]:
    """The entries of an open JSON-lines file: every whole line (ending in a newline) that
    parses as a JSON object. Anything else (a line cut short by a crash, never acknowledged)
    is skipped, with a warning when ``path`` is given.
    """
    for number, line in enumerate(fh, 1):
        if not line.strip():
            continue
        item = None
        if line.endswith(b"\n"):
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                pass
        if isinstance(item, dict):
            yield item
        elif path:
            log.warning("dead_letter_line_unreadable", extra={"path": str(path), "line": number})


def read_entries(path: str | Path) -> list[Entry]:
    """Every entry of a dead-letter file, oldest first (``iter_entries``)."""
    with Path(path).open("rb") as fh:
        return list(iter_entries(fh, path))


def count_entries(path: str | Path) -> int:
    """How many entries a dead-letter file holds, counted as ``read_entries`` reads them."""
    with Path(path).open("rb") as fh:
        return sum(1 for _ in iter_entries(fh))
