from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fanout import __version__
from fanout.app import Worker
from fanout.config import build_config
from fanout.observe.metrics import GET_RECORDS_OUTCOMES, SINK_OUTCOMES, Metrics
from fanout.progress.store import Checkpoint
from fanout.progress.tracker import ShardProgress


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


def test_every_metric_is_prefixed_in_base_units_and_never_labelled_by_shard_or_key():
    metrics = Metrics()
    metrics.declare(["orders"], {"search": ["orders"]})
    families = list(text_string_to_metric_families(generate_latest(metrics.registry).decode()))
    assert len(families) >= 20
    for family in families:
        assert family.name.startswith("fanout_"), family.name
        for sample in family.samples:
            forbidden = {"shard", "shard_id", "key", "pk", "sequence_number", "seq"}
            assert not forbidden & set(sample.labels), (family.name, sample.labels)
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        for unit in ("_ms", "_milliseconds", "_minutes", "_hours"):
            assert unit not in family.name


def test_the_metrics_the_operators_need_exist():
    names = {
        f.name for f in text_string_to_metric_families(generate_latest(Metrics().registry).decode())
    }
    for name in (
        "fanout_build_info",
        "fanout_records_read",
        "fanout_get_records_calls",
        "fanout_iterator_age_seconds",
        "fanout_shards",
        "fanout_sink_records",
        "fanout_sink_send_seconds",
        "fanout_sink_errors",
        "fanout_end_to_end_lag_seconds",
        "fanout_retries",
        "fanout_dlq_records",
        "fanout_dlq_write_failures",
        "fanout_in_flight_records",
        "fanout_checkpoints_written",
        "fanout_checkpoint_failures",
        "fanout_last_checkpoint_timestamp_seconds",
        "fanout_checkpoint_age_seconds",
        "fanout_data_loss_events",
        "fanout_records_lost",
        "fanout_progress_age_seconds",
        "fanout_stalled_shards",
        "fanout_discovery_errors",
    ):
        assert name in names, name


def test_each_instance_has_its_own_registry():
    a, b = Metrics(), Metrics()
    a.records_read.labels("orders").inc(5)
    assert value(a, "fanout_records_read_total", stream="orders") == 5
    assert value(b, "fanout_records_read_total", stream="orders") is None
    registry = CollectorRegistry()
    assert Metrics(registry).registry is registry


def test_build_info_names_the_version():
    info = value(
        Metrics(),
        "fanout_build_info",
        version=__version__,
        python=__import__("platform").python_version(),
    )
    assert info == 1


def test_declare_creates_every_series_at_zero():
    metrics = Metrics()
    metrics.declare(["orders", "users"], {"search": ["orders"], "audit": ["orders", "users"]})
    for stream in ("orders", "users"):
        assert value(metrics, "fanout_records_read_total", stream=stream) == 0
        assert value(metrics, "fanout_data_loss_events_total", stream=stream) == 0
        assert value(metrics, "fanout_records_lost_total", stream=stream) == 0
        assert value(metrics, "fanout_stalled_shards", stream=stream) == 0
        assert value(metrics, "fanout_shards", stream=stream, state="active") == 0
        for outcome in GET_RECORDS_OUTCOMES:
            assert (
                value(metrics, "fanout_get_records_calls_total", stream=stream, outcome=outcome)
                == 0
            )
        for outcome in SINK_OUTCOMES:
            assert (
                value(
                    metrics,
                    "fanout_sink_records_total",
                    stream=stream,
                    sink="audit",
                    outcome=outcome,
                )
                == 0
            )
    # a sink only gets series for the streams that feed it
    assert (
        value(
            metrics, "fanout_sink_records_total", stream="users", sink="search", outcome="delivered"
        )
        is None
    )
    for name in (
        "fanout_retries_total",
        "fanout_dlq_records_total",
        "fanout_dlq_write_failures_total",
        "fanout_sink_errors_total",
    ):
        assert value(metrics, name, sink="search") == 0
    assert value(metrics, "fanout_end_to_end_lag_seconds_count", sink="search") == 0


