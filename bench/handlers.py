"""Lambda handlers for the benchmark's ``fanout-handlers`` consumer: plain functions, as a
user writes them, that look at every record of their event (and count them)."""

from __future__ import annotations

from typing import Any

seen: dict[str, int] = {}


def _count(name: str, event: dict[str, Any]) -> None:
    records = event["Records"]
    for record in records:
        record["dynamodb"]["Keys"]
    seen[name] = seen.get(name, 0) + len(records)


def search(event: dict[str, Any], context: Any) -> None:
    _count("search", event)


def notify(event: dict[str, Any], context: Any) -> None:
    _count("notify", event)


def audit(event: dict[str, Any], context: Any) -> None:
    _count("audit", event)
