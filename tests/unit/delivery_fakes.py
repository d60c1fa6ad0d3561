"""Fakes for delivery tests: scripted sinks, in-memory dead-letter destinations, lanes."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from fanout.config import SinkConfig
from fanout.config.sinks import DeadLetterConfig, RetryConfig
from fanout.delivery import Lane, Route, ShardDispatch, SinkGate, open_lane
from fanout.delivery.deadletter import FileDeadLetter
from fanout.errors import DeadLetterError
from fanout.observe.metrics import Metrics
from fanout.progress.tracker import ShardProgress
from fanout.records import Record
from fanout.retry import RetryPolicy
from fanout.sink import Failures, Sink

ARN = "arn:aws:dynamodb:us-east-1:000000000000:table/Orders/stream/2024-01-01T00:00:00.000"
SHARD = "shardId-00000001"


def seq_of(i: int) -> str:
    return f"{1000 + i:021d}"


def rec(i: int, key: str | None = None, created: float | None = None) -> Record:
    """A wire record: sequence number from ``i``, item key ``key`` (default ``k<i>``)."""
    return {
        "eventID": f"e{i}",
        "eventName": "INSERT",
        "eventSource": "aws:dynamodb",
        "eventSourceARN": ARN,
        "dynamodb": {
            "ApproximateCreationDateTime": time.time() if created is None else created,
            "Keys": {"pk": {"S": key if key is not None else f"k{i}"}},
            "NewImage": {"pk": {"S": key if key is not None else f"k{i}"}, "n": {"N": str(i)}},
            "SequenceNumber": seq_of(i),
            "SizeBytes": 40,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


def seqs(records: Sequence[Record]) -> list[str]:
    return [r["dynamodb"]["SequenceNumber"] for r in records]


Behaviour = Callable[[Sequence[Record]], Failures]


@dataclass
class Events:
    """One timeline of sink calls and backoff sleeps, to count calls per retry round."""

    log: list[tuple[str, Any]] = field(default_factory=list)

    def rounds(self) -> list[list[list[str]]]:
        """Sink calls (as sequence lists) grouped by the backoff sleeps between them."""
        result: list[list[list[str]]] = [[]]
        for kind, value in self.log:
            if kind == "sleep":
                result.append([])
            elif kind == "send":
                result[-1].append(value)
        return result

    @property
    def sleeps(self) -> list[float]:
        return [v for k, v in self.log if k == "sleep"]


class ScriptedSink:
    """A sink whose answer comes from ``behaviour(batch)`` (which may raise)."""

    def __init__(
        self,
        name: str = "fake",
        *,
        ordered: bool = True,
        behaviour: Behaviour | None = None,
        events: Events | None = None,
        pause: int = 0,
    ) -> None:
        self.name = name
        self.ordered = ordered
        self.behaviour = behaviour or (lambda batch: {})
        self.events = events or Events()
        self.calls: list[list[str]] = []
        self.delivered: list[Record] = []
        self.pause = pause
        self.in_flight = 0
        self.max_in_flight = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, batch: Sequence[Record]) -> Failures:
        self.calls.append(seqs(batch))
        self.events.log.append(("send", seqs(batch)))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            for _ in range(self.pause):
                await anyio.lowlevel.checkpoint()
            failures = self.behaviour(batch)
        finally:
            self.in_flight -= 1
        retryable = [i for i, f in failures.items() if f.retryable]
        if self.ordered and retryable:
            first = min(retryable)
            self.delivered.extend(r for i, r in enumerate(batch) if i < first and i not in failures)
        else:
            self.delivered.extend(r for i, r in enumerate(batch) if i not in failures)
        return failures

    def calls_with(self, seq: str) -> int:
        return sum(1 for call in self.calls if seq in call)


class MemoryDeadLetter:
    """Keeps entries in a list; ``fail`` makes writes raise (``fail_times`` counts down)."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.entries: list[dict[str, Any]] = []
        self.fail = False
        self.fail_times = 0
        self.attempts = 0

    async def write(self, entries: list[dict[str, Any]]) -> None:
        self.attempts += 1
        if self.fail or self.fail_times > 0:
            self.fail_times = max(0, self.fail_times - 1)
            raise DeadLetterError("dead-letter store unavailable")
        self.entries.extend(entries)

    async def aclose(self) -> None:
        return None

    def seqs(self) -> list[str]:
        return [e["sequence_number"] for e in self.entries]


