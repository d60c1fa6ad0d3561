"""DescribeStream listings of one stream ARN: every page of a full listing, retried from
where it stopped, and the targeted lookup of an ended shard's children."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

from fanout.errors import SourceError, StreamNotFound
from fanout.observe.metrics import Metrics
from fanout.retry import RetryPolicy
from fanout.stream.api import Shard, StreamsAPI, retry_call
from fanout.stream.parts import DiscoveryStatus

log = logging.getLogger("fanout.stream")

# Targeted child lookups after a shard ended before leaving it to a full discovery.
_CHILD_LOOKUPS = 5

ACTIVE = ("ENABLED", "ENABLING")


@dataclass(slots=True)
class Listing:
    """One complete DescribeStream listing."""

    shards: list[Shard]
    status: str


class _NoChildrenYet(Exception):
    """An ended shard's children are not listed yet."""


async def list_shards(
    client: StreamsAPI,
    stream_arn: str,
    *,
    name: str,
    retry: RetryPolicy,
    interval: float,
    status: DiscoveryStatus,
    metrics: Metrics,
    on_page: Callable[[list[Shard]], None],
) -> Listing | None:
    """Every shard of the stream (all DescribeStream pages); None if the stream is gone.

    A page that fails is retried (with backoff, never waiting longer than ``interval``) from
    where the listing stopped; pages already read are handed to ``on_page`` meanwhile.
    ``status`` records the latest failure, and when a listing completed.
    """
    shards: list[Shard] = []
    start: str | None = None
    failures = 0
    pages = 0
    failure: list[tuple[BaseException, int]] = []

    def failed(exc: BaseException, attempt: int) -> None:
        nonlocal failures
        failures += 1
        status.error = str(exc)
        metrics.discovery_errors.labels(name).inc()
        failure.append((exc, attempt))

    async def wait(seconds: float) -> None:
        # The wait is known only here: log the failure with it, then wait (never longer
        # than a discovery interval).
        exc, attempt = failure.pop()
        delay = min(seconds, interval)
        log.error(
            "discovery_failed",
            extra={
                "stream": name,
                "error": str(exc),
                "shards_listed": len(shards),
                "pages_read": pages,
                "attempt": attempt,
                "retry_in_s": round(delay, 2),
            },
        )
        await retry.sleep(delay)

    pacing = replace(retry, sleep=wait)
    while True:
        try:
            desc = await retry_call(
                pacing,
                partial(client.describe_stream, stream_arn, exclusive_start_shard_id=start),
                on_failure=failed,
            )
        except StreamNotFound:
            return None
        pages += 1
        page = [Shard.from_wire(raw) for raw in desc.get("Shards", [])]
        shards.extend(page)
        on_page(page)
        start = desc.get("LastEvaluatedShardId")
        if not start:
            if failures:
                log.info(
                    "discovery_recovered",
                    extra={"stream": name, "failures": failures, "pages": pages},
                )
            status.discovered_at, status.error = time.monotonic(), None
            return Listing(shards, str(desc.get("StreamStatus", "ENABLED")))


async def lookup_children(
    client: StreamsAPI,
    stream_arn: str,
    shard_id: str,
    *,
    name: str,
    retry: RetryPolicy,
    lookups: RetryPolicy,
) -> list[Shard] | None:
    """The ended shard's children (DescribeStream with a CHILD_SHARDS filter): empty when
    none is listed after a few lookups (``lookups`` paces them) or they keep failing, None
    when the stream is gone."""

    def failed(exc: BaseException, attempt: int) -> None:
        log.info(
            "child_lookup_failed",
            extra={"stream": name, "shard": shard_id, "error": str(exc)},
        )

    async def lookup() -> list[Shard]:
        desc = await retry_call(
            retry,
            lambda: client.describe_stream(stream_arn, child_shards_of=shard_id),
            on_failure=failed,
            attempts=_CHILD_LOOKUPS,
        )
        children = [Shard.from_wire(raw) for raw in desc.get("Shards", [])]
        children = [c for c in children if c.parent_id == shard_id]
        if not children and desc.get("StreamStatus", "ENABLED") in ACTIVE:
            raise _NoChildrenYet  # a disabled stream gets no new shards: stop asking
        return children

    try:
        return await lookups.call(lookup, retry_on=(_NoChildrenYet,), attempts=_CHILD_LOOKUPS)
    except StreamNotFound:
        return None
    except (SourceError, _NoChildrenYet):
        return []
