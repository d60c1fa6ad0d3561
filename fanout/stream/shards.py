"""One configured stream: which stream it is, its shards and their lineage, a reader per shard.

The rules, written out in ``docs/shards.md``:

* Lineage. A shard is read once its parent is finished (read to its end and every record
  settled) or is confirmed no longer listed, so a child's records are never delivered
  before its parent's last one. The two children of a split run in parallel.
* Children always start at TRIM_HORIZON and are looked up the moment their parent ends
  (DescribeStream with a CHILD_SHARDS filter), not at the next periodic discovery.
* Starting positions apply to shards without a checkpoint. LATEST is resolved once, at the
  first start, and stored; AT_TIMESTAMP is read from TRIM_HORIZON, skipping older records.
* Data loss (records trimmed before they were read, a shard or stream that vanished with
  unread records) is counted, logged as an error and handled by ``on_data_loss``; the
  reader never jumps over a gap silently.
* A ``table:`` source follows its table's stream when it is replaced (the old one is read to
  its end first); a ``stream_arn:`` source fails once its stream ends.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import anyio
from anyio.abc import TaskGroup

from fanout.config import StreamConfig
from fanout.delivery import Route, ShardDispatch
from fanout.errors import (
    FanoutError,
    IteratorExpired,
    ServiceError,
    SourceError,
    StreamNotFound,
    Throttled,
    TrimmedData,
)
from fanout.observe.metrics import Metrics
from fanout.progress.store import Checkpoint, CheckpointRow, CheckpointStore
from fanout.progress.tracker import ShardProgress
from fanout.records import Record
from fanout.stream.api import Shard, StreamsAPI

log = logging.getLogger("fanout.stream")

T = TypeVar("T")

# DynamoDB Streams keeps records for 24 hours.
RETENTION_S = 24 * 3600.0
# Stream records carry ApproximateCreationDateTime rounded down (to the second on AWS, to
# the minute on DynamoDB Local). Skipping "records older than T" keeps this much slack so
# a rounded timestamp never hides a record written after T: a few extra, never one lost.
_TIMESTAMP_SLACK_S = 60.0
# Empty pages can come in the middle of a shard while more records follow: the first few
# are re-read at once, after that an open shard counts as idle and polling backs off.
_EAGER_EMPTY_PAGES = 2
_IDLE_FIRST_DELAY_S = 0.1
# Consecutive GetRecords failures after which each one is also logged (the metric counts all).
_LOG_AFTER_ERRORS = 3
# Targeted child lookups after a shard ended before leaving it to a full discovery.
_CHILD_LOOKUPS = 5

_ACTIVE = ("ENABLED", "ENABLING")


class DataLossError(FanoutError):
    """Records were lost before they were read and ``on_data_loss`` is ``fail``."""


class StreamEndedError(FanoutError):
    """A ``stream_arn`` source ended: its stream was disabled and read to its end, or is gone."""


@dataclass
class ReaderOptions:
    """Polling knobs shared by every shard of a stream (tests shrink them)."""

    min_poll_interval: float = 0.1  # wait after a page that was not full
    error_backoff_initial: float = 0.2
    error_backoff_cap: float = 10.0
    child_lookup_delay: float = 0.5  # first wait between targeted child lookups
    retention: float = RETENTION_S
    rng: random.Random = field(default_factory=random.Random)


# -- gap accounting (pure) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Gap:
    """Records of one shard that were lost between two positions.

    ``after_seq`` is the last record read (or the checkpoint) before the gap, None when the
    gap starts at the shard's beginning; ``before_seq`` is the first record still available
    after it, None when none is. ``records`` is None when the count cannot be known.
    """

    shard_id: str
    after_seq: str | None
    after_time: float | None
    after_time_basis: str  # "record" (its creation time) or "checkpoint" (when it was written)
    before_seq: str | None
    before_time: float | None
    records: int | None
    count_basis: str  # "sequence_spacing", "lower_bound" or "unknown"
    cause: str


def sequence_stride(records: Sequence[Record] | None) -> float | None:
    """The mean distance between consecutive sequence numbers of a page (None below 2)."""
    if not records or len(records) < 2:
        return None
    try:
        first = int(records[0]["dynamodb"]["SequenceNumber"])
        last = int(records[-1]["dynamodb"]["SequenceNumber"])
    except (KeyError, TypeError, ValueError):
        return None
    stride = (last - first) / (len(records) - 1)
    return stride if stride > 0 else None


def estimate_lost(
    after: str | None, upper: str | None, stride: float | None, *, inclusive: bool
) -> int | None:
    """How many records lay after ``after`` and before ``upper`` (through it if
    ``inclusive``), from the sequence-number spacing ``stride`` seen around the gap.

    DynamoDB does not say how many records a trimmed range held; sequence numbers only grow.
    Where a shard's records are evenly spaced the estimate is exact. None: not estimable.
    """
    if after is None or upper is None or stride is None or stride <= 0:
        return None
    span = int(upper) - int(after)
    if span <= 0:
        return 0
    return max(0, round(span / stride) - (0 if inclusive else 1))


def backoff_delay(options: ReaderOptions, errors: int) -> float:
    """The wait after ``errors`` consecutive failures: capped exponential backoff with
    jitter (uniform between half and all of the ceiling, so readers throttled together do
    not retry together)."""
    exponent = min(max(errors, 1) - 1, 30)
    ceiling = min(options.error_backoff_cap, options.error_backoff_initial * 2**exponent)
    return options.rng.uniform(ceiling / 2, ceiling)


def skip_older(records: list[Record], before: float) -> tuple[list[Record], bool]:
    """The records of a page created at or after ``before``, and whether the skipping is
    over (the page reached that time: records of a shard come in time order)."""
    if _created(records[-1]) < before:
        return [], False
    if _created(records[0]) >= before:
        return records, True
    return [r for r in records if _created(r) >= before], True


def _last_sequence(records: Sequence[Record]) -> str | None:
    """The last sequence number of a page that holds malformed records, if any."""
    for record in reversed(records):
        seq = record.get("dynamodb", {}).get("SequenceNumber") if isinstance(record, dict) else None
        if isinstance(seq, str):
            return seq
    return None


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _created(record: Record) -> float:
    value = record.get("dynamodb", {}).get("ApproximateCreationDateTime")
    return float(value) if isinstance(value, int | float) else 0.0


@dataclass(slots=True)
class _Listing:
    shards: list[Shard]
    status: str


@dataclass(slots=True)
class _PendingGap:
    after_seq: str | None
    after_time: float | None
    after_time_basis: str
    cause: str
    empty_pages: int = 0


# -- the stream ---------------------------------------------------------------------------


class StreamWorker:
    """Reads every shard of one configured stream and hands the pages to the sinks' lanes."""

    def __init__(
        self,
        name: str,
        config: StreamConfig,
        client: StreamsAPI,
        store: CheckpointStore,
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
        self.routes = [r for r in routes if r.feeds(name)]
        self.metrics = metrics
        self.lanes = lanes
        self.options = options or ReaderOptions()
        self.on_fatal = on_fatal
        self.stream_arn: str | None = None
        # per stream ARN (reset when a table's stream is replaced)
        self.progress: dict[str, ShardProgress] = {}
        self.finished: set[str] = set()
        self.running: set[str] = set()
        self.checkpoints: dict[str, Checkpoint] = {}
        self.listed: dict[str, Shard] = {}  # the latest complete listing, plus children found
        self.start_timestamp: float | None = None
        # every shard listed while reading this stream, with when it was first seen
        self._seen: dict[str, float] = {}
        self._missing_parents: set[str] = set()  # parents absent from the latest listing
        self._confirmed_missing: set[str] = set()  # ... and from the one before it
        self._first_run = False
        self._initial_open: set[str] = set()
        self._readers: TaskGroup | None = None
        self._failure: FanoutError | None = None
        self._waiting = 0
        # Finished-shard checkpoints are written in groups (one transaction for every shard
        # that ended meanwhile): shards of a table roll over at about the same time.
        self._finish_rows: list[CheckpointRow] = []
        self._finish_batch = 0  # the group now collecting rows
        self._finish_written = -1  # the last group written
        self._finish_lock = anyio.Lock()
        self._wake = anyio.Event()
        self._ready = anyio.Event()
        self._iterator_age: dict[str, float] = {}
        # For /readyz: when the shards were last listed (monotonic), and why the latest
        # attempt failed (None once one succeeds).
        self.discovered_at: float | None = None
        self.discovery_error: str | None = None
        m = metrics
        self._records_read = m.records_read.labels(name)
        self._calls = {
            outcome: m.get_records_calls.labels(name, outcome)
            for outcome in ("records", "empty", "throttled", "expired", "error")
        }
        # Computed when scraped: one dict write per page instead of a max() over every shard.
        m.iterator_age.labels(name).set_function(self._max_iterator_age)

    @property
    def discovery_interval(self) -> float:
        """Seconds between periodic DescribeStream rounds."""
        return self.config.discovery_interval

    @property
    def ready(self) -> bool:
        """True once the stream was resolved and its shards listed at least once."""
        return self._ready.is_set()

    def shard_ids(self) -> list[str]:
        """Shards of the current stream this worker knows of (listed or found as children)."""
        return list(self.listed)

    # -- which stream -----------------------------------------------------------------------

    async def resolve(self) -> str:
        """The stream ARN to read: the configured one, or the table's enabled stream."""
        if self.config.stream_arn:
            return self.config.stream_arn
        assert self.config.table is not None
        found = await self._retrying(self.client.table_stream, self.config.table)
        if found.stream_arn is None:
            raise StreamNotFound(f"table {self.config.table!r} has no stream enabled")
        return found.stream_arn

    async def run(self) -> None:
        """Read the stream (following a table's stream when it is replaced) until cancelled.

        Raises:
            StreamEndedError: a ``stream_arn`` source's stream was disabled and read to its
                end, or is gone.
            DataLossError: records were lost and ``on_data_loss`` is ``fail``.
            StreamNotFound: a ``table`` source's table has no stream at start-up.
        """
        try:
            if self.config.stream_arn is not None:
                end = await self._read_stream(self.config.stream_arn, followed=False)
                raise StreamEndedError(self._ended_message(self.config.stream_arn, end))
            await self._follow_table(self.config.table or "")
        except FanoutError as exc:
            if self.on_fatal is not None:
                self.on_fatal(exc)
            raise

    def _ended_message(self, arn: str, end: str) -> str:
        if end == "gone":
            return (
                f"stream {self.name}: {arn} does not exist (ResourceNotFoundException); "
                "point stream_arn at the table's current stream, or use table: to follow it"
            )
        return (
            f"stream {self.name}: {arn} was disabled and every record in it was read; point "
            "stream_arn at the table's new stream, or use table: to follow it"
        )

    async def _follow_table(self, table: str) -> None:
        found = await self._retrying(self.client.table_stream, table)
        current = found.stream_arn
        # Streams of this table that have checkpoints: a stream replaced while the worker
        # was down may still hold unread records; they go first, oldest first.
        rows = await self._store_call(self.store.all)
        older = sorted(
            {row.stream_arn for row in rows if row.stream_arn.startswith(found.stream_prefix)}
            - {current}
        )
        if current is None and not older:
            raise StreamNotFound(f"table {table!r} has no stream enabled")
        if older and current is not None:
            await self._store_call(self.store.stream_start, current, 0.0)
        for arn in older:
            log.warning(
                "stream_leftovers",
                extra={"stream": self.name, "stream_arn": arn, "table": table},
            )
            await self._read_stream(arn, followed=False)
            await self._retire(arn)
        followed = bool(older)
        while True:
            if current is None:
                current = await self._next_stream(table, None)
                await self._store_call(self.store.stream_start, current, 0.0)
                followed = True
            end = await self._read_stream(current, followed=followed)
            new = await self._next_stream(table, current)
            # Stored before the old stream's checkpoints go: a crash in between must still
            # read the new stream from its start.
            await self._store_call(self.store.stream_start, new, 0.0)
            log.warning(
                "stream_replaced",
                extra={
                    "stream": self.name,
                    "table": table,
                    "old_stream_arn": current,
                    "new_stream_arn": new,
                    "old_stream": "read to its end" if end == "disabled" else "gone",
                    "starting_position": "TRIM_HORIZON",
                },
            )
            await self._retire(current)
            current, followed = new, True

    async def _next_stream(self, table: str, current: str | None) -> str:
        """Wait until the table has an enabled stream other than ``current``."""
        announced = False
        while True:
            try:
                found = await self._retrying(self.client.table_stream, table)
                arn = found.stream_arn
                problem = "no stream enabled" if arn is None else None
            except StreamNotFound as exc:  # the table itself is gone
                arn, problem = None, str(exc)
            if arn is not None and arn != current:
                return arn
            if not announced:
                log.error(
                    "stream_ended_waiting",
                    extra={
                        "stream": self.name,
                        "table": table,
                        "stream_arn": current,
                        "error": problem or "the table still lists the ended stream",
                        "note": "every readable record was read; waiting for a new stream",
                    },
                )
                announced = True
            await anyio.sleep(self.config.discovery_interval)

    async def _retire(self, arn: str) -> None:
        """Forget a stream that was read to its end (or is gone): drop its checkpoints."""
        self.progress = {k: p for k, p in self.progress.items() if p.stream_arn != arn}
        stored = await self._store_call(self.store.load, arn)
        rows = [CheckpointRow(arn, sid, None, True) for sid, c in stored.items() if not c.finished]
        await self._store_call(self.store.save, rows)
        await self._store_call(self.store.prune, arn, [])

    # -- one stream ARN ---------------------------------------------------------------------

    def _reset(self, arn: str) -> None:
        self.stream_arn = arn
        self.finished = set()
        self.running = set()
        self.listed = {}
        self._seen = {}
        self._missing_parents = set()
        self._confirmed_missing = set()
        self._initial_open = set()
        self._first_run = False
        self._iterator_age.clear()

    async def _read_stream(self, arn: str, *, followed: bool) -> str:
        """Read ``arn`` until it is disabled and read to its end ("disabled") or gone."""
        self._reset(arn)
        self.checkpoints = await self._store_call(self.store.load, arn)
        self.finished = {s for s, c in self.checkpoints.items() if c.finished}
        await self._starting_point(arn, followed)
        self._warn_old_checkpoints()
        log.info(
            "stream_resolved",
            extra={
                "stream": self.name,
                "stream_arn": arn,
                "starting_position": "TRIM_HORIZON" if followed else self.config.starting_position,
                "checkpoints": len(self.checkpoints),
            },
        )
        end = "failed"
        async with anyio.create_task_group() as readers:
            self._readers = readers
            end = await self._discovery_loop(arn)
            readers.cancel_scope.cancel()
        self._readers = None
        if self._failure is not None:
            raise self._failure
        return end

    async def _starting_point(self, arn: str, followed: bool) -> None:
        """Set ``start_timestamp``: shards without a checkpoint skip records older than it.

        The stream's start is stored once (``stream_start`` keeps the first value): LATEST
        stores the time of the first start, a followed stream stores 0 (its beginning).
        """
        position = self.config.starting_position
        self.start_timestamp = None
        if followed:
            stored, _ = await self._store_call(self.store.stream_start, arn, 0.0)
            self.start_timestamp = stored or None
        elif position == "LATEST":
            stored, self._first_run = await self._store_call(
                self.store.stream_start, arn, time.time()
            )
            self.start_timestamp = stored or None
        elif position == "AT_TIMESTAMP":
            wanted = self.config.starting_timestamp
            assert wanted is not None
            stored, _ = await self._store_call(self.store.stream_start, arn, wanted)
            self.start_timestamp = min(stored, wanted) or None

    def skip_time(self) -> float | None:
        """Records older than this are skipped in shards without a checkpoint."""
        if self.start_timestamp is None:
            return None
        return self.start_timestamp - _TIMESTAMP_SLACK_S

    def _warn_old_checkpoints(self) -> None:
        limit = time.time() - self.options.retention
        for sid, cp in self.checkpoints.items():
            if not cp.finished and cp.updated_at < limit:
                log.warning(
                    "checkpoint_older_than_retention",
                    extra={
                        "stream": self.name,
                        "shard": sid,
                        "seq": cp.sequence,
                        "checkpoint_written_at": _iso(cp.updated_at),
                        "age_h": round((time.time() - cp.updated_at) / 3600, 1),
                        "note": "records after it may have been trimmed; checked when read",
                    },
                )

    async def _discovery_loop(self, arn: str) -> str:
        first = True
        while True:
            self._wake = anyio.Event()
            hold = first and self._first_run  # LATEST, first start: mark the shards first
            started = time.monotonic()
            listing = await self._discover(arn, spawn=not hold)
            if listing is None:
                await self._stream_gone(arn)
                return "gone"
            if hold:
                await self._mark_initial(arn, listing.shards)
            first = False
            ids = {s.shard_id for s in listing.shards}
            await self._vanished_shards(arn, ids, started)
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
            self._ready.set()
            await self._prune(arn, ids)
            if listing.status not in _ACTIVE and self._drained(listing):
                log.warning(
                    "stream_disabled_and_read",
                    extra={"stream": self.name, "stream_arn": arn, "status": listing.status},
                )
                return "disabled"
            if missing - self._confirmed_missing:
                continue  # list again now to confirm
            with anyio.move_on_after(self.config.discovery_interval):
                await self._wake.wait()

    def _drained(self, listing: _Listing) -> bool:
        return not self.running and all(s.shard_id in self.finished for s in listing.shards)

    async def _discover(self, arn: str, *, spawn: bool) -> _Listing | None:
        """Every shard of the stream (all DescribeStream pages); None if the stream is gone.

        A page that fails is retried (with backoff) from where the listing stopped; pages
        already read are kept, and their readable shards started, meanwhile.
        """
        shards: list[Shard] = []
        start: str | None = None
        failures = 0
        pages = 0
        while True:
            try:
                desc = await self.client.describe_stream(arn, exclusive_start_shard_id=start)
            except StreamNotFound:
                return None
            except SourceError as exc:
                failures += 1
                delay = min(self._error_delay(failures), self.config.discovery_interval)
                self.discovery_error = str(exc)
                self.metrics.discovery_errors.labels(self.name).inc()
                log.error(
                    "discovery_failed",
                    extra={
                        "stream": self.name,
                        "error": str(exc),
                        "shards_listed": len(shards),
                        "pages_read": pages,
                        "attempt": failures,
                        "retry_in_s": round(delay, 2),
                    },
                )
                await anyio.sleep(delay)
                continue
            pages += 1
            page = [Shard.from_wire(raw) for raw in desc.get("Shards", [])]
            now = time.monotonic()
            for shard in page:
                self.listed[shard.shard_id] = shard
                self._seen.setdefault(shard.shard_id, now)
            shards.extend(page)
            if spawn:
                self._spawn(page, complete=False)
            start = desc.get("LastEvaluatedShardId")
            if not start:
                if failures:
                    log.info(
                        "discovery_recovered",
                        extra={"stream": self.name, "failures": failures, "pages": pages},
                    )
                self.discovered_at, self.discovery_error = time.monotonic(), None
                self.listed = {s.shard_id: s for s in shards} | {
                    sid: self.listed[sid] for sid in self.running if sid in self.listed
                }
                return _Listing(shards, str(desc.get("StreamStatus", "ENABLED")))

    async def _mark_initial(self, arn: str, shards: list[Shard]) -> None:
        """First start at LATEST: closed shards hold only older records; the open ones are
        read from LATEST in this run (a later run reads a shard without a checkpoint from
        TRIM_HORIZON and skips what is older than the stored start time)."""
        closed = [s.shard_id for s in shards if s.ending_sequence is not None]
        self._initial_open = {s.shard_id for s in shards if s.ending_sequence is None}
        await self._store_call(
            self.store.save, [CheckpointRow(arn, sid, None, True) for sid in closed]
        )
        self.finished.update(closed)

    def _eligible(self, shard: Shard, complete: bool) -> bool:
        parent = shard.parent_id
        if parent is None or parent in self.finished:
            return True
        return complete and parent in self._confirmed_missing

    def _spawn(self, shards: Sequence[Shard], *, complete: bool) -> None:
        readers = self._readers
        if readers is None or self._failure is not None:
            return
        waiting = 0
        limit = self.config.max_shards
        for shard in shards:
            sid = shard.shard_id
            if sid in self.finished or sid in self.running or not self._eligible(shard, complete):
                continue
            if len(self.running) >= limit:
                waiting += 1
                continue
            self.running.add(sid)
            readers.start_soon(self._read_shard, shard, name=f"shard {sid}")
        if complete and waiting != self._waiting:
            self._waiting = waiting
            if waiting:
                log.warning(
                    "shards_waiting",
                    extra={"stream": self.name, "waiting": waiting, "max_shards": limit},
                )
        self._update_shard_gauges()

    def _update_shard_gauges(self) -> None:
        self.metrics.shards.labels(self.name, "active").set(len(self.running))
        self.metrics.shards.labels(self.name, "finished").set(len(self.finished))

    async def _prune(self, arn: str, listed: set[str]) -> None:
        """Drop finished checkpoints of shards that are no longer listed."""
        gone = {sid for sid in self.finished if sid not in listed}
        if not gone:
            return
        try:
            removed = await self.store.prune(arn, sorted(listed))
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

    async def _vanished_shards(self, arn: str, listed: set[str], since: float) -> None:
        """Shards with unread records that are no longer listed were trimmed away whole.

        Only shards seen before this listing started count: one found meanwhile (a child
        looked up at its parent's end) may be missing from pages read before it existed.
        """
        unfinished = {sid for sid, c in self.checkpoints.items() if not c.finished}
        seen = {sid for sid, t in self._seen.items() if t < since}
        lost = sorted((seen | unfinished) - listed - self.finished - self.running)
        for sid in lost:
            cp = self.checkpoints.get(sid)
            gap = Gap(
                shard_id=sid,
                after_seq=cp.sequence if cp else None,
                after_time=cp.updated_at if cp else None,
                after_time_basis="checkpoint",
                before_seq=None,
                before_time=None,
                records=None,
                count_basis="unknown",
                cause="the shard is no longer listed (older than the stream's retention) "
                "and was not read to its end",
            )
            try:
                self.record_loss(gap)
            except DataLossError as exc:
                self._fail(exc)
                return
            await self._store_call(self.store.save, [CheckpointRow(arn, sid, None, True)])
            self.finished.add(sid)

    async def _stream_gone(self, arn: str) -> None:
        """The stream answered ResourceNotFoundException: account for what was not read."""
        unfinished = {sid for sid, c in self.checkpoints.items() if not c.finished}
        unread = sorted((set(self.listed) | unfinished | self.running) - self.finished)
        log.error(
            "stream_gone",
            extra={
                "stream": self.name,
                "stream_arn": arn,
                "unfinished_shards": len(unread),
                "source": "table" if self.config.table else "stream_arn",
            },
        )
        if self._readers is not None:
            self._readers.cancel_scope.cancel()
        if not unread:
            return
        gap = Gap(
            shard_id=",".join(unread[:10]) + ("..." if len(unread) > 10 else ""),
            after_seq=None,
            after_time=None,
            after_time_basis="checkpoint",
            before_seq=None,
            before_time=None,
            records=None,
            count_basis="unknown",
            cause=f"the stream is gone with {len(unread)} shard(s) not read to their end",
        )
        try:
            self.record_loss(gap)
        except DataLossError as exc:
            self._fail(exc)

    def record_loss(self, gap: Gap) -> None:
        """Count, log and apply ``on_data_loss`` to a gap.

        Raises:
            DataLossError: ``on_data_loss`` is ``fail``.
        """
        self.metrics.data_loss_events.labels(self.name).inc()
        if gap.records:
            self.metrics.records_lost.labels(self.name).inc(gap.records)
        policy = self.config.on_data_loss
        log.error(
            "data_loss_detected",
            extra={
                "stream": self.name,
                "stream_arn": self.stream_arn,
                "shard": gap.shard_id,
                "lost_after_seq": gap.after_seq,
                "lost_before_seq": gap.before_seq,
                "lost_from": _iso(gap.after_time),
                "lost_from_basis": gap.after_time_basis,
                "lost_until": _iso(gap.before_time),
                "records_lost": gap.records,
                "count_basis": gap.count_basis,
                "cause": gap.cause,
                "policy": policy,
            },
        )
        if policy == "fail":
            count = "an unknown number of" if gap.records is None else f"about {gap.records}"
            after = f"after sequence number {gap.after_seq}" if gap.after_seq else "at its start"
            raise DataLossError(
                f"stream {self.name}: {count} records of shard {gap.shard_id} {after} were "
                f"lost before they were read ({gap.cause}); on_data_loss is 'fail': set it to "
                "'resume_trim_horizon' to accept the loss and continue"
            )

    def _fail(self, exc: FanoutError) -> None:
        """End the stream with ``exc`` (raised by ``run``), without an exception group."""
        if self._failure is None:
            self._failure = exc
        if self._readers is not None:
            self._readers.cancel_scope.cancel()

    def relist(self) -> None:
        """List the stream again now (a reader found it, or a shard, gone)."""
        self._wake.set()

    # -- one shard --------------------------------------------------------------------------

    async def _read_shard(self, shard: Shard) -> None:
        arn = self.stream_arn
        assert arn is not None
        sid = shard.shard_id
        checkpoint = self.checkpoints.get(sid)
        progress = ShardProgress(self.name, arn, sid, checkpoint.sequence if checkpoint else None)
        self.progress[sid] = progress
        dispatch = ShardDispatch(progress, self.routes, self.metrics)
        self.lanes.start_soon(dispatch.run)
        reader = ShardReader(self, arn, shard, progress, dispatch, checkpoint)
        ended = False
        try:
            ended = await reader.run()
        except DataLossError as exc:
            self._fail(exc)
        finally:
            dispatch.close()
            if not ended:
                self.running.discard(sid)
                self._iterator_age.pop(sid, None)
        if not ended:
            return
        await progress.drained()
        await self._save_finished(arn, sid, progress.frontier)
        progress.dirty = False
        self.finished.add(sid)
        self.running.discard(sid)
        self.progress.pop(sid, None)
        self._iterator_age.pop(sid, None)
        self.metrics.checkpoints.labels(self.name).inc()
        log.info(
            "shard_finished", extra={"stream": self.name, "shard": sid, "seq": progress.frontier}
        )
        await self._start_children(sid)

    async def _save_finished(self, arn: str, sid: str, seq: str | None) -> None:
        """Write the shard's checkpoint as finished; returns once it is on disk."""
        self._finish_rows.append(CheckpointRow(arn, sid, seq, True))
        mine = self._finish_batch
        async with self._finish_lock:
            if self._finish_written >= mine:
                return  # written with another shard's group
            rows, self._finish_rows = self._finish_rows, []
            self._finish_batch += 1
            try:
                await self._save_rows(rows, sid)
            except BaseException:
                self._finish_rows[:0] = rows  # cancelled: the next writer takes them
                raise
            self._finish_written = mine

    async def _save_rows(self, rows: list[CheckpointRow], sid: str) -> None:
        attempt = 0
        while True:
            try:
                await self.store.save(rows)
                return
            except FanoutError as exc:
                attempt += 1
                self.metrics.checkpoint_failures.inc()
                log.error(
                    "checkpoint_failed",
                    extra={
                        "stream": self.name,
                        "shard": sid,
                        "error": str(exc),
                        "attempt": attempt,
                    },
                )
                await anyio.sleep(self._error_delay(attempt))

    async def _start_children(self, shard_id: str) -> None:
        """Look the ended shard's children up at once and start them."""
        arn = self.stream_arn
        assert arn is not None
        delay = self.options.child_lookup_delay
        for attempt in range(1, _CHILD_LOOKUPS + 1):
            try:
                desc = await self.client.describe_stream(arn, child_shards_of=shard_id)
            except StreamNotFound:
                self.relist()
                return
            except SourceError as exc:
                log.info(
                    "child_lookup_failed",
                    extra={"stream": self.name, "shard": shard_id, "error": str(exc)},
                )
                await anyio.sleep(self._error_delay(attempt))
                continue
            children = [Shard.from_wire(raw) for raw in desc.get("Shards", [])]
            children = [c for c in children if c.parent_id == shard_id]
            if children:
                now = time.monotonic()
                for child in children:
                    self.listed[child.shard_id] = child
                    self._seen.setdefault(child.shard_id, now)
                self._spawn(children, complete=False)
                log.info(
                    "children_started",
                    extra={
                        "stream": self.name,
                        "shard": shard_id,
                        "children": [c.shard_id for c in children],
                    },
                )
                return
            if desc.get("StreamStatus", "ENABLED") not in _ACTIVE:
                break  # a disabled stream gets no new shards
            await anyio.sleep(delay)
            delay = min(delay * 2, self.config.discovery_interval)
        self.relist()  # leave it to a full discovery now
        self._update_shard_gauges()

    # -- helpers ----------------------------------------------------------------------------

    def _error_delay(self, errors: int) -> float:
        return backoff_delay(self.options, errors)

    async def _retrying(self, fn: Callable[..., Awaitable[T]], *args: object) -> T:
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

    async def _store_call(self, fn: Callable[..., Awaitable[T]], *args: object) -> T:
        """Call the checkpoint store until it answers (a failing store holds the stream)."""
        errors = 0
        while True:
            try:
                return await fn(*args)
            except FanoutError as exc:
                errors += 1
                self.metrics.checkpoint_failures.inc()
                log.error(
                    "checkpoint_store_failed",
                    extra={"stream": self.name, "error": str(exc), "attempt": errors},
                )
                await anyio.sleep(self._error_delay(errors))

    def _max_iterator_age(self) -> float:
        ages = self._iterator_age
        return max(ages.values()) if ages else 0.0

    def checkpoint_rows(self) -> list[CheckpointRow]:
        """Dirty frontiers to write; marks them clean."""
        rows: list[CheckpointRow] = []
        for progress in list(self.progress.values()):
            if progress.dirty and progress.frontier is not None:
                progress.dirty = False
                rows.append(
                    CheckpointRow(progress.stream_arn, progress.shard_id, progress.frontier)
                )
        return rows

    def in_flight(self) -> int:
        return sum(len(p.tickets) for p in self.progress.values())


# -- the GetRecords loop of one shard -----------------------------------------------------


class ShardReader:
    """Reads one shard from its starting point to its end and submits every page.

    ``run`` returns True when the shard was read to its end (or vanished and the loss was
    accounted for), False when it stopped without finishing (the stream is gone).
    """

    def __init__(
        self,
        worker: StreamWorker,
        stream_arn: str,
        shard: Shard,
        progress: ShardProgress,
        dispatch: ShardDispatch,
        checkpoint: Checkpoint | None,
    ) -> None:
        self.worker = worker
        self.stream_arn = stream_arn
        self.shard = shard
        self.progress = progress
        self.dispatch = dispatch
        self.checkpoint = checkpoint
        self.last_seen: str | None = checkpoint.sequence if checkpoint else None
        # What gap accounting needs of the last page read: the creation time of its last
        # record and its sequence-number stride. Not the page itself: a reader holding on
        # to it keeps up to 1,000 records alive per shard, idle shards included.
        self.last_read: tuple[float, float | None] | None = None
        self.gap: _PendingGap | None = None
        # Starting point of a shard without a checkpoint.
        self.fallback_skip = worker.skip_time()
        self.latest = (
            self.last_seen is None and worker._first_run and shard.shard_id in worker._initial_open
        )
        self.skip_before = None if self.latest or self.last_seen is not None else self.fallback_skip

    async def run(self) -> bool:
        try:
            return await self._loop()
        except StreamNotFound as exc:
            return await self._vanished(exc)

    async def _loop(self) -> bool:
        worker = self.worker
        client = worker.client
        calls = worker._calls
        records_read = worker._records_read
        arn = self.stream_arn
        sid = self.shard.shard_id
        progress = self.progress
        dispatch = self.dispatch
        ages = worker._iterator_age
        closed = self.shard.ending_sequence is not None
        max_idle = worker.config.max_idle_interval
        min_poll = worker.options.min_poll_interval
        empties = errors = expired = 0
        iterator = await self._seek()
        while True:
            try:
                page = await client.get_records(iterator)
            except IteratorExpired:
                calls["expired"].inc()
                expired += 1
                log.info(
                    "iterator_expired",
                    extra={"stream": worker.name, "shard": sid, "seq": self.last_seen},
                )
                if expired > 1:  # a fresh iterator expired again: do not spin
                    await anyio.sleep(worker._error_delay(expired - 1))
                iterator = await self._seek()
                continue
            except TrimmedData as exc:
                calls["error"].inc()
                self._open_gap(str(exc))
                iterator = await self._iterator("TRIM_HORIZON")
                continue
            except StreamNotFound:
                raise
            except (Throttled, ServiceError) as exc:
                errors += 1
                calls["throttled" if isinstance(exc, Throttled) else "error"].inc()
                if errors >= _LOG_AFTER_ERRORS:
                    log.warning(
                        "get_records_failing",
                        extra={"stream": worker.name, "shard": sid, "error": str(exc)},
                    )
                await anyio.sleep(worker._error_delay(errors))
                continue
            except SourceError as exc:  # an unexpected answer: back off, take a new iterator
                errors += 1
                calls["error"].inc()
                log.error(
                    "get_records_failed",
                    extra={"stream": worker.name, "shard": sid, "error": str(exc)},
                )
                await anyio.sleep(worker._error_delay(errors))
                iterator = await self._seek()
                continue
            errors = expired = 0
            records: list[Record] = page.records
            if self.gap is not None:
                await self._close_gap(records, page.next_iterator is None)
            if records:
                calls["records"].inc()
                records_read.inc(len(records))
                for record in records:
                    record["eventSourceARN"] = arn
                try:
                    last = records[-1]["dynamodb"]
                    last_seen: str | None = last["SequenceNumber"]
                except (KeyError, TypeError):  # malformed: the dispatcher dead-letters it
                    last, last_seen = {}, _last_sequence(records) or self.last_seen
                created = last.get("ApproximateCreationDateTime")
                if isinstance(created, int | float):
                    ages[sid] = max(0.0, time.time() - created)
                if last_seen is not None:
                    self.last_seen = last_seen
                    self.last_read = (_created(records[-1]), sequence_stride(records))
                    await dispatch.submit(
                        records if self.skip_before is None else self._skip(records), last_seen
                    )
                empties = 0
            else:
                calls["empty"].inc()
                ages[sid] = 0.0
            if page.next_iterator is None:
                return True
            iterator = page.next_iterator
            if records:
                wait = min_poll if len(records) < 1000 else 0.0
                # No reference to the page while waiting: it lives only as long as the lanes
                # need it, not until this shard's next answer (1,000 records per shard).
                del page, records, record, last
                if wait > 0:
                    await anyio.sleep(wait)
                continue
            empties += 1
            if empties <= _EAGER_EMPTY_PAGES:
                continue
            if closed:
                # A closed shard ends with a page without NextShardIterator; until then
                # every empty page is read through.
                if min_poll > 0:
                    await anyio.sleep(min_poll)
                continue
            if not progress.pending:
                progress.last_progress = time.monotonic()  # caught up: that is progress
            steps = empties - _EAGER_EMPTY_PAGES - 1
            await anyio.sleep(min(max_idle, _IDLE_FIRST_DELAY_S * (2 ** min(steps, 30))))

    def _skip(self, records: list[Record]) -> list[Record]:
        """Drop records older than the starting time; stop checking once past it."""
        assert self.skip_before is not None
        deliver, done = skip_older(records, self.skip_before)
        if done:
            self.skip_before = None
        return deliver

    # -- iterators --------------------------------------------------------------------------

    async def _seek(self) -> str:
        """An iterator right after the last record read, or at the shard's starting point."""
        if self.last_seen is not None:
            try:
                return await self._iterator("AFTER_SEQUENCE_NUMBER", self.last_seen)
            except TrimmedData as exc:
                self._open_gap(str(exc))
                return await self._iterator("TRIM_HORIZON")
        if self.latest:
            self.latest = False
            return await self._iterator("LATEST")
        # Nothing read yet. After a LATEST start that saw no record, a new LATEST iterator
        # could skip what arrived meanwhile: emulate it from TRIM_HORIZON instead.
        self.skip_before = self.fallback_skip
        return await self._iterator("TRIM_HORIZON")

    async def _iterator(self, kind: str, sequence: str | None = None) -> str:
        """GetShardIterator, retried on throttling, 5xx and unexpected answers."""
        worker = self.worker
        errors = 0
        while True:
            try:
                return await worker.client.get_shard_iterator(
                    self.stream_arn, self.shard.shard_id, kind, sequence
                )
            except (TrimmedData, StreamNotFound):
                raise
            except SourceError as exc:
                errors += 1
                if errors >= _LOG_AFTER_ERRORS or not isinstance(exc, Throttled | ServiceError):
                    log.warning(
                        "get_shard_iterator_failed",
                        extra={
                            "stream": worker.name,
                            "shard": self.shard.shard_id,
                            "iterator_type": kind,
                            "error": str(exc),
                            "attempt": errors,
                        },
                    )
                await anyio.sleep(worker._error_delay(errors))

    # -- gaps -------------------------------------------------------------------------------

    def _open_gap(self, cause: str) -> None:
        """The position after ``last_seen`` was trimmed; the reader goes to TRIM_HORIZON and
        the gap is accounted for with the first page read there."""
        if self.gap is not None:
            return
        if self.last_read is not None:
            after_time: float | None = self.last_read[0]
            basis = "record"
        elif self.checkpoint is not None and self.checkpoint.sequence == self.last_seen:
            after_time, basis = self.checkpoint.updated_at, "checkpoint"
        else:
            after_time, basis = None, "record"
        self.gap = _PendingGap(self.last_seen, after_time, basis, cause)

    async def _close_gap(self, records: list[Record], ended: bool) -> None:
        gap = self.gap
        assert gap is not None
        if not records and not ended and gap.empty_pages < _EAGER_EMPTY_PAGES:
            gap.empty_pages += 1  # read a little further for the first available record
            return
        self.gap = None
        first = records[0]["dynamodb"] if records else None
        stride = sequence_stride(records) or (self.last_read[1] if self.last_read else None)
        if first is not None:
            before: str | None = first["SequenceNumber"]
            count = estimate_lost(gap.after_seq, before, stride, inclusive=False)
        else:
            before = None
            end = self.shard.ending_sequence if ended else None
            count = estimate_lost(gap.after_seq, end, stride, inclusive=True)
        if count is None:
            # The service said the position after the last record is gone: at least one.
            count, basis = 1, "lower_bound"
        else:
            count, basis = max(count, 1), "sequence_spacing"
        self.worker.record_loss(
            Gap(
                shard_id=self.shard.shard_id,
                after_seq=gap.after_seq,
                after_time=gap.after_time,
                after_time_basis=gap.after_time_basis,
                before_seq=before,
                before_time=_created(records[0]) if records else None,
                records=count,
                count_basis=basis,
                cause=gap.cause,
            )
        )

    async def _vanished(self, exc: StreamNotFound) -> bool:
        """ResourceNotFoundException while reading: the stream, or just this shard, is gone."""
        worker = self.worker
        try:
            await worker.client.describe_stream(self.stream_arn, limit=1)
        except StreamNotFound:
            worker.relist()
            return False
        except SourceError:
            worker.relist()  # cannot tell now; discovery decides
            return False
        end = self.shard.ending_sequence
        if self.last_seen is not None and self.last_seen == end:
            return True  # everything was read; only the end-of-shard page was missed
        stride = self.last_read[1] if self.last_read else None
        count = estimate_lost(self.last_seen, end, stride, inclusive=True)
        worker.record_loss(
            Gap(
                shard_id=self.shard.shard_id,
                after_seq=self.last_seen,
                after_time=self.last_read[0] if self.last_read else None,
                after_time_basis="record",
                before_seq=None,
                before_time=None,
                records=count or None,
                count_basis="sequence_spacing" if count else "unknown",
                cause=f"the shard is no longer available ({exc})",
            )
        )
        return True
