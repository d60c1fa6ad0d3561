"""Shard lifecycle tests: a collecting handler, a worker runner, and delivery checks.

The worker runs in the test's event loop against a ``StreamServer``; its only sink is the
``handler`` sink calling :func:`collect`, which records every delivered record in
``COLLECTOR`` (in delivery order). The checks compare that with what the server holds.
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from fanout.app import Worker
from fanout.config import Config, build_config
from fanout.observe.metrics import Metrics
from fanout.retry import RetryPolicy
from fanout.stream.follow import StreamWorker
from fanout.stream.reader import ReaderOptions
from fanout.testing.streamserver import Call, Change, Shard, Stream, StreamServer


@dataclass
class Delivery:
    seq: str
    key: str
    arn: str | None


@dataclass
class Collector:
    """What the ``collect`` handler saw, and knobs to hold it back."""

    deliveries: list[Delivery] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # sequence numbers delivered at least once
    blocked_keys: set[str] = field(default_factory=set)  # batches with these keys never return
    gate: anyio.Event | None = None  # when set, every batch waits for it
    delay: float = 0.0  # seconds each batch takes

    def reset(self) -> None:
        self.deliveries = []
        self.seen = set()
        self.blocked_keys = set()
        self.gate = None
        self.delay = 0.0

    @property
    def seqs(self) -> list[str]:
        return [d.seq for d in self.deliveries]

    def count(self) -> int:
        return len(self.deliveries)

    def distinct(self) -> set[str]:
        return self.seen


COLLECTOR = Collector()


async def collect(event: dict[str, Any], context: Any) -> None:
    """The handler: record every record of the batch, in order."""
    records = event["Records"]
    if COLLECTOR.blocked_keys and any(_key(r) in COLLECTOR.blocked_keys for r in records):
        await anyio.sleep_forever()
    if COLLECTOR.gate is not None:
        await COLLECTOR.gate.wait()
    if COLLECTOR.delay:
        await anyio.sleep(COLLECTOR.delay)
    batch = [
        Delivery(r["dynamodb"]["SequenceNumber"], _key(r), r.get("eventSourceARN")) for r in records
    ]
    COLLECTOR.deliveries.extend(batch)
    COLLECTOR.seen.update(d.seq for d in batch)


def _key(record: dict[str, Any]) -> str:
    return str(record["dynamodb"]["Keys"]["pk"]["S"])


# -- config and running -----------------------------------------------------------------------


def fast_options(seed: int = 0) -> ReaderOptions:
    return ReaderOptions(
        min_poll_interval=0.005,
        child_lookup_delay=0.05,
        retry=RetryPolicy(0.01, 0.2, floor=0.5, rng=random.Random(seed)),
    )


def make_config(
    server: StreamServer,
    tmp_path: Path,
    *,
    table: str | None = None,
    stream_arn: str | None = None,
    stream: dict[str, Any] | None = None,
    sink: dict[str, Any] | None = None,
    **settings: Any,
) -> Config:
    source: dict[str, Any] = {"table": table} if table else {"stream_arn": stream_arn}
    data: dict[str, Any] = {
        "streams": {
            "orders": {
                **source,
                "endpoint_url": server.endpoint_url,
                "region": "us-east-1",
                "max_idle_interval": "100ms",
                "discovery_interval": "1h",
                **(stream or {}),
            }
        },
        "checkpoints": {"path": str(tmp_path / "fanout.db"), "interval": "100ms"},
        "http": {"enabled": False},
        "shutdown_grace": 2,
        "sinks": {
            "collect": {
                "type": "handler",
                "handler": "tests.integration.shardkit:collect",
                "copy_event": False,
                "batch_size": 100,
                "retry": {"initial_backoff": 0.01, "max_backoff": 0.1},
                **(sink or {}),
            }
        },
    }
    data.update(settings)
    return build_config(data)


@dataclass
class Run:
    worker: Worker
    exited: anyio.Event = field(default_factory=anyio.Event)
    code: int | None = None

    @property
    def stream(self) -> StreamWorker:
        return self.worker.workers[0]

    def sample(self, name: str, **labels: str) -> float:
        value = self.worker.metrics.registry.get_sample_value(name, {"stream": "orders", **labels})
        return value or 0.0


@asynccontextmanager
async def running(
    config: Config, options: ReaderOptions | None = None, *, stop: bool = True
) -> AsyncIterator[Run]:
    """Run a worker for the body; stop it (gracefully) afterwards and keep its exit code."""
    worker = Worker(
        config, metrics=Metrics(), handle_signals=False, reader_options=options or fast_options()
    )
    run = Run(worker)

    async def main() -> None:
        try:
            run.code = await worker.run()
        finally:
            run.exited.set()

    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(main)
        await worker.started.wait()
        try:
            yield run
        except Exception as exc:  # re-raised below, outside the task group
            failure = exc
        finally:
            if stop:
                worker.stop()
            with anyio.fail_after(30):
                await run.exited.wait()
    if failure is not None:
        raise failure


async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await anyio.sleep(0.01)


async def wait_delivered(expected: Iterable[str], timeout: float = 20.0) -> None:
    want = set(expected)
    try:
        await wait_for(lambda: want <= COLLECTOR.seen, timeout, f"{len(want)} records")
    except AssertionError:
        missing = len(want - COLLECTOR.seen)
        raise AssertionError(
            f"{missing} of {len(want)} records not delivered in {timeout}s"
        ) from None


# -- writing ----------------------------------------------------------------------------------


def change(key: str, version: int) -> Change:
    keys = {"pk": {"S": key}, "sk": {"S": "v"}}
    return Change("MODIFY", keys, {**keys, "v": {"N": str(version)}}, None)


def put_keys(
    server: StreamServer,
    shard: Shard,
    keys: Iterable[str],
    version: int,
    *,
    at: float | None = None,
) -> list[str]:
    return server.put(shard, [change(k, version) for k in keys], at=at)


def record_calls(server: StreamServer) -> list[Call]:
    """Every request the server gets from now on (a fault that never fires)."""
    calls: list[Call] = []

    def note(call: Call) -> bool:
        calls.append(call)
        return False

    server.fail(None, None, times=None, where=note)
    return calls


def iterator_types(calls: list[Call], shard_id: str) -> list[str]:
    return [
        c.body["ShardIteratorType"]
        for c in calls
        if c.op == "GetShardIterator" and c.shard_id == shard_id
    ]


# -- checks -----------------------------------------------------------------------------------


def shard_of(stream: Stream) -> dict[str, str]:
    """Sequence number -> shard id, trimmed records included."""
    return {
        r["dynamodb"]["SequenceNumber"]: shard.shard_id
        for shard in stream.shards
        for r in shard.records(include_trimmed=True)
    }


def all_seqs(stream: Stream, *, include_trimmed: bool = False) -> set[str]:
    return {
        r["dynamodb"]["SequenceNumber"]
        for shard in stream.shards
        for r in shard.records(include_trimmed=include_trimmed)
    }


def check_lineage(stream: Stream, deliveries: list[Delivery]) -> int:
    """Every record of a child is delivered after the first delivery of every record of its
    parent. Returns how many parent/child pairs were checked."""
    owner = shard_of(stream)
    first: dict[str, int] = {}
    earliest: dict[str, int] = {}  # shard -> earliest delivery index of any of its records
    latest_first: dict[str, int] = {}  # shard -> latest first-delivery index of its records
    for i, d in enumerate(deliveries):
        sid = owner.get(d.seq)
        if sid is None:
            continue
        earliest.setdefault(sid, i)
        if d.seq not in first:
            first[d.seq] = i
            latest_first[sid] = i
    pairs = 0
    for shard in stream.shards:
        parent = shard.parent_id
        if parent is None or shard.shard_id not in earliest or parent not in latest_first:
            continue
        assert earliest[shard.shard_id] > latest_first[parent], (
            f"{shard.shard_id} delivered a record (#{earliest[shard.shard_id]}) before its "
            f"parent {parent} delivered its last one (#{latest_first[parent]})"
        )
        pairs += 1
    return pairs


def check_key_order(deliveries: list[Delivery]) -> int:
    """Per key, first deliveries come in sequence-number order (the server's sequence
    numbers grow over time, so that is write order). Returns the number of keys."""
    seen: set[str] = set()
    last: dict[str, int] = defaultdict(int)
    for d in deliveries:
        if d.seq in seen:
            continue
        seen.add(d.seq)
        seq = int(d.seq)
        assert seq > last[d.key], f"key {d.key}: {d.seq} delivered after a later record"
        last[d.key] = seq
    return len(last)


def events(caplog: Any, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == name]
