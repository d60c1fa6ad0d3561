"""The balancing policy: how many of a stream's leases this worker aims at, which free ones
it takes, and which it asks the busiest peer to hand over.

A worker aims at ``ceil(readable shards / live workers)`` of each stream. It takes unowned
and expired leases up to that; when there are none and the busiest worker holds at least two
more than it does, it asks that worker to hand some over (at most ``MAX_STEALS_PER_CYCLE`` a
cycle), and takes those not handed over within a lease duration. The functions here decide;
``fanout.progress.leases.LeaseCoordinator`` makes the store calls.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol

from fanout.progress.renewals import HeldLease
from fanout.progress.store import Checkpoint, Claim, LeaseToken

# Leases asked of the busiest worker in one cycle at most.
MAX_STEALS_PER_CYCLE = 4


class LeaseSubscriber(Protocol):
    """A stream ARN being read (``fanout.stream.discovery.ShardGraph``), as leases see it."""

    @property
    def stream_name(self) -> str:
        """The configured stream's name (logs, metric labels)."""
        ...

    @property
    def stream_arn(self) -> str:
        """The stream."""
        ...

    def wanted(self) -> list[str]:
        """Shards readable now (parent finished or gone) and not read by this worker."""
        ...

    def capacity(self) -> int:
        """How many more shards this worker may read (``max_shards``)."""
        ...

    def acquired(self, row: Checkpoint, lease: HeldLease) -> bool:
        """Start reading the shard of ``row``; False if it cannot be read now."""
        ...

    def lost(self, shard_id: str) -> None:
        """The lease is gone: stop reading and delivering the shard at once."""
        ...

    async def hand_over(self, shard_id: str) -> None:
        """Stop reading the shard, let what was read settle (bounded) and write its
        checkpoint; the lease is released afterwards."""
        ...

    def observed(self, rows: dict[str, Checkpoint]) -> None:
        """The stream's rows as the latest scan found them (shards finished by peers)."""
        ...


@dataclass
class Asked:
    """A hand-over this worker asked for: of which lease, when (monotonic)."""

    token: LeaseToken
    at: float


@dataclass
class StreamView:
    """A subscribed stream and what balancing last found of it."""

    subscriber: LeaseSubscriber
    unowned: int = 0
    waiting: int = 0  # readable shards this worker would take but for max_shards
    asked: dict[str, Asked] = field(default_factory=dict)


@dataclass
class Share:
    """What one balancing round of a stream found.

    Attributes:
        counts: unfinished leases held by each other live worker.
        mine: leases of the stream this worker holds.
        need: how many more it should take now (target and capacity allowing).
        adopt: rows of this worker it does not hold (handed to it, or held before a lapse).
        free: claims on wanted leases nobody alive holds, shuffled.
        claims: the order to take in: adopted rows still wanted, then the free ones.
        waiting: free leases it would take but for ``max_shards``.
    """

    counts: Counter[str]
    mine: int
    need: int
    adopt: list[Claim]
    free: list[Claim]
    claims: list[Claim]
    waiting: int


def share(
    sub: LeaseSubscriber,
    wanted: set[str],
    rows: dict[str, Checkpoint],
    *,
    worker_id: str,
    held: Collection[str],
    live: int,
    alive: Callable[[str | None], bool],
    expired_claim: Callable[[Checkpoint], Claim | None],
    rng: random.Random,
) -> Share:
    """This worker's share of a stream's leases and the claims that make it up.

    Args:
        sub: the stream.
        wanted: shards readable now and not held here (each has a row in ``rows``).
        rows: the stream's rows.
        worker_id: this worker.
        held: shards of the stream this worker holds.
        live: live workers of the application (this one included).
        alive: whether a worker is alive now.
        expired_claim: a claim on a row nobody alive holds, else None.
        rng: shuffles the free claims (peers do not all go for the same ones).
    """
    me = worker_id
    mine = len(held)
    counts: Counter[str] = Counter(
        r.owner
        for r in rows.values()
        if r.owner not in (None, me) and not r.finished and alive(r.owner)
    )
    work = {sid for sid in wanted if not rows[sid].finished} | {
        sid for sid, r in rows.items() if r.owner is not None and not r.finished
    }
    target = math.ceil(len(work) / max(1, live)) if work else 0
    capacity = sub.capacity()
    need = max(0, min(target - mine, capacity))
    adopt = [
        Claim(sub.stream_arn, sid, me, r.counter)
        for sid, r in rows.items()
        if r.owner == me and not r.finished and sid not in held
    ]
    free: list[Claim] = []
    for sid in wanted:
        if rows[sid].owner != me:
            claim = expired_claim(rows[sid])
            if claim is not None:
                free.append(claim)
    rng.shuffle(free)
    waiting = max(0, min(len(free), target - mine) - max(0, capacity))
    claims = [c for c in adopt if c.shard_id in wanted] + free
    return Share(counts, mine, need, adopt, free, claims, waiting)


@dataclass
class Steal:
    """What to do when no free lease is left and this worker holds too few.

    Attributes:
        asked: the hand-overs asked for earlier that still stand.
        overdue: claims on leases asked for a lease duration ago and not handed over: take
            them (and ask for nothing more this round).
        victim: the busiest worker, to ask for the leases of ``ask`` (None: ask nobody).
        ask: rows of ``victim`` to ask for.
    """

    asked: dict[str, Asked]
    overdue: list[Claim] = field(default_factory=list)
    victim: str | None = None
    ask: list[Checkpoint] = field(default_factory=list)


def steal(
    view: StreamView,
    rows: dict[str, Checkpoint],
    counts: Counter[str],
    *,
    worker_id: str,
    mine: int,
    need: int,
    now: float,
    duration: float,
    rng: random.Random,
) -> Steal:
    """Ask the busiest worker to hand leases over when it holds at least two more than this
    one (counting hand-overs already asked for); take those it did not hand over within a
    lease duration (``duration``)."""
    held_by_others = {
        sid: r for sid, r in rows.items() if r.owner not in (None, worker_id) and not r.finished
    }
    asked = {
        sid: a
        for sid, a in view.asked.items()
        if sid in held_by_others and held_by_others[sid].lease == a.token
    }
    overdue = [
        Claim(view.subscriber.stream_arn, sid, a.token.owner, a.token.counter)
        for sid, a in asked.items()
        if now - a.at >= duration
    ]
    if overdue:
        return Steal(asked, overdue=overdue[:need])
    asked_of: Counter[str] = Counter(a.token.owner for a in asked.values())
    pending = len(asked)
    effective = [(counts[w] - asked_of[w], w) for w in counts]
    if not effective:
        return Steal(asked)
    most, victim = max(effective)
    gap = most - (mine + pending)
    count = min(need - pending, gap // 2, MAX_STEALS_PER_CYCLE)
    if gap < 2 or count <= 0:
        return Steal(asked)
    theirs = [
        r
        for sid, r in held_by_others.items()
        if r.owner == victim and r.handoff_to is None and sid not in asked
    ]
    rng.shuffle(theirs)
    return Steal(asked, victim=victim, ask=theirs[:count])
