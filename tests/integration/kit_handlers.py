"""A handler that keeps what the worker hands it (the testing kit's tests read it)."""

from __future__ import annotations

from typing import Any

RECEIVED: list[dict[str, Any]] = []


def capture(event: dict[str, Any], context: Any) -> None:
    RECEIVED.extend(event["Records"])


def fail_on_poison(event: dict[str, Any], context: Any) -> None:
    for record in event["Records"]:
        if "poison" in (record["dynamodb"].get("NewImage") or {}):
            raise ValueError("poison")
    RECEIVED.extend(event["Records"])