class FakeClock:
    """Monotonic time that passes only when ``run`` (or ``advance``) moves it.

    ``sleep`` waits until the clock reaches its deadline, so a task can never see less time
    pass than it slept, and nothing happens "sooner" by accident of scheduling.
    """

    def __init__(self, step: float = 0.25) -> None:
        self.now = 0.0
        self.step = step
        self._ticked = anyio.Event()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        wake = self.now + seconds
        while self.now < wake:
            await self._ticked.wait()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        ticked, self._ticked = self._ticked, anyio.Event()
        ticked.set()

    async def run(self) -> None:
        """Advance by ``step`` whenever the other tasks had a few turns; runs until cancelled."""
        while True:
            for _ in range(10):
                await anyio.lowlevel.checkpoint()
            self.advance(self.step)


def sink_config(**options: Any) -> SinkConfig:
    retry = RetryConfig(**options.pop("retry", {}))
    return SinkConfig(type="fake", retry=retry, dead_letter=DeadLetterConfig(), **options)


def make_route(
    sink: ScriptedSink,
    dead_letter: Any | None = None,
    *,
    metrics: Metrics | None = None,
    predicate: Callable[[Record], bool] | None = None,
    clock: FakeClock | None = None,
    **options: Any,
) -> Route:
    """A route with a zero-wait backoff whose sleeps land in ``sink.events``.

    With a ``clock``, backoff sleeps and the gate's pauses (``retry_after``) pass its time.
    """
    events = sink.events

    async def sleep(seconds: float) -> None:
        events.log.append(("sleep", seconds))
        if clock is not None:
            await clock.sleep(seconds)
        else:
            await anyio.lowlevel.checkpoint()

    config = sink_config(**options)
    gate = None if clock is None else SinkGate(config.max_in_flight, clock=clock, sleep=clock.sleep)
    return Route(
        name=sink.name,
        sink=sink,
        config=config,
        predicate=predicate,
        dead_letter=dead_letter if dead_letter is not None else MemoryDeadLetter(),
        backoff=RetryPolicy(config.retry.initial_backoff, config.retry.max_backoff, sleep=sleep),
        metrics=metrics or Metrics(),
        gate=gate,
    )


def progress(shard: str = SHARD) -> ShardProgress:
    return ShardProgress("orders", ARN, shard, None)


async def run_pages(
    routes: list[Route],
    pages: list[list[Record]],
    shard: ShardProgress | None = None,
    during: Callable[[ShardDispatch], Any] | None = None,
) -> ShardProgress:
    """Push ``pages`` through a ShardDispatch for ``routes`` and wait until drained."""
    shard = shard or progress()
    dispatch = ShardDispatch(shard, routes, routes[0].metrics)
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatch.run)
        for page in pages:
            await dispatch.submit(page, page[-1]["dynamodb"]["SequenceNumber"])
        if during is not None:
            await during(dispatch)
        dispatch.close()
    return shard


async def through_lane(
    sink: Sink, config: SinkConfig, dead_letter: Path, records: list[Record]
) -> tuple[Route, ShardProgress]:
    """Deliver ``records`` (one page) to a real ``sink`` through one lane, with no filter, no
    backoff and a dead-letter file; returns the route and the shard's progress."""
    route = Route(
        name=sink.name,
        sink=sink,
        config=config,
        predicate=None,
        dead_letter=FileDeadLetter(dead_letter),
        backoff=RetryPolicy(0, 0),
        metrics=Metrics(),
    )
    shard = ShardProgress("orders", ARN, "shard-1", None)
    lane = Lane(route, shard)
    ticket = shard.open(records[-1]["dynamodb"]["SequenceNumber"])
    ticket.pending += len(records)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lane.run)
        await lane.put(ticket, records)
        ticket.settle(1)
        lane.close()
    return route, shard


async def deliver_one(route: Route, batch: list[Record]) -> Lane:
    """Deliver one batch through a fresh lane (no tickets involved)."""
    lane = open_lane(route, progress())
    assert isinstance(lane, Lane)
    await lane.deliver(batch)
    return lane
