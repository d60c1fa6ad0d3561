"""The handler triggers.json names (``shop.orders.process``)."""

from __future__ import annotations

from typing import Any

from tests.integration.trigger_recorder import record_batch


def process(event: dict[str, Any], context: Any) -> None:
    record_batch("triggers.json", event)
