"""Functional tests: the triggers of triggers.json running in the fanout worker against
DynamoDB Local, as they would on Lambda. ``worker.drain()`` returns once every change written
so far was handled: no sleeps."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fanout.testing.local import LocalTable, LocalWorker

TRIGGERS = Path(__file__).resolve().parents[1] / "triggers.json"


@pytest.fixture
def tables(fanout_table: Callable[..., LocalTable]) -> dict[str, LocalTable]:
    return {name: fanout_table(name) for name in ("Orders", "Badges", "Archive")}


@pytest.fixture
def worker(
    tables: dict[str, LocalTable], fanout_worker: Callable[..., LocalWorker], tmp_path: Path
) -> LocalWorker:
    return fanout_worker(
        TRIGGERS,
        table="Orders",
        env={
            "BADGES_TABLE": tables["Badges"].real_name,
            "ARCHIVE_TABLE": tables["Archive"].real_name,
            "AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        },
    )


def audit(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_an_order_shipped_earns_one_badge(
    tables: dict[str, LocalTable], worker: LocalWorker, tmp_path: Path
) -> None:
    orders = tables["Orders"]
    for status in ("NEW", "PAID", "SHIPPED"):
        orders.put({"pk": "order-1", "customer": "ada", "status": status})
    orders.put({"pk": "order-2", "customer": "ada", "status": "NEW"})
    orders.update({"pk": "order-2"}, {"status": "SHIPPED"})
    worker.drain()
    assert tables["Badges"].items() == [
        {"pk": "ada", "order": "order-1", "badge": "first-shipment", "by": "award-badges"}
    ]
    assert [line["event"] for line in audit(tmp_path)] == [
        "INSERT",
        "MODIFY",
        "MODIFY",
        "INSERT",
        "MODIFY",
    ]


def test_a_record_the_audit_cannot_write_is_retried_then_dead_lettered(
    tables: dict[str, LocalTable], worker: LocalWorker, tmp_path: Path
) -> None:
    orders = tables["Orders"]
    orders.put({"pk": "order-1", "customer": "ada", "status": "NEW"})
    orders.put({"pk": "order-2", "customer": "bob", "status": "NEW", "corrupt": True})
    orders.put({"pk": "order-3", "customer": "cy", "status": "NEW"})
    worker.drain()
    assert [line["order"] for line in audit(tmp_path)] == ["order-1", "order-3"]
    (dead,) = worker.dead_letters("audit-log")
    assert dead["record"]["dynamodb"]["Keys"] == {"pk": {"S": "order-2"}}
    assert dead["attempts"] == 3  # maximum_retry_attempts: 2, after the first attempt


def test_deleting_an_order_by_hand_archives_nothing(
    tables: dict[str, LocalTable], worker: LocalWorker
) -> None:
    orders = tables["Orders"]
    orders.put({"pk": "order-1", "customer": "ada", "status": "CANCELLED"})
    orders.delete({"pk": "order-1"})
    worker.drain()
    assert tables["Archive"].items() == []
    assert worker.dead_letters() == []


def test_the_disabled_trigger_does_not_run(worker: LocalWorker) -> None:
    assert set(worker.config.sinks) == {"award-badges", "audit-log", "archive-expired"}
