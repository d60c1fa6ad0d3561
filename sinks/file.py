"""JSON lines sinks: ``file`` (appended to a path) and ``stdout``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Literal

import orjson
from pydantic import Field

from fanout.config import SinkConfig
from fanout.records import Record
from fanout.sink import Failures, SinkContext, SinkType


class FileSinkConfig(SinkConfig):
    """Options of the ``file`` sink."""

    type: Literal["file"] = "file"
    path: str = Field(description="File the records are appended to, one JSON object a line.")
    fsync: bool = Field(
        False, description="fsync after every batch (survives an OS crash, not only kill -9)."
    )


class StdoutSinkConfig(SinkConfig):
    """Options of the ``stdout`` sink."""

    type: Literal["stdout"] = "stdout"


class JsonLinesSink:
    """Writes each record as one JSON line; a batch is flushed before it counts as sent."""

    ordered = True

    def __init__(self, name: str, path: Path | None, *, fsync: bool = False) -> None:
        self.name = name
        self.path = path
        self.fsync = fsync
        self._out: IO[bytes] | None = None

    async def start(self) -> None:
        if self.path is None:
            self._out = sys.stdout.buffer
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = self.path.open("ab")

    async def send(self, batch: Sequence[Record]) -> Failures:
        out = self._out
        assert out is not None, "send() before start()"
        dumps = orjson.dumps
        out.write(b"".join([dumps(r) + b"\n" for r in batch]))
        out.flush()
        if self.fsync:
            import os

            os.fsync(out.fileno())
        return {}

    async def stop(self) -> None:
        if self._out is not None and self.path is not None:
            self._out.close()
        self._out = None


def _build_file(name: str, config: FileSinkConfig, ctx: SinkContext) -> JsonLinesSink:
    return JsonLinesSink(name, Path(config.path), fsync=config.fsync)


def _build_stdout(name: str, config: StdoutSinkConfig, ctx: SinkContext) -> JsonLinesSink:
    return JsonLinesSink(name, None)


FILE: SinkType[FileSinkConfig] = SinkType(FileSinkConfig, _build_file)
STDOUT: SinkType[StdoutSinkConfig] = SinkType(StdoutSinkConfig, _build_stdout)
