"""The one checkpoint writer: every write to the ``CheckpointStore``, its retries and metrics.

Three kinds of writes, all here:

* the periodic flush: every ``interval`` seconds the frontiers that moved since they were
  last written (``ShardProgress.dirty``) go to the store in one transaction; a flush that
  fails marks them dirty again, so the next one writes them. The last flush runs at
  shutdown, shielded from cancellation.
* finished shards: a shard read to its end is written as finished, and ``finish`` returns
  only once that is durable (its children start after it). Shards of a table roll over at
  about the same time, so every shard that ended meanwhile shares one transaction.
* direct writes (``save``: retiring a stream, closed shards skipped at a first LATEST
  start, shards that vanished), retried until the store takes them.

A shard read under a lease is written only while the lease is valid here (checked before
every write) and conditionally on it in the store (owner and counter), so a worker that
lost a lease never moves that shard's checkpoint; rows the store rejects go to
``on_rejected`` (the lease coordinator drops those leases).

Failures count in ``fanout_checkpoint_failures_total`` and are logged (``checkpoint_failed``,
``checkpoint_store_failed``); ``fanout_checkpoints_written_total`` counts shard checkpoints
written by the flush and at shard end, and the store is marked current after each flush.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

import anyio

from fanout.errors import FanoutError
from fanout.observe.metrics import Metrics
from fanout.progress.store import CheckpointRow, CheckpointStore
from fanout.progress.tracker import ShardProgress
from fanout.retry import RetryPolicy

log = logging.getLogger("fanout.checkpoint")

T = TypeVar("T")


class CheckpointWriter:
    """Writes checkpoints to ``store``: coalesced, grouped at shard end, and at shutdown.

    Args:
        store: where checkpoints go (opened and closed by its owner).
        metrics: the failure and written counters, the checkpoint age.
        shards: the progress of every shard being tracked, read at each flush.
        interval: seconds between periodic flushes.
        retry: the waits between attempts of writes that are retried (forever).
        on_flush: called after each periodic flush, failed or not (gauge refresh).
        on_rejected: told the rows the store rejected because their lease moved.
    """

    def __init__(
        self,
        store: CheckpointStore,
        metrics: Metrics,
        *,
        shards: Callable[[], Iterable[ShardProgress]],
        interval: float,
        retry: RetryPolicy,
        on_flush: Callable[[], None] | None = None,
        on_rejected: Callable[[Sequence[CheckpointRow]], None] | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.interval = interval
        self.retry = retry
        self._shards = shards
        self._on_flush = on_flush
        self.on_rejected = on_rejected
        # Finished-shard rows are written in groups: ``_finish_batch`` is the group now
        # collecting rows, ``_finish_written`` the last group written.
        self._finish_rows: list[CheckpointRow] = []
        self._finish_batch = 0
        self._finish_written = -1
        self._finish_lock = anyio.Lock()
        self._finish_rejected: set[tuple[str, str]] = set()
        self._finish_guards: dict[tuple[str, str], ShardProgress] = {}

    # -- the periodic flush -----------------------------------------------------------------

    async def run(self) -> None:
        """Flush every ``interval`` seconds until cancelled; a failed flush is logged and
        counted, and its rows are written by the next one."""
        while True:
            await anyio.sleep(self.interval)
            try:
                await self.flush()
            except FanoutError as exc:
                self.metrics.checkpoint_failures.inc()
                log.error("checkpoint_failed", extra={"error": str(exc)})
            if self._on_flush is not None:
                self._on_flush()

    async def flush(self) -> None:
        """Write every frontier that moved since it was last written, in one transaction.

        Raises:
            CheckpointError: the store failed; the rows stay dirty for the next flush.
        """
        rows: list[CheckpointRow] = []
        taken: list[ShardProgress] = []
        for progress in list(self._shards()):
            if progress.dirty and progress.frontier is not None:
                row = _row(progress)
                if row is None:
                    continue  # its lease lapsed or moved: never written from here again
                progress.dirty = False
                rows.append(row)
                taken.append(progress)
        if rows:
            try:
                rejected = await self.store.save(rows)
            except BaseException:  # failed or cancelled: write them again next time
                for progress in taken:
                    progress.dirty = True
                raise
            if rejected:
                gone = {(r.stream_arn, r.shard_id) for r in rejected}
                # A shard written as finished meanwhile released its lease: not a loss.
                done = {(p.stream_arn, p.shard_id) for p in taken if p.finished}
                self._rejected([r for r in rejected if (r.stream_arn, r.shard_id) not in done])
                taken = [p for p in taken if (p.stream_arn, p.shard_id) not in gone]
            written: dict[str, int] = {}
            for progress in taken:
                written[progress.stream_name] = written.get(progress.stream_name, 0) + 1
            for stream, count in written.items():
                self.metrics.checkpoints.labels(stream).inc(count)
        self.metrics.checkpoint_current()

    async def close(self) -> None:
        """The last flush, at shutdown: shielded, so a restart resumes right after what was
        settled.

        Raises:
            CheckpointError: the store failed.
        """
        with anyio.CancelScope(shield=True):
            await self.flush()

    # -- shard end --------------------------------------------------------------------------

    async def finish(self, progress: ShardProgress) -> bool:
        """Write the shard's checkpoint as finished, at its frontier (releasing its lease);
        returns True once durable, False if its lease was lost first (nothing written).

        Retried until the store takes it (a failing store holds the shard's children back).
        """
        if not progress.may_deliver():
            return False
        key = (progress.stream_arn, progress.shard_id)
        lease = progress.lease.token if progress.lease is not None else None
        self._finish_rows.append(
            CheckpointRow(progress.stream_arn, progress.shard_id, progress.frontier, True, lease)
        )
        self._finish_guards[key] = progress
        mine = self._finish_batch
        async with self._finish_lock:
            if self._finish_written < mine:  # else it was written with another shard's group
                rows, self._finish_rows = self._finish_rows, []
                self._finish_batch += 1
                try:
                    await self._save_finished(rows, progress)
                except BaseException:
                    self._finish_rows[:0] = rows  # cancelled: the next writer takes them
                    raise
                self._finish_written = mine
        self._finish_guards.pop(key, None)
        if key in self._finish_rejected:
            self._finish_rejected.discard(key)
            return False
        progress.dirty = False
        progress.finished = True
        self.metrics.checkpoints.labels(progress.stream_name).inc()
        return True

    async def _save_finished(self, rows: list[CheckpointRow], progress: ShardProgress) -> None:
        def failed(exc: BaseException, attempt: int) -> None:
            self.metrics.checkpoint_failures.inc()
            log.error(
                "checkpoint_failed",
                extra={
                    "stream": progress.stream_name,
                    "shard": progress.shard_id,
                    "error": str(exc),
                    "attempt": attempt,
                },
            )

        async def save() -> None:
            # a lease that lapsed while the store failed: that row is not written any more
            valid = []
            for row in rows:
                guard = self._finish_guards.get((row.stream_arn, row.shard_id))
                if row.lease is not None and guard is not None and not guard.may_deliver():
                    self._finish_rejected.add((row.stream_arn, row.shard_id))
                else:
                    valid.append(row)
            rejected = await self.store.save(valid)
            if rejected:
                self._finish_rejected.update((r.stream_arn, r.shard_id) for r in rejected)
                self._rejected(rejected)

        await self.retry.call(save, retry_on=(FanoutError,), on_failure=failed)

    def _rejected(self, rows: Sequence[CheckpointRow]) -> None:
        if not rows:
            return
        for row in rows:
            log.warning(
                "checkpoint_rejected",
                extra={
                    "shard": row.shard_id,
                    "seq": row.sequence,
                    "reason": "the shard's lease moved to another worker",
                },
            )
        if self.on_rejected is not None:
            self.on_rejected(rows)

    # -- direct writes, and reads that hold a stream until the store answers --------------

    async def save(self, rows: Sequence[CheckpointRow], *, stream: str) -> None:
        """Write ``rows`` (without leases) now, retried until the store takes them."""
        await self.call(lambda: self.store.save(rows), stream=stream)

    async def checkpoint(self, progress: ShardProgress, *, stream: str) -> bool:
        """Write one shard's frontier now (a hand-over), under its lease; retried until the
        store answers. False when its lease lapsed or moved (nothing written)."""
        if progress.frontier is None or not progress.dirty:
            return progress.may_deliver()

        async def write() -> bool:
            row = _row(progress)
            if row is None:
                return False
            rejected = await self.store.save([row])
            if rejected:
                self._rejected(rejected)
                return False
            return True

        ok = await self.call(write, stream=stream)
        if ok:
            progress.dirty = False
            self.metrics.checkpoints.labels(progress.stream_name).inc()
        return ok

    async def call(self, fn: Callable[[], Awaitable[T]], *, stream: str) -> T:
        """Await the store call ``fn()`` until it answers; a failing store holds the stream
        ``stream``. Each failure is counted and logged (``checkpoint_store_failed``)."""

        def failed(exc: BaseException, attempt: int) -> None:
            self.metrics.checkpoint_failures.inc()
            log.error(
                "checkpoint_store_failed",
                extra={"stream": stream, "error": str(exc), "attempt": attempt},
            )

        return await self.retry.call(fn, retry_on=(FanoutError,), on_failure=failed)


def _row(progress: ShardProgress) -> CheckpointRow | None:
    """The shard's checkpoint row at its frontier, with its window states, under its lease;
    None when the lease lapsed or moved."""
    lease = progress.lease
    windows = tuple(w.snapshot() for w in progress.windows)
    if lease is None:
        return CheckpointRow(
            progress.stream_arn, progress.shard_id, progress.frontier, windows=windows
        )
    if not lease.valid():
        return None
    return CheckpointRow(
        progress.stream_arn, progress.shard_id, progress.frontier, False, lease.token, windows
    )
