from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from fanout.retry import MAX_RETRY_AFTER_S, RetryPolicy, no_wait, retry_after_seconds


def test_retry_policy_ceiling_doubles_up_to_the_cap():
    b = RetryPolicy(0.5, 10.0)
    assert [b.ceiling(r) for r in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]


def test_retry_policy_full_jitter_stays_between_zero_and_the_ceiling():
    b = RetryPolicy(1.0, 8.0, rng=random.Random(7))
    delays = [b.delay(4) for _ in range(500)]
    assert all(0 <= d <= 8.0 for d in delays)
    assert min(delays) < 1.0 < 7.0 < max(delays)  # spread over the whole range


@pytest.mark.parametrize("round_", [1_100, 10**6])
def test_retry_policy_does_not_overflow_when_retries_are_unbounded(round_):
    assert RetryPolicy(0.1, 30.0).ceiling(round_) == 30.0


async def test_wait_uses_the_injected_sleep():
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await no_wait(seconds)

    b = RetryPolicy(1.0, 2.0, sleep=sleep, rng=random.Random(1))
    seconds = await b.wait(3)
    assert slept == [seconds]
    assert 0 <= seconds <= 2.0


def test_retry_policy_floor_keeps_every_delay_above_its_fraction_of_the_ceiling():
    policy = RetryPolicy(0.2, 10.0, floor=0.5, rng=random.Random(1))
    for attempt, ceiling in [(1, 0.2), (2, 0.4), (3, 0.8), (6, 6.4), (7, 10.0), (200, 10.0)]:
        delays = {policy.delay(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) == 50  # never the same wait twice: callers do not retry in step


def test_retry_after_is_a_lower_bound_that_jitter_never_shortens():
    policy = RetryPolicy(0.1, 1.0, rng=random.Random(3))
    assert all(policy.delay(1, retry_after=2.0) == 2.0 for _ in range(100))
    assert all(0 <= policy.delay(1, retry_after=0.0) <= 0.1 for _ in range(100))


async def test_call_retries_the_listed_errors_and_reports_each_failure():
    answers: list[BaseException | str] = [OSError("a"), OSError("b"), "done"]
    seen: list[tuple[str, int]] = []

    async def fn() -> str:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    policy = RetryPolicy(1.0, 2.0, sleep=no_wait)
    result = await policy.call(
        fn, retry_on=(OSError,), on_failure=lambda exc, n: seen.append((str(exc), n))
    )
    assert result == "done"
    assert seen == [("a", 1), ("b", 2)]


async def test_call_gives_up_after_its_attempts_and_passes_other_errors_through():
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise OSError("down")

    policy = RetryPolicy(1.0, 2.0, sleep=no_wait)
    with pytest.raises(OSError, match="down"):
        await policy.call(failing, retry_on=(OSError,), attempts=3)
    assert calls == 3

    async def broken() -> None:
        raise ValueError("not retried")

    with pytest.raises(ValueError, match="not retried"):
        await policy.call(broken, retry_on=(OSError,))


async def test_call_waits_at_least_the_retry_after_an_error_carries():
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    class Busy(Exception):
        retry_after = 2.5

    answers: list[BaseException | None] = [Busy(), None]

    async def fn() -> None:
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    await RetryPolicy(0.1, 0.2, sleep=sleep).call(fn, retry_on=(Busy,))
    assert slept == [2.5]


def test_retry_after_is_read_as_seconds_or_a_date_and_capped():
    assert retry_after_seconds("5") == 5.0
    assert retry_after_seconds(" 0 ") == 0.0
    assert retry_after_seconds("1.5") == 1.5
    now = 1_800_000_000.0
    date = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert retry_after_seconds(date, now=now) == pytest.approx(30)
    past = format_datetime(datetime.fromtimestamp(now - 30, UTC), usegmt=True)
    assert retry_after_seconds(past, now=now) == 0.0
    assert retry_after_seconds("86400") == MAX_RETRY_AFTER_S
    assert retry_after_seconds("inf") == MAX_RETRY_AFTER_S
    for unreadable in (None, "", "soon", "nan", "-3"):
        assert retry_after_seconds(unreadable) in (None, 0.0)
    assert retry_after_seconds("soon") is None
