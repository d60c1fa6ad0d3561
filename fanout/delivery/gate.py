"""The one door to a sink: how many ``send()`` calls may run at once, and when the next may start.

Every call to one sink goes through its ``SinkGate``: the sends of every lane of every shard,
and the dead-letter writes of sinks that dead-letter into it. The gate enforces the sink's
``max_in_flight`` (at most that many calls at once; None is unlimited) and the sink's own
``retry_after``: once an answer asked for a pause (a ``Failure.retry_after`` or an exception
carrying ``retry_after``, e.g. ``SinkUnavailable(retry_after=2)``), no call starts before that
pause is over, from any lane.

The gate costs almost nothing when it has nothing to enforce: with no limit and no pause,
entering it awaits nothing; with a limit and a free slot, it takes the slot without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

import anyio

from fanout.isolation import contained, own_cancellation
from fanout.records import Record
from fanout.retry import MAX_RETRY_AFTER_S
from fanout.sink import Failures, Sink

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def retry_after(answer: Failures | BaseException) -> float | None:
    """The pause (seconds) an answer asks for: the longest ``retry_after`` of its failures, or
    the ``retry_after`` attribute of an exception, at most ``MAX_RETRY_AFTER_S``; None when it
    asks for none."""
    if isinstance(answer, BaseException):
        return _seconds(getattr(answer, "retry_after", None))
    longest: float | None = None
    for failure in answer.values():
        seconds = _seconds(failure.retry_after)
        if seconds is not None and (longest is None or seconds > longest):
            longest = seconds
    return longest


def _seconds(value: object) -> float | None:
    # At most MAX_RETRY_AFTER_S: no answer, however hostile, stops a sink for longer.
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return min(float(value), MAX_RETRY_AFTER_S)
    return None


class SinkGate:
    """``max_in_flight`` and ``retry_after`` of one sink, shared by everything that calls it.

    Use ``async with gate:`` around each call of the sink, and ``hold_off(seconds)`` when an
    answer asks for a pause (``send`` does both). While ``idle`` is True, entering the gate
    would neither wait nor take a slot, so a hot path may call the sink without entering.

    Args:
        max_in_flight: calls at once at most; None for unlimited.
        clock: monotonic seconds (tests pass a fake clock).
        sleep: awaited while a pause lasts (tests pass the fake clock's sleep).
    """

    __slots__ = ("_clock", "_not_before", "_sleep", "_slots", "idle", "max_in_flight")

    def __init__(
        self,
        max_in_flight: int | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1, or None for unlimited")
        self.max_in_flight = max_in_flight
        self._slots = (
            None
            if max_in_flight is None
            else anyio.Semaphore(max_in_flight, max_value=max_in_flight)
        )
        self._not_before = 0.0  # clock time before which no call starts; 0: no pause
        self._clock = clock
        self._sleep = sleep
        self.idle = self._slots is None  # no limit and no pause: nothing to enforce

    @property
    def not_before(self) -> float:
        """The clock time before which no call starts (0 or past: calls may start now)."""
        return self._not_before

    def hold_off(self, seconds: float | None) -> None:
        """Start no call for ``seconds`` from now (a longer pause already set stays)."""
        if seconds is None or seconds <= 0:
            return
        until = self._clock() + seconds
        if until > self._not_before:
            self._not_before = until
            self.idle = False

    def enter_nowait(self) -> bool:
        """Enter if that needs no waiting (no pause, a free slot or no limit); True if it did.

        A caller that entered calls ``leave()`` after its call of the sink.
        """
        if self._not_before:
            return False
        if self._slots is not None:
            try:
                self._slots.acquire_nowait()
            except anyio.WouldBlock:
                return False
        return True

    def leave(self) -> None:
        """Give back what entering took (the slot)."""
        if self._slots is not None:
            self._slots.release()

    async def __aenter__(self) -> None:
        if self.enter_nowait():
            return
        slots = self._slots
        if slots is not None:
            await slots.acquire()
        try:
            await self._pause()
        except BaseException:
            self.leave()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.leave()

    async def _pause(self) -> None:
        while True:
            remaining = self._not_before - self._clock()
            if remaining <= 0:
                self._not_before = 0.0
                self.idle = self._slots is None
                return
            await self._sleep(remaining)

    async def send(self, sink: Sink, batch: Sequence[Record]) -> Failures:
        """``sink.send(batch)`` through the gate, holding off as its answer asks.

        Raises:
            Exception: whatever ``sink.send`` raised (``CallCrashed`` for a
                ``BaseException`` that is not an ``Exception``, other than the worker's own
                cancellation).
        """
        async with self:
            try:
                failures = await sink.send(batch)
            except BaseException as exc:
                if own_cancellation(exc):
                    raise
                self.hold_off(retry_after(exc))
                error = contained(exc, f"sink {sink.name}")
                if error is exc:
                    raise
                raise error from exc
            if failures:
                self.hold_off(retry_after(failures))
            return failures
