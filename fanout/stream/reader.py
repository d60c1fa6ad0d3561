"""One shard's GetRecords loop: iterators, polling, expiry, throttling and the gaps it meets.

The reader of a shard reads from its starting point to its end and submits every page to
the shard's lanes; nothing else is done per record but stamping ``eventSourceARN``. A page is
read only when the process's byte budget has room for it (``fanout.stream.budget``). What
the readers of one stream share (the client, the metrics, how to report a loss or ask for
a new listing) comes in one ``ReaderContext``. The rules are in ``docs/shards.md``
("Reading a shard").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import orjson
from prometheus_client import Counter

from fanout.errors import (
    IteratorExpired,
    MalformedAnswer,
    ServiceError,
    SourceError,
    StreamNotFound,
    Throttled,
    TrimmedData,
)
from fanout.progress.store import Checkpoint
from fanout.progress.tracker import ShardProgress
from fanout.records import Record
from fanout.retry import RetryPolicy
from fanout.stream.api import Page, Shard, StreamsAPI, retry_call
from fanout.stream.budget import ShardBytes
from fanout.stream.gaps import (
    Gap,
    OpenGap,
    created,
    last_sequence,
    measure_gap,
    sequence_stride,
    skip_older,
    vanished_gap,
)

log = logging.getLogger("fanout.stream")

# DynamoDB Streams keeps records for 24 hours.
RETENTION_S = 24 * 3600.0
# Empty pages can come in the middle of a shard while more records follow: the first few
# are re-read at once, after that an open shard counts as idle and polling backs off.
_EAGER_EMPTY_PAGES = 2
_IDLE_FIRST_DELAY_S = 0.1
# Consecutive failures after which each one is also logged (the metric counts all).
_LOG_AFTER_ERRORS = 3
# A GetRecords page holds at most this many records; a full page is followed at once.
_FULL_PAGE = 1000


def _stream_retry() -> RetryPolicy:
    # Throttling is back-pressure: every wait is at least half its ceiling, so a throttled
    # reader really slows down, and jittered, so readers throttled together do not retry
    # together.
    return RetryPolicy(initial=0.2, cap=10.0, floor=0.5)


@dataclass
class ReaderOptions:
    """Polling knobs shared by every shard of a stream, and its retry timing (tests shrink
    them; ``RetryPolicy(sleep=no_wait)`` makes every retry instant)."""

    min_poll_interval: float = 0.1  # wait after a page that was not full
    child_lookup_delay: float = 0.5  # first wait between targeted child lookups
    retention: float = RETENTION_S
    retry: RetryPolicy = field(default_factory=_stream_retry)


class PageTarget(Protocol):
    """Where a shard's pages go (``fanout.delivery.lane.ShardDispatch``)."""

    async def submit(
        self,
        records: list[Record],
        last_seq: str | None,
        weight: int = 0,
        reread: Callable[[], list[Record]] | None = None,
    ) -> None:
        """Hand ``records`` (ending at sequence number ``last_seq``) to every sink; may
        wait while the sinks' buffers are full. ``weight`` is the page's share of the byte
        budget, held until the page is settled; ``reread`` parses the page again, as it
        was read."""
        ...


@dataclass(frozen=True, slots=True)
class ReaderContext:
    """What the shard readers of one stream ARN share.

    Attributes:
        stream: the configured stream's name (logs, metric labels).
        stream_arn: the stream being read.
        client: the DynamoDB Streams calls.
        options: polling knobs and retry timing.
        max_idle_interval: the longest wait between GetRecords calls on an idle shard.
        calls: the GetRecords call counters by outcome (records, empty, throttled, expired,
            error, malformed).
        records_read: the records-read counter.
        iterator_age: age of the newest record read, by shard id (a gauge reads the max).
        relist: asks discovery to list the stream again now.
        record_loss: counts, logs and applies ``on_data_loss`` to a gap (may raise
            ``DataLossError``).
    """

    stream: str
    stream_arn: str
    client: StreamsAPI
    options: ReaderOptions
    max_idle_interval: float
    calls: Mapping[str, Counter]
    records_read: Counter
    iterator_age: dict[str, float]
    relist: Callable[[], None]
    record_loss: Callable[[Gap], None]


def lambda_identity(record: Record) -> None:
    """Spell a record's ``userIdentity`` as Lambda events do (``type``, ``principalId``).

    GetRecords names the members as the API model does (``Type``, ``PrincipalId``); Lambda's
    events and filters (``{"userIdentity": {"type": ["Service"]}}`` for TTL deletions) use
    lower camel case, so records are delivered in that spelling.
    """
    identity = record["userIdentity"]
    if isinstance(identity, dict) and ("Type" in identity or "PrincipalId" in identity):
        record["userIdentity"] = {
            ("type" if k == "Type" else "principalId" if k == "PrincipalId" else k): v
            for k, v in identity.items()
        }


