"""Lambda-style handlers used by tests (imported by path, as users' handlers are)."""

from __future__ import annotations

from typing import Any

CALLS: list[tuple[dict[str, Any], Any]] = []


def record_all(event: dict[str, Any], context: Any) -> None:
    CALLS.append((event, context))


async def record_all_async(event: dict[str, Any], context: Any) -> None:
    CALLS.append((event, context))


def fail_from_second(event: dict[str, Any], context: Any) -> dict[str, Any]:
    CALLS.append((event, context))
    records = event["Records"]
    if len(records) < 2:
        return {"batchItemFailures": []}
    return {
        "batchItemFailures": [
            {"itemIdentifier": r["dynamodb"]["SequenceNumber"]} for r in records[1:3]
        ]
    }


def mutate(event: dict[str, Any], context: Any) -> None:
    for record in event["Records"]:
        record["dynamodb"]["NewImage"] = "changed"


def slow(event: dict[str, Any], context: Any) -> None:
    import time

    time.sleep(5)


not_callable = 42


def scramble_then_fail_second(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Reports the second record failed (first call only), after wrecking every record and
    emptying its list of them."""
    records = event["Records"]
    CALLS.append(({"Records": list(records)}, context))
    answer: dict[str, Any] = {"batchItemFailures": []}
    if len(records) == 3:
        answer["batchItemFailures"] = [{"itemIdentifier": records[1]["dynamodb"]["SequenceNumber"]}]
    for record in records:
        record.clear()
    records.clear()
    return answer
