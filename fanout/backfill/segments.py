"""One Scan segment of a backfill: read its pages within the budget, hand each page to the
sinks as records, and tell how far the settled pages reach.

Pages go through the same delivery as stream pages (``ShardDispatch``: each sink's filter,
lane, retries, bisection and dead-letter destination). Each page is a ticket; the segment's
saved position is the ``LastEvaluatedKey`` of the last page whose records, and every
record before them, are settled. A backfill resumed from it reads again at most the pages
that were in flight.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import orjson

from fanout.backfill.budget import ReadBudget
from fanout.backfill.records import RecordMaker, parsed_key, wire_item
from fanout.delivery.dispatch import ShardDispatch
from fanout.delivery.route import Route
from fanout.observe.metrics import Metrics
from fanout.progress.store import SegmentRow
from fanout.progress.tracker import ShardProgress
from fanout.retry import RetryPolicy

log = logging.getLogger("fanout.backfill")

ScanCall = Callable[..., Awaitable[dict[str, Any]]]
"""``Scan`` of the table: keyword arguments as the DynamoDB API names them."""

# Errors of a Scan call that are worth another try (after botocore's own retries).
RETRYABLE = (
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
)
SCAN_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class Target:
    """What a segment scans: the table, its segmentation and how to read."""

    table: str
    total_segments: int
    consistent_read: bool
    stream_name: str
    stream_arn: str
    backfill_id: str


def _retryable(exc: Exception) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in RETRYABLE or status >= 500
    return isinstance(exc, BotoCoreError | OSError)


class SegmentScan:
    """Scans one segment from its saved position to its end.

    Args:
        target: the table and the backfill.
        segment: this segment's number.
        start: its saved progress (None: from its start).
        scan: the ``Scan`` call.
        budget: the read capacity budget shared by every segment.
        maker: turns items into records.
        routes: the sinks loaded.
        metrics: the metric families the lanes fill.
        backoff: the delay between attempts of a failed Scan call.
    """

    def __init__(
        self,
        target: Target,
        segment: int,
        start: SegmentRow | None,
        scan: ScanCall,
        budget: ReadBudget,
        maker: RecordMaker,
        routes: list[Route],
        metrics: Metrics,
        backoff: RetryPolicy | None = None,
    ) -> None:
        self.target = target
        self.segment = segment
        self.scan = scan
        self.budget = budget
        self.maker = maker
        self.routes = routes
        self.metrics = metrics
        self.backoff = backoff or RetryPolicy(0.1, 5.0, 0.5)
        saved = start or SegmentRow(target.backfill_id, segment, None, 0)
        self.saved = saved
        self.read = saved.items  # items read, settled or not
        self.resumed_at = saved.items
        self.progress = ShardProgress(
            target.stream_name,
            target.stream_arn,
            f"backfill:{target.backfill_id}:{segment}",
            None,
        )
        # ticket id -> (position after the page, items read up to it, last page)
        self._pages: dict[str, tuple[str | None, int, bool]] = {}

    def state(self) -> SegmentRow:
        """The segment's progress as far as settled pages reach."""
        frontier = self.progress.frontier
        if frontier is not None and frontier in self._pages:
            position, items, last = self._pages[frontier]
            for key in [k for k in self._pages if int(k) <= int(frontier)]:
                del self._pages[key]
            self.saved = SegmentRow(self.target.backfill_id, self.segment, position, items, last)
        return self.saved

    async def run(self) -> None:
        """Read every page of the segment and wait until all of them are settled."""
        if self.saved.done:
            return
        dispatch = ShardDispatch(self.progress, self.routes, self.metrics)
        async with anyio.create_task_group() as lanes:
            lanes.start_soon(dispatch.run)
            try:
                await self._read(dispatch)
            finally:
                dispatch.close()
        self.state()

    async def _read(self, dispatch: ShardDispatch) -> None:
        target = self.target
        position = self.saved.position
        start_key = parsed_key(orjson.loads(position)) if position else None
        page = 0
        while True:
            answer = await self._page(start_key)
            items: list[dict[str, Any]] = answer.get("Items", [])
            read_at = time.time()
            records = [self.maker.record(item, read_at) for item in items]
            last = answer.get("LastEvaluatedKey") or None
            self.read += len(items)
            page += 1
            ticket = str(page)
            self._pages[ticket] = (
                orjson.dumps(wire_item(last)).decode() if last else None,
                self.read,
                last is None,
            )
            await dispatch.submit(records, ticket)
            if last is None:
                log.debug(
                    "backfill_segment_read",
                    extra={"backfill": target.backfill_id, "segment": self.segment},
                )
                return
            start_key = last

    async def _page(self, start_key: dict[str, Any] | None) -> dict[str, Any]:
        target = self.target
        limit, estimate = self.budget.page(target.total_segments)
        kwargs: dict[str, Any] = {
            "TableName": target.table,
            "Segment": self.segment,
            "TotalSegments": target.total_segments,
            "Limit": limit,
            "ConsistentRead": target.consistent_read,
            "ReturnConsumedCapacity": "TOTAL",
        }
        if start_key is not None:
            kwargs["ExclusiveStartKey"] = start_key
        attempt = 0
        while True:
            await self.budget.reserve(estimate)
            try:
                answer = await self.scan(**kwargs)
            except Exception as exc:
                self.budget.charge(estimate, 0.0, 0)
                attempt += 1
                if attempt >= SCAN_ATTEMPTS or not _retryable(exc):
                    raise
                log.warning(
                    "backfill_scan_retry",
                    extra={
                        "backfill": target.backfill_id,
                        "segment": self.segment,
                        "attempt": attempt,
                        "error": f"{type(exc).__name__}: {exc}",
                    },
                )
                await self.backoff.wait(attempt)
                continue
            consumed = float(answer.get("ConsumedCapacity", {}).get("CapacityUnits", 0.0))
            self.budget.charge(estimate, consumed, len(answer.get("Items", [])))
            return answer
