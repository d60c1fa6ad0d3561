"""What one lane reports: its metric children and the fields of its log lines."""

from __future__ import annotations

import time
from typing import Any

from fanout.delivery.route import Route
from fanout.progress.tracker import ShardProgress
from fanout.records import Record, change_time


class LaneTelemetry:
    """The metrics of one sink fed by one shard, labelled once, and its log fields.

    Metric names and labels are the worker's (stream and sink, never the shard); the shard
    only appears in log lines.
    """

    __slots__ = (
        "dead_lettered",
        "delivered",
        "dlq_failures",
        "dlq_writes",
        "errors",
        "lag",
        "retried",
        "retries",
        "send_seconds",
        "shard",
        "sink",
        "stream",
    )

    def __init__(self, route: Route, progress: ShardProgress) -> None:
        self.stream = progress.stream_name
        self.shard = progress.shard_id
        self.sink = route.name
        stream, sink, m = self.stream, self.sink, route.metrics
        self.delivered = m.sink_records.labels(stream, sink, "delivered")
        self.retried = m.sink_records.labels(stream, sink, "retried")
        self.dead_lettered = m.sink_records.labels(stream, sink, "dead_lettered")
        self.send_seconds = m.sink_send_seconds.labels(sink)
        self.errors = m.sink_errors.labels(sink)
        self.lag = m.end_to_end_lag.labels(sink)
        self.retries = m.retries.labels(sink)
        self.dlq_writes = m.dlq_writes.labels(sink)
        self.dlq_failures = m.dlq_failures.labels(sink)

    def count_delivered(self, count: int, sample: Record) -> None:
        """``count`` records were delivered; ``sample`` (one of them) gives the lag."""
        if count <= 0:
            return
        self.delivered.inc(count)
        created = change_time(sample)
        if created is not None:
            self.lag.observe(max(0.0, time.time() - created))

    def fields(self, record: Any, **more: Any) -> dict[str, Any]:
        """Log fields for a line about ``record``: stream, shard, sink, seq, plus ``more``."""
        ddb = record.get("dynamodb") if isinstance(record, dict) else None
        return {
            "stream": self.stream,
            "shard": self.shard,
            "sink": self.sink,
            "seq": ddb.get("SequenceNumber") if isinstance(ddb, dict) else None,
            **more,
        }
