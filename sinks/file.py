"""JSON lines sinks: ``file`` (appended to a path) and ``stdout``.

Writes never run on the event loop: each sink has one thread of its own
(``fanout.isolation.Offload``), and a write that does not finish within ``write_timeout``
(a stuck disk, a pipe nobody reads) fails its batch instead of freezing anything else; the
stuck write keeps the thread, so later writes wait for it and never interleave with it.
A failed append to a file is cut back to where it started (``fanout.appendfile``), so a
retry never glues onto a fragment.
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Literal

import anyio
import orjson
from pydantic import Field

from fanout.appendfile import DEFAULT_MODE, AppendFile
from fanout.config import SinkConfig
from fanout.config.types import Duration, FileMode
from fanout.errors import SinkUnavailable
from fanout.isolation import Offload
from fanout.records import Record
from fanout.sink import Failures, SinkContext, SinkType

# A write that did not finish in time leaves the sink alone this long before the next try.
_PAUSE_AFTER_TIMEOUT_S = 1.0


class FileSinkConfig(SinkConfig):
    """Options of the ``file`` sink."""

    type: Literal["file"] = "file"
    path: str = Field(description="File the records are appended to, one JSON object a line.")
    fsync: bool = Field(
        False, description="fsync after every batch (survives an OS crash, not only kill -9)."
    )
    file_mode: FileMode = Field(
        DEFAULT_MODE,
        description="Permissions of the file when this creates it, in octal ('0600'); an "
        "existing file keeps its own.",
    )
    write_timeout: Duration = Field(
        30.0, gt=0, description="Seconds a batch's write may take before the batch fails."
    )


class StdoutSinkConfig(SinkConfig):
    """Options of the ``stdout`` sink."""

    type: Literal["stdout"] = "stdout"
    write_timeout: Duration = Field(
        30.0,
        gt=0,
        description="Seconds a batch's write may take (a pipe nobody reads) before the "
        "batch fails.",
    )


class _Stdout:
    """Standard output, written through its file descriptor when it has one (no Python
    buffer lock that a stuck write would hold), else through ``sys.stdout.buffer``."""

    def __init__(self) -> None:
        self.buffer: IO[bytes] = sys.stdout.buffer
        try:
            self.buffer.flush()
            self.fd: int | None = self.buffer.fileno()
        except (OSError, ValueError):  # io.UnsupportedOperation is both
            self.fd = None

    def append(self, data: bytes) -> None:
        fd = self.fd
        if fd is None:
            self.buffer.write(data)
            self.buffer.flush()
            return
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:  # a non-blocking pipe that is full: wait until it drains
                select.select([], [fd], [])


class JsonLinesSink:
    """Writes each record as one JSON line; a batch is written (and, with ``fsync``, made
    durable) before it counts as sent."""

    ordered = True

    def __init__(
        self,
        name: str,
        path: Path | None,
        *,
        fsync: bool = False,
        mode: int = DEFAULT_MODE,
        write_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.path = path
        self.fsync = fsync
        self.mode = mode
        self.write_timeout = write_timeout
        self._file: AppendFile | _Stdout | None = None
        self._offload: Offload | None = None

    async def start(self) -> None:
        offload = Offload(1, f"fanout-sink-{self.name}")
        if self.path is None:
            self._file = _Stdout()
        else:
            file = AppendFile(self.path, self.mode, fsync=self.fsync)
            await offload.run(file.open)
            self._file = file
        self._offload = offload

    async def send(self, batch: Sequence[Record]) -> Failures:
        out, offload = self._file, self._offload
        assert out is not None, "send() before start()"
        assert offload is not None
        dumps = orjson.dumps
        data = b"".join([dumps(r) + b"\n" for r in batch])
        with anyio.move_on_after(self.write_timeout) as scope:
            await offload.run(out.append, data)
        if scope.cancelled_caught:
            where = "standard output" if self.path is None else str(self.path)
            raise SinkUnavailable(
                f"writing to {where} did not finish within {self.write_timeout:g}s",
                retry_after=_PAUSE_AFTER_TIMEOUT_S,
            )
        return {}

    async def stop(self) -> None:
        file, offload = self._file, self._offload
        self._file = None
        self._offload = None
        if isinstance(file, AppendFile) and offload is not None and not offload.running:
            await offload.run(file.close)


def _build_file(name: str, config: FileSinkConfig, ctx: SinkContext) -> JsonLinesSink:
    return JsonLinesSink(
        name,
        Path(config.path),
        fsync=config.fsync,
        mode=config.file_mode,
        write_timeout=config.write_timeout,
    )


def _build_stdout(name: str, config: StdoutSinkConfig, ctx: SinkContext) -> JsonLinesSink:
    return JsonLinesSink(name, None, write_timeout=config.write_timeout)


FILE: SinkType[FileSinkConfig] = SinkType(FileSinkConfig, _build_file)
STDOUT: SinkType[StdoutSinkConfig] = SinkType(StdoutSinkConfig, _build_stdout)
