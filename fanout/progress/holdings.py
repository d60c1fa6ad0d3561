"""The leases this worker holds, by stream: losing them (expired, moved, rejected) and the
lease metrics (``fanout_leases_held``, ``fanout_lease_events_total``, ``fanout_workers``,
``fanout_shards_unowned``)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from fanout.observe.metrics import Metrics
from fanout.progress.balance import StreamView
from fanout.progress.renewals import HeldLease
from fanout.progress.store import CheckpointRow, Snapshot
from fanout.progress.workers import Peers

log = logging.getLogger("fanout.leases")


class Holdings:
    """The leases held (``held``) and the streams subscribed (``streams``), shared with
    ``fanout.progress.leases.LeaseCoordinator``, which takes and releases them.

    Args:
        metrics: the lease metrics.
        worker_id: this worker.
        peers: the application's workers (their live count is a gauge).
    """

    def __init__(self, metrics: Metrics, worker_id: str, peers: Peers) -> None:
        self.metrics = metrics
        self.worker_id = worker_id
        self.peers = peers
        self.held: dict[tuple[str, str], HeldLease] = {}
        self.streams: dict[str, StreamView] = {}

    def finished(self, stream_arn: str, shard_id: str) -> None:
        """The shard was written as finished with its lease (which released it)."""
        held = self.held.pop((stream_arn, shard_id), None)
        if held is not None:
            held.lost = True  # nothing more may be written with it
        self.update_gauges()

    def rejected(self, rows: Sequence[CheckpointRow]) -> None:
        """Checkpoint writes the store rejected: their leases moved, so they are lost."""
        for row in rows:
            held = self.held.get((row.stream_arn, row.shard_id))
            if held is not None and row.lease == held.token:
                self.lose(held, "checkpoint rejected: the lease moved")

    def confirm(self, snap: Snapshot, scanned_from: float) -> None:
        """Held leases the scan shows elsewhere are lost (moved by force: a hand-over this
        worker did not answer in time, or a take while its renewals had lapsed)."""
        rows = {(r.stream_arn, r.shard_id): r for r in snap.shards}
        for key, held in list(self.held.items()):
            if held.acquired_at >= scanned_from:
                continue  # taken while the scan ran: the scan may predate it
            row = rows.get(key)
            if row is None or row.lease != held.token:
                owner = row.owner if row is not None else None
                self.lose(held, f"now held by {owner}" if owner else "released or gone")

    def expire(self) -> None:
        """Held leases whose renewals lapsed are lost."""
        for held in list(self.held.values()):
            if not held.lost and not held.valid():
                self.lose(held, "not renewed in time")

    def lose(self, held: HeldLease, why: str) -> None:
        """Drop ``held`` and stop its shard at once (logged with ``why``)."""
        if held.lost:
            return
        held.lost = True
        self.held.pop((held.stream_arn, held.shard_id), None)
        view = self.streams.get(held.stream_arn)
        name = view.subscriber.stream_name if view else None
        log.warning(
            "lease_lost",
            extra={"stream": name, "shard": held.shard_id, "worker": self.worker_id, "reason": why},
        )
        self.event(held.stream_arn, "lost")
        if view is not None:
            view.subscriber.lost(held.shard_id)
        self.update_gauges()

    def event(self, stream_arn: str, event: str) -> None:
        """Count a lease event (taken, lost, released, renew_failed) of the stream."""
        view = self.streams.get(stream_arn)
        if view is not None:
            self.metrics.lease_events.labels(view.subscriber.stream_name, event).inc()

    def update_gauges(self) -> None:
        """Set the gauges from the leases held now."""
        held: Counter[str] = Counter()
        unowned: Counter[str] = Counter()
        names = set()
        for view in self.streams.values():
            name = view.subscriber.stream_name
            names.add(name)
            unowned[name] += view.unowned
        for arn, _ in self.held:
            holder = self.streams.get(arn)
            if holder is not None:
                held[holder.subscriber.stream_name] += 1
        for name in names:
            self.metrics.leases_held.labels(name).set(held[name])
            self.metrics.shards_unowned.labels(name).set(unowned[name])
        self.metrics.workers.set(self.peers.live)
