"""The application's workers as this one sees them: ids, liveness and expired leases.

A peer is alive while this worker has seen its heartbeat counter change within one lease
duration of its own monotonic clock, so clock skew between hosts does not matter.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from fanout.progress.renewals import LeaseTiming
from fanout.progress.store import NO_WORKER_ROW, Checkpoint, Claim, LeaseToken, Snapshot, WorkerRow

# A worker row whose heartbeat stood still this many lease durations is deleted by peers.
FORGET_WORKERS_AFTER = 30
# Workers whose heartbeat_at is older than this many lease durations (by this host's clock)
# are not even watched for liveness when checking the sink set at start-up.
RECENT_BEATS = 3


def new_worker_id() -> str:
    """A worker id unique per process start: host, pid and a random part."""
    host = socket.gethostname().split(".")[0][:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class _Seen:
    """What was last seen of a worker's heartbeat, and since when (monotonic)."""

    heartbeat: int
    since: float


class Peers:
    """Every worker's heartbeat as the scans found it, and what follows: who is alive, how
    many are, and which leases nobody alive holds.

    Args:
        worker_id: this worker (always alive).
        timing: the lease duration.
        clock: monotonic seconds.
        group_size: workers started together on this host; ``group_ready`` waits for them.
        shared_clock: every worker reads this host's clock: a row whose ``heartbeat_at`` is
            older than ``RECENT_BEATS`` lease durations is dead at first sight.
    """

    def __init__(
        self,
        worker_id: str,
        timing: LeaseTiming,
        clock: Callable[[], float],
        *,
        group_size: int = 1,
        shared_clock: bool = False,
    ) -> None:
        self.worker_id = worker_id
        self.timing = timing
        self.clock = clock
        self.group_size = group_size
        self.shared_clock = shared_clock
        self.live = 1
        self.group_ready = group_size <= 1
        self._seen: dict[str, _Seen] = {}
        self._orphans: dict[tuple[str, str], tuple[LeaseToken, float]] = {}
        self._started_mono = clock()

    def alive(self, worker: str | None, now: float) -> bool:
        """True if ``worker`` is this one or its heartbeat moved within a lease duration."""
        if worker is None:
            return False
        if worker == self.worker_id:
            return True
        seen = self._seen.get(worker)
        return seen is not None and now - seen.since < self.timing.duration

    def observe(self, snap: Snapshot, now: float) -> None:
        """Note every worker's heartbeat (and since when it stands still) and the live count."""
        stale_after = time.time() - RECENT_BEATS * self.timing.duration
        seen: dict[str, _Seen] = {}
        for w in snap.workers:
            old = self._seen.get(w.worker_id)
            if old is not None and old.heartbeat == w.heartbeat:
                seen[w.worker_id] = old
            elif old is None and self.shared_clock and w.heartbeat_at < stale_after:
                # first sight, same clock: it stopped beating long ago
                seen[w.worker_id] = _Seen(w.heartbeat, now - self.timing.duration)
            else:
                seen[w.worker_id] = _Seen(w.heartbeat, now)
        self._seen = seen
        self.live = 1 + sum(1 for wid in seen if wid != self.worker_id and self.alive(wid, now))
        if not self.group_ready and (
            self.live >= self.group_size or now - self._started_mono >= self.timing.duration
        ):
            self.group_ready = True

    def next_expiry(self) -> float:
        """When the next peer that stopped beating counts as dead (inf: none is due)."""
        now = self.clock()
        due = [
            seen.since + self.timing.duration
            for wid, seen in self._seen.items()
            if wid != self.worker_id and seen.since + self.timing.duration > now
        ]
        return min(due, default=math.inf) + 0.01

    def expired_claim(self, row: Checkpoint, now: float) -> Claim | None:
        """A claim on ``row`` if nobody alive holds it, else None."""
        if row.finished:
            return None
        if row.owner is None:
            return Claim(row.stream_arn, row.shard_id, None, row.counter)
        if row.owner == self.worker_id:
            # a row of this worker it does not hold (handed to it, or held before a lapse)
            return Claim(row.stream_arn, row.shard_id, row.owner, row.counter)
        seen = self._seen.get(row.owner)
        if seen is not None:
            if now - seen.since >= self.timing.duration:
                return Claim(row.stream_arn, row.shard_id, row.owner, row.counter, seen.heartbeat)
            return None
        # an owner without a worker row: expired once the lease stood still that long
        key = (row.stream_arn, row.shard_id)
        token = LeaseToken(row.owner, row.counter)
        noted = self._orphans.get(key)
        if noted is None or noted[0] != token:
            self._orphans[key] = (token, now)
            return None
        if now - noted[1] >= self.timing.duration:
            return Claim(row.stream_arn, row.shard_id, row.owner, row.counter, NO_WORKER_ROW)
        return None

    def long_dead(self, snap: Snapshot, now: float) -> list[WorkerRow]:
        """Rows of workers whose heartbeat stood still for a long time and that hold no
        unfinished lease any more (their leases are taken first: claims check their row)."""
        limit = FORGET_WORKERS_AFTER * self.timing.duration
        dead: list[WorkerRow] = []
        for w in snap.workers:
            seen = self._seen.get(w.worker_id)
            if w.worker_id == self.worker_id or seen is None or now - seen.since < limit:
                continue
            if any(r.owner == w.worker_id and not r.finished for r in snap.shards):
                continue
            dead.append(w)
        return dead
