"""One configured stream: shard discovery and lineage, and a GetRecords loop per shard.

A shard is read once its parent is finished (read to its end and settled) or no longer
listed, so a child's records are never delivered before its parent's. Children always
start at TRIM_HORIZON. When a shard ends, its children are looked up at once
(DescribeStream with a CHILD_SHARDS filter) instead of at the next periodic discovery.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from fanout.checkpoint import Checkpoint, ShardProgress, SQLiteCheckpointStore
from fanout.config import StreamConfig
from fanout.dispatch import Route, ShardDispatch
from fanout.errors import (
    FanoutError,
    IteratorExpired,
    ServiceError,
    SourceError,
    StreamNotFound,
    Throttled,
    TrimmedData,
)
from fanout.metrics import Metrics
from fanout.records import Record
from fanout.source import Shard, StreamsClient

log = logging.getLogger("fanout.shards")

# Stream records carry ApproximateCreationDateTime rounded down (to the second on AWS, to
# the minute on DynamoDB Local). Skipping "records older than T" keeps this much slack so
# a rounded timestamp never hides a record written after T: a few extra, never one lost.
_TIMESTAMP_SLACK_S = 60.0
# Empty pages can come in the middle of a shard while more records follow: the first few
# are re-read at once, after that the shard counts as idle and polling backs off.
_EAGER_EMPTY_PAGES = 2
_IDLE_FIRST_DELAY_S = 0.1


class DataLossError(FanoutError):
    """Records were trimmed before they were read and ``on_data_loss`` is ``fail``."""


@dataclass
class ReaderOptions:
    """Polling knobs shared by every shard of a stream (tests shrink them)."""

    min_poll_interval: float = 0.1  # wait after a page that was not full
    error_backoff_initial: float = 0.2
    error_backoff_cap: float = 10.0
    rng: random.Random = field(default_factory=random.Random)


class StreamWorker:
    """Reads every shard of one stream and hands the pages to the sinks' lanes."""

    def __init__(
        self,
        name: str,
        config: StreamConfig,
        client: StreamsClient,
        store: SQLiteCheckpointStore,
        routes: list[Route],
        metrics: Metrics,
        lanes: TaskGroup,
        options: ReaderOptions | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.client = client
        self.store = store
        self.routes = routes
        self.metrics = metrics
        self.lanes = lanes
        self.options = options or ReaderOptions()
        self.on_fatal = on_fatal
        self.stream_arn: str | None = None
        self.progress: dict[str, ShardProgress] = {}
        self.finished: set[str] = set()
        self.running: set[str] = set()
        self.checkpoints: dict[str, Checkpoint] = {}
        self.known: dict[str, Shard] = {}
        self.start_timestamp: float | None = None
        self._first_run = False
        self._initial_open: set[str] = set()
        self._wake = anyio.Event()
        self._ready = anyio.Event()
        self._iterator_age: dict[str, float] = {}
        m = metrics
        self._records_read = m.records_read.labels(name)
        self._calls = {
            outcome: m.get_records_calls.labels(name, outcome)
            for outcome in ("records", "empty", "throttled", "expired", "error")
        }

    # -- setup ------------------------------------------------------------------------------

    async def resolve(self) -> str:
        if self.config.stream_arn:
            return self.config.stream_arn
        assert self.config.table is not None
        return await self.client.latest_stream_arn(self.config.table)

    @property
    def ready(self) -> bool:
        """True once the stream was resolved and its shards listed at least once."""
        return self._ready.is_set()

    async def run(self) -> None:
        """Discover shards and read them until cancelled."""
        self.stream_arn = arn = await self.resolve()
        self.checkpoints = await self.store.load(arn)
        self.finished = {s for s, c in self.checkpoints.items() if c.finished}
        position = self.config.starting_position
        if position == "LATEST":
            self.start_timestamp, self._first_run = await self.store.stream_start(arn, time.time())
        elif position == "AT_TIMESTAMP":
            self.start_timestamp = self.config.starting_timestamp
        log.info(
            "stream_resolved",
            extra={"stream": self.name, "stream_arn": arn, "starting_position": position},
        )
        async with anyio.create_task_group() as readers:
            first = True
            while True:
                shards = await self._discover(arn)
                if shards is not None:
                    if first and self._first_run:
                        await self._mark_initial(arn, shards)
                    first = False
                    self._spawn(readers, shards)
                    self._ready.set()
                    await self._prune(arn, shards)
                self._wake = anyio.Event()
                with anyio.move_on_after(self.config.discovery_interval):
                    await self._wake.wait()

    async def _mark_initial(self, arn: str, shards: list[Shard]) -> None:
        """First start at LATEST: closed shards hold only older records; the open ones are
        read from LATEST in this run (a restart reads them from TRIM_HORIZON and skips what
        is older than the stored start time)."""
        closed = [s.shard_id for s in shards if s.ending_sequence is not None]
        self._initial_open = {s.shard_id for s in shards if s.ending_sequence is None}
        await self.store.save([(arn, shard_id, None, True) for shard_id in closed])
        self.finished.update(closed)

    async def _discover(self, arn: str) -> list[Shard] | None:
        """Every shard of the stream (all DescribeStream pages); None if discovery failed.

        Pages already read are kept in ``known`` even when a later page fails.
        """
        shards: list[Shard] = []
        start: str | None = None
        try:
            while True:
                desc = await self.client.describe_stream(arn, exclusive_start_shard_id=start)
                page = [Shard.from_wire(raw) for raw in desc.get("Shards", [])]
                shards.extend(page)
                for shard in page:
                    self.known[shard.shard_id] = shard
                start = desc.get("LastEvaluatedShardId")
                if not start:
                    return shards
        except StreamNotFound:
            raise
        except SourceError as exc:
            self.metrics.discovery_errors.labels(self.name).inc()
            log.error(
                "discovery_failed",
                extra={"stream": self.name, "error": str(exc), "shards_listed": len(shards)},
            )
            return None

    def _eligible(self, shard: Shard) -> bool:
        sid = shard.shard_id
        if sid in self.finished or sid in self.running:
            return False
        parent = shard.parent_id
        return parent is None or parent in self.finished or parent not in self.known

    def _spawn(self, readers: TaskGroup, shards: list[Shard]) -> None:
        for shard in shards:
            if len(self.running) >= self.config.max_shards:
                return
            if self._eligible(shard):
                self.running.add(shard.shard_id)
                readers.start_soon(self._read_shard, shard, readers)
        self._update_shard_gauges()

    def _update_shard_gauges(self) -> None:
        self.metrics.shards.labels(self.name, "active").set(len(self.running))
        self.metrics.shards.labels(self.name, "finished").set(len(self.finished))

    async def _prune(self, arn: str, shards: list[Shard]) -> None:
        listed = [s.shard_id for s in shards]
        gone = [sid for sid in self.finished if sid not in self.known or sid not in listed]
        if gone:
            try:
                await self.store.prune(arn, listed)
            except FanoutError as exc:
                log.warning(
                    "checkpoint_prune_failed", extra={"stream": self.name, "error": str(exc)}
                )

    # -- one shard --------------------------------------------------------------------------

    async def _read_shard(self, shard: Shard, readers: TaskGroup) -> None:
        assert self.stream_arn is not None
        sid = shard.shard_id
        checkpoint = self.checkpoints.get(sid)
        progress = ShardProgress(
            self.name, self.stream_arn, sid, checkpoint.sequence if checkpoint else None
        )
        self.progress[sid] = progress
        dispatch = ShardDispatch(
            progress, [r for r in self.routes if r.feeds(self.name)], self.metrics
        )
        self.lanes.start_soon(dispatch.run)
        ended = False
        try:
            ended = await self._poll(shard, progress, dispatch)
        except DataLossError as exc:
            if self.on_fatal is not None:
                self.on_fatal(exc)
            raise
        finally:
            dispatch.close()
            if not ended:
                self.running.discard(sid)
        await progress.drained()
        await self.store.save([(self.stream_arn, sid, progress.frontier, True)])
        progress.dirty = False
        self.finished.add(sid)
        self.running.discard(sid)
        del self.progress[sid]
        self._iterator_age.pop(sid, None)
        self.metrics.checkpoints.labels(self.name).inc()
        log.info(
            "shard_finished", extra={"stream": self.name, "shard": sid, "seq": progress.frontier}
        )
        await self._start_children(sid, readers)

    async def _start_children(self, shard_id: str, readers: TaskGroup) -> None:
        assert self.stream_arn is not None
        try:
            desc = await self.client.describe_stream(self.stream_arn, child_shards_of=shard_id)
        except SourceError as exc:
            log.info(
                "child_lookup_failed",
                extra={"stream": self.name, "shard": shard_id, "error": str(exc)},
            )
            self._wake.set()  # full discovery now
            return
        children = [Shard.from_wire(raw) for raw in desc.get("Shards", [])]
        children = [c for c in children if c.parent_id == shard_id]
        for child in children:
            self.known[child.shard_id] = child
        if children:
            self._spawn(readers, children)
        else:
            self._wake.set()
        self._update_shard_gauges()

    async def _start_iterator(self, shard: Shard, after: str | None) -> tuple[str, float | None]:
        """An iterator for ``shard`` and the timestamp before which records are skipped."""
        assert self.stream_arn is not None
        arn, sid = self.stream_arn, shard.shard_id
        if after is not None:
            try:
                return (
                    await self.client.get_shard_iterator(arn, sid, "AFTER_SEQUENCE_NUMBER", after),
                    None,
                )
            except TrimmedData as exc:
                return await self._data_loss(shard, after, exc), None
        is_child = shard.parent_id is not None and shard.parent_id in self.known
        skip = None if is_child else self.start_timestamp
        kind = "TRIM_HORIZON"
        if self.config.starting_position == "LATEST" and not is_child:
            if self._first_run and sid in self._initial_open:
                kind, skip = "LATEST", None
        if skip is not None:
            skip -= _TIMESTAMP_SLACK_S
        return await self.client.get_shard_iterator(arn, sid, kind), skip

    async def _data_loss(self, shard: Shard, after: str, exc: BaseException) -> str:
        """The position after ``after`` was trimmed: records between were lost."""
        assert self.stream_arn is not None
        self.metrics.data_loss_events.labels(self.name).inc()
        checkpoint = self.checkpoints.get(shard.shard_id)
        log.error(
            "data_loss_detected",
            extra={
                "stream": self.name,
                "shard": shard.shard_id,
                "seq": after,
                "checkpoint_written_at": checkpoint.updated_at if checkpoint else None,
                "policy": self.config.on_data_loss,
                "error": str(exc),
            },
        )
        if self.config.on_data_loss == "fail":
            raise DataLossError(
                f"stream {self.name}: records after {after} in {shard.shard_id} were trimmed "
                "before they were read (on_data_loss: fail)"
            ) from exc
        return await self.client.get_shard_iterator(self.stream_arn, shard.shard_id, "TRIM_HORIZON")

    async def _poll(self, shard: Shard, progress: ShardProgress, dispatch: ShardDispatch) -> bool:
        """Read the shard until it ends (True) or the task is cancelled."""
        assert self.stream_arn is not None
        arn = self.stream_arn
        opts = self.options
        max_idle = self.config.max_idle_interval
        calls = self._calls
        last_seen = progress.frontier
        iterator, skip_before = await self._retrying(self._start_iterator, shard, last_seen)
        empties = 0
        errors = 0
        while True:
            try:
                page = await self.client.get_records(iterator)
            except IteratorExpired:
                calls["expired"].inc()
                log.info("iterator_expired", extra={"stream": self.name, "shard": shard.shard_id})
                iterator, skip_before = await self._retrying(self._start_iterator, shard, last_seen)
                continue
            except TrimmedData as exc:
                calls["error"].inc()
                iterator = await self._data_loss(shard, last_seen or "TRIM_HORIZON", exc)
                continue
            except (Throttled, ServiceError) as exc:
                errors += 1
                calls["throttled" if isinstance(exc, Throttled) else "error"].inc()
                await anyio.sleep(self._error_delay(errors))
                continue
            errors = 0
            records: list[Record] = page.records
            if records:
                calls["records"].inc()
                self._records_read.inc(len(records))
                for record in records:
                    record["eventSourceARN"] = arn
                last_seen = records[-1]["dynamodb"]["SequenceNumber"]
                self._observe_age(shard.shard_id, records[-1])
                deliver = records
                if skip_before is not None:
                    deliver = [r for r in records if _created(r) >= skip_before]
                assert last_seen is not None
                await dispatch.submit(deliver, last_seen)
                empties = 0
            else:
                calls["empty"].inc()
                self._iterator_age[shard.shard_id] = 0.0
                self._publish_age()
            if page.next_iterator is None:
                return True
            iterator = page.next_iterator
            if records:
                if len(records) < 1000 and opts.min_poll_interval > 0:
                    await anyio.sleep(opts.min_poll_interval)
                continue
            empties += 1
            if empties > _EAGER_EMPTY_PAGES:
                if not progress.pending:
                    progress.last_progress = time.monotonic()
                steps = empties - _EAGER_EMPTY_PAGES - 1
                await anyio.sleep(min(max_idle, _IDLE_FIRST_DELAY_S * (2 ** min(steps, 30))))

    def _error_delay(self, errors: int) -> float:
        opts = self.options
        ceiling = min(opts.error_backoff_cap, opts.error_backoff_initial * 2 ** (errors - 1))
        return opts.rng.uniform(ceiling / 2, ceiling)

    async def _retrying(self, fn: Any, *args: Any) -> Any:
        """Call ``fn`` until it stops failing with throttling, 5xx or network errors."""
        errors = 0
        while True:
            try:
                return await fn(*args)
            except (Throttled, ServiceError) as exc:
                errors += 1
                log.warning(
                    "source_call_failed",
                    extra={"stream": self.name, "error": str(exc), "attempt": errors},
                )
                await anyio.sleep(self._error_delay(errors))

    def _observe_age(self, shard_id: str, record: Record) -> None:
        created = _created(record)
        if created:
            self._iterator_age[shard_id] = max(0.0, time.time() - created)
            self._publish_age()

    def _publish_age(self) -> None:
        ages = self._iterator_age
        self.metrics.iterator_age.labels(self.name).set(max(ages.values()) if ages else 0.0)

    def checkpoint_rows(self) -> list[tuple[str, str, str | None, bool]]:
        """Dirty frontiers to write; marks them clean."""
        rows: list[tuple[str, str, str | None, bool]] = []
        for progress in list(self.progress.values()):
            if progress.dirty and progress.frontier is not None:
                progress.dirty = False
                rows.append((progress.stream_arn, progress.shard_id, progress.frontier, False))
        return rows

    def in_flight(self) -> int:
        return sum(len(p.tickets) for p in self.progress.values())


def _created(record: Record) -> float:
    value = record.get("dynamodb", {}).get("ApproximateCreationDateTime")
    return float(value) if isinstance(value, int | float) else 0.0
