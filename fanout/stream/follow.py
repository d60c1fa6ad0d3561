"""One configured stream: which stream ARN to read, and following a table's stream when it
is replaced (the old one is read to its end first).

A ``table:`` source follows its table's stream; a ``stream_arn:`` source fails once its
stream ends. Starting positions are resolved here, once per stream ARN: LATEST is stored at
the first start, AT_TIMESTAMP as the earlier of the stored and the configured time, and a
followed stream is read from its beginning. The rules are in ``docs/shards.md``
("Starting positions", "Streams that end or are replaced").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from anyio.abc import TaskGroup

from fanout.config import StreamConfig
from fanout.delivery import Route
from fanout.errors import FanoutError, ServiceError, StreamNotFound, Throttled
from fanout.observe.metrics import Metrics
from fanout.progress.leases import LeaseCoordinator
from fanout.progress.store import CheckpointRow, CheckpointStore
from fanout.progress.tracker import ShardProgress
from fanout.progress.writer import CheckpointWriter
from fanout.retry import RetryPolicy
from fanout.stream.api import Shard, StreamsAPI, TableStream
from fanout.stream.budget import MemoryBudget
from fanout.stream.discovery import ShardGraph
from fanout.stream.parts import DiscoveryStatus, StreamParts, StreamStart
from fanout.stream.reader import ReaderOptions

log = logging.getLogger("fanout.stream")

T = TypeVar("T")


class StreamEndedError(FanoutError):
    """A ``stream_arn`` source ended: its stream was disabled and read to its end, or is gone."""


class _NoNewStream(Exception):
    """The table has no enabled stream other than the one that ended (yet)."""


class StreamWorker:
    """Reads one configured stream, following its table's stream when it is replaced, and
    hands every page to the sinks' lanes.

    Args:
        name: the configured stream's name.
        config: its configuration.
        client: the DynamoDB and DynamoDB Streams calls.
        store: checkpoint reads.
        checkpoints: every checkpoint write.
        routes: every sink's route; those that feed this stream are kept.
        metrics: the process's metrics.
        lanes: the task group the shards' lanes run in.
        options: polling knobs and retry timing.
        on_fatal: told the error that ends ``run``, before it is raised.
        leases: this worker's leases (shards are read only under one).
        budget: the process's byte budget for buffered records (None: not counted).
    """

    def __init__(
        self,
        name: str,
        config: StreamConfig,
        client: StreamsAPI,
        store: CheckpointStore,
        checkpoints: CheckpointWriter,
        routes: list[Route],
        metrics: Metrics,
        lanes: TaskGroup,
        options: ReaderOptions | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
        *,
        leases: LeaseCoordinator,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.name = name
        self.config = config
        options = options or ReaderOptions()
        self.parts = StreamParts(
            name=name,
            config=config,
            client=client,
            store=store,
            checkpoints=checkpoints,
            routes=[r for r in routes if r.feeds(name)],
            metrics=metrics,
            lanes=lanes,
            options=options,
            leases=leases,
            budget=budget,
        )
        self.on_fatal = on_fatal
        self.retry = options.retry
        self.status = DiscoveryStatus()
        # The stream ARN being read (or the last one, until it is retired).
        self.graph: ShardGraph | None = None
        # While a table has no new stream, it is asked again every discovery interval.
        interval = config.discovery_interval
        self._new_stream_poll = RetryPolicy(interval, interval, floor=1.0, sleep=self.retry.sleep)
        # Computed when scraped: one dict write per page instead of a max() over every shard.
        metrics.iterator_age.labels(name).set_function(self._max_iterator_age)

    # -- views for the worker, /readyz and tests ----------------------------------------------

    @property
    def discovery_interval(self) -> float:
        """Seconds between periodic DescribeStream rounds."""
        return self.config.discovery_interval

    @property
    def ready(self) -> bool:
        """True once the stream was resolved and its shards listed at least once."""
        return self.status.ready

    @property
    def discovered_at(self) -> float | None:
        """When the shards were last listed (monotonic); None before the first listing."""
        return self.status.discovered_at

    @property
    def discovery_error(self) -> str | None:
        """Why the latest listing failed; None once one succeeds."""
        return self.status.error

    @property
    def stream_arn(self) -> str | None:
        """The stream ARN being read."""
        return self.graph.stream_arn if self.graph else None

    @property
    def progress(self) -> dict[str, ShardProgress]:
        """The ack tracking of every shard being read (or stopped unfinished), by shard id."""
        return self.graph.progress if self.graph else {}

    @property
    def finished(self) -> set[str]:
        """Shards read to their end, and checkpointed as finished."""
        return self.graph.finished if self.graph else set()

    @property
    def running(self) -> set[str]:
        """Shards being read."""
        return self.graph.running if self.graph else set()

    @property
    def listed(self) -> dict[str, Shard]:
        """The shards of the latest complete listing, plus children found since."""
        return self.graph.listed if self.graph else {}

    def _max_iterator_age(self) -> float:
        return self.graph.max_iterator_age() if self.graph else 0.0

    # -- which stream -----------------------------------------------------------------------

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
        store = self.parts.store
        found = await self._table_stream(table)
        current = found.stream_arn
        # Streams of this table that have checkpoints: a stream replaced while the worker
        # was down may still hold unread records; they go first, oldest first.
        rows = await self._store_call(store.all)
        older = sorted(
            {row.stream_arn for row in rows if row.stream_arn.startswith(found.stream_prefix)}
            - {current}
        )
        if current is None and not older:
            raise StreamNotFound(f"table {table!r} has no stream enabled")
        if older and current is not None:
            await self._stream_start(current, 0.0)
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
                await self._stream_start(current, 0.0)
                followed = True
            end = await self._read_stream(current, followed=followed)
            new = await self._next_stream(table, current)
            # Stored before the old stream's checkpoints go: a crash in between must still
            # read the new stream from its start.
            await self._stream_start(new, 0.0)
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

    async def _table_stream(self, table: str) -> TableStream:
        """DescribeTable, retried on throttling, 5xx and network errors."""

        def failed(exc: BaseException, attempt: int) -> None:
            log.warning(
                "source_call_failed",
                extra={"stream": self.name, "error": str(exc), "attempt": attempt},
            )

        return await self.retry.call(
            lambda: self.parts.client.table_stream(table),
            retry_on=(Throttled, ServiceError),
            on_failure=failed,
        )

    async def _next_stream(self, table: str, current: str | None) -> str:
        """Wait until the table has an enabled stream other than ``current``."""

        async def check() -> str:
            try:
                found = await self._table_stream(table)
                arn = found.stream_arn
                problem = "no stream enabled" if arn is None else None
            except StreamNotFound as exc:  # the table itself is gone
                arn, problem = None, str(exc)
            if arn is not None and arn != current:
                return arn
            raise _NoNewStream(problem or "the table still lists the ended stream")

        def waiting(exc: BaseException, attempt: int) -> None:
            if attempt == 1:
                log.error(
                    "stream_ended_waiting",
                    extra={
                        "stream": self.name,
                        "table": table,
                        "stream_arn": current,
                        "error": str(exc),
                        "note": "every readable record was read; waiting for a new stream",
                    },
                )

        return await self._new_stream_poll.call(check, retry_on=(_NoNewStream,), on_failure=waiting)

    async def _retire(self, arn: str) -> None:
        """Forget a stream that was read to its end (or is gone): drop its checkpoints."""
        if self.graph is not None and self.graph.stream_arn == arn:
            self.graph = None
        store = self.parts.store
        stored = await self._store_call(lambda: store.load(arn))
        rows = [CheckpointRow(arn, sid, None, True) for sid, c in stored.items() if not c.finished]
        await self.parts.checkpoints.save(rows, stream=self.name)
        await self._store_call(lambda: store.prune(arn, []))

    # -- one stream ARN ---------------------------------------------------------------------

    async def _read_stream(self, arn: str, *, followed: bool) -> str:
        """Read ``arn`` until it is disabled and read to its end ("disabled") or gone."""
        store = self.parts.store
        checkpoints = await self._store_call(lambda: store.load(arn))
        start = await self._starting_point(arn, followed)
        graph = ShardGraph(self.parts, arn, checkpoints, start, self.status)
        self.graph = graph
        graph.warn_old_checkpoints()
        log.info(
            "stream_resolved",
            extra={
                "stream": self.name,
                "stream_arn": arn,
                "starting_position": "TRIM_HORIZON" if followed else self.config.starting_position,
                "checkpoints": len(checkpoints),
            },
        )
        return await graph.read()

    async def _starting_point(self, arn: str, followed: bool) -> StreamStart:
        """Where shards without a checkpoint start: they skip records older than its time.

        The stream's start is stored once (``stream_start`` keeps the first value): LATEST
        stores the time of the first start, a followed stream stores 0 (its beginning).
        """
        position = self.config.starting_position
        if followed:
            stored, _ = await self._stream_start(arn, 0.0)
            return StreamStart(stored or None)
        if position == "LATEST":
            stored, first_run = await self._stream_start(arn, time.time())
            return StreamStart(stored or None, first_run)
        if position == "AT_TIMESTAMP":
            wanted = self.config.starting_timestamp
            assert wanted is not None
            stored, _ = await self._stream_start(arn, wanted)
            return StreamStart(min(stored, wanted) or None)
        return StreamStart()

    async def _stream_start(self, arn: str, timestamp: float) -> tuple[float, bool]:
        store = self.parts.store
        return await self._store_call(lambda: store.stream_start(arn, timestamp))

    async def _store_call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """A checkpoint store read, retried until the store answers (it holds the stream)."""
        return await self.parts.checkpoints.call(fn, stream=self.name)
