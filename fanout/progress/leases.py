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

Why a heartbeat per worker rather than a renewal per lease (as the KCL does): the same
safety for 1,080 writes per worker-hour instead of 1,080 per shard-hour at the default
duration (``docs/leases.md``, "Cost").
"""

from __future__ import annotations

import logging
import math
import os
import random
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from fanout.errors import ConfigError, FanoutError
from fanout.observe.metrics import Metrics
from fanout.progress.store import (
    NO_WORKER_ROW,
    Checkpoint,
    CheckpointRow,
    CheckpointStore,
    Claim,
    LeaseToken,
    Release,
    Snapshot,
    WorkerRow,
)

log = logging.getLogger("fanout.leases")

T = TypeVar("T")

# Leases asked of the busiest worker in one cycle at most.
MAX_STEALS_PER_CYCLE = 4
# A worker row whose heartbeat stood still this many lease durations is deleted by peers.
_FORGET_WORKERS_AFTER = 30
# A loop that did not tick for this many lease durations is wedged: renewals stop.
_WEDGED = 3
# At start-up, workers whose heartbeat_at is older than this many lease durations (by this
# host's clock) are not even watched for liveness when checking the sink set.
_RECENT_BEATS = 3


def new_worker_id() -> str:
    """A worker id unique per process start: host, pid and a random part."""
    host = socket.gethostname().split(".")[0][:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def sink_set_text(sinks: dict[str, str]) -> str:
    """A sink set as stored: ``name=type`` pairs, sorted, joined by commas."""
    return ",".join(f"{name}={kind}" for name, kind in sorted(sinks.items()))


def parse_sink_set(text: str | None) -> dict[str, str]:
    """The inverse of :func:`sink_set_text`."""
    if not text:
        return {}
    pairs = (part.partition("=") for part in text.split(","))
    return {name: kind for name, _, kind in pairs}


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
class _Seen:
    """What was last seen of a worker's heartbeat, and since when (monotonic)."""

    heartbeat: int
    since: float


@dataclass
class _Asked:
    """A hand-over this worker asked for: of which lease, when (monotonic)."""

    token: LeaseToken
    at: float


