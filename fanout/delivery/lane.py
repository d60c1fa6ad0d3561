"""Lanes: the records of one shard for one sink, buffered and delivered one batch at a time.

A ``Route`` is a configured sink with its filter, retry policy and dead-letter destination.
For every shard it reads, the worker opens one ``Lane`` per route: records of that shard
for that sink, in stream order, at most ``max_buffered_records`` of them at a time (the
shard's reader waits when the bound is reached, so a slow sink slows its shards instead of
growing memory).

Delivery of one batch ends only when every record in it is settled: delivered, or
written to the dead-letter destination. Then the lane settles the batch's tickets, which
is what lets the shard's checkpoint move. A batch whose first send succeeds costs one call
through the sink's gate; one that fails goes to a ``Recovery`` (retry rounds, bisection,
give-ups: see ``fanout.delivery.recovery``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import anyio

from fanout.delivery.gate import retry_after
from fanout.delivery.giveup import DeadLetterWriter
from fanout.delivery.private import Pristine, copy_records
from fanout.delivery.recovery import Recovery, SinkHealth
from fanout.delivery.route import Route
from fanout.delivery.telemetry import LaneTelemetry
from fanout.isolation import contained, own_cancellation
from fanout.progress.tracker import ShardProgress, Ticket
from fanout.records import Record, change_time, item_key
from fanout.sink import Failures, Run

if TYPE_CHECKING:
    from fanout.sink import RunSink

MAX_RUN = 10
"""Batches a lane sends in one ``send_run`` at most (a 1,000-record page at the default
batch size of 100)."""


class Lane:
    """Records of one shard for one sink, delivered in order, one batch at a time.

    Attributes:
        route: the sink's route.
        progress: the shard's progress (its tickets are settled here).
        capacity: records buffered at most.
        telemetry: this lane's metrics and log fields.
        health: whether the sink is taken to be down (kept across batches).
        give_ups: writes what this lane gives up on to the dead-letter destination.
    """

    runs = True
    """Whether several full batches may go in one ``send_run`` (a lane whose calls carry
    more than their records, as a tumbling window's do, sets False)."""

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
        self.telemetry = LaneTelemetry(route, progress)
        self.health = SinkHealth()
        self.give_ups = DeadLetterWriter(route, progress, self.telemetry)
        self._send_seconds = self.telemetry.send_seconds
        self._errors = self.telemetry.errors

    @property
    def buffered(self) -> int:
        """Records queued or being delivered (never more than ``capacity``)."""
        return self._buffered

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
                await self._idle()
            if window > 0 and self._waits_for_more(batch_size):
                remaining = self._first_arrival + window - time.monotonic()
                while remaining > 0 and self._waits_for_more(batch_size):
                    self._wakeup = anyio.Event()
                    with anyio.move_on_after(remaining):
                        await self._wakeup.wait()
                    remaining = self._first_arrival + window - time.monotonic()
            batch, segments = self._take(batch_size)
            if (
                self._queued >= batch_size
                and self.runs
                and self.route.gate.idle
                and getattr(self.route.sink, "sends_runs", False)
            ):
                # More full batches wait: the sink sends them in one go (``RunSink``). Not
                # under max_in_flight or a pause: there each call goes through the gate, so
                # other shards' calls take turns with this one's.
                taken = [(batch, segments)]
                while self._queued >= batch_size and len(taken) < MAX_RUN:
                    taken.append(self._take(batch_size))
                await self._deliver_run(taken)
                del taken
            else:
                await self.deliver(batch, segments)
                self._settle(batch, segments)
            # Keep no delivered records alive while waiting for the next batch (an idle
            # shard's lane would otherwise hold its last batch until more records come).
            del batch, segments

    def _settle(self, batch: list[Record], segments: Sequence[tuple[Ticket, int]]) -> None:
        for ticket, count in segments:
            ticket.settle(count)
        self._buffered -= len(batch)
        self._space.set()

    async def _idle(self) -> None:
        """Wait for records (``put`` or ``close`` sets ``_wakeup``)."""
        await self._wakeup.wait()

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

    async def attempt(self, batch: Sequence[Record]) -> tuple[Failures, BaseException | None]:
        """One ``send`` of ``batch`` through the sink's gate: ``(failures, None)``, or
        ``({}, exception)`` if it raised.

        Whatever the sink raises is a failed attempt, ``SystemExit`` and its kind too
        (as ``CallCrashed``); only the worker's own cancellation goes through.
        """
        if not self.progress.may_deliver():  # the shard's lease lapsed or moved: fail closed
            await self.progress.lease_lost()
        gate = self.route.gate
        if gate.idle:
            return await self._call(batch)
        if gate.enter_nowait():  # a free slot: no need to await the gate
            try:
                return await self._call(batch)
            finally:
                gate.leave()
        async with gate:
            return await self._call(batch)

    async def _call(self, batch: Sequence[Record]) -> tuple[Failures, BaseException | None]:
        # The send itself, timed (not the wait at the gate); a pause the answer asks for
        # is set on the gate before it lets another call in.
        route = self.route
        started = time.perf_counter()
        try:
            failures = await route.sink.send(batch)
        except BaseException as exc:
            if own_cancellation(exc):
                raise
            self._send_seconds.observe(time.perf_counter() - started)
            self._errors.inc()
            route.gate.hold_off(retry_after(exc))
            return {}, contained(exc, f"sink {route.name}")
        self._send_seconds.observe(time.perf_counter() - started)
        if failures:
            route.gate.hold_off(retry_after(failures))
        return failures, None

    async def deliver(
        self, batch: list[Record], segments: Sequence[tuple[Ticket, int]] = ()
    ) -> None:
        """Return once every record of ``batch`` (from the pages of ``segments``, if known)
        is delivered or dead-lettered."""
        route = self.route
        # A sink that may change its records (``route.private``) changes only its own
        # (``fanout.delivery.private``); a retry or a dead-letter entry needs the batch as
        # it was: parsed again from its pages if they are kept, else kept here as bytes.
        again: Pristine | None = None
        if route.private:
            again = Pristine(batch, segments)
        created = change_time(batch[0])
        # The hot path: one call (straight to the sink while its gate is idle), no failures.
        # Every send goes through ``attempt``, which checks the shard's lease first.
        failures, exc = await self.attempt(batch)
        if exc is None and not failures:
            health = self.health
            if health.strikes:
                health.works()
            self.telemetry.count_delivered(len(batch), created)
            return
        await self._recover(batch, again, failures, exc)

    async def _recover(
        self,
        batch: list[Record],
        again: Pristine | None,
        failures: Failures,
        exc: BaseException | None,
    ) -> None:
        """Retry, bisect and give up on what the first send of ``batch`` did not deliver."""
        send = self.attempt
        if again is not None:
            batch = again.records()
            send = self._attempt_on_copy
        recovery = Recovery(
            batch,
            route=self.route,
            send=send,
            health=self.health,
            telemetry=self.telemetry,
            give_ups=self.give_ups,
        )
        await recovery.run(failures, exc)

    async def _deliver_run(
        self, taken: list[tuple[list[Record], list[tuple[Ticket, int]]]]
    ) -> None:
        """Deliver and settle ``taken`` (full batches, in order) with one ``send_run``.

        Each batch is what ``deliver`` would send, in the same order, with the same outcome:
        the batches the run delivered whole are settled; the one it stopped at goes to a
        ``Recovery`` (or, not sent, to ``deliver``); the rest are delivered one by one.
        """
        route = self.route
        sink = cast("RunSink", route.sink)
        batches = [batch for batch, _ in taken]
        agains = [Pristine(b, s) if route.private else None for b, s in taken]
        created = [change_time(batch[0]) for batch in batches]
        if not self.progress.may_deliver():  # the shard's lease lapsed or moved: fail closed
            await self.progress.lease_lost()
        # Runs are sent only while the gate is idle (``run``): nothing to enter.
        gate = route.gate
        try:
            run = await sink.send_run(batches, self.progress.may_deliver)
        except BaseException as raised:
            if own_cancellation(raised):
                raise
            run = Run(error=raised)  # nothing is known to be delivered
        done = min(len(run.seconds), len(taken))
        health, telemetry = self.health, self.telemetry
        for i in range(done):
            self._send_seconds.observe(run.seconds[i])
            if health.strikes:
                health.works()
            telemetry.count_delivered(len(batches[i]), created[i])
            self._settle(*taken[i])
        if done == len(taken):
            return
        batch, segments = taken[done]
        failures, exc = run.failures, run.error
        if exc is None and not failures:  # not sent (may_go_on() said no)
            await self.deliver(batch, segments)
        else:
            self._send_seconds.observe(run.stop_seconds)
            if exc is not None:
                self._errors.inc()
                gate.hold_off(retry_after(exc))
                exc = contained(exc, f"sink {route.name}")
            else:
                gate.hold_off(retry_after(failures))
            await self._recover(batch, agains[done], failures, exc)
        self._settle(batch, segments)
        for batch, segments in taken[done + 1 :]:
            await self.deliver(batch, segments)
            self._settle(batch, segments)

    async def _attempt_on_copy(
        self, batch: Sequence[Record]
    ) -> tuple[Failures, BaseException | None]:
        # Each retry of a sink that changes its records gets them as they were read.
        return await self.attempt(copy_records(batch))

    @property
    def sink_down(self) -> bool:
        """True while the sink is taken to be down (see ``fanout.delivery.recovery``)."""
        return self.health.down


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
        close_all(self.lanes)

    async def run(self) -> None:
        """Run every lane until closed and drained."""
        await run_all(self.lanes)


AnyLane = Lane | KeyedLane


def close_all(lanes: Sequence[AnyLane]) -> None:
    """Close every lane of ``lanes``."""
    for lane in lanes:
        lane.close()


async def run_all(lanes: Sequence[AnyLane]) -> None:
    """Run every lane of ``lanes`` until each is closed and drained."""
    async with anyio.create_task_group() as tg:
        for lane in lanes:
            tg.start_soon(lane.run)


def open_lane(route: Route, progress: ShardProgress) -> AnyLane:
    """A ``Lane``, or a ``KeyedLane`` when the route's ``parallelization_factor`` is above 1."""
    factor = route.config.parallelization_factor
    return Lane(route, progress) if factor == 1 else KeyedLane(route, progress, factor)