def stamp_records(records: list[Record], arn: str) -> int:
    """Stamp ``eventSourceARN`` (and Lambda's ``userIdentity`` spelling) on the records that
    are objects; returns how many are not (they are dead-lettered as malformed downstream).

    The slow path of a page the reader's fast loop could not stamp.
    """
    bad = 0
    for record in records:
        if isinstance(record, dict):
            record["eventSourceARN"] = arn
            if "userIdentity" in record:
                lambda_identity(record)
        else:
            bad += 1
    return bad


class Reread:
    """A page's records parsed again from the answer as it came, stamped as the reader
    stamps them: what a sink that changed its records is retried with (a few bytes per
    page until then; the parse happens only when such a sink's send failed)."""

    __slots__ = ("arn", "raw")

    def __init__(self, raw: bytes, arn: str) -> None:
        self.raw = raw
        self.arn = arn

    def __call__(self) -> list[Record]:
        records = orjson.loads(self.raw).get("Records") or []
        stamp_records(records, self.arn)
        return list(records)


class ShardReader:
    """Reads one shard from its starting point to its end and submits every page.

    ``run`` returns True when the shard was read to its end (or vanished and the loss was
    accounted for), False when it stopped without finishing (the stream is gone).

    Args:
        context: what the readers of the stream share.
        shard: the shard.
        progress: its ack tracking (the reader marks it caught up when idle).
        dispatch: where every page is submitted (the shard's lanes).
        checkpoint: its stored checkpoint, if any (the reader resumes after it).
        latest: start from a LATEST iterator (the first start at LATEST, an open shard).
        skip_before: without a checkpoint, skip records created before this epoch time.
        held: the shard's share of the process's byte budget (None: not counted).
    """

    def __init__(
        self,
        context: ReaderContext,
        shard: Shard,
        progress: ShardProgress,
        dispatch: PageTarget,
        checkpoint: Checkpoint | None,
        *,
        latest: bool = False,
        skip_before: float | None = None,
        held: ShardBytes | None = None,
    ) -> None:
        self.context = context
        self.held = held
        self.shard = shard
        self.progress = progress
        self.dispatch = dispatch
        self.checkpoint = checkpoint
        self.retry = context.options.retry
        self.last_seen: str | None = checkpoint.sequence if checkpoint else None
        # What gap accounting needs of the last page read: the creation time of its last
        # record and its sequence-number stride. Not the page itself: a reader holding on
        # to it keeps up to 1,000 records alive per shard, idle shards included.
        self.last_read: tuple[float, float | None] | None = None
        self.gap: OpenGap | None = None
        # Starting point of a shard without a checkpoint.
        self.fallback_skip = skip_before
        self.latest = latest and self.last_seen is None
        self.skip_before = None if self.latest or self.last_seen is not None else skip_before

    async def run(self) -> bool:
        try:
            return await self._loop()
        except StreamNotFound as exc:
            return await self._vanished(exc)

    async def _loop(self) -> bool:
        ctx = self.context
        calls = ctx.calls
        records_read = ctx.records_read
        arn = ctx.stream_arn
        sid = self.shard.shard_id
        progress = self.progress
        dispatch = self.dispatch
        ages = ctx.iterator_age
        retry = self.retry
        closed = self.shard.ending_sequence is not None
        max_idle = ctx.max_idle_interval
        min_poll = ctx.options.min_poll_interval
        empties = errors = expired = 0
        iterator = await self._seek()
        while True:
            if not progress.may_deliver():  # the lease lapsed: read nothing more of the shard
                await progress.lease_lost()
            try:
                page = await self._fetch(iterator)
            except IteratorExpired:
                calls["expired"].inc()
                expired += 1
                log.info(
                    "iterator_expired",
                    extra={"stream": ctx.stream, "shard": sid, "seq": self.last_seen},
                )
                if expired > 1:  # a fresh iterator expired again: do not spin
                    await retry.wait(expired - 1)
                iterator = await self._seek()
                continue
            except TrimmedData as exc:
                calls["error"].inc()
                self._open_gap(str(exc))
                iterator = await self._iterator("TRIM_HORIZON")
                continue
            except StreamNotFound:
                raise
            except MalformedAnswer as exc:
                # A 200 that is no GetRecords answer (a proxy's page, a cut body): nothing
                # was read; the same iterator is asked again after a wait.
                errors += 1
                calls["malformed"].inc()
                if errors == 1 or errors % 10 == 0:
                    log.warning(
                        "get_records_malformed",
                        extra={
                            "stream": ctx.stream,
                            "shard": sid,
                            "error": str(exc),
                            "attempt": errors,
                        },
                    )
                await retry.wait(errors)
                continue
            except (Throttled, ServiceError) as exc:
                errors += 1
                calls["throttled" if isinstance(exc, Throttled) else "error"].inc()
                if errors >= _LOG_AFTER_ERRORS:
                    log.warning(
                        "get_records_failing",
                        extra={"stream": ctx.stream, "shard": sid, "error": str(exc)},
                    )
                await retry.wait(errors)  # then again with the same iterator
                continue
            except SourceError as exc:  # an unexpected answer: back off, take a new iterator
                errors += 1
                calls["error"].inc()
                log.error(
                    "get_records_failed",
                    extra={"stream": ctx.stream, "shard": sid, "error": str(exc)},
                )
                await retry.wait(errors)
                iterator = await self._seek()
                continue
            errors = expired = 0
            records: list[Record] = page.records
            if self.gap is not None:
                self._close_gap(records, page.next_iterator is None)
            if records:
                calls["records"].inc()
                records_read.inc(len(records))
                try:
                    for record in records:
                        record["eventSourceARN"] = arn
                        if "userIdentity" in record:  # TTL deletions only
                            lambda_identity(record)
                except TypeError:  # a record that is not an object: the dispatcher sets it aside
                    stamp_records(records, arn)
                try:
                    last = records[-1]["dynamodb"]
                    last_seen: str | None = last["SequenceNumber"]
                    stamp = last.get("ApproximateCreationDateTime")
                except (KeyError, TypeError, AttributeError):  # malformed: dead-lettered
                    last, last_seen, stamp = {}, last_sequence(records), None
                if isinstance(stamp, int | float):
                    ages[sid] = max(0.0, time.time() - stamp)
                if last_seen is not None:
                    self.last_seen = last_seen
                    self.last_read = (created(records[-1]), sequence_stride(records))
                # Even a page without a sequence number (every record malformed) goes: its
                # records must reach the dead-letter destinations; its ticket then leaves
                # the frontier where it is.
                await dispatch.submit(
                    records if self.skip_before is None else self._skip(records),
                    last_seen or self.last_seen,
                    page.nbytes,
                    Reread(page.raw, arn) if page.raw else None,
                )
                empties = 0
            else:
                calls["empty"].inc()
                ages[sid] = 0.0
            if page.next_iterator is None:
                return True
            iterator = page.next_iterator
            if records:
                wait = min_poll if len(records) < _FULL_PAGE else 0.0
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

    async def _fetch(self, iterator: str) -> Page:
        """GetRecords, once the byte budget has room for the page the shard expects; the
        shard then holds the page's real weight (``Page.nbytes``) until it is settled."""
        held = self.held
        if held is None:
            return await self.context.client.get_records(iterator)
        reserved = await held.reserve()
        try:
            page = await self.context.client.get_records(iterator)
        except BaseException:
            held.settle_page(reserved, 0)
            raise
        held.settle_page(reserved, page.nbytes)
        return page

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
        """GetShardIterator, retried on throttling, 5xx and unexpected answers.

        Raises:
            TrimmedData: the position asked for is older than the retention.
            StreamNotFound: the shard or the stream is gone.
        """
        ctx = self.context
        sid = self.shard.shard_id

        def failed(exc: BaseException, attempt: int) -> None:
            if attempt >= _LOG_AFTER_ERRORS or not isinstance(exc, Throttled | ServiceError):
                log.warning(
                    "get_shard_iterator_failed",
                    extra={
                        "stream": ctx.stream,
                        "shard": sid,
                        "iterator_type": kind,
                        "error": str(exc),
                        "attempt": attempt,
                    },
                )

        return await retry_call(
            self.retry,
            lambda: ctx.client.get_shard_iterator(ctx.stream_arn, sid, kind, sequence),
            final=(TrimmedData, StreamNotFound),
            on_failure=failed,
        )

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
        self.gap = OpenGap(self.last_seen, after_time, basis, cause)

    def _close_gap(self, records: list[Record], ended: bool) -> None:
        assert self.gap is not None
        gap = measure_gap(
            self.shard.shard_id,
            self.gap,
            records,
            ended=ended,
            ending_sequence=self.shard.ending_sequence,
            stride_before=self.last_read[1] if self.last_read else None,
        )
        if gap is not None:  # else: read a little further for the first available record
            self.gap = None
            self.context.record_loss(gap)

    async def _vanished(self, exc: StreamNotFound) -> bool:
        """ResourceNotFoundException while reading: the stream, or just this shard, is gone."""
        ctx = self.context
        try:
            await ctx.client.describe_stream(ctx.stream_arn, limit=1)
        except SourceError:  # the stream is gone, or it cannot be told now: discovery decides
            ctx.relist()
            return False
        gap = vanished_gap(
            self.shard.shard_id,
            self.last_seen,
            self.last_read,
            self.shard.ending_sequence,
            f"the shard is no longer available ({exc})",
        )
        if gap is not None:
            ctx.record_loss(gap)
        return True
