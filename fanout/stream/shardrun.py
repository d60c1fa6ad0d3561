"""One shard being read under a lease, and how its reading stops.

A ``Reading`` holds what stopping a shard needs: the reader's and the lanes' cancel scopes,
its dispatch, progress, lease and share of the byte budget. A lost lease stops both at once
(``stop_now``: nothing read and not yet delivered is delivered from here; the new owner reads
it again); a hand-over or a reader that gave up lets the lanes settle what was read first,
for a bounded time, and writes the checkpoint while the lease is still valid (``wind_down``).
The shard graph (``fanout.stream.discovery``) decides when.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from fanout.delivery import ShardDispatch
from fanout.progress.renewals import HeldLease
from fanout.progress.tracker import ShardProgress
from fanout.stream.api import Shard
from fanout.stream.budget import ShardBytes


@dataclass(eq=False)
class Reading:
    """One shard being read under a lease: what stopping it needs."""

    shard: Shard
    progress: ShardProgress
    dispatch: ShardDispatch
    lease: HeldLease
    held: ShardBytes
    reader: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    lanes: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    stopped: bool = False  # lost or handed over: the reader's task must not finish it

    async def run_lanes(self) -> None:
        """Deliver what the reader submits until the lanes are closed or cancelled."""
        with self.lanes:
            await self.dispatch.run()

    def stop_now(self) -> None:
        """Stop the reader and the lanes at once (the lease is gone)."""
        self.stopped = True
        self.reader.cancel()
        self.lanes.cancel()

    async def wind_down(
        self,
        settle_for: float,
        checkpoint: Callable[[ShardProgress], Awaitable[object]],
        *,
        stop_reader: bool,
    ) -> None:
        """Stop reading (with ``stop_reader``), let the lanes settle what was read for at
        most ``settle_for`` seconds, stop them, and ``checkpoint`` the progress while the
        lease is valid."""
        self.stopped = True
        if stop_reader:
            self.reader.cancel()
            self.dispatch.close()
        with anyio.move_on_after(settle_for):
            await self.progress.drained()
        self.lanes.cancel()
        if self.lease.valid():
            await checkpoint(self.progress)
