"""Delivery to one sink: per-shard lanes, batching, bounded retries, bisection, dead-letters.

A ``Route`` is a configured sink with its filter, retry policy and dead-letter destination.
For every shard it reads, the worker opens one ``Lane`` per route: records of that shard
for that sink, in stream order, buffered up to a bound (the shard's reader waits when the
bound is reached, so a slow sink slows its shards instead of growing memory).

Delivery of one batch ends only when every record in it is settled: delivered, or
written to the dead-letter destination. Then the lane settles the batch's tickets, which
is what lets the shard's checkpoint move.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from fanout import dlq as dead_letters
from fanout.checkpoint import ShardProgress, Ticket
from fanout.config import SinkConfig
from fanout.metrics import Metrics
from fanout.records import Record, approximate_creation_time, item_key
from fanout.retry import Backoff
from fanout.sink import Failure, Failures, Sink

log = logging.getLogger("fanout.dispatch")

Predicate = Callable[[Record], bool]


@dataclass(eq=False)
class Route:
    """One sink as the dispatcher sees it."""

    name: str
    sink: Sink
    config: SinkConfig
    predicate: Predicate | None
    dead_letter: dead_letters.DeadLetter
    backoff: Backoff
    metrics: Metrics

    def feeds(self, stream: str) -> bool:
        streams = self.config.streams
        return streams is None or stream in streams


class Lane:
    """Records of one shard for one sink, delivered in order, one batch at a time."""

    def __init__(self, route: Route, progress: ShardProgress, capacity: int | None = None) -> None:
        self.route = route
        self.progress = progress
        self.capacity = capacity or route.config.max_buffered_records
        self._queue: deque[tuple[Ticket, list[Record]]] = deque()
        self._queued = 0  # records in _queue
        self._buffered = 0  # records in _queue or being delivered
        self._closed = False
        self._wakeup = anyio.Event()
        self._space = anyio.Event()
        self._first_arrival = 0.0
        stream, sink = progress.stream_name, route.name
        m = route.metrics
        self._delivered = m.sink_records.labels(stream, sink, "delivered")
        self._retried = m.sink_records.labels(stream, sink, "retried")
        self._dead_lettered = m.sink_records.labels(stream, sink, "dead_lettered")
        self._send_seconds = m.sink_send_seconds.labels(sink)
        self._errors = m.sink_errors.labels(sink)
        self._lag = m.end_to_end_lag.labels(sink)
        self._retries = m.retries.labels(sink)
        self._dlq_writes = m.dlq_writes.labels(sink)
        self._dlq_failures = m.dlq_failures.labels(sink)

    @property
    def buffered(self) -> int:
        return self._buffered

    async def put(self, ticket: Ticket, records: list[Record]) -> None:
        """Queue records (already counted in ``ticket.pending``); waits while the lane is full."""
        while self._buffered >= self.capacity and not self._closed:
            self._space = anyio.Event()
            await self._space.wait()
        if not self._queue:
            self._first_arrival = time.monotonic()
        self._queue.append((ticket, records))
        self._queued += len(records)
        self._buffered += len(records)
        self._wakeup.set()

    def close(self) -> None:
        """No more records will come; ``run`` returns once the queue is delivered."""
        self._closed = True
        self._wakeup.set()
        self._space.set()

    async def run(self) -> None:
        """Deliver batches until closed and drained."""
        batch_size = self.route.config.batch_size
        window = self.route.config.batch_window
        while True:
            while not self._queue:
                if self._closed:
                    return
                self._wakeup = anyio.Event()
                await self._wakeup.wait()
            if window > 0 and self._queued < batch_size and not self._closed:
                remaining = self._first_arrival + window - time.monotonic()
                while remaining > 0 and self._queued < batch_size and not self._closed:
                    self._wakeup = anyio.Event()
                    with anyio.move_on_after(remaining):
                        await self._wakeup.wait()
                    remaining = self._first_arrival + window - time.monotonic()
            batch, segments = self._take(batch_size)
            await self.deliver(batch)
            for ticket, count in segments:
                ticket.settle(count)
            self._buffered -= len(batch)
            self._space.set()

    def _take(self, size: int) -> tuple[list[Record], list[tuple[Ticket, int]]]:
        queue = self._queue
        ticket, records = queue[0]
        if len(records) <= size and (len(queue) == 1 or len(records) == size):
            queue.popleft()  # the common case: one whole page is one batch, no copy
            batch, segments = records, [(ticket, len(records))]
        else:
            batch = []
            segments = []
            while queue and len(batch) < size:
                ticket, records = queue[0]
                room = size - len(batch)
                if len(records) <= room:
                    queue.popleft()
                    part = records
                else:
                    part = records[:room]
                    queue[0] = (ticket, records[room:])
                batch.extend(part)
                segments.append((ticket, len(part)))
        self._queued -= len(batch)
        if queue:
            self._first_arrival = time.monotonic()
        return batch, segments

    # -- delivery ---------------------------------------------------------------------------

    async def _attempt(self, batch: Sequence[Record]) -> tuple[Failures, BaseException | None]:
        started = time.perf_counter()
        try:
            failures = await self.route.sink.send(batch)
        except Exception as exc:  # noqa: BLE001 - the contract: any exception fails the batch
            self._send_seconds.observe(time.perf_counter() - started)
            self._errors.inc()
            return {}, exc
        self._send_seconds.observe(time.perf_counter() - started)
        return failures, None

    def _count_delivered(self, batch: Sequence[Record], failed: int) -> None:
        self._delivered.inc(len(batch) - failed)
        created = approximate_creation_time(batch[0])
        if created is not None:
            self._lag.observe(max(0.0, time.time() - created))

    async def deliver(self, batch: list[Record]) -> None:
        """Return once every record of ``batch`` is delivered or dead-lettered."""
        failures, exc = await self._attempt(batch)
        if exc is None and not failures:
            self._count_delivered(batch, 0)
            return
        await self._recover(batch, failures, exc)

    async def _recover(
        self, batch: list[Record], failures: Failures, exc: BaseException | None
    ) -> None:
        """The slow path: retry rounds with backoff, bisection, dead-letters.

        ``rounds`` counts the backoff rounds this batch has waited through; every record
        still in the batch has waited through them, so a record's attempts are
        ``rounds + 1``. Bisection sends halves at once (no wait): it needs a working sink
        to isolate a poison record. When the budget is spent and nothing succeeded since
        the last round (the sink is down, not one record), pieces are dead-lettered whole.
        """
        policy = self.route.config.retry
        ordered = self.route.sink.ordered
        pieces: deque[list[Record]] = deque([batch])
        known: tuple[Failures, BaseException | None] | None = (failures, exc)
        rounds = 0
        first_failure = time.time()
        success_since_round = False
        while pieces:
            piece = pieces[0]
            if known is None:
                failures, exc = await self._attempt(piece)
            else:
                (failures, exc), known = known, None
            if exc is None and not failures:
                pieces.popleft()
                success_since_round = True
                self._count_delivered(piece, 0)
                continue
            exhausted = policy.max_attempts != -1 and rounds + 1 >= policy.max_attempts
            error_class = "SinkFailure"
            if exc is not None:
                self._log_failure(piece, exc)
                down = exhausted and not success_since_round
                if policy.bisect_on_error and len(piece) > 1 and not down:
                    middle = len(piece) // 2
                    pieces.popleft()
                    pieces.appendleft(piece[middle:])
                    pieces.appendleft(piece[:middle])
                    continue
                error_class = type(exc).__name__
                reason = f"{error_class}: {exc}" if str(exc) else error_class
                failures = {i: Failure(True, reason) for i in range(len(piece))}
            else:
                success_since_round = True

            now = time.time()
            give_up: dict[int, tuple[str, str]] = {}
            retry: list[int] = []
            for index in sorted(failures):
                failure = failures[index]
                if not failure.retryable:
                    give_up[index] = ("Rejected", failure.reason)
                elif exhausted:
                    give_up[index] = (
                        error_class,
                        f"{failure.reason} (gave up after {rounds + 1} attempts)",
                    )
                elif self._too_old(piece[index], now):
                    give_up[index] = (
                        error_class,
                        f"{failure.reason} (record older than max_record_age)",
                    )
                else:
                    retry.append(index)
            if ordered and retry:
                # A failed record holds back every later record of the batch.
                retry = [i for i in range(retry[0], len(piece)) if i not in give_up]
            settled_ok = len(piece) - len(give_up) - len(retry)
            if settled_ok:
                self._count_delivered(piece, len(piece) - settled_ok)
            if give_up:
                entries = [
                    dead_letters.entry(
                        record=piece[i],
                        sink=self.route.name,
                        stream=self.progress.stream_name,
                        stream_arn=self.progress.stream_arn,
                        shard_id=self.progress.shard_id,
                        error_class=cls,
                        error_message=message,
                        attempts=rounds + 1,
                        first_failure_at=first_failure,
                        last_failure_at=now,
                    )
                    for i, (cls, message) in sorted(give_up.items())
                ]
                await self._dead_letter(entries)
            if retry:
                pieces[0] = [piece[i] for i in retry]
                rounds += 1
                success_since_round = False
                self._retries.inc()
                self._retried.inc(len(retry))
                delay = self.route.backoff.delay(rounds)
                log.warning(
                    "batch_retrying",
                    extra=self._fields(
                        piece[retry[0]],
                        records=len(retry),
                        attempt=rounds + 1,
                        delay_s=round(delay, 3),
                        reason=failures[retry[0]].reason if retry[0] in failures else "ordered",
                    ),
                )
                await self.route.backoff.sleep(delay)
            else:
                pieces.popleft()

    def _too_old(self, record: Record, now: float) -> bool:
        limit = self.route.config.retry.max_record_age
        if limit == -1:
            return False
        created = approximate_creation_time(record)
        return created is not None and now - created > limit

    async def _dead_letter(self, entries: list[dict[str, Any]]) -> None:
        """Write entries to the dead-letter destination; keep trying until it works.

        Nothing is dropped: while the destination fails, this shard does not advance.
        """
        attempt = 0
        while True:
            try:
                await self.route.dead_letter.write(entries)
            except Exception as exc:  # noqa: BLE001 - whatever broke, the record stays unsettled
                attempt += 1
                self._dlq_failures.inc()
                log.error(
                    "dead_letter_failed",
                    extra=self._fields(
                        entries[0]["record"],
                        records=len(entries),
                        destination=self.route.dead_letter.name,
                        error=f"{type(exc).__name__}: {exc}",
                        attempt=attempt,
                        note="the shard does not advance until the dead-letter write succeeds",
                    ),
                )
                await self.route.backoff.wait(min(attempt, 8))
                continue
            self._dlq_writes.inc(len(entries))
            self._dead_lettered.inc(len(entries))
            for item in entries:
                log.error(
                    "record_dead_lettered",
                    extra=self._fields(
                        item["record"],
                        destination=self.route.dead_letter.name,
                        error=item["error"]["message"],
                        attempts=item["attempts"],
                    ),
                )
            return

    def _log_failure(self, piece: Sequence[Record], exc: BaseException) -> None:
        log.warning(
            "sink_send_failed",
            extra=self._fields(piece[0], records=len(piece), error=f"{type(exc).__name__}: {exc}"),
        )

    def _fields(self, record: Record, **more: Any) -> dict[str, Any]:
        return {
            "stream": self.progress.stream_name,
            "shard": self.progress.shard_id,
            "sink": self.route.name,
            "seq": record.get("dynamodb", {}).get("SequenceNumber"),
            **more,
        }


class KeyedLane:
    """``parallelization_factor`` lanes for one shard and sink, records split by item key.

    Records of one item always go to the same lane, so per-key order holds while batches
    of different keys are delivered concurrently.
    """

    def __init__(self, route: Route, progress: ShardProgress, factor: int) -> None:
        capacity = max(1, route.config.max_buffered_records // factor)
        self.lanes = [Lane(route, progress, capacity) for _ in range(factor)]

    @property
    def buffered(self) -> int:
        return sum(lane.buffered for lane in self.lanes)

    async def put(self, ticket: Ticket, records: list[Record]) -> None:
        factor = len(self.lanes)
        parts: list[list[Record]] = [[] for _ in range(factor)]
        for record in records:
            parts[hash(item_key(record)) % factor].append(record)
        for lane, part in zip(self.lanes, parts, strict=True):
            if part:
                await lane.put(ticket, part)

    def close(self) -> None:
        for lane in self.lanes:
            lane.close()

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for lane in self.lanes:
                tg.start_soon(lane.run)


AnyLane = Lane | KeyedLane


def open_lane(route: Route, progress: ShardProgress) -> AnyLane:
    factor = route.config.parallelization_factor
    return Lane(route, progress) if factor == 1 else KeyedLane(route, progress, factor)


class ShardDispatch:
    """Routes each page of one shard to its sinks' lanes and tracks it with a ticket."""

    def __init__(self, progress: ShardProgress, routes: list[Route], metrics: Metrics) -> None:
        self.progress = progress
        self.routes = routes
        self.lanes = [open_lane(route, progress) for route in routes]
        stream = progress.stream_name
        self._filtered = [
            metrics.sink_records.labels(stream, route.name, "filtered") for route in routes
        ]

    async def submit(self, records: list[Record], last_seq: str) -> None:
        """Hand a page to every sink. ``records`` may be fewer than the page (skipped ones);
        ``last_seq`` is the page's last sequence number, settled once all are delivered."""
        ticket = self.progress.open(last_seq)
        for route, lane, filtered in zip(self.routes, self.lanes, self._filtered, strict=True):
            predicate = route.predicate
            matched = records if predicate is None else [r for r in records if predicate(r)]
            if len(matched) != len(records):
                filtered.inc(len(records) - len(matched))
            if matched:
                ticket.pending += len(matched)
                await lane.put(ticket, matched)
        ticket.settle(1)  # release the reader's hold

    def close(self) -> None:
        for lane in self.lanes:
            lane.close()

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for lane in self.lanes:
                tg.start_soon(lane.run)
