"""The file and stdout sinks: off the event loop, bounded in time, no torn lines, 0600."""

from __future__ import annotations

import io
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from fanout import appendfile
from fanout.config import Config, build_config
from fanout.errors import ConfigError, SinkUnavailable
from sinks.file import JsonLinesSink
from tests.unit.delivery_fakes import rec
from tests.unit.test_appendfile import FullDisk


def read(path) -> list[str]:
    return [orjson.loads(line)["eventID"] for line in path.read_bytes().splitlines()]


def config(tmp_path: Path, **sink: Any) -> Config:
    return build_config(
        {
            "streams": {"orders": {"table": "Orders"}},
            "checkpoints": {"path": str(tmp_path / "fanout.db")},
            "sinks": {"audit": {"type": "file", "path": str(tmp_path / "a.jsonl"), **sink}},
        }
    )


def test_file_mode_is_read_as_octal_and_wrong_ones_name_the_field(tmp_path):
    def mode(**sink: Any) -> Any:
        return getattr(config(tmp_path, **sink).sinks["audit"], "file_mode", None)

    assert mode() == 0o600
    assert mode(file_mode="0640") == 0o640
    assert mode(file_mode=0o644) == 0o644
    with pytest.raises(ConfigError, match=r"sinks\.audit\.file_mode: .*octal"):
        config(tmp_path, file_mode=600)
    with pytest.raises(ConfigError, match=r"sinks\.audit\.file_mode"):
        config(tmp_path, file_mode="rw-------")
    dl = {"type": "file", "file_mode": "0640"}
    assert config(tmp_path, dead_letter=dl).sinks["audit"].dead_letter.file_mode == 0o640


async def test_the_file_is_created_private_by_default(tmp_path):
    old = os.umask(0)
    try:
        sink = JsonLinesSink("audit", tmp_path / "out" / "a.jsonl")
        await sink.start()
        await sink.send([rec(1)])
        await sink.stop()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out" / "a.jsonl").stat().st_mode) == 0o600


async def test_a_full_disk_fails_the_batch_and_leaves_no_torn_line(tmp_path, monkeypatch):
    path = tmp_path / "a.jsonl"
    sink = JsonLinesSink("audit", path, fsync=True)
    await sink.start()
    await sink.send([rec(1), rec(2)])
    disk = FullDisk(room=50)
    monkeypatch.setattr(appendfile, "_write", disk)
    with pytest.raises(OSError, match="No space"):
        await sink.send([rec(3), rec(4)])
    assert read(path) == ["e1", "e2"]
    disk.room = 1 << 20
    await sink.send([rec(3), rec(4)])
    assert read(path) == ["e1", "e2", "e3", "e4"]
    await sink.stop()


async def test_stdout_that_nobody_reads_fails_the_batch_in_time_and_never_blocks_the_loop(
    monkeypatch,
):
    read_end, write_end = os.pipe()
    out = io.TextIOWrapper(open(write_end, "wb"))
    monkeypatch.setattr(sys, "stdout", out)
    sink = JsonLinesSink("console", None, write_timeout=0.3)
    await sink.start()
    big = [rec(i) for i in range(2000)]  # far more than a pipe holds
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        started = time.monotonic()
        with pytest.raises(SinkUnavailable, match=r"did not finish within 0\.3s") as caught:
            await sink.send(big)
        assert time.monotonic() - started < 2
        assert caught.value.retry_after is not None
        assert ticks >= 10  # the event loop ran all along
        # A second write waits for the stuck one (never interleaves), and times out too.
        with pytest.raises(SinkUnavailable):
            await sink.send([rec(5000)])
        tg.cancel_scope.cancel()
    # Someone reads again: the stuck write completes, and the sink works.
    received = bytearray()
    with open(read_end, "rb", buffering=0) as reader:
        while received.count(b"\n") < len(big):
            received += reader.read(1 << 16)
        await sink.send([rec(9999)])
        while received.count(b"\n") < len(big) + 1:
            received += reader.read(1 << 16)
    lines = [orjson.loads(line)["eventID"] for line in bytes(received).splitlines()]
    assert lines == [r["eventID"] for r in big] + ["e9999"]
    await sink.stop()
    out.close()
