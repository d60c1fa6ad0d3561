"""In-memory fakes of the stream room's seams: ``FakeStreams`` (a ``StreamsAPI``),
``MemoryCheckpointStore`` (a ``CheckpointStore``) and ``MemorySink`` (a sink type that keeps
what it receives), so the real reader, discovery and worker run in-process, without a
network and without waiting on real time.

``FakeStreams`` is scripted like the stream server of the integration tests: tables with
streams, shards with parents, records, rollovers, splits, trimming, removed shards,
disabled and deleted streams, expired iterators, empty pages and faults on demand.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.lowlevel

from fanout.app import Worker
from fanout.config import Config, SinkConfig, build_config
from fanout.errors import (
    CheckpointError,
    IteratorExpired,
    SourceError,
    StreamNotFound,
    TrimmedData,
)
from fanout.observe.metrics import Metrics
from fanout.progress import rules
from fanout.progress.store import (
    NO_WORKER_ROW,
    BackfillRow,
    BackfillState,
    Checkpoint,
    CheckpointRow,
    Claim,
    LeaseToken,
    Release,
    SegmentRow,
    Snapshot,
    WindowState,
    WorkerRow,
)
from fanout.records import Record
from fanout.retry import RetryPolicy, no_wait
from fanout.sink import Failures, SinkContext, SinkRegistry, SinkType
from fanout.stream.api import Page, TableStream
from fanout.stream.follow import StreamWorker
from fanout.stream.reader import ReaderOptions

REGION = "us-east-1"
ACCOUNT = "123456789012"
SEQ_STRIDE = 100  # sequence numbers of consecutive records are this far apart


# -- streams ----------------------------------------------------------------------------------


def _sequence(record: Record) -> str | None:
    part = record.get("dynamodb")
    seq = part.get("SequenceNumber") if isinstance(part, dict) else None
    return seq if isinstance(seq, str) else None


@dataclass
class FakeShard:
    """One shard: its records in order, and how many were trimmed from its front."""

    shard_id: str
    parent_id: str | None
    starting_sequence: int
    records: list[Record] = field(default_factory=list)
    ending_sequence: int | None = None  # set once closed
    trimmed: int = 0  # records [0, trimmed) are gone
    removed: bool = False  # no longer listed; reads answer ResourceNotFoundException
    empty_pages: dict[int, int] = field(default_factory=dict)  # position -> empty answers
    generation: int = 0  # iterators of older generations are expired

    @property
    def closed(self) -> bool:
        return self.ending_sequence is not None

    @property
    def sequence_numbers(self) -> list[str]:
        """Of every well-formed record (tests add malformed ones by hand)."""
        return [seq for r in self.records if (seq := _sequence(r)) is not None]

    def position_after(self, seq: int) -> int:
        """The index of the first record after ``seq`` (malformed ones go with the record
        before them)."""
        position = 0
        for i, r in enumerate(self.records):
            own = _sequence(r)
            if own is not None and int(own) > seq:
                break
            position = i + 1
        return position

    def wire(self) -> dict[str, Any]:
        seqs: dict[str, str] = {"StartingSequenceNumber": str(self.starting_sequence)}
        if self.ending_sequence is not None:
            seqs["EndingSequenceNumber"] = str(self.ending_sequence)
        raw: dict[str, Any] = {"ShardId": self.shard_id, "SequenceNumberRange": seqs}
        if self.parent_id is not None:
            raw["ParentShardId"] = self.parent_id
        return raw


@dataclass
class FakeStream:
    """One stream of a table."""

    arn: str
    table: str
    status: str = "ENABLED"
    gone: bool = False
    shards: dict[str, FakeShard] = field(default_factory=dict)

    def listed(self) -> list[FakeShard]:
        return [s for s in self.shards.values() if not s.removed]

    @property
    def open_shards(self) -> list[FakeShard]:
        return [s for s in self.shards.values() if not s.closed and not s.removed]


@dataclass(frozen=True)
class Call:
    """One call the fake answered (or failed)."""

    op: str  # DescribeTable, DescribeStream, GetShardIterator, GetRecords
    stream_arn: str | None = None
    shard_id: str | None = None
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Fault:
    op: str
    error: Callable[[], Exception]
    times: int | None  # None: every matching call
    where: Callable[[Call], bool] | None


@dataclass
class _Iterator:
    stream_arn: str
    shard_id: str
    position: int
    generation: int
    shard_generation: int


class FakeStreams:
    """DynamoDB and DynamoDB Streams in memory, implementing ``StreamsAPI``.

    Args:
        page_size: records per GetRecords page at most.
        describe_page_size: shards per DescribeStream page at most.
    """

    def __init__(self, *, page_size: int = 1000, describe_page_size: int = 100) -> None:
        self.page_size = page_size
        self.describe_page_size = describe_page_size
        self.tables: dict[str, str | None] = {}  # table -> its enabled stream's ARN
        self.streams: dict[str, FakeStream] = {}
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self._seq = itertools.count(10**20, SEQ_STRIDE)
        self._shard_ids = itertools.count(1)
        self._stream_ids = itertools.count(1)
        self._iterators: dict[str, _Iterator] = {}
        self._tokens = itertools.count(1)
        self._generation = 0

    # -- scripting --------------------------------------------------------------------------

    def add_stream(self, table: str, shards: int = 1) -> FakeStream:
        """Enable a new stream on ``table`` (the previous one, if any, is disabled)."""
        old = self.tables.get(table)
        if old is not None:
            self.disable_stream(self.streams[old])
        label = f"2026-01-01T00:00:00.{next(self._stream_ids):03d}"
        arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}/stream/{label}"
        stream = FakeStream(arn, table)
        self.streams[arn] = stream
        self.tables[table] = arn
        for _ in range(shards):
            self.add_shard(stream)
        return stream

    def add_shard(self, stream: FakeStream, parent: FakeShard | None = None) -> FakeShard:
        sid = f"shardId-{next(self._shard_ids):08d}"
        shard = FakeShard(sid, parent.shard_id if parent else None, next(self._seq))
        stream.shards[sid] = shard
        return shard

    def put(
        self, shard: FakeShard, keys: Iterable[str] | int, *, at: float | None = None
    ) -> list[str]:
        """Append one MODIFY record per key (or ``keys`` records); their sequence numbers."""
        assert not shard.closed, f"{shard.shard_id} is closed"
        names = [f"k{i}" for i in range(keys)] if isinstance(keys, int) else list(keys)
        stamp = time.time() if at is None else at
        seqs = []
        for key in names:
            seq = str(next(self._seq))
            item = {"pk": {"S": key}}
            shard.records.append(
                {
                    "eventID": f"e{seq}",
                    "eventName": "MODIFY",
                    "eventVersion": "1.1",
                    "eventSource": "aws:dynamodb",
                    "awsRegion": REGION,
                    "dynamodb": {
                        "ApproximateCreationDateTime": int(stamp),
                        "Keys": item,
                        "NewImage": {**item, "v": {"N": seq}},
                        "SequenceNumber": seq,
                        "SizeBytes": 20,
                        "StreamViewType": "NEW_IMAGE",
                    },
                }
            )
            seqs.append(seq)
        return seqs

    def close(self, shard: FakeShard) -> None:
        if not shard.closed:
            seqs = shard.sequence_numbers
            shard.ending_sequence = int(seqs[-1]) if seqs else shard.starting_sequence

    def rollover(self, shard: FakeShard) -> FakeShard:
        """Close ``shard``; its one child takes the next records."""
        self.close(shard)
        return self.add_shard(self._stream_of(shard), parent=shard)

    def split(self, shard: FakeShard) -> tuple[FakeShard, FakeShard]:
        """Close ``shard``; two children take the next records."""
        self.close(shard)
        stream = self._stream_of(shard)
        return self.add_shard(stream, parent=shard), self.add_shard(stream, parent=shard)

    def trim(self, shard: FakeShard, count: int) -> list[str]:
        """Trim the first ``count`` records of ``shard``; their sequence numbers."""
        shard.trimmed = max(shard.trimmed, count)
        return shard.sequence_numbers[:count]

    def remove_shard(self, shard: FakeShard) -> None:
        """The shard ages out: unlisted, and every call about it is ResourceNotFound."""
        shard.removed = True

    def empty_pages(self, shard: FakeShard, count: int, *, at: int | None = None) -> None:
        """The next ``count`` reads at position ``at`` (default: the end) answer empty."""
        shard.empty_pages[len(shard.records) if at is None else at] = count

    def disable_stream(self, stream: FakeStream) -> None:
        """Disable the stream: its shards close; the table has no enabled stream."""
        stream.status = "DISABLED"
        for shard in stream.shards.values():
            self.close(shard)
        if self.tables.get(stream.table) == stream.arn:
            self.tables[stream.table] = None

    def delete_stream(self, stream: FakeStream) -> None:
        """The stream is gone at once (every call about it is ResourceNotFound)."""
        self.disable_stream(stream)
        stream.gone = True

    def expire_iterators(self, shard: FakeShard | None = None) -> None:
        """Every iterator handed out so far (of ``shard``, or of every shard) expires."""
        if shard is None:
            self._generation += 1
        else:
            shard.generation += 1

    def fail(
        self,
        op: str,
        error: Callable[[], Exception],
        *,
        times: int | None = 1,
        where: Callable[[Call], bool] | None = None,
    ) -> Fault:
        """The next ``times`` calls of ``op`` (matching ``where``) raise ``error()``."""
        fault = Fault(op, error, times, where)
        self.faults.append(fault)
        return fault

    def calls_of(self, op: str, shard: FakeShard | None = None) -> list[Call]:
        return [
            c for c in self.calls if c.op == op and (shard is None or c.shard_id == shard.shard_id)
        ]

    def iterator_types(self, shard: FakeShard) -> list[str]:
        return [c.args["type"] for c in self.calls_of("GetShardIterator", shard)]

    def _stream_of(self, shard: FakeShard) -> FakeStream:
        return next(s for s in self.streams.values() if shard.shard_id in s.shards)

    def _answer(self, call: Call) -> None:
        """Record the call; raise a scripted fault if one matches."""
        self.calls.append(call)
        for fault in self.faults:
            if fault.op != call.op or fault.times == 0:
                continue
            if fault.where is not None and not fault.where(call):
                continue
            if fault.times is not None:
                fault.times -= 1
            raise fault.error()

    def _live(self, arn: str) -> FakeStream:
        stream = self.streams.get(arn)
        if stream is None or stream.gone:
            raise StreamNotFound(f"Requested resource not found: Stream: {arn} not found")
        return stream

    def _shard(self, stream: FakeStream, shard_id: str) -> FakeShard:
        shard = stream.shards.get(shard_id)
        if shard is None or shard.removed:
            raise StreamNotFound(f"Requested resource not found: Shard does not exist: {shard_id}")
        return shard

    # -- StreamsAPI -------------------------------------------------------------------------

    async def table_stream(self, table: str) -> TableStream:
        await anyio.lowlevel.checkpoint()  # a call yields, as a real one does
        self._answer(Call("DescribeTable", args={"table": table}))
        if table not in self.tables:
            raise StreamNotFound(f"Requested resource not found: Table: {table} not found")
        return TableStream(f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}", self.tables[table])

    async def describe_stream(
        self,
        stream_arn: str,
        *,
        exclusive_start_shard_id: str | None = None,
        child_shards_of: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()  # a call yields, as a real one does
        args = {"start": exclusive_start_shard_id, "children_of": child_shards_of, "limit": limit}
        self._answer(Call("DescribeStream", stream_arn, child_shards_of, args))
        stream = self._live(stream_arn)
        shards = stream.listed()
        if child_shards_of is not None:
            shards = [s for s in shards if s.parent_id == child_shards_of]
        if exclusive_start_shard_id is not None:
            shards = [s for s in shards if s.shard_id > exclusive_start_shard_id]
        size = min(limit, self.describe_page_size)
        page = shards[:size]
        desc: dict[str, Any] = {
            "StreamArn": stream.arn,
            "StreamStatus": stream.status,
            "Shards": [s.wire() for s in page],
        }
        if len(shards) > size:
            desc["LastEvaluatedShardId"] = page[-1].shard_id
        return desc

    async def get_shard_iterator(
        self, stream_arn: str, shard_id: str, iterator_type: str, sequence: str | None = None
    ) -> str:
        await anyio.lowlevel.checkpoint()  # a call yields, as a real one does
        args = {"type": iterator_type, "sequence": sequence}
        self._answer(Call("GetShardIterator", stream_arn, shard_id, args))
        stream = self._live(stream_arn)
        shard = self._shard(stream, shard_id)
        if iterator_type == "TRIM_HORIZON":
            position = shard.trimmed
        elif iterator_type == "LATEST":
            position = len(shard.records)
        elif iterator_type == "AFTER_SEQUENCE_NUMBER":
            assert sequence is not None
            position = shard.position_after(int(sequence))
            if position < shard.trimmed:
                raise TrimmedData(f"GetShardIterator: {sequence} is before the trim horizon")
        else:
            raise SourceError(f"GetShardIterator: unsupported type {iterator_type}")
        return self._iterator(stream, shard, position)

    async def get_records(self, iterator: str, limit: int | None = None) -> Page:
        await anyio.lowlevel.checkpoint()  # a call yields, as a real one does
        it = self._iterators.get(iterator)
        self._answer(Call("GetRecords", it.stream_arn if it else None, it.shard_id if it else None))
        if it is None:
            raise SourceError("GetRecords: ValidationException Invalid ShardIterator")
        stream = self._live(it.stream_arn)
        shard = self._shard(stream, it.shard_id)
        if it.generation < self._generation or it.shard_generation < shard.generation:
            raise IteratorExpired("GetRecords: ExpiredIteratorException Iterator expired")
        position = it.position
        if position < shard.trimmed:
            raise TrimmedData("GetRecords: TrimmedDataAccessException")
        pending = shard.empty_pages.get(position, 0)
        if pending:
            shard.empty_pages[position] = pending - 1
            end = position
        else:
            end = min(len(shard.records), position + min(limit or 1000, self.page_size))
        # Copies: the reader stamps eventSourceARN on what it gets.
        records = [dict(r) for r in shard.records[position:end]]
        if shard.closed and end >= len(shard.records) and not shard.empty_pages.get(end):
            return Page(records, None)
        return Page(records, self._iterator(stream, shard, end))

    def _iterator(self, stream: FakeStream, shard: FakeShard, position: int) -> str:
        token = f"it-{next(self._tokens)}"
        self._iterators[token] = _Iterator(
            stream.arn, shard.shard_id, position, self._generation, shard.generation
        )
        return token


# -- checkpoints ------------------------------------------------------------------------------


class MemoryCheckpointStore:
    """A ``CheckpointStore`` in dicts, with the SQLite store's semantics (the same rules of
    ``fanout.progress.rules``: a None sequence keeps the stored one, ``finished`` never goes
    back, conditional writes check the lease) and failures on demand. Several workers may
    share one instance: it is one application's table.

    Attributes:
        saves: every ``save`` that succeeded, one list of rows per call.
        failures: how many of the next calls fail (``CheckpointError``).
        fail_ops: which calls ``failures`` applies to (default: every call).
        rows: the shard rows by (stream ARN, shard id).
        workers: the worker rows by worker id.
    """

    def __init__(self, application: str = "fanout") -> None:
        self.rows: dict[tuple[str, str], Checkpoint] = {}
        self.windows: dict[tuple[str, str], dict[str, WindowState]] = {}
        self.starts: dict[str, float] = {}
        self.workers: dict[str, WorkerRow] = {}
        self.sinks: str | None = None
        self.saves: list[list[CheckpointRow]] = []
        self.failures = 0
        self.fail_ops: set[str] | None = None
        self.opened = self.closed = False
        self._application = application
        self.backfill_rows: dict[str, BackfillRow] = {}
        self.segment_rows: dict[tuple[str, int], SegmentRow] = {}

    @property
    def application(self) -> str:
        return self._application

    @property
    def describe(self) -> str:
        return "memory"

    def _maybe_fail(self, op: str) -> None:
        if self.failures and (self.fail_ops is None or op in self.fail_ops):
            self.failures -= 1
            raise CheckpointError(f"checkpoint store: {op} failed (scripted)")

    async def open(self) -> None:
        self.opened = True

    async def aclose(self) -> None:
        self.closed = True

    async def load(self, stream_arn: str) -> dict[str, Checkpoint]:
        self._maybe_fail("load")
        return {sid: c for (arn, sid), c in self.rows.items() if arn == stream_arn}

    async def save(self, rows: Sequence[CheckpointRow]) -> list[CheckpointRow]:
        self._maybe_fail("save")
        now = time.time()
        rejected = []
        for row in rows:
            key = (row.stream_arn, row.shard_id)
            new = rules.checkpoint(self.rows.get(key), row, now)
            if new is None:
                rejected.append(row)
                continue
            self.rows[key] = new
            if new.finished:  # a finished shard's windows go with it
                self.windows.pop(key, None)
            else:
                self.windows.setdefault(key, {}).update({w.sink: w for w in row.windows})
        if rows:
            self.saves.append(list(rows))
        return rejected

    async def load_windows(self, stream_arn: str, shard_id: str) -> dict[str, WindowState]:
        self._maybe_fail("load_windows")
        return dict(self.windows.get((stream_arn, shard_id), {}))

    async def stream_start(self, stream_arn: str, timestamp: float) -> tuple[float, bool]:
        self._maybe_fail("stream_start")
        if stream_arn in self.starts:
            return self.starts[stream_arn], False
        self.starts[stream_arn] = timestamp
        return timestamp, True

    async def prune(self, stream_arn: str, keep: Sequence[str]) -> int:
        self._maybe_fail("prune")
        gone = [
            key
            for key, c in self.rows.items()
            if key[0] == stream_arn and c.finished and key[1] not in keep
        ]
        for key in gone:
            del self.rows[key]
        return len(gone)

    async def all(self) -> list[Checkpoint]:
        self._maybe_fail("all")
        return sorted(self.rows.values(), key=lambda c: (c.stream_arn, c.shard_id))

    async def scan(self) -> Snapshot:
        self._maybe_fail("scan")
        await anyio.lowlevel.checkpoint()
        shards = sorted(self.rows.values(), key=lambda c: (c.stream_arn, c.shard_id))
        return Snapshot(
            shards, sorted(self.workers.values(), key=lambda w: w.worker_id), self.sinks
        )

    async def ensure(self, stream_arn: str, shard_ids: Sequence[str]) -> dict[str, Checkpoint]:
        self._maybe_fail("ensure")
        now = time.time()
        found = {}
        for sid in shard_ids:
            row = self.rows.get((stream_arn, sid))
            if row is None:
                row = self.rows[(stream_arn, sid)] = rules.new_row(stream_arn, sid, now)
            found[sid] = row
        return found

    async def take(self, claims: Sequence[Claim], owner: str) -> list[Checkpoint | None]:
        self._maybe_fail("take")
        await anyio.lowlevel.checkpoint()
        now = time.time()
        taken: list[Checkpoint | None] = []
        for claim in claims:
            key = (claim.stream_arn, claim.shard_id)
            worker = self.workers.get(claim.owner) if claim.owner is not None else None
            beat = worker.heartbeat if worker is not None else NO_WORKER_ROW
            new = rules.take(self.rows.get(key), claim, owner, beat, now)
            if new is not None:
                self.rows[key] = new
            taken.append(new)
        return taken

    async def release(self, releases: Sequence[Release]) -> list[bool]:
        self._maybe_fail("release")
        now = time.time()
        done = []
        for rel in releases:
            key = (rel.stream_arn, rel.shard_id)
            new = rules.release(self.rows.get(key), rel, now)
            if new is not None:
                self.rows[key] = new
            done.append(new is not None)
        return done

    async def request_handoff(
        self, stream_arn: str, shard_id: str, lease: LeaseToken, to: str
    ) -> bool:
        self._maybe_fail("request_handoff")
        key = (stream_arn, shard_id)
        new = rules.request_handoff(self.rows.get(key), lease.owner, lease.counter, to)
        if new is not None:
            self.rows[key] = new
        return new is not None

    async def heartbeat(self, worker: WorkerRow) -> None:
        self._maybe_fail("heartbeat")
        self.workers[worker.worker_id] = worker

    def heartbeat_sync(self, worker: WorkerRow) -> None:
        self._maybe_fail("heartbeat")
        self.workers[worker.worker_id] = worker

    async def remove_worker(self, worker_id: str, heartbeat: int | None = None) -> None:
        self._maybe_fail("remove_worker")
        row = self.workers.get(worker_id)
        if row is not None and (heartbeat is None or row.heartbeat == heartbeat):
            del self.workers[worker_id]

    async def record_sinks(self, sinks: str) -> None:
        self._maybe_fail("record_sinks")
        self.sinks = sinks

    async def backfills(self) -> list[BackfillState]:
        self._maybe_fail("backfills")
        states = {key: BackfillState(row) for key, row in sorted(self.backfill_rows.items())}
        for (backfill_id, segment), seg in sorted(self.segment_rows.items()):
            if backfill_id in states:
                states[backfill_id].segments[segment] = seg
        return list(states.values())

    async def claim_backfill(
        self, row: BackfillRow, expected: BackfillRow | None
    ) -> BackfillRow | None:
        self._maybe_fail("claim_backfill")
        new = rules.claim_backfill(self.backfill_rows.get(row.backfill_id), row, expected)
        if new is not None:
            self.backfill_rows[row.backfill_id] = new
        return new

    async def save_backfill(
        self,
        backfill_id: str,
        owner: str,
        segments: Sequence[SegmentRow],
        *,
        done: bool = False,
        release: bool = False,
        now: float | None = None,
    ) -> bool:
        self._maybe_fail("save_backfill")
        when = time.time() if now is None else now
        old = self.backfill_rows.get(backfill_id)
        new = rules.save_backfill(old, owner, done=done, release=release, now=when)
        if new is None:
            return False
        self.backfill_rows[backfill_id] = new
        for seg in segments:
            self.segment_rows[(backfill_id, seg.segment)] = seg
        return True

    def get(self, stream_arn: str, shard_id: str) -> Checkpoint | None:
        return self.rows.get((stream_arn, shard_id))

    def owners(self, stream_arn: str | None = None) -> dict[str, str | None]:
        """Shard id -> the worker holding it (unfinished shards)."""
        return {
            sid: c.owner
            for (arn, sid), c in self.rows.items()
            if not c.finished and (stream_arn is None or arn == stream_arn)
        }


# -- a sink that keeps what it gets -----------------------------------------------------------


@dataclass
class Delivery:
    sink: str
    seq: str
    key: str
    arn: str | None


class MemorySinkConfig(SinkConfig):
    type: Literal["memory"] = "memory"


@dataclass
class Deliveries:
    """Everything the memory sinks of one test received, in delivery order."""

    items: list[Delivery] = field(default_factory=list)
    gate: anyio.Event | None = None  # when set, every send waits for it

    @property
    def seqs(self) -> list[str]:
        return [d.seq for d in self.items]

    def distinct(self) -> set[str]:
        return {d.seq for d in self.items}


class MemorySink:
    """Keeps every record it receives."""

    ordered = True

    def __init__(self, name: str, into: Deliveries) -> None:
        self.name = name
        self.into = into

    async def start(self) -> None:
        return None

    async def send(self, batch: Sequence[Record]) -> Failures:
        if self.into.gate is not None:
            await self.into.gate.wait()
        for r in batch:
            self.into.items.append(
                Delivery(
                    self.name,
                    r["dynamodb"]["SequenceNumber"],
                    r["dynamodb"]["Keys"]["pk"]["S"],
                    r.get("eventSourceARN"),
                )
            )
        return {}

    async def stop(self) -> None:
        return None


def memory_config(data: dict[str, Any], into: Deliveries) -> Config:
    """``build_config(data)`` with a ``memory`` sink type that appends to ``into``."""

    def build(name: str, config: MemorySinkConfig, context: SinkContext) -> MemorySink:
        return MemorySink(name, into)

    registry = SinkRegistry({"memory": SinkType(MemorySinkConfig, build)}, entry_points=False)
    return build_config(data, registry)


# -- a whole worker on the fakes --------------------------------------------------------------


def instant_retry() -> RetryPolicy:
    """The stream's retry policy with every wait skipped."""
    return RetryPolicy(0.2, 10.0, floor=0.5, sleep=no_wait)


