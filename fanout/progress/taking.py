"""Taking leases: each stream's share taken through the store (``fanout.progress.balance``
decides which), rows given back, hand-overs asked of the busiest peer."""

from __future__ import annotations

import logging
import random

import anyio

from fanout.errors import FanoutError
from fanout.progress.balance import Asked, Share, StreamView, share, steal
from fanout.progress.holdings import Holdings
from fanout.progress.renewals import HeldLease, LeaseTiming, Renewals
from fanout.progress.store import Checkpoint, CheckpointStore, Claim, LeaseToken, Release
from fanout.progress.workers import Peers

log = logging.getLogger("fanout.leases")


class Taker:
    """Takes leases for this worker.

    Args:
        store: the checkpoint store.
        worker_id: this worker.
        timing: the lease duration.
        renewals: this worker's renewals (a lease taken is valid with them).
        peers: the application's workers.
        holdings: where taken leases go.
        rng: shuffles claims (peers do not all go for the same ones).

    ``taking`` turns False at shutdown (nothing more is taken); ``lock`` is held by callers
    around each round of takes so that two never overlap.
    """

    def __init__(
        self,
        store: CheckpointStore,
        worker_id: str,
        timing: LeaseTiming,
        renewals: Renewals,
        peers: Peers,
        holdings: Holdings,
        rng: random.Random,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.timing = timing
        self.renewals = renewals
        self.peers = peers
        self.holdings = holdings
        self._rng = rng
        self.taking = True
        self.lock = anyio.Lock()

    async def balance(self, view: StreamView, rows: dict[str, Checkpoint], now: float) -> None:
        """Take this worker's share of the stream's leases (``rows``: the latest scan)."""
        sub = view.subscriber
        arn = sub.stream_arn
        wanted = {sid for sid in sub.wanted() if (arn, sid) not in self.holdings.held}
        missing = [sid for sid in wanted if sid not in rows]
        if missing:
            try:
                rows = {**rows, **await self.store.ensure(arn, sorted(missing))}
            except FanoutError as exc:
                log.warning(
                    "lease_take_failed", extra={"stream": sub.stream_name, "error": str(exc)}
                )
                return
        plan = share(
            sub,
            wanted,
            rows,
            worker_id=self.worker_id,
            held={sid for a, sid in self.holdings.held if a == arn},
            live=self.peers.live,
            alive=lambda worker: self.peers.alive(worker, now),
            expired_claim=lambda row: self.peers.expired_claim(row, now),
            rng=self._rng,
        )
        view.unowned = len(plan.free)
        if plan.waiting != view.waiting:
            view.waiting = plan.waiting
            if plan.waiting:
                log.warning(
                    "shards_waiting",
                    extra={
                        "stream": sub.stream_name,
                        "waiting": plan.waiting,
                        "max_shards": plan.mine + max(0, sub.capacity()),
                    },
                )
        taking = plan.claims[: plan.need]
        chosen = {c.shard_id for c in taking}
        for claim in plan.adopt:
            if claim.shard_id not in chosen:
                await self.give_back(claim)
        if taking:
            got = await self.take(view, taking, now, reason="unowned")
            # Peers that took some of these first: try the next free ones at once.
            rest = plan.claims[plan.need :]
            while got < len(taking) and rest:
                short = len(taking) - got
                taking, rest = rest[:short], rest[short:]
                got = await self.take(view, taking, now, reason="unowned")
            view.unowned = len(
                [c for c in plan.free if (arn, c.shard_id) not in self.holdings.held]
            )
        elif plan.need > 0 and not plan.free:
            await self._steal(view, rows, plan, now)

    async def take(self, view: StreamView, claims: list[Claim], now: float, *, reason: str) -> int:
        """Take ``claims``; returns how many were taken."""
        if not claims or not self.taking:
            return 0
        sub = view.subscriber
        try:
            taken = await self.store.take(claims, self.worker_id)
        except FanoutError as exc:
            log.warning("lease_take_failed", extra={"stream": sub.stream_name, "error": str(exc)})
            return 0
        for claim, row in zip(claims, taken, strict=True):
            view.asked.pop(claim.shard_id, None)
            if row is None:
                continue
            key = (claim.stream_arn, claim.shard_id)
            token = LeaseToken(self.worker_id, row.counter)
            held = HeldLease(*key, token, self.renewals)
            self.holdings.held[key] = held
            if claim.owner == self.worker_id:
                why = "handed over"
            elif claim.owner is None:
                why = reason
            elif claim.heartbeat is None:
                why = "taken over"
            else:
                why = "expired"
            log.info(
                "lease_taken",
                extra={
                    "stream": sub.stream_name,
                    "shard": claim.shard_id,
                    "worker": self.worker_id,
                    "from": claim.owner if claim.owner != self.worker_id else None,
                    "reason": why,
                    "seq": row.sequence,
                },
            )
            self.holdings.event(claim.stream_arn, "taken")
            if not self.taking or not sub.acquired(row, held):
                self.holdings.held.pop(key, None)
                held.lost = True
                await self.give_back(Claim(*key, self.worker_id, row.counter))
        self.holdings.update_gauges()
        return sum(1 for row in taken if row is not None)

    async def give_back(self, claim: Claim) -> None:
        """Release a row of this worker it will not read (failures are logged)."""
        try:
            await self.store.release(
                [
                    Release(
                        claim.stream_arn, claim.shard_id, LeaseToken(self.worker_id, claim.counter)
                    )
                ]
            )
        except FanoutError as exc:
            log.warning("lease_release_failed", extra={"shard": claim.shard_id, "error": str(exc)})

    async def _steal(
        self, view: StreamView, rows: dict[str, Checkpoint], plan: Share, now: float
    ) -> None:
        """Take the leases asked for that were not handed over in time, or ask the busiest
        worker for some (``fanout.progress.balance.steal`` decides)."""
        sub = view.subscriber
        step = steal(
            view,
            rows,
            plan.counts,
            worker_id=self.worker_id,
            mine=plan.mine,
            need=plan.need,
            now=now,
            duration=self.timing.duration,
            rng=self._rng,
        )
        view.asked = step.asked
        if step.overdue:
            await self.take(view, step.overdue, now, reason="taken over")
            return
        for row in step.ask:
            assert step.victim is not None
            token = LeaseToken(step.victim, row.counter)
            try:
                ok = await self.store.request_handoff(
                    row.stream_arn, row.shard_id, token, self.worker_id
                )
            except FanoutError as exc:
                log.warning(
                    "lease_handoff_failed", extra={"stream": sub.stream_name, "error": str(exc)}
                )
                return
            if ok:
                view.asked[row.shard_id] = Asked(token, now)
                log.info(
                    "lease_handoff_requested",
                    extra={
                        "stream": sub.stream_name,
                        "shard": row.shard_id,
                        "worker": self.worker_id,
                        "owner": step.victim,
                    },
                )
