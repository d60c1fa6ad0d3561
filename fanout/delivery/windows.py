"""Tumbling windows: a sink's lane that calls it as Lambda calls a function with
``TumblingWindowInSeconds`` (``docs/handlers.md``, "Tumbling windows").

Every record belongs to the window of its ``ApproximateCreationDateTime`` (the time it was
written to the stream): windows are ``size`` seconds long, aligned on multiples of ``size``
since the epoch. For each batch of one window the sink gets the window's ``state`` (``{}``
at its start) and returns the new one; at the window's end it gets one final call with no
records and ``isFinalInvokeForWindow`` true, after which the state is dropped. A window
ends when a record of a later window arrives, or once the clock is ``CLOSE_GRACE_S`` past
its end with nothing queued; when the shard ends, its open window gets its final call
at once (``isWindowTerminatedEarly`` true if the window had not reached its end).

A record older than the open window joins it; a record whose window already had its
final call (DynamoDB Local rounds creation times down to the minute, so there windows
follow the clock) goes to the window of the current time: each record is in exactly one
window, windows never overlap, and records stay in stream order.

The window, its state and ``covered`` (the last record the state accounts for) are stored
with the shard's checkpoint, in the same write (``WindowState``). After a restart the
stored state is restored and records up to ``covered`` are not given to the sink again, so
a crash loses nothing and applies no batch twice. The final call is written at once, so it
is made once per window and shard (a crash between the call and that write repeats it, as
Lambda processes at least once).

A state larger than ``MAX_STATE_BYTES`` (Lambda's 1 MB per shard) is refused: the batch
that returned it goes to the dead-letter destination with the reason, and the window
keeps its previous state.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import anyio
import orjson

from fanout.delivery.lane import Lane
from fanout.delivery.route import Route
from fanout.isolation import contained, own_cancellation
from fanout.progress.store import WindowState
from fanout.progress.tracker import ShardProgress, Ticket
from fanout.records import Record, approximate_creation_time
from fanout.sink import Failure, Failures

log = logging.getLogger("fanout.window")

MAX_STATE_BYTES = 1024 * 1024
"""The largest state (as JSON) a window keeps, as Lambda's 1 MB per shard."""

CLOSE_GRACE_S = 1.0
"""A window without new records is closed this long after its end: creation times are
rounded down to the second, and records take a poll or two to be read."""

STATE_TOO_LARGE = "WindowStateTooLarge"
"""The error class of records dead-lettered because their batch's state was too large."""

FINAL_FAILED = "WindowFinalInvokeFailed"
"""The error class of a window whose final call failed every attempt (its state is kept
in the dead-letter entry)."""


@runtime_checkable
class WindowedSink(Protocol):
    """A sink that can be called with a tumbling window (``sinks.handler.HandlerSink``)."""

    async def send_window(
        self, batch: Sequence[Record], window: Mapping[str, Any]
    ) -> tuple[Failures, Any]:
        """Deliver ``batch`` with the window fields of the event; returns the failures and
        the new state."""
        ...


def window_start(stamp: float, size: float) -> float:
    """The start of the window of ``size`` seconds that holds ``stamp``."""
    return math.floor(stamp / size) * size


def iso(epoch: float) -> str:
    """``epoch`` as Lambda spells window bounds: ``2020-07-30T17:00:00Z``."""
    moment = datetime.fromtimestamp(epoch, UTC)
    if epoch == int(epoch):
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def state_size(state: Any) -> int:
    """Bytes of ``state`` as JSON."""
    return len(orjson.dumps(state))


def _seq(record: Record) -> int:
    return int(record["dynamodb"]["SequenceNumber"])


