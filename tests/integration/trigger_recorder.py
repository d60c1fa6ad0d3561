"""What the handlers of tests/integration/triggers/ received, per handler and item key."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

ATTEMPTS: defaultdict[str, Counter[str]] = defaultdict(Counter)
DELIVERED: defaultdict[str, list[str]] = defaultdict(list)
EVENT_NAMES: defaultdict[str, set[str]] = defaultdict(set)


def record_batch(name: str, event: dict[str, Any]) -> None:
    """Count an attempt of each record; fail the batch when it holds a poison record."""
    keys = [r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"]]
    ATTEMPTS[name].update(keys)
    EVENT_NAMES[name].update(r["eventName"] for r in event["Records"])
    if any("poison" in (r["dynamodb"].get("NewImage") or {}) for r in event["Records"]):
        raise ValueError("poison record")
    DELIVERED[name].extend(keys)


def reset() -> None:
    ATTEMPTS.clear()
    DELIVERED.clear()
    EVENT_NAMES.clear()
