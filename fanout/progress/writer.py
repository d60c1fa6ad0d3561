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
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.interval = interval
        self.retry = retry
        self._shards = shards
        self._on_flush = on_flush
        # Finished-shard rows are written in groups: ``_finish_batch`` is the group now
        # collecting rows, ``_finish_written`` the last group written.
        self._finish_rows: list[CheckpointRow] = []
        self._finish_batch = 0
        self._finish_written = -1
        self._finish_lock = anyio.Lock()

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
                progress.dirty = False
                rows.append(
                    CheckpointRow(progress.stream_arn, progress.shard_id, progress.frontier)
                )
                taken.append(progress)
        if rows:
            try:
                await self.store.save(rows)
            except BaseException:  # failed or cancelled: write them again next time
                for progress in taken:
                    progress.dirty = True
                raise
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

    async def finish(self, progress: ShardProgress) -> None:
        """Write the shard's checkpoint as finished, at its frontier; returns once durable.

        Retried until the store takes it (a failing store holds the shard's children back).
        """
        self._finish_rows.append(
            CheckpointRow(progress.stream_arn, progress.shard_id, progress.frontier, True)
        )
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
        progress.dirty = False
        self.metrics.checkpoints.labels(progress.stream_name).inc()

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

        await self.retry.call(
            lambda: self.store.save(rows), retry_on=(FanoutError,), on_failure=failed
        )

    # -- direct writes, and reads that hold a stream until the store answers --------------

    async def save(self, rows: Sequence[CheckpointRow], *, stream: str) -> None:
        """Write ``rows`` now, in one transaction, retried until the store takes them."""
        await self.call(lambda: self.store.save(rows), stream=stream)

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
