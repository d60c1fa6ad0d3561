"""Leases: which worker of an application reads which shard, through the checkpoint store.

The protocol (``docs/leases.md`` has it with its timing and cost):

* Every worker has a row with a **heartbeat** counter it raises every renewal interval
  (``lease_duration / 3``). Another worker judges it alive while it has seen that counter
  change within ``lease_duration`` of its *own monotonic clock*, so clock skew between
  hosts does not matter.
* A shard's **lease** is ``(owner, counter)`` in the shard's row; the counter grows with
  every change of owner. Checkpoint writes are conditional on the lease, so a worker that
  lost a lease can never move that shard's checkpoint.
* A lease is **expired** when its owner is not alive. Expired and unowned leases of shards
  that are readable (parent finished) are taken, conditional on the counter seen and, for
  an expired one, on the owner's heartbeat seen: an owner that renewed since keeps it.
* A worker may act on a lease only until ``renewal start + lease_duration - margin``
  (``margin = lease_duration / 5``) of its last renewal, and only if its renewals did not
  lapse since it took the lease (``Renewals``: each renewal started before the previous
  one's validity ended, and completed within ``lease_duration`` of the previous one's
  start). No peer can take the lease earlier than ``lease_duration`` after a renewal
  started, so the worker stops reading first. The shard's lanes check this before every
  ``send()`` and dead-letter write, the reader before every ``GetRecords``, the checkpoint
  writer before every write. Renewals run on a thread of their own, so a loop saturated
  with records cannot delay them; the scan, takes and hand-overs run on the loop.
* **Balance**: a worker aims at ``ceil(readable shards / live workers)`` of each stream. It
  takes unowned and expired leases up to that; when there are none and the busiest worker
  holds at least two more than it does, it asks that worker to hand some over (at most
  ``MAX_STEALS_PER_CYCLE`` a cycle). The owner stops reading them, settles and checkpoints
  what it read and releases each straight to the asker; one that does not within
  ``lease_duration`` is taken anyway.
* On a graceful stop a worker checkpoints and releases every lease, so peers take them at
  their next cycle instead of waiting for expiry.

The coordinator is here; the pieces it is built from: ``renewals`` (lease timing and
validity), ``heartbeat`` (the renewal thread), ``workers`` (peers' liveness and expired
leases), ``balance`` (the balancing policy), ``taking`` (takes through the store),
``holdings`` (the leases held, their metrics) and ``sinkset`` (the start-up check of the
sink set), all in ``fanout.progress``.

Why a heartbeat per worker rather than a renewal per lease (as the KCL does): the same
safety for 1,080 writes per worker-hour instead of 1,080 per shard-hour at the default
duration (``docs/leases.md``, "Cost").
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio
from anyio.abc import TaskGroup

from fanout.errors import FanoutError
from fanout.observe.metrics import Metrics
from fanout.progress.balance import LeaseSubscriber, StreamView
from fanout.progress.heartbeat import Heartbeat
from fanout.progress.holdings import Holdings
from fanout.progress.renewals import HeldLease, LeaseTiming, Renewals
from fanout.progress.sinkset import check_sink_set, parse_sink_set, sink_changes, sink_set_text
from fanout.progress.store import (
    Checkpoint,
    CheckpointRow,
    CheckpointStore,
    Claim,
    LeaseToken,
    Release,
    Snapshot,
)
from fanout.progress.taking import Taker
from fanout.progress.workers import Peers, new_worker_id

log = logging.getLogger("fanout.leases")

T = TypeVar("T")


class LeaseCoordinator:
    """Holds this worker's leases: heartbeats, takes, balances, hands over, releases.

    Args:
        store: the checkpoint store (opened by its owner).
        metrics: lease metrics (``fanout_leases_held``, ``fanout_lease_events_total``,
            ``fanout_workers``, ``fanout_shards_unowned``).
        sinks: this worker's sink set (name: type).
        timing: the lease duration.
        group_size: workers started together on this host (``fanout run --processes``): the
            first take waits (at most one lease duration) until that many are alive, so they
            start with even shares.
        worker_id: this worker's id (default: host, pid, random).
        clock: monotonic seconds (tests pass their own).
        shared_clock: every worker of the store reads this host's clock (SQLite): a worker
            row whose ``heartbeat_at`` is older than three lease durations is dead at once,
            so a restart after a crash does not wait for expiry.
        call: how store calls are made at start-up (retried until the store answers).
    """

    def __init__(
        self,
        store: CheckpointStore,
        metrics: Metrics,
        *,
        sinks: dict[str, str],
        timing: LeaseTiming | None = None,
        group_size: int = 1,
        worker_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        shared_clock: bool = False,
        call: Callable[[Callable[[], Awaitable[object]]], Awaitable[object]] | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.sinks = sink_set_text(sinks)
        # The sink set recorded before this worker started (None: the first start).
        self.previous_sinks: dict[str, str] | None = None
        # Called with it before this worker's sink set is recorded (``backfill:
        # on_first_start`` plans its backfills there).
        self.before_record: Callable[[dict[str, str] | None], Awaitable[None]] | None = None
        self.timing = timing or LeaseTiming()
        self.worker_id = worker_id or new_worker_id()
        self.clock = clock
        self._call = call
        self.renewals = Renewals(self.timing, clock)
        self.peers = Peers(
            self.worker_id, self.timing, clock, group_size=group_size, shared_clock=shared_clock
        )
        self.holdings = Holdings(metrics, self.worker_id, self.peers)
        self.held = self.holdings.held
        self._streams = self.holdings.streams
        self.heartbeat = Heartbeat(
            store,
            self.worker_id,
            self.sinks,
            self.renewals,
            leases=lambda: len(self.held),
            on_failure=self._renew_failed,
        )
        self._closing = False  # release_all began: cycles change nothing any more
        self._wake = anyio.Event()
        self._tasks: TaskGroup | None = None
        self._rng = random.Random()
        self.taker = Taker(
            store, self.worker_id, self.timing, self.renewals, self.peers, self.holdings, self._rng
        )

    # -- views ------------------------------------------------------------------------------

    def live_workers(self) -> int:
        """Workers of the application alive at the latest scan (this one included)."""
        return self.peers.live

    def holds(self, stream_arn: str, shard_id: str) -> HeldLease | None:
        return self.held.get((stream_arn, shard_id))

    # -- start and stop ---------------------------------------------------------------------

    async def start(self) -> None:
        """Check the sink set against the application's live workers, record it, and
        register this worker (its first heartbeat).

        Raises:
            ConfigError: a live worker of the application runs other sinks.
        """
        snap = await self._startup_call(self.store.scan)
        assert isinstance(snap, Snapshot)
        await check_sink_set(
            snap,
            self._scan_at_startup,
            application=self.store.application,
            worker_id=self.worker_id,
            sinks=self.sinks,
            timing=self.timing,
            clock=self.clock,
        )
        self.previous_sinks = parse_sink_set(snap.sinks) if snap.sinks else None
        hook, previous = self.before_record, self.previous_sinks
        if hook is not None:
            await self._startup_call(lambda: hook(previous))
        if snap.sinks != self.sinks:
            if snap.sinks:
                changed = sink_changes(snap.sinks, self.sinks)
                log.warning(
                    "sinks_changed",
                    extra={
                        "application": self.store.application,
                        "added": changed.added,
                        "removed": changed.removed,
                        "retyped": changed.retyped,
                        "note": "a new sink starts at the current checkpoints (fanout backfill "
                        "brings it history); a removed sink is dropped",
                    },
                )
            sinks = self.sinks
            await self._startup_call(lambda: self.store.record_sinks(sinks))
        started = self.clock()
        await self._startup_call(self.heartbeat.write)
        self.renewals.renewed(started, self.clock())
        self.peers.observe(snap, self.clock())
        log.info(
            "worker_registered",
            extra={
                "application": self.store.application,
                "worker": self.worker_id,
                "checkpoint_store": self.store.describe,
                "lease_duration_s": self.timing.duration,
                "workers": self.peers.live,
            },
        )

    async def _startup_call(self, fn: Callable[[], Awaitable[T]]) -> T:
        if self._call is None:
            return await fn()
        result = await self._call(fn)
        return result  # type: ignore[return-value]

    async def _scan_at_startup(self) -> Snapshot:
        snap = await self._startup_call(self.store.scan)
        assert isinstance(snap, Snapshot)
        return snap

    def stop_taking(self) -> None:
        """Take no more leases (a shutdown began); renewals go on until ``release_all``."""
        self.taker.taking = False

    async def release_all(self) -> None:
        """Release every lease still held and remove this worker's row (shutdown, after the
        last checkpoints were written), so peers take the shards at once."""
        self.taker.taking = False
        self._closing = True
        await self.heartbeat.stop()  # no heartbeat may re-create the row removed below
        leases = [h for h in self.held.values() if not h.lost]
        releases = [Release(h.stream_arn, h.shard_id, h.token) for h in leases if h.valid()]
        try:  # rows handed to this worker that it has not taken up yet go back too
            snap = await self.store.scan()
        except FanoutError:
            snap = Snapshot()
        releases += [
            Release(r.stream_arn, r.shard_id, LeaseToken(self.worker_id, r.counter))
            for r in snap.shards
            if r.owner == self.worker_id
            and not r.finished
            and (r.stream_arn, r.shard_id) not in self.held
        ]
        done: list[bool] = []
        if releases:
            try:
                done = await self.store.release(releases)
            except FanoutError as exc:
                log.warning("leases_release_failed", extra={"error": str(exc)})
        released = 0
        for rel, ok in zip(releases, done, strict=False):
            if ok:
                released += 1
                self.holdings.event(rel.stream_arn, "released")
        self.held.clear()
        self.holdings.update_gauges()
        try:
            await self.store.remove_worker(self.worker_id)
        except FanoutError as exc:
            log.warning("worker_deregister_failed", extra={"error": str(exc)})
        log.info(
            "leases_released",
            extra={"worker": self.worker_id, "released": released, "held": len(leases)},
        )

    # -- subscribers ------------------------------------------------------------------------

    def subscribe(self, subscriber: LeaseSubscriber) -> None:
        """Take leases of ``subscriber``'s readable shards from now on."""
        self._streams[subscriber.stream_arn] = StreamView(subscriber)
        self.poke()

    def unsubscribe(self, stream_arn: str) -> None:
        """The stream ARN is no longer read; leases still held of it are forgotten."""
        self._streams.pop(stream_arn, None)
        for key in [k for k in self.held if k[0] == stream_arn]:
            self.held.pop(key).lost = True
        self.holdings.update_gauges()

    async def release(self, held: HeldLease) -> None:
        """Give one held lease up (its shard stopped unfinished; it may be taken again)."""
        if self.held.get((held.stream_arn, held.shard_id)) is not held:
            return
        self.held.pop((held.stream_arn, held.shard_id))
        valid = held.valid()
        held.lost = True
        if valid:
            try:
                await self.store.release([Release(held.stream_arn, held.shard_id, held.token)])
            except FanoutError as exc:
                log.warning(
                    "lease_release_failed", extra={"shard": held.shard_id, "error": str(exc)}
                )
            else:
                self.holdings.event(held.stream_arn, "released")
        self.holdings.update_gauges()

    def poke(self) -> None:
        """Readable shards appeared: take soon, not only at the next cycle."""
        self._wake.set()

    def finished(self, stream_arn: str, shard_id: str) -> None:
        """The shard was written as finished with its lease (which released it)."""
        self.holdings.finished(stream_arn, shard_id)

    def rejected(self, rows: Sequence[CheckpointRow]) -> None:
        """Checkpoint writes the store rejected: their leases moved, so they are lost."""
        self.holdings.rejected(rows)

    async def take_now(self, stream_arn: str, shard_ids: Sequence[str]) -> None:
        """Take the leases of shards this worker may read at once: the children of a shard
        it finished (nobody else can have started them yet)."""
        view = self._streams.get(stream_arn)
        if view is None or not self.taker.taking or not shard_ids:
            return
        try:
            rows = await self.store.ensure(stream_arn, list(shard_ids))
        except FanoutError as exc:
            log.warning(
                "lease_take_failed",
                extra={"stream": view.subscriber.stream_name, "error": str(exc)},
            )
            self.poke()
            return
        now = self.clock()
        claims = [
            Claim(stream_arn, sid, row.owner, row.counter)
            for sid, row in rows.items()
            if not row.finished and row.owner is None and (stream_arn, sid) not in self.held
        ]
        claims = claims[: max(0, view.subscriber.capacity())]
        async with self.taker.lock:
            await self.taker.take(view, claims, now, reason="children")

    # -- the cycle --------------------------------------------------------------------------

    async def run(self) -> None:
        """Scan, confirm, hand over, take and balance every renewal interval until
        cancelled, while a thread renews (heartbeats); lapsed leases are dropped the moment
        they lapse."""
        # The last renewal was this worker's registration, before its sinks started (which
        # may take seconds). Renew first: a lease taken in the first cycle would otherwise
        # count on that old renewal and lapse before the thread's first beat.
        await self.renew()
        self.heartbeat.start()
        try:
            async with anyio.create_task_group() as tasks:
                self._tasks = tasks
                tasks.start_soon(self._watch_expiry)
                interval = self.timing.renew_interval
                while not self._closing:
                    next_cycle = self.clock() + interval * self._rng.uniform(0.9, 1.0)
                    await self.cycle(heartbeat=False)
                    self._wake = anyio.Event()
                    # Wake for the next cycle, or the moment a silent peer's leases expire
                    # (not up to a renewal interval later), or a poke.
                    wake_at = min(next_cycle, self.peers.next_expiry())
                    if not self.peers.group_ready:  # siblings are starting: look again soon
                        wake_at = min(wake_at, self.clock() + min(0.1, interval))
                    with anyio.move_on_after(max(0.0, wake_at - self.clock())):
                        await self._wake.wait()
                        # a poke: let a burst of them (a listing page by page) come together
                        await anyio.sleep(min(0.05, interval / 10))
        finally:
            with anyio.CancelScope(shield=True):
                await self.heartbeat.stop()

    async def cycle(self, *, heartbeat: bool = True) -> None:
        """One round: renew (with ``heartbeat``: when no thread renews, as in tests), scan,
        confirm held leases, hand over what peers asked for, take and balance."""
        if self._closing:
            return
        if heartbeat:
            await self.renew()
        scan_started = self.clock()
        try:
            with anyio.fail_after(self.timing.duration):
                snap = await self.store.scan()
        except (FanoutError, TimeoutError) as exc:
            log.warning("lease_scan_failed", extra={"error": str(exc) or "timed out"})
            self.holdings.expire()
            return
        now = self.clock()
        if self._closing:
            return
        self.peers.observe(snap, now)
        self.holdings.confirm(snap, scan_started)
        self.holdings.expire()
        by_stream: dict[str, dict[str, Checkpoint]] = {}
        for row in snap.shards:
            by_stream.setdefault(row.stream_arn, {})[row.shard_id] = row
        for arn, view in list(self._streams.items()):
            rows = by_stream.get(arn, {})
            view.subscriber.observed(rows)
            await self._hand_over_asked(view, rows)
        if self.taker.taking and self._may_take(now):
            for arn, view in list(self._streams.items()):
                async with self.taker.lock:
                    await self.taker.balance(view, by_stream.get(arn, {}), now)
        await self._forget_dead_workers(snap, now)
        self.holdings.update_gauges()

    async def renew(self) -> bool:
        """One heartbeat from the event loop (start-up; tests); True if it was written."""
        return await self.heartbeat.renew()

    def _renew_failed(self) -> None:
        """A heartbeat failed (called from the heartbeat thread too: the Prometheus client
        is thread-safe)."""
        for arn in list(self._streams):
            self.holdings.event(arn, "renew_failed")

    async def _watch_expiry(self) -> None:
        """Drop leases the moment renewals lapse, even while a store call hangs; and show
        the heartbeat thread that the loop is alive."""
        while True:
            self.heartbeat.loop_alive = self.clock()
            wait = self.renewals.left() if self.held else self.timing.renew_interval
            await anyio.sleep(max(0.01, min(wait, self.timing.renew_interval)))
            self.holdings.expire()

    def _may_take(self, now: float) -> bool:
        # A lease taken now is valid as long as this worker's last renewal: take only with
        # some of that left (the next renewal extends it).
        return (
            self.peers.group_ready
            and self.renewals.valid(self.renewals.epoch)
            and now + self.timing.renew_interval / 2 < self.renewals.valid_until
        )

    # -- handing over -----------------------------------------------------------------------

    async def _hand_over_asked(self, view: StreamView, rows: dict[str, Checkpoint]) -> None:
        """Start handing over each held lease a live peer asked for (in the background when
        the coordinator runs its loop)."""
        now = self.clock()
        for sid, row in rows.items():
            held = self.held.get((row.stream_arn, sid))
            if held is None or held.handing_over or row.handoff_to is None:
                continue
            if row.lease != held.token or not self.peers.alive(row.handoff_to, now):
                continue
            held.handing_over = True
            if self._tasks is not None:
                self._tasks.start_soon(self._hand_over, view, held, row.handoff_to)
            else:
                await self._hand_over(view, held, row.handoff_to)

    async def _hand_over(self, view: StreamView, held: HeldLease, to: str) -> None:
        sub = view.subscriber
        try:
            await sub.hand_over(held.shard_id)
        finally:
            held.handing_over = False
        if held.lost or not held.valid():
            return
        try:
            (ok,) = await self.store.release(
                [Release(held.stream_arn, held.shard_id, held.token, to=to)]
            )
        except FanoutError as exc:
            log.warning("lease_release_failed", extra={"shard": held.shard_id, "error": str(exc)})
            ok = False
        self.held.pop((held.stream_arn, held.shard_id), None)
        held.lost = True
        if ok:
            self.holdings.event(held.stream_arn, "released")
            log.info(
                "lease_handed_over",
                extra={
                    "stream": sub.stream_name,
                    "shard": held.shard_id,
                    "worker": self.worker_id,
                    "to": to,
                },
            )
        self.holdings.update_gauges()

    # -- housekeeping -----------------------------------------------------------------------

    async def _forget_dead_workers(self, snap: Snapshot, now: float) -> None:
        """Delete rows of workers whose heartbeat stood still for a long time."""
        for w in self.peers.long_dead(snap, now):
            try:
                await self.store.remove_worker(w.worker_id, w.heartbeat)
            except FanoutError:
                continue
