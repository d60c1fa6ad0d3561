"""A full disk tears no line: every record is delivered or dead-lettered, counted alike by
``fanout dlq inspect`` and ``fanout status``.

The worker runs in the test's event loop against the stream server, with a file sink and a
handler whose bad records go to a dead-letter file. Every append (``fanout.appendfile``,
the seam every JSON-lines file write goes through) draws on one small "disk": once it is
full, a write is cut short and the next fails with ENOSPC, as a full file system answers;
a write cut back frees its space again, and a task frees a little more now and then.
Both files run into it many times.
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import orjson
import pytest
import yaml

from fanout import appendfile
from fanout.app import Worker
from fanout.cli import main
from fanout.config import load_config
from fanout.retry import RetryPolicy
from fanout.stream.reader import ReaderOptions
from fanout.testing.streamserver import Change, StreamServer

pytestmark = pytest.mark.integration

RECORDS = 60
BAD = {3, 17, 18, 41, 59}
KEYS = [f"bad-{i:02d}" if i in BAD else f"ok-{i:02d}" for i in range(RECORDS)]


class SmallDisk:
    """``os.write`` on a disk of ``capacity`` bytes holding ``files``: a write past the end is
    cut short, the next one fails with ENOSPC; a file cut back frees its space again. Counts
    refusals per file."""

    def __init__(self, capacity: int, files: list[Path]) -> None:
        self.capacity = capacity
        self.files = files
        self.refused: Counter[str] = Counter()

    def write(self, fd: int, data: memoryview | bytes) -> int:
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        free = self.capacity - sum(f.stat().st_size for f in self.files if f.exists())
        if free <= 0:
            self.refused[name] += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, bytes(data[:free]))

    async def grow_now_and_then(self, step: int, every: float) -> None:
        while True:
            await anyio.sleep(every)
            self.capacity += step


def whole_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of ``path``; fails on a line that is not whole JSON."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"{path.name} ends in a torn line"
    return [orjson.loads(line) for line in data.splitlines()]


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    code = await anyio.to_thread.run_sync(main, list(argv))
    out = capsys.readouterr().out
    assert code == 0, out
    return orjson.loads(out)


async def test_a_full_disk_tears_no_line_and_loses_no_record(tmp_path, monkeypatch, capsys):
    audit: Path = tmp_path / "audit.jsonl"
    dlq: Path = tmp_path / "dlq-picky.jsonl"
    disk = SmallDisk(3_000, [audit, dlq])
    monkeypatch.setattr(appendfile, "_write", disk.write)
    async with StreamServer() as server:
        stream = server.add_stream("Orders", keys=("pk",))
        server.put(
            stream.shards[0],
            [Change("INSERT", {"pk": {"S": k}}, {"pk": {"S": k}, "n": {"N": "1"}}) for k in KEYS],
        )
        path = tmp_path / "fanout.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "streams": {
                        "orders": {
                            "table": "Orders",
                            "endpoint_url": server.endpoint_url,
                            "region": "us-east-1",
                            "max_idle_interval": 0.1,
                        }
                    },
                    "checkpoints": {"path": str(tmp_path / "fanout.db"), "interval": 0.1},
                    "http": {"enabled": False},
                    "sinks": {
                        "audit": {
                            "type": "file",
                            "path": str(tmp_path / "audit.jsonl"),
                            "batch_size": 8,
                            "retry": {"max_attempts": -1},
                        },
                        "picky": {
                            "type": "handler",
                            "handler": "tests.integration.misbehaving_handlers:refuses_bad",
                            "batch_size": 10,
                            "retry": {"max_attempts": 2},
                        },
                    },
                }
            )
        )
        worker = Worker(
            load_config(path),
            handle_signals=False,
            backoff=RetryPolicy(0.005, 0.02),
            reader_options=ReaderOptions(min_poll_interval=0.0),
        )

        def done() -> bool:
            if not (audit.exists() and dlq.exists()):
                return False
            return audit.read_bytes().count(b"\n") >= RECORDS and (
                dlq.read_bytes().count(b"\n") >= len(BAD)
            )

        codes: list[int] = []

        async def run() -> None:
            codes.append(await worker.run())

        async with anyio.create_task_group() as tg:
            tg.start_soon(disk.grow_now_and_then, 500, 0.05)
            async with anyio.create_task_group() as running:
                running.start_soon(run)
                with anyio.fail_after(60):
                    while not done():
                        await anyio.sleep(0.05)
                worker.stop()  # drains, writes the checkpoint, returns
            tg.cancel_scope.cancel()
        assert codes == [0]

    # The disk ran full under both files, many times.
    assert disk.refused["audit.jsonl"] >= 3, disk.refused
    assert disk.refused["dlq-picky.jsonl"] >= 1, disk.refused
    # No torn line anywhere; every record once, in order, or dead-lettered exactly once.
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in whole_lines(audit)] == KEYS
    letters = whole_lines(dlq)
    assert sorted(e["record"]["dynamodb"]["Keys"]["pk"]["S"] for e in letters) == [
        KEYS[i] for i in sorted(BAD)
    ]
    assert not (tmp_path / "dlq-audit.jsonl").exists()
    # Counted alike by the two commands that read them.
    summaries = await cli(capsys, "dlq", "inspect", "--config", str(path), "--json")
    inspect = {s["sink"]: s["pending"] for s in summaries}
    status = await cli(capsys, "status", "--config", str(path), "--json")
    counted = {d["sink"]: d["records"] for d in status["dead_letters"]}
    assert inspect == counted == {"audit": 0, "picky": len(BAD)}
    # The checkpoint is at the last record: nothing left to deliver again.
    (shard,) = status["shards"]
    assert shard["sequence_number"] == whole_lines(audit)[-1]["dynamodb"]["SequenceNumber"]
