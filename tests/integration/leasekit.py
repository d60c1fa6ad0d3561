"""Several worker processes on one stream: a delivery log per process, a steady writer that
keeps each key in one shard lineage while shards roll over, and a view of the lease table.

Each worker process runs the handler :func:`log_delivery` for its sinks; it appends one
JSON line per record to ``$FANOUT_TEST_OUT`` (one file per process) with the wall time, the
process id and the sink, so the test can tell who delivered what, and when.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fanout.testing.streamserver import Change, Shard, Stream, StreamServer
from tests.integration.process import REPO, read_lines


async def log_delivery(event: dict[str, Any], context: Any) -> None:
    """A sink handler: one line per record, written at once (no await between the worker's
    lease check and this write)."""
    now = time.time()
    pid = os.getpid()
    sink = context.function_name
    data = b"".join(
        orjson.dumps(
            {
                "t": now,
                "pid": pid,
                "sink": sink,
                "seq": r["dynamodb"]["SequenceNumber"],
                "key": r["dynamodb"]["Keys"]["pk"]["S"],
            }
        )
        + b"\n"
        for r in event["Records"]
    )
    with open(os.environ["FANOUT_TEST_OUT"], "ab") as out:
        out.write(data)


async def log_slowly(event: dict[str, Any], context: Any) -> None:
    """:func:`log_delivery` after 50 ms per batch: a slow sink."""
    import anyio

    await anyio.sleep(0.05)
    await log_delivery(event, context)


class Worker:
    """``python -m fanout run --config CONFIG`` with its own delivery log and process log."""

    def __init__(self, config: Path, work: Path, name: str, **env: str) -> None:
        self.name = name
        self.out = work / f"deliveries-{name}.jsonl"
        self.log_path = work / f"worker-{name}.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fanout", "run", "--config", str(config)],
            cwd=REPO,
            env=dict(os.environ, FANOUT_TEST_OUT=str(self.out), PYTHONPATH=str(REPO), **env),
            stdout=self._log,
            stderr=self._log,
        )
        self.pid = self.proc.pid

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        self._log.close()
        return code

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(30)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait()

    def deliveries(self) -> list[dict[str, Any]]:
        return read_lines(self.out)

    def events(self, name: str) -> list[dict[str, Any]]:
        """The worker's JSON log lines called ``name``."""
        return [r for r in read_lines(self.log_path) if r.get("event") == name]


