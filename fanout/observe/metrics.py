"""Every Prometheus metric fanout exports, built on an injected registry.

Names follow Prometheus conventions: the ``fanout_`` prefix, base units (seconds), counters
end in ``_total``. Labels are ``stream`` and ``sink`` (plus ``outcome``/``state``); never a
shard id or an item key: shards roll over every few hours, and such labels would grow
without bound. ``docs/operations.md`` lists every metric with its meaning.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)
_LOOP_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

GET_RECORDS_OUTCOMES = ("records", "empty", "throttled", "expired", "error", "malformed")
SINK_OUTCOMES = ("delivered", "filtered", "retried", "dead_lettered")
SHARD_STATES = ("active", "finished")
LEASE_EVENTS = ("taken", "lost", "released", "renew_failed")


class Metrics:
    """The metric families, bound to one registry (a fresh one per test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.build_info = Info(
            "fanout_build", "fanout version and Python version (always 1).", registry=r
        )
        self.build_info.info({"version": _version(), "python": platform.python_version()})

        # -- reading ---------------------------------------------------------------------
        self.records_read = Counter(
            "fanout_records_read_total", "Records read from the stream.", ["stream"], registry=r
        )
        self.get_records_calls = Counter(
            "fanout_get_records_calls_total",
            "GetRecords calls by outcome (records, empty, throttled, expired, error, "
            "malformed: a 200 that is no GetRecords answer); every call is billed outside "
            "Lambda.",
            ["stream", "outcome"],
            registry=r,
        )
        self.iterator_age = Gauge(
            "fanout_iterator_age_seconds",
            "Age of the newest record read, max over the stream's shards (like Lambda's "
            "IteratorAge); 0 once every shard is caught up.",
            ["stream"],
            registry=r,
        )
        self.shards = Gauge(
            "fanout_shards", "Shards by state (active, finished).", ["stream", "state"], registry=r
        )
        self.discovery_errors = Counter(
            "fanout_discovery_errors_total", "Failed DescribeStream rounds.", ["stream"], registry=r
        )
        self.records_lost = Counter(
            "fanout_records_lost_total",
            "Records trimmed from the stream before they were read, as far as they can be "
            "counted (estimated from the sequence numbers around each gap; docs/shards.md).",
            ["stream"],
            registry=r,
        )
        self.data_loss_events = Counter(
            "fanout_data_loss_events_total",
            "Gaps where records were lost before they were read: trimmed from the stream "
            "(an expired checkpoint, TrimmedDataAccessException) or a shard gone with "
            "unread records.",
            ["stream"],
            registry=r,
        )

        # -- the byte budget -------------------------------------------------------------
        self.buffered_bytes = Gauge(
            "fanout_buffered_bytes",
            "Estimated memory of the records read and not settled yet by every sink (and of "
            "the pages being read): what max_buffered_bytes bounds.",
            registry=r,
        )
        self.buffered_bytes_limit = Gauge(
            "fanout_buffered_bytes_limit",
            "max_buffered_bytes: the byte budget of buffered records.",
            registry=r,
        )
        self.budget_wait = Counter(
            "fanout_budget_wait_seconds_total",
            "Seconds shard readers waited for room in the byte budget before reading a page, "
            "summed over the stream's shards.",
            ["stream"],
            registry=r,
        )

        # -- delivery --------------------------------------------------------------------
        self.sink_records = Counter(
            "fanout_sink_records_total",
            "Records per sink by outcome: delivered, filtered (not matched by the sink's "
            "filters), retried (one per record and retry round), dead_lettered.",
            ["stream", "sink", "outcome"],
            registry=r,
        )
        self.sink_send_seconds = Histogram(
            "fanout_sink_send_seconds",
            "Duration of one sink send() call (successful or not).",
            ["sink"],
            buckets=_CALL_BUCKETS,
            registry=r,
        )
        self.sink_errors = Counter(
            "fanout_sink_errors_total",
            "Sink send() calls that raised (the whole batch failed).",
            ["sink"],
            registry=r,
        )
        self.end_to_end_lag = Histogram(
            "fanout_end_to_end_lag_seconds",
            "Seconds from the change (ApproximateCreationDateTime) to its delivery, observed "
            "once per delivered batch on its oldest record.",
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
        self.sink_entry_failures = Counter(
            "fanout_sink_entry_failures_total",
            "Records a sink's destination did not take, by the destination's error code "
            "(e.g. ThrottlingException, InvalidParameterValue, http_429, MessageTooLarge); "
            "each is a retried or dead-lettered record.",
            ["sink", "code"],
            registry=r,
        )
        self.sink_claim_checks = Counter(
            "fanout_sink_claim_checks_total",
            "Records too large for one message whose body was put to S3 and sent as a "
            "pointer (large_messages).",
            ["sink"],
            registry=r,
        )
        self.in_flight = Gauge(
            "fanout_in_flight_records",
            "Record deliveries (one per record and sink it was routed to) read from the "
            "stream and not settled yet.",
            ["stream"],
            registry=r,
        )

        # -- progress and checkpoints ----------------------------------------------------
        self.checkpoints = Counter(
            "fanout_checkpoints_written_total",
            "Shard checkpoints written.",
            ["stream"],
            registry=r,
        )
        self.checkpoint_failures = Counter(
            "fanout_checkpoint_failures_total", "Failed checkpoint writes.", registry=r
        )
        self.last_checkpoint = Gauge(
            "fanout_last_checkpoint_timestamp_seconds",
            "When the checkpoint store was last brought up to date (every settled position "
            "written, or nothing to write).",
            registry=r,
        )
        self._checkpoint_current_at = time.time()
        self.checkpoint_age = Gauge(
            "fanout_checkpoint_age_seconds",
            "Seconds since the checkpoint store was last brought up to date; grows while "
            "checkpoint writes fail.",
            registry=r,
        )
        self.checkpoint_age.set_function(lambda: time.time() - self._checkpoint_current_at)
        self.progress_age = Gauge(
            "fanout_progress_age_seconds",
            "Seconds since the stream's least recently progressing shard settled a record "
            "or found itself caught up.",
            ["stream"],
            registry=r,
        )
        self.stalled_shards = Gauge(
            "fanout_stalled_shards",
            "Shards with pending records and no progress for longer than http.stall_timeout.",
            ["stream"],
            registry=r,
        )

        # -- the process ---------------------------------------------------------------
        self.loop_lag = Histogram(
            "fanout_event_loop_lag_seconds",
            "How late the event loop's heartbeat ran (one observation every 0.25 s); "
            "nothing on the loop runs while it is late.",
            buckets=_LOOP_BUCKETS,
            registry=r,
        )
        self.loop_blocked = Counter(
            "fanout_event_loop_blocked_seconds_total",
            "Seconds the event loop did not run, counted for stretches longer than "
            "loop_block_threshold (event_loop_blocked is logged with what was running).",
            registry=r,
        )

        # -- leases ----------------------------------------------------------------------
        self.leases_held = Gauge(
            "fanout_leases_held",
            "Shard leases this worker holds (it reads exactly these shards).",
            ["stream"],
            registry=r,
        )
        self.lease_events = Counter(
            "fanout_lease_events_total",
            "Lease events: taken, lost (moved to another worker or lapsed before it was "
            "renewed), released (graceful stop or hand-over), renew_failed (a heartbeat "
            "failed; counted once per stream).",
            ["stream", "event"],
            registry=r,
        )
        self.workers = Gauge(
            "fanout_workers",
            "Live workers of this worker's application (itself included), at its latest scan.",
            registry=r,
        )
        self.workers.set(1)
        self.shards_unowned = Gauge(
            "fanout_shards_unowned",
            "Readable shards of the stream that no live worker holds, at this worker's latest "
            "scan. Above 0 for long: every worker is at max_shards, or leases cannot be taken.",
            ["stream"],
            registry=r,
        )

    def declare(self, streams: Iterable[str], sinks: Mapping[str, Iterable[str]]) -> None:
        """Create every labelled series at zero, so rates, alerts and dashboards see them
        before the first event (a counter that appears only on its first increment hides
        that increment from ``rate()``).

        Args:
            streams: the configured stream names.
            sinks: each sink's name and the streams that feed it.
        """
        for stream in streams:
            self.records_read.labels(stream)
            for outcome in GET_RECORDS_OUTCOMES:
                self.get_records_calls.labels(stream, outcome)
            self.iterator_age.labels(stream).set(0)
            for state in SHARD_STATES:
                self.shards.labels(stream, state).set(0)
            self.discovery_errors.labels(stream)
            self.budget_wait.labels(stream)
            self.data_loss_events.labels(stream)
            self.records_lost.labels(stream)
            self.in_flight.labels(stream).set(0)
            self.checkpoints.labels(stream)
            self.progress_age.labels(stream).set(0)
            self.stalled_shards.labels(stream).set(0)
            self.leases_held.labels(stream).set(0)
            self.shards_unowned.labels(stream).set(0)
            for event in LEASE_EVENTS:
                self.lease_events.labels(stream, event)
        for sink, fed_by in sinks.items():
            for stream in fed_by:
                for outcome in SINK_OUTCOMES:
                    self.sink_records.labels(stream, sink, outcome)
            self.sink_send_seconds.labels(sink)
            self.sink_errors.labels(sink)
            self.end_to_end_lag.labels(sink)
            self.retries.labels(sink)
            self.dlq_writes.labels(sink)
            self.dlq_failures.labels(sink)

    def checkpoint_current(self, now: float | None = None) -> None:
        """The checkpoint store now holds every settled position."""
        now = time.time() if now is None else now
        self._checkpoint_current_at = now
        self.last_checkpoint.set(now)


def _version() -> str:
    from fanout import __version__

    return __version__
