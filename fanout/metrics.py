"""Every Prometheus metric fanout exports, built on an injected registry.

Labels are ``stream`` and ``sink`` (plus ``outcome``/``reason``); never a shard id or a key:
shards roll over every few hours, and such labels would grow without bound.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)
_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The metric families, bound to one registry (a fresh one per test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.build_info = Info("fanout_build", "fanout version.", registry=r)
        self.records_read = Counter(
            "fanout_records_read_total", "Records read from the stream.", ["stream"], registry=r
        )
        self.get_records_calls = Counter(
            "fanout_get_records_calls_total",
            "GetRecords calls by outcome (records, empty, throttled, expired, error).",
            ["stream", "outcome"],
            registry=r,
        )
        self.iterator_age = Gauge(
            "fanout_iterator_age_seconds",
            "Age of the newest record read, max over the stream's shards (like Lambda's "
            "IteratorAge).",
            ["stream"],
            registry=r,
        )
        self.sink_records = Counter(
            "fanout_sink_records_total",
            "Records per sink by outcome (delivered, filtered, retried, dead_lettered).",
            ["stream", "sink", "outcome"],
            registry=r,
        )
        self.sink_send_seconds = Histogram(
            "fanout_sink_send_seconds",
            "Duration of one sink send() call.",
            ["sink"],
            buckets=_CALL_BUCKETS,
            registry=r,
        )
        self.sink_errors = Counter(
            "fanout_sink_errors_total",
            "Sink send() calls that raised.",
            ["sink"],
            registry=r,
        )
        self.end_to_end_lag = Histogram(
            "fanout_end_to_end_lag_seconds",
            "Seconds from the change (ApproximateCreationDateTime) to its delivery.",
            ["sink"],
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "fanout_retries_total", "Batches re-sent after a failure.", ["sink"], registry=r
        )
        self.dlq_writes = Counter(
            "fanout_dlq_records_total",
            "Records written to a dead-letter destination.",
            ["sink"],
            registry=r,
        )
        self.dlq_failures = Counter(
            "fanout_dlq_write_failures_total",
            "Failed dead-letter writes (the shard stops advancing until one succeeds).",
            ["sink"],
            registry=r,
        )
        self.in_flight = Gauge(
            "fanout_in_flight_records",
            "Records read and not yet settled for every sink.",
            ["stream"],
            registry=r,
        )
        self.shards = Gauge(
            "fanout_shards", "Shards by state (active, finished).", ["stream", "state"], registry=r
        )
        self.checkpoints = Counter(
            "fanout_checkpoints_written_total", "Checkpoint writes.", ["stream"], registry=r
        )
        self.checkpoint_failures = Counter(
            "fanout_checkpoint_failures_total", "Failed checkpoint writes.", registry=r
        )
        self.last_checkpoint = Gauge(
            "fanout_last_checkpoint_timestamp_seconds",
            "When a checkpoint was last written.",
            registry=r,
        )
        self.records_lost = Counter(
            "fanout_records_lost_total",
            "Records trimmed from the stream before they were read (data loss).",
            ["stream"],
            registry=r,
        )
        self.data_loss_events = Counter(
            "fanout_data_loss_events_total",
            "Times a gap (trimmed records or an expired checkpoint) was detected.",
            ["stream"],
            registry=r,
        )
        self.last_progress = Gauge(
            "fanout_last_progress_timestamp_seconds",
            "When the stream last settled a record or found its shards idle and caught up.",
            ["stream"],
            registry=r,
        )
        self.stalled_shards = Gauge(
            "fanout_stalled_shards",
            "Shards with pending records and no progress for longer than the stall timeout.",
            ["stream"],
            registry=r,
        )
        self.discovery_errors = Counter(
            "fanout_discovery_errors_total", "Failed DescribeStream rounds.", ["stream"], registry=r
        )

    def mark_progress(self, stream: str) -> None:
        self.last_progress.labels(stream).set(time.time())
