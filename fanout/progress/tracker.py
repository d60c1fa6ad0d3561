"""Ack tracking per shard: which records read are settled, and the frontier that may be saved.

A shard's checkpoint is the highest sequence number such that every record up to it has
been settled (delivered, filtered out or dead-lettered) for every sink it was routed to.
Records arrive in pages; each page gets a ``Ticket`` counting the record deliveries still
owed for it, and the frontier moves over tickets in page order only. A ticket also carries
the page's weight in the process's byte budget, given back when the page is settled.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

import anyio

from fanout.progress.store import LeaseToken, WindowState

if TYPE_CHECKING:
    from collections.abc import Callable

    from fanout.records import Record


class LeaseGuard(Protocol):
    """The lease a shard is read under (``fanout.progress.renewals.HeldLease``)."""

    @property
    def token(self) -> LeaseToken:
        """What writes of the shard's checkpoint are conditional on."""
        ...

    def valid(self) -> bool:
        """True while records of the shard may be delivered and checkpointed."""
        ...

    async def lost_wait(self) -> None:
        """Wait for the cancellation that follows a lost lease."""
        ...


class HeldBytes(Protocol):
    """What a shard holds of the byte budget (``fanout.stream.budget.ShardBytes``)."""

    def release(self, size: int) -> None:
        """A page of ``size`` bytes was settled."""
        ...


class WindowSource(Protocol):
    """A sink's tumbling window on the shard (``fanout.delivery.windows.WindowLane``)."""

    def snapshot(self) -> WindowState:
        """The window as it is now."""
        ...


class Ticket:
    """One page of one shard: ``pending`` record deliveries are still owed for it.

    ``last_seq`` is None only for a page none of whose records has a sequence number (all
    malformed, nothing read before): settling it leaves the frontier where it is.
    """

    __slots__ = ("last_seq", "pending", "reread", "shard", "unrouted", "weight")

    def __init__(self, shard: ShardProgress, last_seq: str | None, weight: int = 0) -> None:
        self.shard = shard
        self.last_seq = last_seq
        self.weight = weight  # bytes of the budget the page holds
        # The page's records parsed again as they were read, for the retries of a sink
        # that changes its records (``fanout.delivery.private``); None: not kept.
        self.reread: Callable[[], list[Record]] | None = None
        # Records of the page no sink takes: kept until the page is settled.
        self.unrouted: list[Record] | None = None
        # Starts at 1: the reader holds the ticket open until it has handed the page to
        # every sink, so a quick sink cannot settle the page before a slow one received it.
        self.pending = 1

    def settle(self, count: int) -> None:
        """``count`` deliveries of this page are done (delivered or dead-lettered)."""
        self.pending -= count
        if self.pending == 0:
            self.unrouted = None
            if self.weight and self.shard.held is not None:
                self.shard.held.release(self.weight)
            self.shard.advance()


class ShardProgress:
    """The settled frontier of one shard, plus what is needed to notice a stall."""

    __slots__ = (
        "_drained",
        "dirty",
        "finished",
        "frontier",
        "held",
        "last_progress",
        "lease",
        "shard_id",
        "stream_arn",
        "stream_name",
        "tickets",
        "windows",
    )

    def __init__(
        self,
        stream_name: str,
        stream_arn: str,
        shard_id: str,
        frontier: str | None,
        lease: LeaseGuard | None = None,
        held: HeldBytes | None = None,
    ) -> None:
        self.stream_name = stream_name
        self.stream_arn = stream_arn
        self.shard_id = shard_id
        self.frontier = frontier
        self.tickets: deque[Ticket] = deque()
        self.dirty = False
        self.last_progress = time.monotonic()
        self._drained: anyio.Event | None = None
        self.lease = lease
        self.finished = False  # written as finished: no other checkpoint of it follows
        self.held = held  # its share of the byte budget
        # The shard's tumbling windows (``fanout.delivery.windows.WindowLane``), written
        # with each of its checkpoints.
        self.windows: list[WindowSource] = []

    def may_deliver(self) -> bool:
        """True unless the shard's lease lapsed or moved: then nothing more of it may be
        handed to a sink, dead-lettered or checkpointed."""
        lease = self.lease
        return lease is None or lease.valid()

    async def lease_lost(self) -> None:
        """Wait, delivering nothing, for the cancellation that follows a lost lease."""
        assert self.lease is not None
        await self.lease.lost_wait()

    def open(self, last_seq: str | None, weight: int = 0) -> Ticket:
        ticket = Ticket(self, last_seq, weight)
        self.tickets.append(ticket)
        return ticket

    def advance(self) -> None:
        tickets = self.tickets
        moved = False
        while tickets and tickets[0].pending == 0:
            seq = tickets.popleft().last_seq
            if seq is not None:
                self.frontier = seq
            moved = True
        if moved:
            self.dirty = True
            self.last_progress = time.monotonic()
            if not tickets and self._drained is not None:
                self._drained.set()

    @property
    def pending(self) -> bool:
        """True while some read record is not settled yet."""
        return bool(self.tickets)

    async def drained(self) -> None:
        """Wait until every ticket handed out so far is settled."""
        while self.tickets:
            self._drained = anyio.Event()
            await self._drained.wait()
        self._drained = None