@dataclass
class _StreamView:
    subscriber: LeaseSubscriber
    unowned: int = 0
    waiting: int = 0  # readable shards this worker would take but for max_shards
    asked: dict[str, _Asked] = field(default_factory=dict)


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
        self.group_size = group_size
        self.worker_id = worker_id or new_worker_id()
        self.clock = clock
        self.shared_clock = shared_clock
        self._call = call
        self.held: dict[tuple[str, str], HeldLease] = {}
        self._streams: dict[str, _StreamView] = {}
        self._seen: dict[str, _Seen] = {}
        self._orphans: dict[tuple[str, str], tuple[LeaseToken, float]] = {}
        self._beat = 0
        self._started_at = time.time()
        self._started_mono = clock()
        self.renewals = Renewals(self.timing, clock)
        self._beater: threading.Thread | None = None
        self._stop_beating = threading.Event()
        self._loop_alive = clock()  # when the event loop last showed signs of life
        self._taking = True
        self._closing = False  # release_all began: cycles change nothing any more
        self._group_ready = group_size <= 1
        self._wake = anyio.Event()
        self._tasks: TaskGroup | None = None
        self._rng = random.Random()
        self._live = 1
        self._take_lock = anyio.Lock()

    # -- views ------------------------------------------------------------------------------

    def live_workers(self) -> int:
        """Workers of the application alive at the latest scan (this one included)."""
        return self._live

    def holds(self, stream_arn: str, shard_id: str) -> HeldLease | None:
        return self.held.get((stream_arn, shard_id))

    def _alive(self, worker: str | None, now: float) -> bool:
        if worker is None:
            return False
        if worker == self.worker_id:
            return True
        seen = self._seen.get(worker)
        return seen is not None and now - seen.since < self.timing.duration

    # -- start and stop ---------------------------------------------------------------------

    async def start(self) -> None:
        """Check the sink set against the application's live workers, record it, and
        register this worker (its first heartbeat).

        Raises:
            ConfigError: a live worker of the application runs other sinks.
        """
        snap = await self._startup_call(self.store.scan)
        assert isinstance(snap, Snapshot)
        await self._check_sinks(snap)
        self.previous_sinks = parse_sink_set(snap.sinks) if snap.sinks else None
        hook, previous = self.before_record, self.previous_sinks
        if hook is not None:
            await self._startup_call(lambda: hook(previous))
        if snap.sinks != self.sinks:
            if snap.sinks:
                before, after = parse_sink_set(snap.sinks), parse_sink_set(self.sinks)
                log.warning(
                    "sinks_changed",
                    extra={
                        "application": self.store.application,
                        "added": sorted(set(after) - set(before)),
                        "removed": sorted(set(before) - set(after)),
                        "retyped": sorted(
                            n for n in set(after) & set(before) if after[n] != before[n]
                        ),
                        "note": "a new sink starts at the current checkpoints (fanout backfill "
                        "brings it history); a removed sink is dropped",
                    },
                )
            sinks = self.sinks
            await self._startup_call(lambda: self.store.record_sinks(sinks))
        started = self.clock()
        await self._startup_call(self._heartbeat)
        self.renewals.renewed(started, self.clock())
        self._observe(snap, self.clock())
        log.info(
            "worker_registered",
            extra={
                "application": self.store.application,
                "worker": self.worker_id,
                "checkpoint_store": self.store.describe,
                "lease_duration_s": self.timing.duration,
                "workers": self._live,
            },
        )

    async def _startup_call(self, fn: Callable[[], Awaitable[T]]) -> T:
        if self._call is None:
            return await fn()
        result = await self._call(fn)
        return result  # type: ignore[return-value]

    async def _check_sinks(self, snap: Snapshot) -> None:
        """Refuse to start beside a live worker of the application with other sinks."""
        recent = time.time() - _RECENT_BEATS * self.timing.duration
        others = {
            w.worker_id: w.heartbeat
            for w in snap.workers
            if w.worker_id != self.worker_id and w.sinks != self.sinks and w.heartbeat_at > recent
        }
        if not others:
            return
        # Alive means its heartbeat moves: watch for up to one lease duration.
        rows = {w.worker_id: w for w in snap.workers}
        deadline = self.clock() + self.timing.duration
        while others and self.clock() < deadline:
            await anyio.sleep(min(self.timing.renew_interval / 2, 1.0))
            latest = await self._startup_call(self.store.scan)
            assert isinstance(latest, Snapshot)
            for row in latest.workers:
                if row.worker_id in others and row.heartbeat != others[row.worker_id]:
                    self._refuse(rows[row.worker_id])
            present = {w.worker_id for w in latest.workers}
            others = {w: b for w, b in others.items() if w in present}

    def _refuse(self, live: WorkerRow) -> None:
        theirs, mine = parse_sink_set(live.sinks), parse_sink_set(self.sinks)
        added = sorted(set(mine) - set(theirs))
        removed = sorted(set(theirs) - set(mine))
        retyped = sorted(n for n in set(mine) & set(theirs) if mine[n] != theirs[n])
        changes = "; ".join(
            part
            for part in (
                f"added {', '.join(added)}" if added else "",
                f"removed {', '.join(removed)}" if removed else "",
                f"changed type of {', '.join(retyped)}" if retyped else "",
            )
            if part
        )
        raise ConfigError(
            "sinks",
            f"application {self.store.application!r} has a live worker ({live.worker_id} on "
            f"{live.host or '?'}, pid {live.pid}) running the sinks {live.sinks or '(none)'}; "
            f"this configuration runs {self.sinks} ({changes}). Workers of one application "
            "share its shards and must run the same sinks: stop the other workers first, or "
            "give this configuration its own `application` name",
        )

    def stop_taking(self) -> None:
        """Take no more leases (a shutdown began); renewals go on until ``release_all``."""
        self._taking = False

    async def release_all(self) -> None:
        """Release every lease still held and remove this worker's row (shutdown, after the
        last checkpoints were written), so peers take the shards at once."""
        self._taking = False
        self._closing = True
        await self._stop_beating_now()  # no heartbeat may re-create the row removed below
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
                self._event(rel.stream_arn, "released")
        self.held.clear()
        self._update_gauges()
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
        self._streams[subscriber.stream_arn] = _StreamView(subscriber)
        self.poke()

    def unsubscribe(self, stream_arn: str) -> None:
        """The stream ARN is no longer read; leases still held of it are forgotten."""
        self._streams.pop(stream_arn, None)
        for key in [k for k in self.held if k[0] == stream_arn]:
            self.held.pop(key).lost = True
        self._update_gauges()

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
                self._event(held.stream_arn, "released")
        self._update_gauges()

    def poke(self) -> None:
        """Readable shards appeared: take soon, not only at the next cycle."""
        self._wake.set()

    def finished(self, stream_arn: str, shard_id: str) -> None:
        """The shard was written as finished with its lease (which released it)."""
        held = self.held.pop((stream_arn, shard_id), None)
        if held is not None:
            held.lost = True  # nothing more may be written with it
        self._update_gauges()

    def rejected(self, rows: Sequence[CheckpointRow]) -> None:
        """Checkpoint writes the store rejected: their leases moved, so they are lost."""
        for row in rows:
            held = self.held.get((row.stream_arn, row.shard_id))
            if held is not None and row.lease == held.token:
                self._lose(held, "checkpoint rejected: the lease moved")

    async def take_now(self, stream_arn: str, shard_ids: Sequence[str]) -> None:
        """Take the leases of shards this worker may read at once: the children of a shard
        it finished (nobody else can have started them yet)."""
        view = self._streams.get(stream_arn)
        if view is None or not self._taking or not shard_ids:
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
        async with self._take_lock:
            await self._take(view, claims, now, reason="children")

    # -- the cycle --------------------------------------------------------------------------

    async def run(self) -> None:
        """Scan, confirm, hand over, take and balance every renewal interval until
        cancelled, while a thread renews (heartbeats); lapsed leases are dropped the moment
        they lapse."""
        self._start_beating()
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
                    wake_at = min(next_cycle, self._next_expiry())
                    if not self._group_ready:  # siblings are starting: look again soon
                        wake_at = min(wake_at, self.clock() + min(0.1, interval))
                    with anyio.move_on_after(max(0.0, wake_at - self.clock())):
                        await self._wake.wait()
                        # a poke: let a burst of them (a listing page by page) come together
                        await anyio.sleep(min(0.05, interval / 10))
        finally:
            with anyio.CancelScope(shield=True):
                await self._stop_beating_now()

    # -- renewals (a thread of their own) ---------------------------------------------------

    def _start_beating(self) -> None:
        """Renew from a thread: a loop busy with records (every shard reading at full speed)
        can delay its tasks by seconds, a thread gets the interpreter within milliseconds."""
        if self._beater is not None:
            return
        self._stop_beating.clear()
        self._beater = threading.Thread(
            target=self._beat_forever, name=f"fanout-heartbeat-{self.worker_id}", daemon=True
        )
        self._beater.start()

    async def _stop_beating_now(self) -> None:
        beater, self._beater = self._beater, None
        if beater is not None:
            self._stop_beating.set()
            await anyio.to_thread.run_sync(beater.join, self.timing.duration)

    def _beat_forever(self) -> None:
        interval = self.timing.renew_interval
        rng = random.Random()
        blocked = False
        while not self._stop_beating.wait(interval * rng.uniform(0.9, 1.0)):
            started = self.clock()
            # A loop that showed no sign of life for this long is wedged, not busy (a busy
            # one is late by seconds): stop renewing, so peers take its shards.
            if started - self._loop_alive > _WEDGED * self.timing.duration:
                if not blocked:
                    blocked = True
                    log.error(
                        "event_loop_blocked",
                        extra={
                            "worker": self.worker_id,
                            "seconds": round(started - self._loop_alive, 1),
                            "note": "renewals stop: the leases expire and peers take them",
                        },
                    )
                continue
            blocked = False
            beat = self._beat + 1
            try:
                self.store.heartbeat_sync(self._worker_row(beat))
            except Exception as exc:  # noqa: BLE001 - any failure is a failed renewal
                self._renew_failed(str(exc) or type(exc).__name__)
                continue
            self._beat = beat
            self.renewals.renewed(started, self.clock())

    def _next_expiry(self) -> float:
        """When the next peer that stopped beating counts as dead (inf: none is due)."""
        now = self.clock()
        due = [
            seen.since + self.timing.duration
            for wid, seen in self._seen.items()
            if wid != self.worker_id and seen.since + self.timing.duration > now
        ]
        return min(due, default=math.inf) + 0.01

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
            self._expire()
            return
        now = self.clock()
        if self._closing:
            return
        self._observe(snap, now)
        self._confirm(snap, scan_started)
        self._expire()
        by_stream: dict[str, dict[str, Checkpoint]] = {}
        for row in snap.shards:
            by_stream.setdefault(row.stream_arn, {})[row.shard_id] = row
        for arn, view in list(self._streams.items()):
            rows = by_stream.get(arn, {})
            view.subscriber.observed(rows)
            await self._hand_over_asked(view, rows)
        if self._taking and self._may_take(now):
            for arn, view in list(self._streams.items()):
                async with self._take_lock:
                    await self._balance(view, by_stream.get(arn, {}), now)
        await self._forget_dead_workers(snap, now)
        self._update_gauges()

    async def renew(self) -> bool:
        """One heartbeat from the event loop (start-up; tests); True if it was written."""
        started = self.clock()
        try:
            with anyio.fail_after(self.timing.duration):
                await self._heartbeat()
        except (FanoutError, TimeoutError) as exc:
            self._renew_failed(str(exc) or "timed out")
            return False
        self.renewals.renewed(started, self.clock())
        return True

    def _worker_row(self, beat: int) -> WorkerRow:
        return WorkerRow(
            worker_id=self.worker_id,
            heartbeat=beat,
            heartbeat_at=time.time(),
            started_at=self._started_at,
            host=socket.gethostname(),
            pid=os.getpid(),
            sinks=self.sinks,
            leases=len(self.held),
        )

    async def _heartbeat(self) -> None:
        beat = self._beat + 1
        await self.store.heartbeat(self._worker_row(beat))
        self._beat = beat

    def _renew_failed(self, error: str) -> None:
        """A heartbeat failed (called from the heartbeat thread too: logging and the
        Prometheus client are thread-safe)."""
        log.warning(
            "lease_renew_failed",
            extra={
                "worker": self.worker_id,
                "error": error,
                "leases": len(self.held),
                "valid_for_s": round(max(0.0, self.renewals.left()), 2),
            },
        )
        for arn in list(self._streams):
            self._event(arn, "renew_failed")

    def _observe(self, snap: Snapshot, now: float) -> None:
        """Note every worker's heartbeat (and since when it stands still) and the live count."""
        stale_after = time.time() - _RECENT_BEATS * self.timing.duration
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
        self._live = 1 + sum(1 for wid in seen if wid != self.worker_id and self._alive(wid, now))
        if not self._group_ready and (
            self._live >= self.group_size or now - self._started_mono >= self.timing.duration
        ):
            self._group_ready = True

    def _confirm(self, snap: Snapshot, scanned_from: float) -> None:
        """Held leases the scan shows elsewhere are lost (moved by force: a hand-over this
        worker did not answer in time, or a take while its renewals had lapsed)."""
        rows = {(r.stream_arn, r.shard_id): r for r in snap.shards}
        for key, held in list(self.held.items()):
            if held.acquired_at >= scanned_from:
                continue  # taken while the scan ran: the scan may predate it
            row = rows.get(key)
            if row is None or row.lease != held.token:
                owner = row.owner if row is not None else None
                self._lose(held, f"now held by {owner}" if owner else "released or gone")

    def _expire(self) -> None:
        for held in list(self.held.values()):
            if not held.lost and not held.valid():
                self._lose(held, "not renewed in time")

    async def _watch_expiry(self) -> None:
        """Drop leases the moment renewals lapse, even while a store call hangs; and show
        the heartbeat thread that the loop is alive."""
        while True:
            self._loop_alive = self.clock()
            wait = self.renewals.left() if self.held else self.timing.renew_interval
            await anyio.sleep(max(0.01, min(wait, self.timing.renew_interval)))
            self._expire()

    def _lose(self, held: HeldLease, why: str) -> None:
        if held.lost:
            return
        held.lost = True
        self.held.pop((held.stream_arn, held.shard_id), None)
        view = self._streams.get(held.stream_arn)
        name = view.subscriber.stream_name if view else None
        log.warning(
            "lease_lost",
            extra={"stream": name, "shard": held.shard_id, "worker": self.worker_id, "reason": why},
        )
        self._event(held.stream_arn, "lost")
        if view is not None:
            view.subscriber.lost(held.shard_id)
        self._update_gauges()

    def _may_take(self, now: float) -> bool:
        # A lease taken now is valid as long as this worker's last renewal: take only with
        # some of that left (the next renewal extends it).
        return (
            self._group_ready
            and self.renewals.valid(self.renewals.epoch)
            and now + self.timing.renew_interval / 2 < self.renewals.valid_until
        )

    # -- taking and balancing ---------------------------------------------------------------

    def _expired_claim(self, row: Checkpoint, now: float) -> Claim | None:
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

    async def _balance(self, view: _StreamView, rows: dict[str, Checkpoint], now: float) -> None:
        sub = view.subscriber
        arn = sub.stream_arn
        me = self.worker_id
        wanted = {sid for sid in sub.wanted() if (arn, sid) not in self.held}
        missing = [sid for sid in wanted if sid not in rows]
        if missing:
            try:
                rows = {**rows, **await self.store.ensure(arn, sorted(missing))}
            except FanoutError as exc:
                log.warning(
                    "lease_take_failed", extra={"stream": sub.stream_name, "error": str(exc)}
                )
                return
        counts: Counter[str] = Counter(
            r.owner
            for r in rows.values()
            if r.owner not in (None, me) and not r.finished and self._alive(r.owner, now)
        )
        mine = sum(1 for key in self.held if key[0] == arn)
        work = {sid for sid in wanted if not rows[sid].finished} | {
            sid for sid, r in rows.items() if r.owner is not None and not r.finished
        }
        target = math.ceil(len(work) / max(1, self._live)) if work else 0
        need = max(0, min(target - mine, sub.capacity()))
        # Rows of this worker it does not hold: handed over to it (their owner chose it), or
        # held before a lapse. Taken again first if wanted, else given back.
        adopt = [
            Claim(arn, sid, me, r.counter)
            for sid, r in rows.items()
            if r.owner == me and not r.finished and (arn, sid) not in self.held
        ]
        free: list[Claim] = []
        for sid in wanted:
            if rows[sid].owner != me:
                claim = self._expired_claim(rows[sid], now)
                if claim is not None:
                    free.append(claim)
        self._rng.shuffle(free)
        view.unowned = len(free)
        capacity = max(0, sub.capacity())
        waiting = max(0, min(len(free), target - mine) - capacity)
        if waiting != view.waiting:
            view.waiting = waiting
            if waiting:
                log.warning(
                    "shards_waiting",
                    extra={
                        "stream": sub.stream_name,
                        "waiting": waiting,
                        "max_shards": mine + capacity,
                    },
                )
        claims = [c for c in adopt if c.shard_id in wanted] + free
        taking = claims[:need]
        chosen = {c.shard_id for c in taking}
        for claim in adopt:
            if claim.shard_id not in chosen:
                await self._give_back(claim)
        if taking:
            got = await self._take(view, taking, now, reason="unowned")
            # Peers that took some of these first: try the next free ones at once.
            rest = claims[need:]
            while got < len(taking) and rest:
                short = len(taking) - got
                taking, rest = rest[:short], rest[short:]
                got = await self._take(view, taking, now, reason="unowned")
            view.unowned = len([c for c in free if (arn, c.shard_id) not in self.held])
        elif need > 0 and not free:
            await self._steal(view, rows, counts, mine, need, now)

    async def _take(
        self, view: _StreamView, claims: list[Claim], now: float, *, reason: str
    ) -> int:
        """Take ``claims``; returns how many were taken."""
        if not claims or not self._taking:
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
            self.held[key] = held
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
            self._event(claim.stream_arn, "taken")
            if not self._taking or not sub.acquired(row, held):
                self.held.pop(key, None)
                held.lost = True
                await self._give_back(Claim(*key, self.worker_id, row.counter))
        self._update_gauges()
        return sum(1 for row in taken if row is not None)

    async def _give_back(self, claim: Claim) -> None:
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
        self,
        view: _StreamView,
        rows: dict[str, Checkpoint],
        counts: Counter[str],
        mine: int,
        need: int,
        now: float,
    ) -> None:
        """Ask the busiest worker to hand leases over when it holds at least two more than
        this one (counting hand-overs already asked for); take those it did not hand over
        within a lease duration."""
        sub = view.subscriber
        held_by_others = {
            sid: r
            for sid, r in rows.items()
            if r.owner not in (None, self.worker_id) and not r.finished
        }
        view.asked = {
            sid: a
            for sid, a in view.asked.items()
            if sid in held_by_others and held_by_others[sid].lease == a.token
        }
        overdue = [
            Claim(sub.stream_arn, sid, a.token.owner, a.token.counter)
            for sid, a in view.asked.items()
            if now - a.at >= self.timing.duration
        ]
        if overdue:
            await self._take(view, overdue[:need], now, reason="taken over")
            return
        asked_of: Counter[str] = Counter(a.token.owner for a in view.asked.values())
        pending = len(view.asked)
        effective = [(counts[w] - asked_of[w], w) for w in counts]
        if not effective:
            return
        most, victim = max(effective)
        gap = most - (mine + pending)
        count = min(need - pending, gap // 2, MAX_STEALS_PER_CYCLE)
        if gap < 2 or count <= 0:
            return
        theirs = [
            r
            for sid, r in held_by_others.items()
            if r.owner == victim and r.handoff_to is None and sid not in view.asked
        ]
        self._rng.shuffle(theirs)
        for row in theirs[:count]:
            token = LeaseToken(victim, row.counter)
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
                view.asked[row.shard_id] = _Asked(token, now)
                log.info(
                    "lease_handoff_requested",
                    extra={
                        "stream": sub.stream_name,
                        "shard": row.shard_id,
                        "worker": self.worker_id,
                        "owner": victim,
                    },
                )

    # -- handing over -----------------------------------------------------------------------

    async def _hand_over_asked(self, view: _StreamView, rows: dict[str, Checkpoint]) -> None:
        """Start handing over each held lease a live peer asked for (in the background when
        the coordinator runs its loop)."""
        now = self.clock()
        for sid, row in rows.items():
            held = self.held.get((row.stream_arn, sid))
            if held is None or held.handing_over or row.handoff_to is None:
                continue
            if row.lease != held.token or not self._alive(row.handoff_to, now):
                continue
            held.handing_over = True
            if self._tasks is not None:
                self._tasks.start_soon(self._hand_over, view, held, row.handoff_to)
            else:
                await self._hand_over(view, held, row.handoff_to)

    async def _hand_over(self, view: _StreamView, held: HeldLease, to: str) -> None:
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
            self._event(held.stream_arn, "released")
            log.info(
                "lease_handed_over",
                extra={
                    "stream": sub.stream_name,
                    "shard": held.shard_id,
                    "worker": self.worker_id,
                    "to": to,
                },
            )
        self._update_gauges()

    # -- housekeeping -----------------------------------------------------------------------

    async def _forget_dead_workers(self, snap: Snapshot, now: float) -> None:
        """Delete rows of workers whose heartbeat stood still for a long time."""
        limit = _FORGET_WORKERS_AFTER * self.timing.duration
        for w in snap.workers:
            seen = self._seen.get(w.worker_id)
            if w.worker_id == self.worker_id or seen is None or now - seen.since < limit:
                continue
            if any(r.owner == w.worker_id and not r.finished for r in snap.shards):
                continue  # its leases are taken first (their claims check its row)
            try:
                await self.store.remove_worker(w.worker_id, w.heartbeat)
            except FanoutError:
                continue

    def _event(self, stream_arn: str, event: str) -> None:
        view = self._streams.get(stream_arn)
        if view is not None:
            self.metrics.lease_events.labels(view.subscriber.stream_name, event).inc()

    def _update_gauges(self) -> None:
        held: Counter[str] = Counter()
        unowned: Counter[str] = Counter()
        names = set()
        for view in self._streams.values():
            name = view.subscriber.stream_name
            names.add(name)
            unowned[name] += view.unowned
        for arn, _ in self.held:
            holder = self._streams.get(arn)
            if holder is not None:
                held[holder.subscriber.stream_name] += 1
        for name in names:
            self.metrics.leases_held.labels(name).set(held[name])
            self.metrics.shards_unowned.labels(name).set(unowned[name])
        self.metrics.workers.set(self._live)
