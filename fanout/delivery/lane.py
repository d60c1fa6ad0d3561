"""Delivery to one sink: per-shard lanes, batching, bounded retries, bisection, dead-letters.

A ``Route`` is a configured sink with its filter, retry policy and dead-letter destination.
For every shard it reads, the worker opens one ``Lane`` per route: records of that shard
for that sink, in stream order, at most ``max_buffered_records`` of them at a time (the
shard's reader waits when the bound is reached, so a slow sink slows its shards instead of
growing memory).

Delivery of one batch ends only when every record in it is settled: delivered, or
written to the dead-letter destination. Then the lane settles the batch's tickets, which
is what lets the shard's checkpoint move.

When a send fails, the batch goes through retry *rounds* separated by backoff (full
jitter). Within a round:

* a send that raises fails all its records; with ``bisect_on_error`` it is split in halves,
  sent at once, until the failing record is alone (at most ``ceil(log2(n)) + 1`` sends
  contain it per round). An ordered sink stops at the first failing half: the records after
  it wait. After a whole-send failure in a round with no success yet (in it or the round
  before), an unordered sink sends the other halves whole instead of splitting them
  further, so an outage costs a handful of calls per round, not one per record;
* per-record answers are honoured: delivered records are done, permanent failures go to the
  dead-letter destination at once, retryable ones are sent again next round (for an ordered
  sink, with every later record of the batch);
* a record is given up on (dead-lettered) once it failed ``max_attempts`` rounds or is older
  than ``max_record_age``. For an ordered sink only the first failing record of an answer
  counts an attempt; once it is given up, the records behind it are sent again at once.

A record running out of attempts (``max_attempts``) in a round in which the sink did nothing
right makes the sink *suspected down*. Two more sends of other records failing as a whole
(an exception, or every record failed: for an ordered sink only when that send held one
record, since its answer after the first failure says nothing) with nothing succeeding in
between make it *down*: from then on, until a send succeeds, a send that fails as a whole is
given up at once, without bisection or backoff, since its records have waited through a
whole retry budget already. This keeps a sink that is down from holding its shards back for
much longer than one retry budget, so the other sinks of those shards keep flowing; a poison
record alone never makes a sink count as down, and the first successful send ends it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from fanout.config import SinkConfig
from fanout.delivery import deadletter as dead_letters
from fanout.observe.metrics import Metrics
from fanout.progress.tracker import ShardProgress, Ticket
from fanout.records import Record, approximate_creation_time, item_key
from fanout.retry import RetryPolicy
from fanout.sink import Failure, Failures, Sink

log = logging.getLogger("fanout.dispatch")

Predicate = Callable[[Record], bool]

# Error classes stored with dead-lettered records that did not fail with an exception.
RETRYABLE_FAILURE = "SinkFailure"
PERMANENT_FAILURE = "Rejected"
MALFORMED_RECORD = "MalformedRecord"
_DOWN = 3  # strikes (see Lane._strikes) that make a sink count as down
_DOWN_NOTE = (
    "gave up without further retries: the sink failed every call since a retry budget ran out"
)


@dataclass(eq=False)
class Route:
    """One sink as the dispatcher sees it.

    Attributes:
        name: the sink's configured name.
        sink: the sink itself.
        config: its options (batching, retry policy, dead-letter destination).
        predicate: its compiled filter; None lets every record through.
        dead_letter: where records it gives up on are written.
        backoff: the retry timing (its ``sleep`` is what tests replace).
        metrics: the metric families.
    """

    name: str
    sink: Sink
    config: SinkConfig
    predicate: Predicate | None
    dead_letter: dead_letters.DeadLetter
    backoff: RetryPolicy
    metrics: Metrics

    def feeds(self, stream: str) -> bool:
        """True when records of ``stream`` are routed to this sink."""
        streams = self.config.streams
        return streams is None or stream in streams


def malformed(record: Any) -> str | None:
    """Why ``record`` cannot be delivered (no ``dynamodb.Keys`` or ``SequenceNumber``), or None."""
    if not isinstance(record, dict):
        return f"record is a {type(record).__name__}, not an object"
    ddb = record.get("dynamodb")
    if not isinstance(ddb, dict):
        return "record has no 'dynamodb' object"
    seq = ddb.get("SequenceNumber")
    if not isinstance(seq, str) or not seq:
        return "record has no dynamodb.SequenceNumber"
    keys = ddb.get("Keys")
    if not isinstance(keys, dict) or not keys:
        return "record has no dynamodb.Keys"
    return None


def _all_well_formed(records: list[Record]) -> bool:
    """The hot path's one cheap check per record: ``dynamodb.Keys`` and ``SequenceNumber``."""
    try:
        for record in records:
            ddb = record["dynamodb"]
            if not (ddb["Keys"] and ddb["SequenceNumber"]):
                return False
    except (KeyError, TypeError):
        return False
    return True


