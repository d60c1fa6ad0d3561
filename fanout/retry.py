"""Retry timing for every retry loop in fanout: capped exponential backoff with jitter.

One ``RetryPolicy`` object serves the stream reader's calls, checkpoint writes, dead-letter
writes and sink retries; they differ only in their numbers. A server's ``Retry-After`` is a
lower bound on the next delay, never shortened by jitter, and is honoured up to an hour
(``MAX_RETRY_AFTER_S``): a destination cannot stop a sink for longer by asking.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TypeVar

import anyio
import anyio.lowlevel

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")

# 2**62 times any sane initial delay is far past every cap; a larger exponent would only
# overflow the float conversion when retries are unbounded (max_attempts: -1).
_MAX_EXPONENT = 62

MAX_RETRY_AFTER_S = 3600.0
"""The longest pause a destination's answer (``Retry-After``, ``retry_after``) is granted."""


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """An HTTP ``Retry-After`` header in seconds (delay-seconds or an HTTP date), at most
    ``MAX_RETRY_AFTER_S``; None if absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


@dataclass(frozen=True)
class RetryPolicy:
    """Delays for attempt 1, 2, ... after a failure: ``uniform(floor * c, c)`` where
    ``c = min(cap, initial * 2**(attempt-1))`` is the attempt's ceiling.

    ``floor`` 0 is full jitter (sink retries: many shards retrying one sink spread out over
    the whole window); 0.5 keeps every wait at least half its ceiling (stream calls: a
    throttled reader must really slow down). ``sleep`` is injectable, so tests never wait
    on real time (``no_wait``).

    Attributes:
        initial: the ceiling of the first delay, in seconds.
        cap: the largest ceiling, in seconds.
        floor: the least delay as a fraction of the ceiling (0 to 1).
        sleep: awaited with each delay (``anyio.sleep`` unless a test swaps it).
        rng: the jitter's random source.
    """

    initial: float = 1.0
    cap: float = 60.0
    floor: float = 0.0
    sleep: Sleep = field(default=anyio.sleep, compare=False)
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def ceiling(self, attempt: int) -> float:
        """The largest delay after failed attempt ``attempt`` (1-based)."""
        exponent = min(max(0, attempt - 1), _MAX_EXPONENT)
        return min(self.cap, self.initial * float(2**exponent))

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """A random delay after failed attempt ``attempt``; at least ``retry_after``."""
        ceiling = self.ceiling(attempt)
        seconds = self.rng.uniform(ceiling * self.floor, ceiling)
        if retry_after is not None and retry_after > seconds:
            return retry_after
        return seconds

    async def wait(self, attempt: int, retry_after: float | None = None) -> float:
        """Sleep for ``delay(attempt, retry_after)`` and return the seconds slept."""
        seconds = self.delay(attempt, retry_after)
        await self.sleep(seconds)
        return seconds

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        retry_on: tuple[type[BaseException], ...],
        on_failure: Callable[[BaseException, int], None] | None = None,
        attempts: int | None = None,
    ) -> T:
        """Await ``fn()`` until it returns, waiting between failures.

        Args:
            fn: the call (a fresh awaitable each time).
            retry_on: exception types that are retried; anything else propagates.
            on_failure: told each failure and its attempt number before the wait
                (log it, count it).
            attempts: give up after this many calls, re-raising the last failure; None
                never gives up.
        """
        attempt = 0
        while True:
            try:
                return await fn()
            except retry_on as exc:
                attempt += 1
                if on_failure is not None:
                    on_failure(exc, attempt)
                if attempts is not None and attempt >= attempts:
                    raise
                await self.wait(attempt, getattr(exc, "retry_after", None))


async def no_wait(seconds: float) -> None:
    """A ``sleep`` that only yields to the event loop (for tests and tools)."""
    await anyio.lowlevel.checkpoint()
