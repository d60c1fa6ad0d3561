"""A worker in its own process (so tests can SIGKILL it), and reading what it wrote."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from fanout.testing.searchserver import SearchServer

REPO = Path(__file__).parents[2]


class WorkerProcess:
    """``python -m fanout run --config CONFIG``; handlers write to ``$FANOUT_TEST_OUT``.

    A worker still running when its test ends (the test failed before stopping it) is
    killed by ``reap`` (an autouse fixture), so it cannot go on writing to a later test's
    tables and ports.
    """

    running: set[WorkerProcess] = set()

    @classmethod
    def reap(cls) -> None:
        for worker in list(cls.running):
            if worker.proc.poll() is None:
                worker.kill()
        cls.running.clear()

    def __init__(self, config: Path, out: Path, log: Path) -> None:
        env = dict(os.environ, FANOUT_TEST_OUT=str(out), PYTHONPATH=str(REPO))
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fanout", "run", "--config", str(config)],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=self.log,
        )
        WorkerProcess.running.add(self)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()
        WorkerProcess.running.discard(self)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.log.close()
        WorkerProcess.running.discard(self)
        return code


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every JSON line of ``path``; a last line cut by SIGKILL (never acknowledged) is skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_bytes().splitlines():
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    return rows


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def checkpoint(db: Path) -> int:
    """The highest sequence number checkpointed in the SQLite store ``db`` (0: none yet)."""
    if not db.exists():
        return 0
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT sequence_number FROM checkpoints WHERE sequence_number IS NOT NULL"
        ).fetchall()
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()
    return max((int(seq) for (seq,) in rows), default=0)


def stream_records(ddb_streams: Any, stream_arn: str) -> list[dict[str, Any]]:
    """Every record of every shard of a DynamoDB Local stream, read to its end."""
    records = []
    shards = ddb_streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
    for shard in shards:
        iterator = ddb_streams.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        empty = 0
        while iterator and empty < 3:
            page = ddb_streams.get_records(ShardIterator=iterator, Limit=1000)
            records.extend(page["Records"])
            empty = 0 if page["Records"] else empty + 1
            iterator = page.get("NextShardIterator")
    return records


def index_as_documents(server: SearchServer) -> dict[str, dict[str, Any]]:
    """The documents of the local search server's ``orders`` index without fanout's
    bookkeeping, tags sorted (a set in the table)."""
    docs = {}
    for doc_id, source in server.documents("orders").items():
        body = {k: v for k, v in source.items() if k != "_fanout"}
        body["tags"] = sorted(body["tags"])
        docs[doc_id] = body
    return docs