class WindowLane(Lane):
    """The lane of a ``tumbling_window`` sink on one shard.

    Args:
        route: the sink's route (its sink is a ``WindowedSink``).
        progress: the shard's progress; the lane adds itself to ``progress.windows`` so
            each checkpoint of the shard carries its window state.
        size: the window's length in seconds.
        stored: the window state stored with the shard's checkpoint, if any.
        persist: writes the shard's checkpoint now (after a final call).
        clock: the wall clock (tests replace it).
    """

    runs = False  # every call carries the window's state: one call per batch

    def __init__(
        self,
        route: Route,
        progress: ShardProgress,
        size: float,
        stored: WindowState | None = None,
        persist: Callable[[], Awaitable[object]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(route, progress)
        sink = route.sink
        if not isinstance(sink, WindowedSink):
            raise TypeError(f"sink {route.name} cannot be called with a tumbling window")
        self._windowed: WindowedSink = sink
        self.size = size
        self.start: float | None = None
        self.state: Any = {}
        self.covered: str | None = None
        self.closed: float | None = None
        if stored is not None:
            self.start, self.state = stored.start, dict(stored.state)
            self.covered, self.closed = stored.covered, stored.closed
        self._persist = persist
        self._clock = clock
        self._lock = anyio.Lock()
        self._final = False  # the call in progress is a final one
        self._early = False
        progress.windows.append(self)

    def snapshot(self) -> WindowState:
        """The window as it is now, for the shard's next checkpoint."""
        return WindowState(self.route.name, self.start, self.state, self.covered, self.closed)

    @property
    def end(self) -> float | None:
        """The open window's end, or None."""
        return None if self.start is None else self.start + self.size

    # -- assignment -------------------------------------------------------------------------

    def assign(self, record: Record) -> float:
        """The start of the window ``record`` goes to (see the module's docstring)."""
        stamp = approximate_creation_time(record)
        start = window_start(stamp if stamp is not None else self._clock(), self.size)
        if self.start is not None and start < self.start:
            start = self.start  # late for its window: joins the open one
        if self.closed is not None and start < self.closed:
            # Its window already had its final call: the window of now takes it.
            start = window_start(max(self.closed, self._clock()), self.size)
        return start

    async def deliver(
        self, batch: list[Record], segments: Sequence[tuple[Ticket, int]] = ()
    ) -> None:
        """Deliver the records of ``batch`` (from the pages of ``segments``) not yet in the
        state, window by window."""
        if self.covered is not None:  # read again after a restart: already in the state
            covered = int(self.covered)
            batch = [r for r in batch if _seq(r) > covered]
        group: list[Record] = []
        group_start: float | None = None
        for record in batch:
            start = self.assign(record)
            if group and start != group_start:
                await self._deliver_in(group_start, group, segments)
                group = []
            group_start = start
            group.append(record)
        if group:
            await self._deliver_in(group_start, group, segments)

    async def _deliver_in(
        self, start: float | None, records: list[Record], segments: Sequence[tuple[Ticket, int]]
    ) -> None:
        assert start is not None
        async with self._lock:
            if self.start is not None and self.start != start:
                await self._close(early=False)
            if self.start is None:
                self.start, self.state = start, {}
        await super().deliver(records, segments)

    # -- calls ------------------------------------------------------------------------------

    def _event(self) -> dict[str, Any]:
        assert self.start is not None
        progress = self.progress
        return {
            "window": {"start": iso(self.start), "end": iso(self.start + self.size)},
            "state": self.state,
            "shardId": progress.shard_id,
            "eventSourceARN": progress.stream_arn,
            "isFinalInvokeForWindow": self._final,
            "isWindowTerminatedEarly": self._early,
        }

    async def _call(self, batch: Sequence[Record]) -> tuple[Failures, BaseException | None]:
        route = self.route
        # read before the call: a handler may change its records (``route.private``)
        sequence_numbers = [record["dynamodb"]["SequenceNumber"] for record in batch]
        started = time.perf_counter()
        try:
            failures, state = await self._windowed.send_window(batch, self._event())
        except BaseException as exc:
            if own_cancellation(exc):
                raise
            self._send_seconds.observe(time.perf_counter() - started)
            self._errors.inc()
            return {}, contained(exc, f"sink {route.name}")
        self._send_seconds.observe(time.perf_counter() - started)
        if self._final:
            return failures, None
        size = state_size(state)
        if size > MAX_STATE_BYTES:
            reason = (
                f"{STATE_TOO_LARGE}: the handler returned a state of {size} bytes, more than "
                f"the {MAX_STATE_BYTES} bytes (1 MB) a tumbling window keeps; the window "
                "keeps its previous state"
            )
            log.error(
                "window_state_too_large",
                extra={"sink": route.name, "shard": self.progress.shard_id, "bytes": size},
            )
            return {i: Failure(False, reason) for i in range(len(batch))}, None
        self.state = state
        delivered = min(failures) if failures else len(batch)
        if delivered:
            self.covered = sequence_numbers[delivered - 1]
        return failures, None

    async def _close(self, *, early: bool) -> None:
        """The open window's final call (retried as the route's policy says), then its state
        is dropped and the shard's checkpoint written. Called under ``_lock``."""
        end = self.end
        assert end is not None
        self._final, self._early = True, early
        try:
            await self._final_call()
        finally:
            self._final = self._early = False
        log.info(
            "window_closed",
            extra={
                "sink": self.route.name,
                "shard": self.progress.shard_id,
                "window_end": iso(end),
                "terminated_early": early,
            },
        )
        self.start, self.state, self.closed = None, {}, end
        self.progress.dirty = True
        if self._persist is not None:
            await self._persist()

    async def _final_call(self) -> None:
        retry = self.route.config.retry
        attempt = 0
        first_failure = 0.0
        while True:
            if not self.progress.may_deliver():
                await self.progress.lease_lost()
            attempt += 1
            _, exc = await self.attempt([])
            if exc is None:
                return
            now = self._clock()
            first_failure = first_failure or now
            log.warning(
                "window_final_failed",
                extra={
                    "sink": self.route.name,
                    "shard": self.progress.shard_id,
                    "attempt": attempt,
                    "error": str(exc),
                },
            )
            if retry.max_attempts != -1 and attempt >= retry.max_attempts:
                entry = self.give_ups.entry(
                    {"Records": [], **self._event()},
                    error_class=FINAL_FAILED,
                    message=f"the window's final call failed {attempt} times: {exc}",
                    attempts=attempt,
                    first_failure_at=first_failure,
                    last_failure_at=now,
                )
                await self.give_ups.write([entry])
                return
            await self.route.backoff.wait(attempt)

    # -- the clock and the shard's end ------------------------------------------------------

    async def _idle(self) -> None:
        """Wait for records; close the open window once the clock is past its end."""
        end = self.end
        if end is None:
            await self._wakeup.wait()
            return
        with anyio.move_on_after(max(0.0, end + CLOSE_GRACE_S - self._clock())):
            await self._wakeup.wait()
            return
        async with self._lock:
            if self.start is not None and self._clock() >= self.start + self.size:
                await self._close(early=False)

    async def end_shard(self) -> None:
        """The shard was read to its end and every record is settled: the open window gets
        its final call now (terminated early if it had not reached its end)."""
        async with self._lock:
            end = self.end
            if end is not None:
                await self._close(early=self._clock() < end)
