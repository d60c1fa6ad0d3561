"""Start or resume a backfill, run its segments, save their progress.

1. Fix the stream position before the first Scan call: the stream's start time is stored
   (if no worker stored it yet) at the backfill's version time, so the worker streams every
   change made after the backfill started; a worker that already runs must run the sinks
   (the application's recorded sink set), else the changes it checkpoints would skip them.
2. Create the backfill's row (its version time is kept for good) or take an unfinished one
   of the same stream and sinks over, then Scan every segment not done from its saved
   position, within the read-capacity budget.
3. Every ``SAVE_INTERVAL_S``, and at the end, save how far each segment's settled pages
   reach; the last save marks it done and gives it up.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from fanout.aws.clients import AwsClients
from fanout.backfill.budget import ReadBudget
from fanout.backfill.records import RecordMaker, version_time
from fanout.backfill.routes import build_routes
from fanout.backfill.segments import SegmentScan, Target
from fanout.config import Config
from fanout.delivery import Route
from fanout.errors import ConfigError, FanoutError
from fanout.httpclient import HttpClient
from fanout.observe.metrics import Metrics
from fanout.progress.open import open_store
from fanout.progress.sinkset import parse_sink_set
from fanout.progress.store import BackfillRow, BackfillState, CheckpointStore, SegmentRow

log = logging.getLogger("fanout.backfill")

SAVE_INTERVAL_S = 1.0
STALE_OWNER_S = 30.0
"""An owner that has not written for this long is taken to be gone (another host)."""

UNSUPPORTED_TYPES = frozenset({"aggregate"})


class BackfillError(FanoutError):
    """The backfill cannot start or go on."""


class BackfillBusy(BackfillError):
    """Another live process runs the backfill."""


@dataclass
class Options:
    """How to run: from the config's ``backfill`` section unless overridden."""

    segments: int
    read_capacity: float
    consistent_read: bool
    progress_interval: float


@dataclass
class Outcome:
    """What a run did."""

    backfill_id: str
    resumed: bool
    items: int = 0  # items read by this run
    total_items: int = 0  # items read by every run
    consumed: float = 0.0  # read capacity units consumed by this run
    seconds: float = 0.0
    read_capacity: float = 0.0
    segments: int = 0
    done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        rate = self.items / self.seconds if self.seconds else 0.0
        rcu = self.consumed / self.seconds if self.seconds else 0.0
        return {
            "backfill": self.backfill_id,
            "resumed": self.resumed,
            "done": self.done,
            "segments": self.segments,
            "items": self.items,
            "total_items": self.total_items,
            "seconds": round(self.seconds, 3),
            "items_per_s": round(rate, 1),
            "consumed_rcu": round(self.consumed, 1),
            "rcu_per_s": round(rcu, 2),
            "read_capacity": self.read_capacity,
        }


