"""The append-only measures: min, max and latest.

Each change of an item that is delivered offers its values to its row with a conditional
UpdateItem (``min``: if lower, ``max``: if higher, ``latest``: if its stamp is newer), on the
condition that the row exists, so a replay changes nothing and no row is created for them
alone. They are never retracted by a MODIFY or REMOVE (docs/aggregate.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anyio
from botocore.exceptions import ClientError

from fanout.sink import Failure
from sinks.aggregate.change import Change, Extreme, RowKey, number, stamp_text
from sinks.aggregate.metrics import SinkMetrics
from sinks.aggregate.plan import Writer
from sinks.aggregate.tables import (
    NETWORK_ERRORS,
    THROTTLE_CODES,
    describe,
    error_code,
    unreachable,
)

CONCURRENCY = 8  # conditional updates in flight per send()


def better(candidate: Extreme, current: Extreme) -> bool:
    """Whether ``candidate`` should replace ``current`` for their measure."""
    if candidate.kind == "latest":
        return candidate.stamp > current.stamp
    a, b = number(candidate.value["N"]), number(current.value["N"])
    return a < b if candidate.kind == "min" else a > b


async def raise_extremes(
    client: Any, writer: Writer, metrics: SinkMetrics, changes: Iterable[tuple[str, Change]]
) -> dict[str, Failure]:
    """Offer the extremes of ``(item, change)`` pairs, the best per row and measure; the
    items whose update failed, with a failure (retryable unless DynamoDB refused it)."""
    best: dict[tuple[RowKey, str], Extreme] = {}
    owners: dict[tuple[RowKey, str], set[str]] = {}
    for item, change in changes:
        for extreme in change.extremes:
            slot = (extreme.row, extreme.measure)
            owners.setdefault(slot, set()).add(item)
            current = best.get(slot)
            if current is None or better(extreme, current):
                best[slot] = extreme
    failed: dict[str, Failure] = {}
    if not best:
        return failed
    limiter = anyio.CapacityLimiter(CONCURRENCY)

    async def offer(slot: tuple[RowKey, str], extreme: Extreme) -> None:
        stamp = stamp_text(extreme.stamp)
        update = writer.extreme_update(*slot, extreme.kind, extreme.value, stamp)
        async with limiter:
            try:
                await client.update_item(**update)
            except ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    return  # the row holds a better value, or no longer exists
                if error_code(exc) in THROTTLE_CODES:
                    metrics.throttles.inc()
                failure = Failure(unreachable(exc), describe(exc))
                failed.update(dict.fromkeys(owners[slot], failure))
            except NETWORK_ERRORS as exc:
                failed.update(dict.fromkeys(owners[slot], Failure(True, describe(exc))))

    async with anyio.create_task_group() as tg:
        for slot, extreme in best.items():
            tg.start_soon(offer, slot, extreme)
    return failed
