"""Metrics of the ``aggregate`` sink, on the process's registry, labelled by sink name."""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter

from fanout.observe.metrics import Metrics

ANOMALIES = ("non_numeric", "ungrouped", "unseen_item", "order", "inconsistent_row")


class _Families:
    """The metric families, created once per registry (several sinks share them)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.writes = Counter(
            "fanout_aggregate_writes_total",
            "Changes applied: each moved its item's contribution between rows, with the "
            "item's state row, in one transaction (an item's earlier changes in the same batch "
            "are folded into its last one).",
            ["sink"],
            registry=registry,
        )
        self.transactions = Counter(
            "fanout_aggregate_transactions_total",
            "TransactWriteItems calls that committed.",
            ["sink"],
            registry=registry,
        )
        self.replays = Counter(
            "fanout_aggregate_replays_absorbed_total",
            "Changes not applied because the item's stored change is as new or newer "
            "(a retry, a replay after a crash, a redrive, a lease move): found on reading the "
            "item's state or by a failed condition check.",
            ["sink"],
            registry=registry,
        )
        self.throttles = Counter(
            "fanout_aggregate_throttles_total",
            "Requests (or transaction actions) DynamoDB throttled, after the client's own retries.",
            ["sink"],
            registry=registry,
        )
        self.conflicts = Counter(
            "fanout_aggregate_conflicts_total",
            "Transactions cancelled by a concurrent write (TransactionConflict, or a row or "
            "state that changed since it was read) and tried again.",
            ["sink"],
            registry=registry,
        )
        self.own_writes = Counter(
            "fanout_aggregate_own_writes_total",
            "Changes of rows the sink wrote itself, skipped (a target that is also a source, "
            "with allow_source_target).",
            ["sink"],
            registry=registry,
        )
        self.anomalies = Counter(
            "fanout_aggregate_anomalies_total",
            "Changes applied with a caveat, by reason: non_numeric (a sum attribute that is "
            "not a number counted as 0), ungrouped (an image without a group_by attribute "
            "counts nowhere), unseen_item (a MODIFY or REMOVE of an item the aggregate never "
            "saw: nothing to take out), order (an item's stamps did not grow within a batch), "
            "inconsistent_row (a row held fewer items than its state rows say).",
            ["sink", "reason"],
            registry=registry,
        )


_FAMILIES: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()


class SinkMetrics:
    """The series of one sink, created at zero."""

    def __init__(self, metrics: Metrics, sink: str) -> None:
        families = _FAMILIES.get(metrics.registry)
        if families is None:
            families = _FAMILIES[metrics.registry] = _Families(metrics.registry)
        self.writes = families.writes.labels(sink)
        self.transactions = families.transactions.labels(sink)
        self.replays = families.replays.labels(sink)
        self.throttles = families.throttles.labels(sink)
        self.conflicts = families.conflicts.labels(sink)
        self.own_writes = families.own_writes.labels(sink)
        self.anomalies = {r: families.anomalies.labels(sink, r) for r in ANOMALIES}