def test_checkpoint_age_counts_from_the_last_time_the_store_was_current():
    metrics = Metrics()
    metrics.checkpoint_current(time.time() - 100)
    age = value(metrics, "fanout_checkpoint_age_seconds")
    assert age is not None
    assert 99 < age < 110
    metrics.checkpoint_current()
    age = value(metrics, "fanout_checkpoint_age_seconds")
    assert age is not None
    assert age < 5
    stamp = value(metrics, "fanout_last_checkpoint_timestamp_seconds")
    assert stamp is not None
    assert abs(stamp - time.time()) < 5


def _worker(tmp_path, **http: Any) -> Worker:
    config = build_config(
        {
            "streams": {"orders": {"table": "Orders"}, "users": {"table": "Users"}},
            "checkpoints": {"path": str(tmp_path / "fanout.db")},
            "http": {"stall_timeout": 10, **http},
            "sinks": {
                "audit": {"type": "file", "path": str(tmp_path / "a.jsonl")},
                "search": {
                    "type": "file",
                    "path": str(tmp_path / "s.jsonl"),
                    "streams": ["orders"],
                },
            },
        }
    )
    return Worker(config, handle_signals=False)


def _ticket(pending: int) -> Any:
    return SimpleNamespace(pending=pending)


def _progress(shard: str, last_progress: float, pending: list[int]) -> Any:
    return SimpleNamespace(
        shard_id=shard,
        last_progress=last_progress,
        tickets=[_ticket(p) for p in pending],
        pending=bool(pending),
    )


def test_the_worker_declares_its_streams_and_sinks(tmp_path):
    worker = _worker(tmp_path)
    m = worker.metrics
    assert (
        value(m, "fanout_sink_records_total", stream="users", sink="audit", outcome="delivered")
        == 0
    )
    assert (
        value(m, "fanout_sink_records_total", stream="users", sink="search", outcome="delivered")
        is None
    )
    assert (
        value(m, "fanout_sink_records_total", stream="orders", sink="search", outcome="filtered")
        == 0
    )


def test_gauges_from_shard_state(tmp_path):
    worker = _worker(tmp_path)
    now = time.monotonic()
    orders = SimpleNamespace(
        name="orders",
        progress={
            "s1": _progress("s1", now - 30, [3, 2]),  # stalled: pending, 30 s without progress
            "s2": _progress("s2", now - 1, [4]),
            "s3": _progress("s3", now - 2, []),
        },
    )
    users = SimpleNamespace(name="users", progress={"s4": _progress("s4", now - 0.5, [])})
    worker.workers = cast("Any", [orders, users])
    worker.update_gauges()
    m = worker.metrics
    assert value(m, "fanout_in_flight_records", stream="orders") == 9
    assert value(m, "fanout_in_flight_records", stream="users") == 0
    assert value(m, "fanout_stalled_shards", stream="orders") == 1
    assert value(m, "fanout_stalled_shards", stream="users") == 0
    assert value(m, "fanout_progress_age_seconds", stream="orders") == pytest.approx(30, abs=2)
    assert value(m, "fanout_progress_age_seconds", stream="users") == pytest.approx(0.5, abs=2)
    assert [(s, shard) for s, shard, _ in worker.stalled_shards()] == [("orders", "s1")]


async def test_checkpoint_flush_counts_written_rows_and_marks_the_store_current(tmp_path):
    worker = _worker(tmp_path)
    m = worker.metrics
    m.checkpoint_current(time.time() - 500)
    arn = "arn:aws:dynamodb:us-east-1:1:table/Orders/stream/x"
    progress = ShardProgress("orders", arn, "shard-1", None)
    progress.open("100").settle(1)  # the page up to 100 is settled: the frontier moved
    orders = SimpleNamespace(name="orders", progress={"shard-1": progress})
    worker.workers = cast("Any", [orders])
    await worker.store.open()
    try:
        await worker.checkpoints.flush()
        (row,) = await worker.store.all()
        assert row == Checkpoint(arn, "shard-1", "100", False, row.updated_at)
    finally:
        await worker.store.aclose()
    assert value(m, "fanout_checkpoints_written_total", stream="orders") == 1
    assert not progress.dirty
    age = value(m, "fanout_checkpoint_age_seconds")
    assert age is not None
    assert age < 5
    # nothing to write: the store is still current
    m.checkpoint_current(time.time() - 500)
    await worker.checkpoints.flush()
    age = value(m, "fanout_checkpoint_age_seconds")
    assert age is not None
    assert age < 5
