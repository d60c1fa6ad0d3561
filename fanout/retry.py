"""Retry timing: capped exponential backoff with full jitter."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Backoff:
    """Delays for retry round 1, 2, ...: ``uniform(0, min(cap, initial * 2**(round-1)))``.

    Full jitter spreads the retries of many shards hitting one failing sink, so they do not
    come back in lock-step. ``sleep`` is injectable so tests never wait on real time.
    """

    initial: float = 1.0
    cap: float = 60.0
    sleep: Sleep = field(default=anyio.sleep, compare=False)
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay(self, round_: int) -> float:
        ceiling = min(self.cap, self.initial * (2 ** max(0, round_ - 1)))
        return self.rng.uniform(0, ceiling)

    async def wait(self, round_: int) -> float:
        seconds = self.delay(round_)
        await self.sleep(seconds)
        return seconds