class _Round:
    """Bookkeeping of one retry round of one batch (see the module docstring)."""

    __slots__ = ("blind", "blocked", "give_ups", "progress", "trusted")

    def __init__(self, trusted: bool = False) -> None:
        self.progress = False  # some send of this round was answered sensibly
        self.trusted = trusted  # the previous round's sends were: always bisect
        self.blind = False  # a send failed as a whole before anything succeeded
        self.blocked = False  # ordered: a retained failure holds back the rest
        self.give_ups: list[tuple[int, str, str]] = []  # (index in batch, class, message)


class Lane:
    """Records of one shard for one sink, delivered in order, one batch at a time."""

    def __init__(self, route: Route, progress: ShardProgress, capacity: int | None = None) -> None:
        self.route = route
        self.progress = progress
        self.capacity = max(1, capacity or route.config.max_buffered_records)
        self._queue: deque[tuple[Ticket, list[Record]]] = deque()
        self._queued = 0  # records in _queue
        self._buffered = 0  # records in _queue or being delivered
        self._closed = False
        self._wakeup = anyio.Event()
        self._space = anyio.Event()
        self._first_arrival = 0.0
        # 0: the sink works; 1: a budget ran out while every call failed (suspected down);
        # each later whole-send failure of other records adds one; DOWN and above: down.
        self._strikes = 0
        self._announced = False  # the current down period was logged
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
        """Records queued or being delivered (never more than ``capacity``)."""
        return self._buffered

    @property
    def sink_down(self) -> bool:
        """True while the sink is taken to be down (see the module docstring)."""
        return self._strikes >= _DOWN

    async def put(self, ticket: Ticket, records: list[Record]) -> None:
        """Queue records (already counted in ``ticket.pending``); waits while the lane is full.

        A page larger than the free room is queued in parts, so the lane never holds more
        than ``capacity`` records.
        """
        while len(records) > self.capacity - self._buffered and not self._closed:
            room = self.capacity - self._buffered
            if room > 0:
                self._append(ticket, records[:room])
                records = records[room:]
            self._space = anyio.Event()
            await self._space.wait()
        self._append(ticket, records)

    def _append(self, ticket: Ticket, records: list[Record]) -> None:
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
            if window > 0 and self._waits_for_more(batch_size):
                remaining = self._first_arrival + window - time.monotonic()
                while remaining > 0 and self._waits_for_more(batch_size):
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
            # Keep no delivered records alive while waiting for the next batch (an idle
            # shard's lane would otherwise hold its last batch until more records come).
            del batch, segments

    def _waits_for_more(self, batch_size: int) -> bool:
        # A full lane gets nothing more until it delivers: waiting for the window is useless.
        return self._queued < batch_size and self._buffered < self.capacity and not self._closed

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
        if not self.progress.may_deliver():  # the shard's lease lapsed or moved: fail closed
            await self.progress.lease_lost()
        started = time.perf_counter()
        try:
            failures = await self.route.sink.send(batch)
        except Exception as exc:  # noqa: BLE001 - the contract: any exception fails the batch
            self._send_seconds.observe(time.perf_counter() - started)
            self._errors.inc()
            return {}, exc
        self._send_seconds.observe(time.perf_counter() - started)
        return failures, None

    def _count_delivered(self, count: int, sample: Record) -> None:
        if count <= 0:
            return
        self._delivered.inc(count)
        created = approximate_creation_time(sample)
        if created is not None:
            self._lag.observe(max(0.0, time.time() - created))

    async def deliver(self, batch: list[Record]) -> None:
        """Return once every record of ``batch`` is delivered or dead-lettered."""
        failures, exc = await self._attempt(batch)
        if exc is None and not failures:
            self._strikes = 0
            self._count_delivered(len(batch), batch[0])
            return
        await self._recover(batch, failures, exc)

    async def _recover(
        self, batch: list[Record], failures: Failures, exc: BaseException | None
    ) -> None:
        """The slow path: retry rounds with backoff, bisection, dead-letters.

        ``failures``/``exc`` are the answer to the first send of the whole batch. Pieces are
        lists of indices into ``batch``, in stream order; ``tries[i]`` counts the rounds in
        which record ``i`` failed.
        """
        policy = self.route.config.retry
        bisect = policy.bisect_on_error
        ordered = self.route.sink.ordered
        size = len(batch)
        tries = [0] * size
        first_failed = [0.0] * size
        pending: deque[list[int]] = deque([list(range(size))])
        known: tuple[Failures, BaseException | None] | None = (failures, exc)
        rounds = 0
        state = _Round()
        while True:
            work, pending = pending, deque()
            state = _Round(trusted=state.progress)
            while work:
                piece = work.popleft()
                if state.blocked:
                    pending.append(piece)
                    continue
                if known is not None:
                    (failures, exc), known = known, None
                else:
                    failures, exc = await self._attempt([batch[i] for i in piece])
                if exc is None:
                    if failures and (min(failures) < 0 or max(failures) >= len(piece)):
                        failures = {k: v for k, v in failures.items() if 0 <= k < len(piece)}
                    if not failures:
                        state.progress = True
                        self._strikes = 0
                        self._count_delivered(len(piece), batch[piece[0]])
                        continue
                else:
                    self._log_failure(batch, piece, exc)
                    if (
                        bisect
                        and len(piece) > 1
                        and self._strikes < _DOWN
                        and (state.progress or state.trusted or not state.blind)
                    ):
                        middle = len(piece) // 2
                        work.appendleft(piece[middle:])
                        work.appendleft(piece[:middle])
                        continue
                    if not state.progress:
                        state.blind = True
                    error_class = type(exc).__name__
                    reason = f"{error_class}: {exc}" if str(exc) else error_class
                    failure = Failure(True, reason)
                    self._fail_whole(
                        batch,
                        piece,
                        tries,
                        first_failed,
                        state,
                        pending,
                        error_class,
                        dict.fromkeys(range(len(piece)), failure),
                    )
                    continue
                healthy = len(failures) < len(piece) or any(
                    not f.retryable for f in failures.values()
                )
                if healthy:
                    state.progress = True
                    self._strikes = 0
                if not healthy and (self._strikes >= _DOWN or not ordered or len(piece) == 1):
                    self._fail_whole(
                        batch,
                        piece,
                        tries,
                        first_failed,
                        state,
                        pending,
                        RETRYABLE_FAILURE,
                        failures,
                    )
                elif ordered:
                    resend = self._classify_ordered(
                        batch, piece, failures, tries, first_failed, state, pending
                    )
                    if resend:
                        work.appendleft(resend)
                else:
                    self._classify_unordered(
                        batch, piece, failures, tries, first_failed, state, pending
                    )
            if state.give_ups:
                await self._dead_letter(
                    self._entries(batch, state.give_ups, tries, first_failed, time.time())
                )
            if not pending:
                return
            rounds += 1
            retrying = sum(len(p) for p in pending)
            self._retries.inc()
            self._retried.inc(retrying)
            delay = self.route.backoff.delay(rounds)
            head = pending[0][0]
            log.warning(
                "batch_retrying",
                extra=self._fields(
                    batch[head],
                    records=retrying,
                    attempt=tries[head] + 1,
                    round=rounds + 1,
                    delay_s=round(delay, 3),
                ),
            )
            await self.route.backoff.sleep(delay)

    # -- classifying one answer ---------------------------------------------------------------

    @property
    def _max_attempts(self) -> float:
        attempts = self.route.config.retry.max_attempts
        return math.inf if attempts == -1 else attempts

    def _spent(self, record: Record, attempts: int, now: float) -> str | None:
        """Why a record's retry budget is spent after ``attempts`` failed rounds, or None."""
        policy = self.route.config.retry
        if policy.max_attempts != -1 and attempts >= policy.max_attempts:
            return f"gave up after {attempts} attempts"
        limit = policy.max_record_age
        if limit != -1:
            created = approximate_creation_time(record)
            if created is not None and now - created > limit:
                return f"record older than max_record_age ({limit:g}s)"
        return None

    def _fail_whole(
        self,
        batch: list[Record],
        piece: list[int],
        tries: list[int],
        first_failed: list[float],
        state: _Round,
        pending: deque[list[int]],
        error_class: str,
        failures: Failures,
    ) -> None:
        """Every record of ``piece`` failed (``failures`` holds a retryable one for each,
        maybe a permanent one for some): count the attempt, give up or keep each."""
        now = time.time()
        if self._strikes:  # another send failing as a whole since the budget ran out
            self._strikes += 1
        spent: dict[int, str] = {}
        for position, i in enumerate(piece):
            tries[i] += 1
            if not first_failed[i]:
                first_failed[i] = now
            why = self._spent(batch[i], tries[i], now)
            if why is not None:
                spent[position] = why
        if not state.progress and any(tries[i] >= self._max_attempts for i in piece):
            self._suspect_down()
        keep: list[int] = []
        for position, i in enumerate(piece):
            failure = failures[position]
            if not failure.retryable:
                state.give_ups.append((i, PERMANENT_FAILURE, failure.reason))
            elif position in spent:
                state.give_ups.append((i, error_class, f"{failure.reason} ({spent[position]})"))
            elif self._strikes >= _DOWN:
                self._announce_down(batch[i])
                state.give_ups.append((i, error_class, f"{failure.reason} ({_DOWN_NOTE})"))
            else:
                keep.append(i)
        if keep:
            pending.append(keep)
            if self.route.sink.ordered:
                state.blocked = True

    def _classify_unordered(
        self,
        batch: list[Record],
        piece: list[int],
        failures: Failures,
        tries: list[int],
        first_failed: list[float],
        state: _Round,
        pending: deque[list[int]],
    ) -> None:
        now = time.time()
        keep: list[int] = []
        for position in sorted(failures):
            failure = failures[position]
            i = piece[position]
            if not failure.retryable:
                state.give_ups.append((i, PERMANENT_FAILURE, failure.reason))
                continue
            tries[i] += 1
            if not first_failed[i]:
                first_failed[i] = now
            why = self._spent(batch[i], tries[i], now)
            if why is not None:
                state.give_ups.append((i, RETRYABLE_FAILURE, f"{failure.reason} ({why})"))
            else:
                keep.append(i)
        self._count_delivered(len(piece) - len(failures), batch[piece[0]])
        if keep:
            pending.append(keep)

    def _classify_ordered(
        self,
        batch: list[Record],
        piece: list[int],
        failures: Failures,
        tries: list[int],
        first_failed: list[float],
        state: _Round,
        pending: deque[list[int]],
    ) -> list[int] | None:
        """Records before the first retryable failure are delivered; that one counts an
        attempt. If it is kept, it and every later record wait for the next round; if it
        is given up, the later records are returned to be sent again at once (their answers
        only echoed the failure in front of them). Permanent failures are given up anyway.
        """
        now = time.time()
        positions = sorted(failures)
        first = next((p for p in positions if failures[p].retryable), None)
        for position in positions:
            failure = failures[position]
            if not failure.retryable:
                state.give_ups.append((piece[position], PERMANENT_FAILURE, failure.reason))
        if first is None:  # only permanent failures: everything else was delivered
            self._count_delivered(len(piece) - len(failures), batch[piece[0]])
            return None
        self._count_delivered(first - sum(1 for p in positions if p < first), batch[piece[0]])
        i = piece[first]
        tries[i] += 1
        if not first_failed[i]:
            first_failed[i] = now
        rest = [
            piece[p]
            for p in range(first + 1, len(piece))
            if p not in failures or failures[p].retryable
        ]
        why = self._spent(batch[i], tries[i], now)
        if why is None:
            pending.append([i, *rest])
            state.blocked = True
            return None
        if not state.progress and tries[i] >= self._max_attempts:
            self._suspect_down()
        state.give_ups.append((i, RETRYABLE_FAILURE, f"{failures[first].reason} ({why})"))
        return rest or None

    def _suspect_down(self) -> None:
        if not self._strikes:
            self._strikes = 1
            self._announced = False

    def _announce_down(self, record: Record) -> None:
        if not self._announced:
            self._announced = True
            log.error(
                "sink_down",
                extra=self._fields(
                    record,
                    note="every call failed since a retry budget ran out; records of sends "
                    "that fail as a whole are dead-lettered without retries until one succeeds",
                ),
            )

    def _entries(
        self,
        batch: list[Record],
        give_ups: list[tuple[int, str, str]],
        tries: list[int],
        first_failed: list[float],
        now: float,
    ) -> list[dead_letters.Entry]:
        progress = self.progress
        return [
            dead_letters.entry(
                record=batch[i],
                sink=self.route.name,
                stream=progress.stream_name,
                stream_arn=progress.stream_arn,
                shard_id=progress.shard_id,
                error_class=error_class,
                error_message=message,
                attempts=max(1, tries[i]),
                first_failure_at=first_failed[i] or now,
                last_failure_at=now,
            )
            for i, error_class, message in sorted(give_ups)
        ]

    # -- dead letters -------------------------------------------------------------------------

    async def _dead_letter(self, entries: list[dead_letters.Entry]) -> None:
        """Write entries to the dead-letter destination; keep trying until it works.

        Nothing is dropped: while the destination fails, this lane's batch is not settled,
        so the shard's checkpoint does not advance past it.
        """
        attempt = 0
        remaining = entries
        while True:
            if not self.progress.may_deliver():  # the lease moved: the new owner retries them
                await self.progress.lease_lost()
            try:
                await self.route.dead_letter.write(remaining)
            except Exception as exc:  # noqa: BLE001 - whatever broke, the record stays unsettled
                attempt += 1
                if isinstance(exc, dead_letters.PartialDeadLetterError) and exc.remaining:
                    left = {id(e) for e in exc.remaining}
                    stored = [e for e in remaining if id(e) not in left]
                    self._count_dead_lettered(stored)
                    remaining = exc.remaining
                self._dlq_failures.inc()
                log.error(
                    "dead_letter_failed",
                    extra=self._fields(
                        remaining[0]["record"],
                        records=len(remaining),
                        destination=self.route.dead_letter.name,
                        error=f"{type(exc).__name__}: {exc}",
                        attempt=attempt,
                        note="the shard does not advance until the dead-letter write succeeds",
                    ),
                )
                await self.route.backoff.wait(min(attempt, 8))
                continue
            self._count_dead_lettered(remaining)
            return

    def _count_dead_lettered(self, entries: list[dead_letters.Entry]) -> None:
        if not entries:
            return
        self._dlq_writes.inc(len(entries))
        self._dead_lettered.inc(len(entries))
        for item in entries:
            log.error(
                "record_dead_lettered",
                extra=self._fields(
                    item["record"],
                    destination=self.route.dead_letter.name,
                    error_class=item["error"]["class"],
                    error=item["error"]["message"],
                    attempts=item["attempts"],
                ),
            )

    def _log_failure(self, batch: list[Record], piece: list[int], exc: BaseException) -> None:
        log.warning(
            "sink_send_failed",
            extra=self._fields(
                batch[piece[0]], records=len(piece), error=f"{type(exc).__name__}: {exc}"
            ),
        )

    def _fields(self, record: Any, **more: Any) -> dict[str, Any]:
        ddb = record.get("dynamodb") if isinstance(record, dict) else None
        return {
            "stream": self.progress.stream_name,
            "shard": self.progress.shard_id,
            "sink": self.route.name,
            "seq": ddb.get("SequenceNumber") if isinstance(ddb, dict) else None,
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
        """Records queued or being delivered, over every lane."""
        return sum(lane.buffered for lane in self.lanes)

    async def put(self, ticket: Ticket, records: list[Record]) -> None:
        """Split ``records`` by item key over the lanes (waits while one is full)."""
        factor = len(self.lanes)
        parts: list[list[Record]] = [[] for _ in range(factor)]
        for record in records:
            parts[hash(item_key(record)) % factor].append(record)
        for lane, part in zip(self.lanes, parts, strict=True):
            if part:
                await lane.put(ticket, part)

    def close(self) -> None:
        """No more records will come."""
        _close_all(self.lanes)

    async def run(self) -> None:
        """Run every lane until closed and drained."""
        await _run_all(self.lanes)


AnyLane = Lane | KeyedLane


def _close_all(lanes: Sequence[AnyLane]) -> None:
    for lane in lanes:
        lane.close()


async def _run_all(lanes: Sequence[AnyLane]) -> None:
    async with anyio.create_task_group() as tg:
        for lane in lanes:
            tg.start_soon(lane.run)


def open_lane(route: Route, progress: ShardProgress) -> AnyLane:
    """A ``Lane``, or a ``KeyedLane`` when the route's ``parallelization_factor`` is above 1."""
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
        ``last_seq`` is the page's last sequence number, settled once all are delivered.

        Malformed records (no ``dynamodb.Keys`` or ``SequenceNumber``) are written to every
        routed sink's dead-letter destination, with the reason, before the page can settle;
        the others go on.
        """
        ticket = self.progress.open(last_seq)
        if not _all_well_formed(records):
            records = await self._set_aside_malformed(records)
        for route, lane, filtered in zip(self.routes, self.lanes, self._filtered, strict=True):
            predicate = route.predicate
            matched = records if predicate is None else [r for r in records if predicate(r)]
            if len(matched) != len(records):
                filtered.inc(len(records) - len(matched))
            if matched:
                ticket.pending += len(matched)
                await lane.put(ticket, matched)
        ticket.settle(1)  # release the reader's hold

    async def _set_aside_malformed(self, records: list[Record]) -> list[Record]:
        good: list[Record] = []
        bad: list[tuple[Record, str]] = []
        for record in records:
            reason = malformed(record)
            if reason is None:
                good.append(record)
            else:
                bad.append((record, reason))
        now = time.time()
        progress = self.progress
        for lane in self.lanes:
            first = lane if isinstance(lane, Lane) else lane.lanes[0]
            for record, reason in bad:
                log.error("record_malformed", extra=first._fields(record, reason=reason))
            entries = [
                dead_letters.entry(
                    record=record,
                    sink=first.route.name,
                    stream=progress.stream_name,
                    stream_arn=progress.stream_arn,
                    shard_id=progress.shard_id,
                    error_class=MALFORMED_RECORD,
                    error_message=reason,
                    attempts=0,
                    first_failure_at=now,
                    last_failure_at=now,
                )
                for record, reason in bad
            ]
            await first._dead_letter(entries)
        return good

    def close(self) -> None:
        """No more pages will come; the lanes return once drained."""
        _close_all(self.lanes)

    async def run(self) -> None:
        """Run every lane until closed and drained."""
        await _run_all(self.lanes)
