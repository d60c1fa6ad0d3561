"""How long a lease lasts, this worker's renewals, and the leases it holds.

A held lease may be acted on only while this worker's renewals did not lapse since it was
taken (``docs/leases.md`` has the timing).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from fanout.progress.store import LeaseToken


@dataclass(frozen=True)
class LeaseTiming:
    """How long a lease lasts, and what follows from it.

    Attributes:
        duration: seconds a lease lasts without renewal (``checkpoints.lease_duration``).
    """

    duration: float = 10.0

    @property
    def renew_interval(self) -> float:
        """Seconds between heartbeats (and scans of the rows)."""
        return self.duration / 3

    @property
    def margin(self) -> float:
        """A worker stops acting on a lease this long before a peer could take it."""
        return self.duration / 5


class Renewals:
    """This worker's renewals: until when (monotonic seconds) it may act on its leases, and
    an epoch that grows whenever renewals lapsed.

    A renewal that started before the last one's validity ended, and completed before a peer
    could have judged this worker dead (``duration`` after the last one started), extends
    every lease. Any other successful renewal follows a lapse: the epoch grows, and leases
    held before it are never valid again (a peer may have taken them meanwhile). Updated from
    the heartbeat thread, read everywhere.
    """

    def __init__(self, timing: LeaseTiming, clock: Callable[[], float]) -> None:
        self.timing = timing
        self.clock = clock
        self.valid_until = 0.0
        self.epoch = 0
        self.last_start: float | None = None
        self._lock = threading.Lock()

    def renewed(self, started: float, completed: float) -> None:
        """A heartbeat that started at ``started`` was written by ``completed``."""
        with self._lock:
            last = self.last_start
            if last is not None and (
                started >= self.valid_until or completed >= last + self.timing.duration
            ):
                self.epoch += 1
            self.last_start = started
            self.valid_until = started + self.timing.duration - self.timing.margin

    def valid(self, epoch: int) -> bool:
        """True while leases taken in ``epoch`` may be acted on."""
        return epoch == self.epoch and self.clock() < self.valid_until

    def left(self) -> float:
        """Seconds of validity left (negative once lapsed)."""
        return self.valid_until - self.clock()


class HeldLease:
    """A lease this worker holds: the token writes are conditional on, and whether the
    worker may still act on it (its renewals did not lapse since it was taken)."""

    __slots__ = (
        "_renewals",
        "acquired_at",
        "epoch",
        "handing_over",
        "lost",
        "shard_id",
        "stream_arn",
        "token",
    )

    def __init__(
        self,
        stream_arn: str,
        shard_id: str,
        token: LeaseToken,
        renewals: Renewals,
    ) -> None:
        self.stream_arn = stream_arn
        self.shard_id = shard_id
        self.token = token
        self._renewals = renewals
        self.epoch = renewals.epoch
        self.lost = False
        self.handing_over = False
        self.acquired_at = renewals.clock()

    def valid(self) -> bool:
        """True while the worker may deliver records of the shard and checkpoint it."""
        return not self.lost and self._renewals.valid(self.epoch)

    async def lost_wait(self) -> None:
        """Wait for the cancellation that follows a lost lease (the owner stops the shard)."""
        await anyio.sleep_forever()