def fast_options() -> ReaderOptions:
    return ReaderOptions(min_poll_interval=0.0, child_lookup_delay=0.001, retry=instant_retry())


def worker_config(
    tmp_path: Any,
    into: Deliveries,
    *,
    table: str | None = None,
    stream_arn: str | None = None,
    stream: dict[str, Any] | None = None,
    sink: dict[str, Any] | None = None,
    **settings: Any,
) -> Config:
    """One stream ``orders`` (a table or a stream ARN) feeding one memory sink ``mem``."""
    source: dict[str, Any] = {"table": table} if table else {"stream_arn": stream_arn}
    data: dict[str, Any] = {
        "streams": {
            "orders": {
                **source,
                "region": REGION,
                "max_idle_interval": 0.005,
                "discovery_interval": 0.05,
                **(stream or {}),
            }
        },
        "checkpoints": {"path": str(tmp_path / "fanout.db"), "interval": 0.01},
        "http": {"enabled": False},
        "shutdown_grace": 2,
        "sinks": {"mem": {"type": "memory", "batch_size": 100, **(sink or {})}},
    }
    data.update(settings)
    return memory_config(data, into)


@dataclass
class Run:
    worker: Worker
    exited: anyio.Event = field(default_factory=anyio.Event)
    code: int | None = None

    @property
    def stream(self) -> StreamWorker:
        return self.worker.workers[0]

    def sample(self, name: str, **labels: str) -> float:
        value = self.worker.metrics.registry.get_sample_value(name, {"stream": "orders", **labels})
        return value or 0.0


