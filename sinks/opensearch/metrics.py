"""Metrics of the ``opensearch`` sink, on the process's registry, labelled by sink name."""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge

from fanout.observe.metrics import Metrics

RESOLUTIONS = ("stale", "newer", "unverifiable")
BULK_OUTCOMES = ("ok", "item_errors", "throttled", "failed")


class _Families:
    """The metric families, created once per registry (several sinks share them)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.conflicts = Counter(
            "fanout_opensearch_version_conflicts_total",
            "Writes refused by OpenSearch for an equal or higher version, by resolution: "
            "stale (an equal or newer change of the item is already there: counted as "
            "delivered), newer (the tie-break of the version wrapped and the change was newer: "
            "written again with external_gte), unverifiable (the stored document has no "
            "metadata to compare: left as OpenSearch decided).",
            ["sink", "resolution"],
            registry=registry,
        )
        self.bulk_requests = Counter(
            "fanout_opensearch_bulk_requests_total",
            "_bulk requests by outcome: ok, item_errors (some items failed), throttled "
            "(the whole request got 429 or 503), failed (any other error or no answer).",
            ["sink", "outcome"],
            registry=registry,
        )
        self.item_failures = Counter(
            "fanout_opensearch_item_failures_total",
            "Items of _bulk answers that failed (version conflicts are counted apart), by "
            "OpenSearch's error type (or the HTTP status when there is none).",
            ["sink", "reason"],
            registry=registry,
        )
        self.order_anomalies = Counter(
            "fanout_opensearch_order_anomalies_total",
            "Changes of one item in one batch whose (creation time, sequence number) did not "
            "grow in stream order; should stay 0 (docs/opensearch.md, assumptions).",
            ["sink"],
            registry=registry,
        )
        self.past_retention = Counter(
            "fanout_opensearch_changes_past_tombstone_retention_total",
            "Changes written when older than the index's index.gc_deletes: if their item was "
            "deleted meanwhile, such a write can bring the document back.",
            ["sink"],
            registry=registry,
        )
        self.retention = Gauge(
            "fanout_opensearch_tombstone_retention_seconds",
            "The smallest index.gc_deletes among the sink's indexes (how long a deleted "
            "document's version is kept); -1 while unknown.",
            ["sink"],
            registry=registry,
        )


_FAMILIES: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()


class SinkMetrics:
    """The series of one sink, created at zero."""

    def __init__(self, metrics: Metrics, sink: str) -> None:
        families = _FAMILIES.get(metrics.registry)
        if families is None:
            families = _FAMILIES[metrics.registry] = _Families(metrics.registry)
        self.conflicts = {r: families.conflicts.labels(sink, r) for r in RESOLUTIONS}
        self.bulk = {o: families.bulk_requests.labels(sink, o) for o in BULK_OUTCOMES}
        self._item_failures = families.item_failures
        self._sink = sink
        self.order_anomalies = families.order_anomalies.labels(sink)
        self.past_retention = families.past_retention.labels(sink)
        self.retention = families.retention.labels(sink)
        self.retention.set(-1)

    def item_failed(self, reason: str) -> None:
        """Count one failed item."""
        self._item_failures.labels(self._sink, reason).inc()