def log_time(line: dict[str, Any]) -> float:
    """Epoch seconds of a JSON log line's ``timestamp`` (UTC, milliseconds)."""
    import datetime

    stamp = datetime.datetime.strptime(line["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
    return stamp.replace(tzinfo=datetime.UTC).timestamp()


# -- the stream -------------------------------------------------------------------------------


@dataclass
class Writer:
    """Writes to every lineage of a stream from a thread; each key stays in one lineage
    (lane), as an item stays in one shard lineage on DynamoDB, and rolls a random lineage
    over every ``rollover_every`` seconds."""

    server: StreamServer
    stream: Stream
    keys_per_lane: int = 4
    per_tick: int = 6
    tick: float = 0.05
    rollover_every: float = 1.5
    seed: int = 3
    lanes: list[Shard] = field(default_factory=list)
    written: int = 0
    rollovers: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.lanes = list(self.stream.shards)
        self._versions: dict[str, int] = defaultdict(int)
        self._rng = random.Random(self.seed)

    def start(self) -> Writer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        last_rollover = time.monotonic()
        while not self._stop.wait(self.tick):
            for lane in self._rng.sample(range(len(self.lanes)), self.per_tick):
                key = f"k{lane}-{self._rng.randrange(self.keys_per_lane)}"
                self._versions[key] += 1
                keys = {"pk": {"S": key}, "sk": {"S": "v"}}
                image = {**keys, "v": {"N": str(self._versions[key])}}
                self.server.put(self.lanes[lane], Change("MODIFY", keys, image, None))
                self.written += 1
            if self.rollover_every and time.monotonic() - last_rollover >= self.rollover_every:
                last_rollover = time.monotonic()
                lane = self._rng.randrange(len(self.lanes))
                self.lanes[lane] = self.server.rollover(self.lanes[lane])
                self.rollovers += 1


def shard_of(stream: Stream) -> dict[str, str]:
    return {r["dynamodb"]["SequenceNumber"]: s.shard_id for s in stream.shards for r in s.records()}


# -- the lease table --------------------------------------------------------------------------


@dataclass
class Lease:
    shard_id: str
    owner: str | None
    finished: bool
    sequence: str | None


class LeaseTable:
    """The application's rows of a DynamoDB lease table, read with boto3."""

    def __init__(self, endpoint_url: str, table: str, application: str) -> None:
        import boto3

        self.client = boto3.client("dynamodb", endpoint_url=endpoint_url, region_name="us-east-1")
        self.table = table
        self.pk = f"app#{application}"

    def items(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": self.pk}},
            "ConsistentRead": True,
        }
        while True:
            try:
                page = self.client.query(**kwargs)
            except self.client.exceptions.ResourceNotFoundException:
                return []  # the workers have not created it yet
            items += page["Items"]
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def leases(self) -> list[Lease]:
        found = []
        for item in self.items():
            sk = item["sk"]["S"]
            if sk.startswith("shard#"):
                found.append(
                    Lease(
                        sk.rpartition("#")[2],
                        item.get("owner", {}).get("S"),
                        bool(item.get("finished", {}).get("BOOL")),
                        item.get("seq", {}).get("S"),
                    )
                )
        return found

    def workers(self) -> dict[int, str]:
        """pid -> worker id, of every worker row."""
        return {
            int(item["pid"]["N"]): item["sk"]["S"].removeprefix("worker#")
            for item in self.items()
            if item["sk"]["S"].startswith("worker#")
        }

    def open_owners(self) -> dict[str, str | None]:
        """Unfinished shard -> its owner."""
        return {lease.shard_id: lease.owner for lease in self.leases() if not lease.finished}

    def close(self) -> None:
        self.client.close()


def counts(owners: dict[str, str | None], workers: Iterable[str]) -> dict[str, int]:
    result = dict.fromkeys(workers, 0)
    for owner in owners.values():
        if owner in result:
            result[owner] += 1
    return result


def wait_until(predicate: Any, timeout: float, what: str, every: float = 0.1) -> float:
    """Poll ``predicate`` until true; returns the monotonic time it first was."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


# -- checks -----------------------------------------------------------------------------------


def first_deliveries(lines: list[dict[str, Any]], sink: str) -> list[dict[str, Any]]:
    """The first delivery of each record to ``sink``, in time order (ties: file order)."""
    ordered = sorted((line for line in lines if line["sink"] == sink), key=lambda line: line["t"])
    seen: set[str] = set()
    first = []
    for line in ordered:
        if line["seq"] not in seen:
            seen.add(line["seq"])
            first.append(line)
    return first


def check_key_order(lines: list[dict[str, Any]], sink: str) -> int:
    """Per key, first deliveries to ``sink`` come in sequence-number order; returns keys."""
    last: dict[str, int] = {}
    for line in first_deliveries(lines, sink):
        seq = int(line["seq"])
        assert seq > last.get(line["key"], 0), f"{sink}: key {line['key']} out of order at {seq}"
        last[line["key"]] = seq
    return len(last)


def longest_overlap(
    lines: list[dict[str, Any]], owner_of: dict[str, str], gap: float
) -> tuple[float, str]:
    """The longest time two processes delivered records of one shard in overlapping
    periods. A process's period on a shard is a run of its deliveries of that shard with no
    pause longer than ``gap``. Returns (seconds, shard)."""
    periods: dict[tuple[str, int], list[list[float]]] = defaultdict(list)
    for line in sorted(lines, key=lambda line: line["t"]):
        shard = owner_of.get(line["seq"])
        if shard is None:
            continue
        runs = periods[(shard, line["pid"])]
        if runs and line["t"] - runs[-1][1] <= gap:
            runs[-1][1] = line["t"]
        else:
            runs.append([line["t"], line["t"]])
    worst, where = 0.0, ""
    by_shard: dict[str, list[tuple[int, list[float]]]] = defaultdict(list)
    for (shard, pid), runs in periods.items():
        by_shard[shard] += [(pid, run) for run in runs]
    for shard, spans in by_shard.items():
        for i, (pid_a, a) in enumerate(spans):
            for pid_b, b in spans[i + 1 :]:
                if pid_a != pid_b:
                    overlap = min(a[1], b[1]) - max(a[0], b[0])
                    if overlap > worst:
                        worst, where = overlap, shard
    return worst, where