def owner_id() -> str:
    """This process as a backfill's owner: host, pid, random."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_gone(row: BackfillRow, now: float) -> bool:
    """True when nobody runs ``row``: no owner, an owner process of this host that is dead,
    or an owner that has not written for ``STALE_OWNER_S``."""
    if row.owner is None:
        return True
    host, _, rest = row.owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host == socket.gethostname() and pid_text.isdigit():
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    return now - row.owner_at > STALE_OWNER_S


def first_error(exc: Exception) -> Exception:
    """The first error inside (nested) exception groups, or ``exc`` itself."""
    while isinstance(exc, ExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def table_of(config: Config, stream: str) -> str:
    cfg = config.settings.streams[stream]
    if cfg.table:
        return cfg.table
    assert cfg.stream_arn is not None
    return cfg.stream_arn.split(":", 5)[5].split("/")[1]


def pick_stream(config: Config, sinks: list[str], stream: str | None) -> str:
    """The stream whose table is loaded into ``sinks``.

    Raises:
        ConfigError: an unknown sink or stream, a sink type that cannot be backfilled, or a
            stream that feeds not every sink (or several that could be meant).
    """
    if not sinks:
        raise ConfigError("--sink", "name at least one sink")
    for name in sinks:
        if name not in config.sinks:
            raise ConfigError("--sink", f"unknown sink {name!r}")
        if config.sinks[name].type in UNSUPPORTED_TYPES:
            raise ConfigError(
                f"sinks.{name}",
                f"a backfill cannot load {config.sinks[name].type} sinks "
                "(their totals are built from changes, see docs/backfill.md)",
            )
    names = list(config.settings.streams)
    feeding = [s for s in names if all(s in (config.sinks[n].streams or names) for n in sinks)]
    if stream is not None:
        if stream not in config.settings.streams:
            raise ConfigError("--stream", f"unknown stream {stream!r}")
        if stream not in feeding:
            raise ConfigError("--stream", f"stream {stream!r} does not feed every --sink")
        return stream
    if len(feeding) != 1:
        what = "no stream feeds every --sink" if not feeding else "several streams: pass --stream"
        raise ConfigError("--stream", what)
    return feeding[0]


class Backfill:
    """One backfill run: of ``sinks`` from ``stream``'s table.

    Args:
        config: the whole configuration.
        sinks: the sinks to load.
        stream: the stream (default: the one feeding every sink).
        options: segments and budget.
        origin: ``cli`` or ``worker``.
        store: the application's checkpoint store (default: the configured one; opened and
            closed here unless given).
        aws: the process's AWS clients (closed here unless given).
        on_progress: called about once a second, after the segments' progress is saved.
        owner: this process as the backfill's owner (default: host, pid, random).
        routes: the sinks' routes (a worker's own); default: built and started here.
        backfill_id: the id of a new backfill (default: its start time and stream); a
            worker's ``on_first_start`` backfill has a fixed one, so only one worker
            creates it.
        metrics: the metric families the deliveries fill (a worker's own; default new).
    """

    def __init__(
        self,
        config: Config,
        sinks: list[str],
        *,
        stream: str | None = None,
        options: Options | None = None,
        origin: str = "cli",
        store: CheckpointStore | None = None,
        aws: AwsClients | None = None,
        on_progress: Callable[[Backfill], None] | None = None,
        owner: str | None = None,
        routes: list[Route] | None = None,
        backfill_id: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.sinks = sorted(set(sinks))
        self.stream = pick_stream(config, self.sinks, stream)
        section = config.settings.backfill
        self.options = options or Options(
            section.segments,
            section.read_capacity,
            section.consistent_read,
            section.progress_interval,
        )
        self.origin = origin
        self._own_store = store is None
        self._own_aws = aws is None
        self.aws = aws or AwsClients()
        self.store = store if store is not None else open_store(config, self.aws)
        self.on_progress = on_progress
        self.owner = owner or owner_id()
        self.metrics = metrics or Metrics()
        self.scans: list[SegmentScan] = []
        self.budget = ReadBudget(self.options.read_capacity)
        self.item_count: int | None = None  # the table's ItemCount (approximate)
        self.row: BackfillRow | None = None
        self.saved: list[SegmentRow] = []  # the segments' progress as last saved
        self.started = time.monotonic()
        self._routes_given = routes
        self.backfill_id = backfill_id

    # -- progress -----------------------------------------------------------------------------

    @property
    def items_read(self) -> int:
        return sum(s.read for s in self.scans)

    @property
    def items_this_run(self) -> int:
        return sum(s.read - s.resumed_at for s in self.scans)

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> Outcome:
        """Run the backfill to its end (or resume it). Raises on failure; progress is saved
        (shielded) whatever happens, and the backfill is given up for another run."""
        async with AsyncExitStack() as stack:
            if self._own_aws:
                stack.push_async_callback(self.aws.aclose)
            if self._own_store:
                await self.store.open()
                stack.push_async_callback(self.store.aclose)
            stream_cfg = self.config.settings.streams[self.stream]
            table = table_of(self.config, self.stream)
            ddb = await self.aws.client(
                "dynamodb", region=stream_cfg.region, endpoint_url=stream_cfg.endpoint_url
            )
            described = (await ddb.describe_table(TableName=table))["Table"]
            key_names = [k["AttributeName"] for k in described["KeySchema"]]
            self.item_count = described.get("ItemCount")
            stream_arn = stream_cfg.stream_arn or described.get("LatestStreamArn")
            if not stream_arn:
                raise BackfillError(f"table {table} has no stream to stitch the backfill to")
            await self._check_sinks_streamed()
            state, resumed = await self._start(table, stream_arn)
            row = state.row
            self.row = row
            region = stream_cfg.region or stream_arn.split(":")[3]
            maker = RecordMaker(row.backfill_id, key_names, stream_arn, region, row.version_time)
            target = Target(
                table,
                row.segments,
                self.options.consistent_read,
                self.stream,
                stream_arn,
                row.backfill_id,
            )
            http = HttpClient()
            stack.push_async_callback(http.aclose)
            if self._routes_given is not None:
                routes = [r for r in self._routes_given if r.name in self.sinks]
            else:
                routes = await build_routes(
                    self.config, self.sinks, self.aws, http, self.metrics, stack
                )
            self.scans = [
                SegmentScan(
                    target,
                    n,
                    state.segments.get(n),
                    ddb.scan,
                    self.budget,
                    maker,
                    routes,
                    self.metrics,
                )
                for n in range(row.segments)
            ]
            outcome = Outcome(
                row.backfill_id,
                resumed,
                read_capacity=self.options.read_capacity,
                segments=row.segments,
            )
            log.info(
                "backfill_started",
                extra={
                    "backfill": row.backfill_id,
                    "resumed": resumed,
                    "stream": self.stream,
                    "table": table,
                    "sinks": self.sinks,
                    "segments": row.segments,
                    "segments_done": sum(1 for s in state.segments.values() if s.done),
                    "items_done": sum(s.items for s in state.segments.values()),
                    "read_capacity": self.options.read_capacity,
                    "version_time": row.version_time,
                },
            )
            self.started = time.monotonic()
            self.budget = ReadBudget(self.options.read_capacity)
            size, count = described.get("TableSizeBytes", 0), described.get("ItemCount", 0)
            if size and count:
                self.budget.assume(size / count, self.options.consistent_read)
            for scan in self.scans:
                scan.budget = self.budget
            done = False
            try:
                async with anyio.create_task_group() as group:
                    group.start_soon(self._save_every_interval)
                    async with anyio.create_task_group() as segments:
                        for scan in self.scans:
                            segments.start_soon(scan.run)
                    done = True
                    group.cancel_scope.cancel()
            except Exception as exc:  # a task group's errors: the first one, as itself
                inner = first_error(exc)
                if inner is exc:
                    raise
                raise inner from exc
            finally:
                with anyio.CancelScope(shield=True):
                    saved = await self._save(done=done, release=True)
                    if done and not saved:
                        raise BackfillError(f"backfill {row.backfill_id} was taken over")
            outcome.done = done
            outcome.items = self.items_this_run
            outcome.total_items = self.items_read
            outcome.consumed = self.budget.consumed
            outcome.seconds = time.monotonic() - self.started
            log.info("backfill_finished", extra=outcome.as_dict())
            return outcome
        raise AssertionError("unreachable")  # pragma: no cover

    async def _check_sinks_streamed(self) -> None:
        """A worker that already ran must have run every sink: else it checkpoints changes
        made during the backfill without delivering them to the new sink."""
        recorded = (await self.store.scan()).sinks
        if recorded is None:
            return
        streamed = parse_sink_set(recorded)
        missing = [name for name in self.sinks if name not in streamed]
        if missing:
            raise ConfigError(
                "--sink",
                f"the application's workers do not run {', '.join(missing)} yet: start "
                "them with this config first, so changes made during the backfill reach it",
            )

    async def _start(self, table: str, stream_arn: str) -> tuple[BackfillState, bool]:
        now = time.time()
        sinks = ",".join(self.sinks)
        for state in await self.store.backfills():
            row = state.row
            if row.done or row.stream != self.stream or row.sinks != sinks:
                continue
            if self.backfill_id is not None and row.backfill_id != self.backfill_id:
                continue
            if not owner_gone(row, now):
                raise BackfillBusy(
                    f"backfill {row.backfill_id} of {sinks} is running in {row.owner}"
                )
            taken = await self.store.claim_backfill(
                replace(row, owner=self.owner, owner_at=now), row
            )
            if taken is None:
                raise BackfillBusy(f"backfill {row.backfill_id} was just taken by another run")
            if taken.segments != self.options.segments:
                log.info(
                    "backfill_segments_kept",
                    extra={"backfill": row.backfill_id, "segments": taken.segments},
                )
            return BackfillState(taken, state.segments), True
        created = version_time(now)
        # The stream position is fixed before the first Scan: a worker that has not stored
        # the stream's start yet starts at the backfill's version time.
        await self.store.stream_start(stream_arn, float(created))
        backfill_id = self.backfill_id or (
            f"{int(now)}-{re.sub(r'[^A-Za-z0-9_.-]', '-', self.stream)}"
        )
        row = BackfillRow(
            backfill_id,
            self.stream,
            table,
            sinks,
            self.options.segments,
            created,
            now,
            self.origin,
            owner=self.owner,
            owner_at=now,
        )
        claimed = await self.store.claim_backfill(row, None)
        if claimed is None:
            raise BackfillBusy(f"backfill {backfill_id} exists already")
        return BackfillState(claimed), False

    async def _save_every_interval(self) -> None:
        last: list[SegmentRow] = []
        while True:
            await anyio.sleep(SAVE_INTERVAL_S)
            rows = [scan.state() for scan in self.scans]
            changed = [row for row in rows if row not in last]
            if not await self._write(changed, done=False, release=False):
                raise BackfillError("the backfill was taken over by another run")
            last = self.saved = rows
            if self.on_progress is not None:
                self.on_progress(self)

    async def _save(self, *, done: bool, release: bool) -> bool:
        return await self._write([scan.state() for scan in self.scans], done=done, release=release)

    async def _write(self, rows: list[SegmentRow], *, done: bool, release: bool) -> bool:
        assert self.row is not None
        return await self.store.save_backfill(
            self.row.backfill_id, self.owner, rows, done=done, release=release
        )
