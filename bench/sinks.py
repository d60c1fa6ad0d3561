"""Sink types that exist only for the benchmark: they count, and optionally time, arrivals,
or never return (``bench-blocked``: everything read stays buffered).

``registry()`` offers them (``bench-count``, ``bench-latency``, ``bench-blocked``) beside
the installed sink types, so records reach them through the real pipeline: config
validation, filters, lanes, batching, delivery bookkeeping and checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

from fanout.config import SinkConfig
from fanout.records import Record
from fanout.sink import Failures, SinkContext

COUNT_TYPE = "bench-count"
LATENCY_TYPE = "bench-latency"
BLOCKED_TYPE = "bench-blocked"

# Arrivals in this process, for the benchmark driver that runs the worker.
counts: dict[str, int] = {}
# (seconds from the write to the sink, "written_at" stamp) for every timed record.
latencies: list[tuple[float, float]] = []


class CountSinkConfig(SinkConfig):
    type: Literal["bench-count"] = "bench-count"


class LatencySinkConfig(SinkConfig):
    type: Literal["bench-latency"] = "bench-latency"
    stamp: str = "written_at"


class BlockedSinkConfig(SinkConfig):
    type: Literal["bench-blocked"] = "bench-blocked"


class CountSink:
    """Counts the records it receives and touches nothing else (a null sink)."""

    ordered = True

    def __init__(self, name: str) -> None:
        self.name = name
        counts.setdefault(name, 0)

    async def start(self) -> None:
        return None

    async def send(self, batch: Sequence[Record]) -> Failures:
        counts[self.name] += len(batch)
        return {}

    async def stop(self) -> None:
        return None


class LatencySink(CountSink):
    """Records, per record, the time from the write stamped in its NewImage to its arrival."""

    def __init__(self, name: str, stamp: str) -> None:
        super().__init__(name)
        self.stamp = stamp

    async def send(self, batch: Sequence[Record]) -> Failures:
        now = time.time()
        for record in batch:
            image = record["dynamodb"].get("NewImage") or {}
            value = image.get(self.stamp)
            if value is not None:
                written = float(value["N"])
                latencies.append((now - written, written))
        counts[self.name] += len(batch)
        return {}


class BlockedSink(CountSink):
    """Takes a batch and never answers: a sink that hangs for good."""

    async def send(self, batch: Sequence[Record]) -> Failures:
        import anyio

        await anyio.sleep_forever()
        return {}


def _build_blocked(name: str, config: Any, context: SinkContext) -> BlockedSink:
    return BlockedSink(name)


def _build_count(name: str, config: Any, context: SinkContext) -> CountSink:
    return CountSink(name)


def _build_latency(name: str, config: Any, context: SinkContext) -> LatencySink:
    return LatencySink(name, config.stamp)


def _sink_types() -> tuple[Any, Any, Any]:
    from fanout.sink import SinkType

    return (
        SinkType(CountSinkConfig, _build_count),
        SinkType(LatencySinkConfig, _build_latency),
        SinkType(BlockedSinkConfig, _build_blocked),
    )


COUNT, LATENCY, BLOCKED = _sink_types()


def registry() -> Any:
    """The sink types a benchmark config may use: the bench sinks, then every installed one."""
    from fanout.sink import SinkRegistry

    return SinkRegistry({COUNT_TYPE: COUNT, LATENCY_TYPE: LATENCY, BLOCKED_TYPE: BLOCKED})
