"""Retry timing: capped exponential backoff with full jitter."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel

Sleep = Callable[[float], Awaitable[None]]

# 2**62 times any sane initial delay is far past every cap; a larger exponent would only
# overflow the float conversion when retries are unbounded (max_attempts: -1).
_MAX_EXPONENT = 62


@dataclass(frozen=True)
class Backoff:
    """Delays for retry round 1, 2, ...: ``uniform(0, min(cap, initial * 2**(round-1)))``.

    Full jitter spreads the retries of many shards hitting one failing sink, so they do not
    come back in lock-step. ``sleep`` is injectable so tests never wait on real time.

    Attributes:
        initial: the ceiling of the first delay, in seconds.
        cap: the largest ceiling, in seconds.
        sleep: awaited with each delay (``anyio.sleep`` unless a test swaps it).
        rng: the jitter's random source.
    """

    initial: float = 1.0
    cap: float = 60.0
    sleep: Sleep = field(default=anyio.sleep, compare=False)
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def ceiling(self, round_: int) -> float:
        """The largest delay of retry round ``round_`` (1-based)."""
        exponent = min(max(0, round_ - 1), _MAX_EXPONENT)
        return min(self.cap, self.initial * float(2**exponent))

    def delay(self, round_: int) -> float:
        """A random delay for retry round ``round_`` (1-based), full jitter."""
        return self.rng.uniform(0, self.ceiling(round_))

    async def wait(self, round_: int) -> float:
        """Sleep for ``delay(round_)`` and return the seconds slept."""
        seconds = self.delay(round_)
        await self.sleep(seconds)
        return seconds


async def no_wait(seconds: float) -> None:
    """A ``sleep`` that only yields to the event loop (for tests and tools)."""
    await anyio.lowlevel.checkpoint()
