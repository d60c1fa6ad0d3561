"""A read-capacity budget shared by the Scan segments of a backfill.

A token bucket in read capacity units: it fills at ``rate`` units per second, and a Scan
call may start only while the bucket is not in debt. The call reserves its estimated cost
when it starts and is charged what DynamoDB reports (``ConsumedCapacity``) when it ends.
So over any run of ``t`` seconds the units consumed stay within ``rate * t`` plus the
reservation error of the calls in flight (at most one page per segment, and pages are
sized to cost about ``rate / 4``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

# Scan pages are sized to cost about this share of a second's budget, so the budget is
# spent in several calls a second rather than in one large page followed by a long wait.
PAGE_SHARE = 0.25
MIN_PAGE, MAX_PAGE, FIRST_PAGE = 1, 1000, 10


class ReadBudget:
    """Read capacity units per second, shared by every segment of a backfill.

    Args:
        rate: units per second (the budget).
        clock: seconds, monotonic (tests pass a fake one with ``sleep``).
        sleep: waits that many seconds.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("the read capacity budget must be positive")
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._tokens = 0.0
        self._at = clock()
        self.started = self._at
        self.consumed = 0.0
        self._per_item: float | None = None  # units per item read, as measured

    def _refill(self) -> None:
        now = self._clock()
        # The bucket holds at most one second's budget: an idle spell is not saved up.
        self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate)
        self._at = now

    async def reserve(self, estimate: float) -> None:
        """Wait until the bucket is out of debt, then reserve ``estimate`` units."""
        while True:
            self._refill()
            if self._tokens >= -1e-9:  # rounding: "out of debt" within a nano-unit
                self._tokens -= estimate
                return
            await self._sleep(max(-self._tokens / self.rate, 0.001))

    def charge(self, estimate: float, consumed: float, items: int) -> None:
        """A call reserved ``estimate`` and consumed ``consumed`` units reading ``items``."""
        self._tokens -= consumed - estimate
        self.consumed += consumed
        if items > 0:
            per_item = consumed / items
            old = self._per_item
            self._per_item = per_item if old is None else 0.7 * old + 0.3 * per_item

    def assume(self, item_bytes: float, consistent: bool) -> None:
        """Start from items of ``item_bytes`` on average (the table's ``TableSizeBytes`` /
        ``ItemCount``, which DynamoDB updates about every six hours) until pages are read."""
        if item_bytes > 0 and self._per_item is None:
            self._per_item = item_bytes / 4096 * (1.0 if consistent else 0.5)

    def page(self, segments: int) -> tuple[int, float]:
        """``(Limit, estimated units)`` of the next Scan call of one of ``segments``."""
        target = max(0.5, self.rate * PAGE_SHARE / max(1, min(segments, 4)))
        per_item = self._per_item
        if per_item is None or per_item <= 0:
            # Nothing known of the items yet: a small first page.
            return FIRST_PAGE, min(target, 0.5 * FIRST_PAGE)
        limit = int(max(MIN_PAGE, min(MAX_PAGE, target / per_item)))
        return limit, limit * per_item

    def rate_so_far(self) -> float:
        """Units consumed per second since the budget was created."""
        elapsed = self._clock() - self.started
        return self.consumed / elapsed if elapsed > 0 else 0.0
