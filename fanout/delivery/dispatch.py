"""Routing the pages of one shard: through each sink's filter to its lane, tracked by a ticket.

Malformed records (no ``dynamodb.Keys`` or ``SequenceNumber``) cannot be delivered: they are
set aside, written to every routed sink's dead-letter destination with the reason, before
their page can settle; the other records of the page go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fanout.delivery.giveup import DeadLetterWriter
from fanout.delivery.lane import AnyLane, close_all, open_lane, run_all
from fanout.delivery.private import private_parts
from fanout.delivery.route import Route
from fanout.delivery.telemetry import LaneTelemetry
from fanout.delivery.windows import WindowLane
from fanout.filters import compile_split
from fanout.observe.metrics import Metrics
from fanout.progress.store import WindowState
from fanout.progress.tracker import ShardProgress
from fanout.records import Record

log = logging.getLogger("fanout.dispatch")

MALFORMED_RECORD = "MalformedRecord"
"""The error class stored with dead-lettered malformed records."""


def malformed(record: Any) -> str | None:
    """Why ``record`` cannot be delivered (no ``dynamodb.Keys`` or ``SequenceNumber``), or None."""
    if not isinstance(record, dict):
        return f"record is a {type(record).__name__}, not an object"
    ddb = record.get("dynamodb")
    if not isinstance(ddb, dict):
        return "record has no 'dynamodb' object"
    seq = ddb.get("SequenceNumber")
    if not isinstance(seq, str) or not seq:
        return "record has no dynamodb.SequenceNumber"
    keys = ddb.get("Keys")
    if not isinstance(keys, dict) or not keys:
        return "record has no dynamodb.Keys"
    return None


def _all_well_formed(records: list[Record]) -> bool:
    """The hot path's one cheap check per record: ``dynamodb.Keys`` and ``SequenceNumber``."""
    try:
        for record in records:
            ddb = record["dynamodb"]
            if not (ddb["Keys"] and ddb["SequenceNumber"]):
                return False
    except (KeyError, TypeError):
        return False
    return True


class ShardDispatch:
    """Routes each page of one shard to its sinks' lanes and tracks it with a ticket."""

    def __init__(
        self,
        progress: ShardProgress,
        routes: list[Route],
        metrics: Metrics,
        *,
        windows: Mapping[str, WindowState] | None = None,
        persist: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """``windows``: the window states stored with the shard's checkpoint, by sink;
        ``persist`` writes the shard's checkpoint now (after a window's final call)."""
        self.progress = progress
        self.routes = routes
        self.lanes: list[AnyLane] = []
        self.windows: list[WindowLane] = []
        for route in routes:
            size = getattr(route.config, "tumbling_window", None)
            if size is None:
                self.lanes.append(open_lane(route, progress))
                continue
            stored = (windows or {}).get(route.name)
            lane = WindowLane(route, progress, size, stored, persist)
            self.windows.append(lane)
            self.lanes.append(lane)
        stream = progress.stream_name
        private = [route.private for route in routes]
        # which routes need records of their own (empty: no route changes records)
        self._private = private if any(private) else []
        self._filtered = [
            metrics.sink_records.labels(stream, route.name, "filtered") for route in routes
        ]
        # every sink's filter in one pass over a page (the same function for every shard)
        self._split = compile_split(tuple(route.predicate for route in routes))

    async def submit(
        self,
        records: list[Record],
        last_seq: str | None,
        weight: int = 0,
        reread: Callable[[], list[Record]] | None = None,
    ) -> None:
        """Hand a page to every sink. ``records`` may be fewer than the page (skipped ones);
        ``last_seq`` is the page's last sequence number, settled once all are delivered
        (None: no record of it has one; the frontier stays). ``weight`` is the page's share
        of the byte budget, given back when it is settled. ``reread`` parses the page again
        as it was read: kept on the ticket while a sink that changes its records may need it.

        Malformed records are written to every routed sink's dead-letter destination, with
        the reason, before the page can settle; the others go on.
        """
        ticket = self.progress.open(last_seq, weight)
        if self._private:
            ticket.reread = reread
        if not _all_well_formed(records):
            records = await self._set_aside_malformed(records)
        parts, unrouted = self._split(records)
        if unrouted:
            # The records no sink takes live as long as the page's ticket, and are freed
            # with the rest of the page (docs/performance.md, section 7).
            ticket.unrouted = unrouted
        for matched, filtered in zip(parts, self._filtered, strict=True):
            if len(matched) != len(records):
                filtered.inc(len(records) - len(matched))
        if self._private:
            parts = private_parts(parts, self._private)
        for lane, part in zip(self.lanes, parts, strict=True):
            if part:
                ticket.pending += len(part)
                await lane.put(ticket, part)
        ticket.settle(1)  # release the reader's hold

    async def _set_aside_malformed(self, records: list[Record]) -> list[Record]:
        good: list[Record] = []
        bad: list[tuple[Record, str]] = []
        for record in records:
            reason = malformed(record)
            if reason is None:
                good.append(record)
            else:
                bad.append((record, reason))
        now = time.time()
        progress = self.progress
        for route in self.routes:
            telemetry = LaneTelemetry(route, progress)
            writer = DeadLetterWriter(route, progress, telemetry)
            for record, reason in bad:
                log.error("record_malformed", extra=telemetry.fields(record, reason=reason))
            entries = [
                writer.entry(
                    record,
                    error_class=MALFORMED_RECORD,
                    message=reason,
                    attempts=0,
                    first_failure_at=now,
                    last_failure_at=now,
                )
                for record, reason in bad
            ]
            await writer.write(entries)
        return good

    async def end_windows(self) -> None:
        """The shard ended and every record is settled: each open tumbling window gets its
        final call (before the shard is written as finished)."""
        for lane in self.windows:
            await lane.end_shard()

    def close(self) -> None:
        """No more pages will come; the lanes return once drained."""
        close_all(self.lanes)

    async def run(self) -> None:
        """Run every lane until closed and drained."""
        await run_all(self.lanes)
