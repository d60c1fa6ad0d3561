from __future__ import annotations

import random

import pytest

from fanout.retry import Backoff, no_wait


def test_backoff_ceiling_doubles_up_to_the_cap():
    b = Backoff(0.5, 10.0)
    assert [b.ceiling(r) for r in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]


def test_backoff_full_jitter_stays_between_zero_and_the_ceiling():
    b = Backoff(1.0, 8.0, rng=random.Random(7))
    delays = [b.delay(4) for _ in range(500)]
    assert all(0 <= d <= 8.0 for d in delays)
    assert min(delays) < 1.0 < 7.0 < max(delays)  # spread over the whole range


@pytest.mark.parametrize("round_", [1_100, 10**6])
def test_backoff_does_not_overflow_when_retries_are_unbounded(round_):
    assert Backoff(0.1, 30.0).ceiling(round_) == 30.0


async def test_wait_uses_the_injected_sleep():
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await no_wait(seconds)

    b = Backoff(1.0, 2.0, sleep=sleep, rng=random.Random(1))
    seconds = await b.wait(3)
    assert slept == [seconds]
    assert 0 <= seconds <= 2.0