@asynccontextmanager
async def running(
    config: Config,
    streams: FakeStreams,
    store: MemoryCheckpointStore,
    *,
    options: ReaderOptions | None = None,
    stop: bool = True,
    worker_id: str | None = None,
) -> AsyncIterator[Run]:
    """Run a whole worker on the fakes for the body; stop it gracefully afterwards."""
    worker = Worker(
        config,
        metrics=Metrics(),
        handle_signals=False,
        reader_options=options or fast_options(),
        backoff=RetryPolicy(0.01, 0.1, sleep=no_wait),
        streams=lambda cfg: streams,
        store=store,
        worker_id=worker_id,
    )
    run = Run(worker)

    async def main() -> None:
        try:
            run.code = await worker.run()
        finally:
            run.exited.set()

    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(main)
        with anyio.fail_after(5):
            await worker.started.wait()
        try:
            yield run
        except Exception as exc:  # re-raised below, outside the task group
            failure = exc
        finally:
            if stop:
                worker.stop()
            with anyio.fail_after(10):
                await run.exited.wait()
    if failure is not None:
        raise failure


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.001)


async def wait_delivered(into: Deliveries, seqs: Iterable[str], timeout: float = 5.0) -> None:
    want = set(seqs)
    await wait_for(lambda: want <= into.distinct(), timeout, f"{len(want)} records")
