"""Unit tests: each handler called with events built by fanout.testing.events, as Lambda (and
fanout) would call it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fanout.testing import events, handler

PROJECT = Path(__file__).resolve().parents[1]
TRIGGERS = PROJECT / "triggers.json"

award = handler(TRIGGERS, "award-badges", table="Orders")
record = handler(TRIGGERS, "audit-log", table="Orders")
archive = handler(TRIGGERS, "archive-expired", table="Orders")

orders = events.StreamTable("Orders", keys=["pk"])


def order(status: str, **extra: Any) -> dict[str, Any]:
    return {"pk": "order-1", "customer": "ada", "status": status, "total": 42, **extra}


def test_the_handlers_come_from_the_project_next_to_triggers_json() -> None:
    assert Path(award.__code__.co_filename).is_relative_to(PROJECT)


def test_audit_writes_a_line_per_change(tmp_path: Path, monkeypatch: Any) -> None:
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("AUDIT_LOG", str(log))
    changes = [
        orders.insert(order("NEW")),
        orders.modify(order("NEW"), order("PAID")),
        orders.remove(order("PAID")),
    ]
    assert record(events.event(changes), events.context("audit-log")) == {"batchItemFailures": []}
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["INSERT", "MODIFY", "REMOVE"]
    assert [line["sequence"] for line in lines] == [
        c["dynamodb"]["SequenceNumber"] for c in changes
    ]


def test_audit_reports_the_first_record_it_cannot_write(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    good = orders.insert(order("NEW"))
    bad = orders.modify(order("NEW"), order("PAID", corrupt=True))
    later = orders.modify(order("PAID"), order("PACKED"))
    answer = record(events.event(good, bad, later), events.context("audit-log"))
    assert answer == {"batchItemFailures": [{"itemIdentifier": bad["dynamodb"]["SequenceNumber"]}]}


def test_archive_keeps_only_orders_deleted_by_time_to_live(
    fanout_table: Any, monkeypatch: Any
) -> None:
    archived = fanout_table("Archive")
    monkeypatch.setenv("ARCHIVE_TABLE", archived.real_name)
    expired = orders.remove(order("DELIVERED"), ttl=True)
    deleted = orders.remove({**order("CANCELLED"), "pk": "order-2"})
    assert expired["userIdentity"]["principalId"] == "dynamodb.amazonaws.com"
    assert "userIdentity" not in deleted
    assert archive(events.event(expired, deleted), events.context()) == {"archived": 1}
    assert archived.items() == [order("DELIVERED")]


def test_award_gives_one_badge_per_customer(fanout_table: Any, monkeypatch: Any) -> None:
    badges = fanout_table("Badges")
    monkeypatch.setenv("BADGES_TABLE", badges.real_name)
    shipped = orders.modify(order("PACKED"), order("SHIPPED"))
    second = orders.modify(
        {**order("PACKED"), "pk": "order-2"}, {**order("SHIPPED"), "pk": "order-2"}
    )
    award(events.event(shipped), events.context("award-badges"))
    award(events.event(second), events.context("award-badges"))
    assert badges.items() == [
        {"pk": "ada", "order": "order-1", "badge": "first-shipment", "by": "award-badges"}
    ]


def test_award_ignores_orders_that_were_shipped_already(
    fanout_table: Any, monkeypatch: Any
) -> None:
    badges = fanout_table("Badges")
    monkeypatch.setenv("BADGES_TABLE", badges.real_name)
    award(
        events.event(orders.modify(order("SHIPPED"), order("SHIPPED", total=43))), events.context()
    )
    assert badges.items() == []
