"""The shard graph of one stream ARN: discovery, lineage, a reader per readable shard.

* Lineage. A shard is read once its parent is finished (read to its end and every record
  settled) or is confirmed no longer listed, so a child's records are never delivered
  before its parent's last one. The two children of a split run in parallel.
* Children always start at TRIM_HORIZON and are looked up the moment their parent ends
  (DescribeStream with a CHILD_SHARDS filter), not at the next periodic discovery.
* Leases. A readable shard is read only under a lease of this worker: the graph tells the
  lease coordinator which shards are readable (``wanted``) and starts a reader when it gets
  a lease (``acquired``); a lost lease stops the shard's reader and lanes at once, a
  hand-over stops the reader and lets the lanes settle first. "Finished" comes from the
  shared store, so a parent finished by another worker counts.
* Shards that vanish unread, and a stream that is gone, are data-loss gaps.

The listings themselves (DescribeStream pages, child lookups) are in
``fanout.stream.listing``. The rules are written out in ``docs/shards.md`` ("Discovery", "Lineage").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace

import anyio
from anyio.abc import TaskGroup

from fanout.delivery import ShardDispatch
from fanout.errors import FanoutError
from fanout.observe.metrics import GET_RECORDS_OUTCOMES
from fanout.progress.renewals import HeldLease
from fanout.progress.store import Checkpoint, CheckpointRow
from fanout.progress.tracker import ShardProgress
from fanout.stream.api import Shard
from fanout.stream.budget import ShardBytes
from fanout.stream.gaps import DataLossError, Gap, iso, record_loss
from fanout.stream.listing import ACTIVE, Listing, list_shards, lookup_children
from fanout.stream.losses import (
    stale_checkpoints,
    stream_gone_gap,
    trimmed_shard_gap,
    unread_shards,
    vanished_shards,
)
from fanout.stream.parts import DiscoveryStatus, StreamParts, StreamStart
from fanout.stream.reader import ReaderContext, ShardReader
from fanout.stream.shardrun import Reading

log = logging.getLogger("fanout.stream")


class ShardGraph:
    """Reads every shard of one stream ARN, parents before children, until the stream is
    disabled and read to its end, or gone.

    Args:
        parts: what the configured stream shares.
        stream_arn: the stream to read.
        checkpoints: its stored checkpoints, by shard id.
        start: where shards without a checkpoint start.
        status: discovery status for ``/readyz`` (shared by every ARN of the stream).
    """

    def __init__(
        self,
        parts: StreamParts,
        stream_arn: str,
        checkpoints: dict[str, Checkpoint],
        start: StreamStart,
        status: DiscoveryStatus,
    ) -> None:
        self.name = parts.name
        self.parts = parts
        self.config = parts.config
        self.client = parts.client
        self.writer = parts.checkpoints
        self.metrics = parts.metrics
        self.options = parts.options
        self.retry = parts.options.retry
        self.stream_arn = stream_arn
        self.checkpoints = checkpoints
        self.start = start
        self.status = status
        self.leases = parts.leases
        # Tumbling-window sinks: their states are loaded with each shard.
        self._windowed = any(
            getattr(r.config, "tumbling_window", None) is not None for r in parts.routes
        )
        self.progress: dict[str, ShardProgress] = {}
        self.finished: set[str] = {s for s, c in checkpoints.items() if c.finished}
        self.running: set[str] = set()
        self.listed: dict[str, Shard] = {}  # the latest complete listing, plus children found
        self.iterator_age: dict[str, float] = {}
        # every shard listed while reading this stream, with when it was first seen
        self._seen: dict[str, float] = {}
        self._missing_parents: set[str] = set()  # parents absent from the latest listing
        self._confirmed_missing: set[str] = set()  # ... and from the one before it
        self._initial_open: set[str] = set()
        self._readers: TaskGroup | None = None
        self._failure: FanoutError | None = None
        self._wanted: dict[str, Shard] = {}  # readable, not read here: leases are sought
        self._reading: dict[str, Reading] = {}
        self._wake = anyio.Event()
        interval = self.config.discovery_interval
        delay = self.options.child_lookup_delay
        # Child lookups wait 0.5 s, 1 s, 2 s ... (doubling, no jitter) while none is listed.
        self._lookups = replace(self.retry, initial=delay, cap=max(delay, interval), floor=1.0)
        m = parts.metrics
        self._context = ReaderContext(
            stream=self.name,
            stream_arn=stream_arn,
            client=self.client,
            options=self.options,
            max_idle_interval=self.config.max_idle_interval,
            calls={o: m.get_records_calls.labels(self.name, o) for o in GET_RECORDS_OUTCOMES},
            records_read=m.records_read.labels(self.name),
            iterator_age=self.iterator_age,
            relist=self.relist,
            record_loss=self.record_loss,
        )
        self._budget_wait = m.budget_wait.labels(self.name)

    def max_iterator_age(self) -> float:
        """Age of the newest record read, max over the shards being read."""
        ages = self.iterator_age
        return max(ages.values()) if ages else 0.0

    async def read(self) -> str:
        """Read the stream until it is disabled and read to its end ("disabled") or gone
        ("gone").

        Raises:
            DataLossError: records were lost and ``on_data_loss`` is ``fail``.
        """
        end = "failed"
        async with anyio.create_task_group() as readers:
            self._readers = readers
            try:
                self.leases.subscribe(self)
                end = await self._discovery_loop()
                readers.cancel_scope.cancel()
            finally:
                self._readers = None  # no reader starts once this group winds down
        # Only a stream read to its end (or gone) is left; at a shutdown (cancelled) the
        # leases stay with the coordinator, which releases them after the last checkpoints.
        self.leases.unsubscribe(self.stream_arn)
        if self._failure is not None:
            raise self._failure
        return end

    # -- leases (LeaseSubscriber) -----------------------------------------------------------

    @property
    def stream_name(self) -> str:
        return self.name

    def wanted(self) -> list[str]:
        """Readable shards this worker does not read (a lease is sought for each)."""
        done = self.finished
        return [sid for sid in self._wanted if sid not in done and sid not in self.running]

    def capacity(self) -> int:
        """How many more shards this worker may read (``max_shards``)."""
        return self.config.max_shards - len(self.running)

    def acquired(self, row: Checkpoint, lease: HeldLease) -> bool:
        """A lease was taken: start reading the shard from the row's checkpoint."""
        readers = self._readers
        sid = row.shard_id
        shard = self._wanted.get(sid) or self.listed.get(sid)
        if (
            readers is None
            or self._failure is not None
            or shard is None
            or sid in self.running
            or sid in self.finished
            or len(self.running) >= self.config.max_shards
        ):
            return False
        self._wanted.pop(sid, None)
        self.checkpoints[sid] = row
        self.running.add(sid)
        readers.start_soon(self._read_shard, shard, row, lease, name=f"shard {sid}")
        self._update_shard_gauges()
        return True

    def lost(self, shard_id: str) -> None:
        """The lease is gone: stop the reader and the lanes at once; nothing read and not
        yet delivered is delivered from here (the new owner reads it again)."""
        reading = self._reading.pop(shard_id, None)
        if reading is None:
            return
        reading.stop_now()
        self._forget(reading)

    async def hand_over(self, shard_id: str) -> None:
        """Stop reading the shard, let the lanes settle what was read (for at most half a
        lease duration) and write its checkpoint; the coordinator then releases it."""
        reading = self._reading.get(shard_id)
        if reading is None:
            return
        await reading.wind_down(self.leases.timing.duration / 2, self._checkpoint, stop_reader=True)
        self._reading.pop(shard_id, None)
        self._forget(reading)
        log.info(
            "shard_handed_over",
            extra={"stream": self.name, "shard": shard_id, "seq": reading.progress.frontier},
        )

    async def _give_up(self, reading: Reading) -> None:
        """The reader stopped unfinished (the shard or stream seemed gone; discovery decides):
        settle and checkpoint what was read, release the lease, and seek it again."""
        await reading.wind_down(
            self.leases.timing.duration / 2, self._checkpoint, stop_reader=False
        )
        self._reading.pop(reading.shard.shard_id, None)
        await self.leases.release(reading.lease)
        self._forget(reading)
        self.leases.poke()

    async def _checkpoint(self, progress: ShardProgress) -> bool:
        return await self.writer.checkpoint(progress, stream=self.name)

    def _forget(self, reading: Reading) -> None:
        sid = reading.shard.shard_id
        reading.held.release_all()  # whatever its cancelled lanes still held
        self.running.discard(sid)
        self.progress.pop(sid, None)
        self.iterator_age.pop(sid, None)
        if sid not in self.finished:
            self._wanted[sid] = reading.shard  # still readable: back to whoever takes it
        self._update_shard_gauges()

    def observed(self, rows: dict[str, Checkpoint]) -> None:
        """The stream's rows as the lease coordinator's latest scan found them: shards
        other workers finished count as finished here (their children become readable)."""
        grew = False
        for sid, row in rows.items():
            if sid not in self.running:
                self.checkpoints[sid] = row
            if row.finished and sid not in self.finished:
                self.finished.add(sid)
                self._wanted.pop(sid, None)
                grew = True
        if grew:
            self._spawn(list(self.listed.values()), complete=False)

    def relist(self) -> None:
        """List the stream again now (a reader found it, or a shard, gone)."""
        self._wake.set()

    def record_loss(self, gap: Gap) -> None:
        """Count, log and apply ``on_data_loss`` to a gap.

        Raises:
            DataLossError: ``on_data_loss`` is ``fail``.
        """
        record_loss(
            gap,
            stream=self.name,
            stream_arn=self.stream_arn,
            policy=self.config.on_data_loss,
            metrics=self.metrics,
        )

    def warn_old_checkpoints(self) -> None:
        """Log the unfinished checkpoints written longer ago than the retention: records
        after them may have been trimmed (checked when the shard is read)."""
        for sid, cp in stale_checkpoints(self.checkpoints, time.time() - self.options.retention):
            log.warning(
                "checkpoint_older_than_retention",
                extra={
                    "stream": self.name,
                    "shard": sid,
                    "seq": cp.sequence,
                    "checkpoint_written_at": iso(cp.updated_at),
                    "age_h": round((time.time() - cp.updated_at) / 3600, 1),
                    "note": "records after it may have been trimmed; checked when read",
                },
            )

    # -- discovery --------------------------------------------------------------------------

    async def _discovery_loop(self) -> str:
        arn = self.stream_arn
        first = True
        while True:
            self._wake = anyio.Event()
            hold = first and self.start.first_run  # LATEST, first start: mark shards first
            started = time.monotonic()
            listing = await self._discover(spawn=not hold)
            if listing is None:
                await self._stream_gone()
                return "gone"
            if hold:
                await self._mark_initial(listing.shards)
            first = False
            ids = {s.shard_id for s in listing.shards}
            await self._vanished_shards(ids, started)
            if self._failure is not None:
                return "failed"
            started_or_done = self.finished | self.running
            waiting = [s for s in listing.shards if s.shard_id not in started_or_done]
            missing = {
                s.parent_id
                for s in waiting
                if s.parent_id is not None
                and s.parent_id not in ids
                and s.parent_id not in self.finished
            }
            # A parent missing from one listing may just have been created while it was
            # being paged through; missing from two in a row, it is gone.
            self._confirmed_missing = missing & self._missing_parents
            self._missing_parents = missing
            self._spawn(listing.shards, complete=True)
            self.status.ready = True
            await self._prune(ids)
            if listing.status not in ACTIVE and self._drained(listing):
                log.warning(
                    "stream_disabled_and_read",
                    extra={"stream": self.name, "stream_arn": arn, "status": listing.status},
                )
                return "disabled"
            if missing - self._confirmed_missing:
                continue  # list again now to confirm
            with anyio.move_on_after(self.config.discovery_interval):
                await self._wake.wait()

    def _drained(self, listing: Listing) -> bool:
        return not self.running and all(s.shard_id in self.finished for s in listing.shards)

    async def _discover(self, *, spawn: bool) -> Listing | None:
        """Every shard of the stream (all DescribeStream pages); None if the stream is gone.
        With ``spawn``, the readable shards of each page are sought while the rest is read."""

        def on_page(page: list[Shard]) -> None:
            now = time.monotonic()
            for shard in page:
                self.listed[shard.shard_id] = shard
                self._seen.setdefault(shard.shard_id, now)
            if spawn:
                self._spawn(page, complete=False)

        listing = await list_shards(
            self.client,
            self.stream_arn,
            name=self.name,
            retry=self.retry,
            interval=self.config.discovery_interval,
            status=self.status,
            metrics=self.metrics,
            on_page=on_page,
        )
        if listing is not None:
            self.listed = {s.shard_id: s for s in listing.shards} | {
                sid: self.listed[sid] for sid in self.running if sid in self.listed
            }
        return listing

    async def _mark_initial(self, shards: list[Shard]) -> None:
        """First start at LATEST: closed shards hold only older records; the open ones are
        read from LATEST in this run (a later run reads a shard without a checkpoint from
        TRIM_HORIZON and skips what is older than the stored start time)."""
        closed = [s.shard_id for s in shards if s.ending_sequence is not None]
        self._initial_open = {s.shard_id for s in shards if s.ending_sequence is None}
        rows = [CheckpointRow(self.stream_arn, sid, None, True) for sid in closed]
        await self.writer.save(rows, stream=self.name)
        self.finished.update(closed)

    def _eligible(self, shard: Shard, complete: bool) -> bool:
        parent = shard.parent_id
        if parent is None or parent in self.finished:
            return True
        return complete and parent in self._confirmed_missing

    def _spawn(self, shards: Sequence[Shard], *, complete: bool) -> None:
        """Seek leases of the readable shards among ``shards`` (readers start on a lease)."""
        if self._readers is None or self._failure is not None:
            return
        added = False
        for shard in shards:
            sid = shard.shard_id
            if sid in self.finished or sid in self.running or not self._eligible(shard, complete):
                continue
            if sid not in self._wanted:
                added = True
            self._wanted[sid] = shard
        if added:
            self.leases.poke()
        self._update_shard_gauges()

    def _update_shard_gauges(self) -> None:
        self.metrics.shards.labels(self.name, "active").set(len(self.running))
        self.metrics.shards.labels(self.name, "finished").set(len(self.finished))

    async def _prune(self, listed: set[str]) -> None:
        """Drop finished checkpoints of shards that are no longer listed."""
        gone = {sid for sid in self.finished if sid not in listed}
        if not gone:
            return
        try:
            removed = await self.parts.store.prune(self.stream_arn, sorted(listed))
        except FanoutError as exc:
            log.warning("checkpoint_prune_failed", extra={"stream": self.name, "error": str(exc)})
            return
        self.finished -= gone
        keep = listed | self.running
        self._seen = {sid: t for sid, t in self._seen.items() if sid in keep}
        for sid in gone:
            self.checkpoints.pop(sid, None)
        if removed:
            log.info("checkpoints_pruned", extra={"stream": self.name, "shards": removed})

    # -- shards and streams that vanish -----------------------------------------------------

    async def _vanished_shards(self, listed: set[str], since: float) -> None:
        """Shards with unread records that are no longer listed were trimmed away whole
        (``fanout.stream.losses.vanished_shards``)."""
        done = self.finished | self.running
        for sid in vanished_shards(self.checkpoints, self._seen, since, listed, done):
            try:
                self.record_loss(trimmed_shard_gap(sid, self.checkpoints.get(sid)))
            except DataLossError as exc:
                self._fail(exc)
                return
            row = CheckpointRow(self.stream_arn, sid, None, True)
            await self.writer.save([row], stream=self.name)
            self.finished.add(sid)

    async def _stream_gone(self) -> None:
        """The stream answered ResourceNotFoundException: account for what was not read."""
        unread = unread_shards(self.checkpoints, self.listed, self.running, self.finished)
        log.error(
            "stream_gone",
            extra={
                "stream": self.name,
                "stream_arn": self.stream_arn,
                "unfinished_shards": len(unread),
                "source": "table" if self.config.table else "stream_arn",
            },
        )
        if self._readers is not None:
            self._readers.cancel_scope.cancel()
        if not unread:
            return
        try:
            self.record_loss(stream_gone_gap(unread))
        except DataLossError as exc:
            self._fail(exc)

    def _fail(self, exc: FanoutError) -> None:
        """End the stream with ``exc`` (raised by ``read``), without an exception group."""
        if self._failure is None:
            self._failure = exc
        if self._readers is not None:
            self._readers.cancel_scope.cancel()

    # -- one shard --------------------------------------------------------------------------

    async def _read_shard(self, shard: Shard, row: Checkpoint, lease: HeldLease) -> None:
        sid = shard.shard_id
        checkpoint = row if row.sequence is not None else None
        held = ShardBytes(self.parts.budget, self._budget_wait)
        progress = ShardProgress(self.name, self.stream_arn, sid, row.sequence, lease, held)
        self.progress[sid] = progress
        windows = None
        if self._windowed:
            windows = await self.writer.call(
                lambda: self.parts.store.load_windows(self.stream_arn, sid), stream=self.name
            )

        dispatch = ShardDispatch(
            progress,
            self.parts.routes,
            self.metrics,
            windows=windows,
            persist=lambda: self._checkpoint(progress),
        )
        reading = Reading(shard, progress, dispatch, lease, held)
        self._reading[sid] = reading
        self.parts.lanes.start_soon(reading.run_lanes)
        reader = ShardReader(
            self._context,
            shard,
            progress,
            dispatch,
            checkpoint,
            latest=self.start.first_run and sid in self._initial_open,
            skip_before=self.start.skip_before,
            held=held if self.parts.budget is not None else None,
        )
        ended = False
        with reading.reader:
            try:
                ended = await reader.run()
            except DataLossError as exc:
                self._fail(exc)
            finally:
                dispatch.close()
                if not ended:
                    self.running.discard(sid)
                    self.iterator_age.pop(sid, None)
            if not ended:
                if not reading.stopped and self._failure is None:
                    await self._give_up(reading)
                return
            await progress.drained()
            await dispatch.end_windows()
            written = await self.writer.finish(progress)
        if reading.stopped or not ended:
            return  # lost or handed over meanwhile
        self._reading.pop(sid, None)
        held.release_all()  # settled: only what its reader reserved last is left
        if not written:  # the lease lapsed or moved before the shard was written as finished
            self._forget(reading)
            return
        self.leases.finished(self.stream_arn, sid)
        self.leases.poke()  # room for another shard (max_shards)
        self.finished.add(sid)
        self.running.discard(sid)
        self.progress.pop(sid, None)
        self.iterator_age.pop(sid, None)
        log.info(
            "shard_finished", extra={"stream": self.name, "shard": sid, "seq": progress.frontier}
        )
        await self._start_children(sid)

    async def _start_children(self, shard_id: str) -> None:
        """Look the ended shard's children up at once and start them."""
        children = await lookup_children(
            self.client,
            self.stream_arn,
            shard_id,
            name=self.name,
            retry=self.retry,
            lookups=self._lookups,
        )
        if children is None:  # the stream is gone
            self.relist()
            return
        if not children:
            self.relist()  # leave it to a full discovery now
            self._update_shard_gauges()
            return
        now = time.monotonic()
        for child in children:
            self.listed[child.shard_id] = child
            self._seen.setdefault(child.shard_id, now)
        self._spawn(children, complete=False)
        # The worker that finished the parent takes its children at once.
        wanted = set(self.wanted())
        await self.leases.take_now(
            self.stream_arn, [c.shard_id for c in children if c.shard_id in wanted]
        )
        log.info(
            "children_started",
            extra={
                "stream": self.name,
                "shard": shard_id,
                "children": [c.shard_id for c in children],
            },
        )
