from __future__ import annotations

import time
from typing import Any

import pytest

from fanout.errors import ConfigError
from sinks.handler import (
    HandlerSink,
    HandlerSinkConfig,
    HandlerTimeout,
    InvalidResponse,
    batch_item_failures,
    load_handler,
)
from tests.unit.delivery_fakes import through_lane
from tests.unit.helpers import handlers

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/2026-01-01T00:00:00.000"


def wire_record(seq: int, key: str = "k1", name: str = "MODIFY") -> dict[str, Any]:
    """A record exactly as GetRecords returns it, plus eventSourceARN as the reader adds."""
    return {
        "eventID": f"id-{seq}",
        "eventName": name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": int(time.time()),
            "Keys": {"pk": {"S": key}},
            "NewImage": {"pk": {"S": key}, "n": {"N": str(seq)}, "tags": {"SS": ["a", "b"]}},
            "OldImage": {"pk": {"S": key}, "n": {"N": str(seq - 1)}},
            "SequenceNumber": f"{seq:021d}",
            "SizeBytes": 40,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
        "eventSourceARN": ARN,
    }


def assert_lambda_dynamodb_event(event: dict[str, Any]) -> None:
    """The shape of a Lambda DynamoDB Streams event, as documented by AWS."""
    assert set(event) == {"Records"}
    for record in event["Records"]:
        assert set(record) >= {
            "eventID",
            "eventName",
            "eventVersion",
            "eventSource",
            "awsRegion",
            "dynamodb",
            "eventSourceARN",
        }
        assert record["eventName"] in {"INSERT", "MODIFY", "REMOVE"}
        assert record["eventSource"] == "aws:dynamodb"
        assert record["eventSourceARN"].startswith("arn:aws:dynamodb:")
        assert "/stream/" in record["eventSourceARN"]
        ddb = record["dynamodb"]
        assert isinstance(ddb["ApproximateCreationDateTime"], int | float)
        assert isinstance(ddb["SequenceNumber"], str)
        assert ddb["SequenceNumber"].isdigit()
        assert isinstance(ddb["SizeBytes"], int)
        assert ddb["StreamViewType"] in {
            "KEYS_ONLY",
            "NEW_IMAGE",
            "OLD_IMAGE",
            "NEW_AND_OLD_IMAGES",
        }
        for image in ("Keys", "NewImage", "OldImage"):
            if image in ddb:
                for value in ddb[image].values():
                    # AttributeValues stay typed: exactly one type tag.
                    assert len(value) == 1
                    assert next(iter(value)) in {
                        "S",
                        "N",
                        "B",
                        "SS",
                        "NS",
                        "BS",
                        "M",
                        "L",
                        "NULL",
                        "BOOL",
                    }


def sink(handler: str, **options) -> HandlerSink:
    return HandlerSink("h", HandlerSinkConfig(type="handler", handler=handler, **options))


@pytest.fixture(autouse=True)
def _clear_calls():
    handlers.CALLS.clear()


async def test_handler_gets_the_lambda_event_and_context():
    h = sink("tests.unit.helpers.handlers:record_all", timeout=7)
    await h.start()
    batch = [wire_record(1), wire_record(2, name="INSERT")]
    assert await h.send(batch) == {}
    ((event, context),) = handlers.CALLS
    assert_lambda_dynamodb_event(event)
    assert event["Records"] == batch
    assert context.function_name == "h"
    assert context.aws_request_id
    assert 0 < context.get_remaining_time_in_millis() <= 7000
    assert context.invoked_function_arn.endswith(":function:h")
    await h.stop()


async def test_async_handlers_are_awaited():
    h = sink("tests.unit.helpers.handlers:record_all_async")
    await h.start()
    assert await h.send([wire_record(1)]) == {}
    assert len(handlers.CALLS) == 1


async def test_handler_timeout_fails_the_batch():
    h = sink("tests.unit.helpers.handlers:slow", timeout=0.2)
    await h.start()
    started = time.monotonic()
    with pytest.raises(HandlerTimeout):
        await h.send([wire_record(1)])
    assert time.monotonic() - started < 2


def test_batch_item_failures_fail_from_the_lowest_on():
    batch = [wire_record(i) for i in range(1, 6)]
    result = {
        "batchItemFailures": [
            {"itemIdentifier": batch[3]["dynamodb"]["SequenceNumber"]},
            {"itemIdentifier": batch[1]["dynamodb"]["SequenceNumber"]},
        ]
    }
    failures = batch_item_failures(result, batch)
    assert sorted(failures) == [1, 2, 3, 4]
    assert all(f.retryable for f in failures.values())
    assert batch_item_failures({"batchItemFailures": []}, batch) == {}
    assert batch_item_failures({"batchItemFailures": None}, batch) == {}
    assert batch_item_failures(None, batch) == {}
    assert batch_item_failures("done", batch) == {}


@pytest.mark.parametrize(
    "answer",
    [
        {"batchItemFailures": [{"itemIdentifier": "999"}]},
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": None}]},
        {"batchItemFailures": [{"id": "000000000000000000001"}]},
        {"batchItemFailures": ["000000000000000000001"]},
        {"batchItemFailures": "garbage"},
        {"batchItemFailures": {"itemIdentifier": "000000000000000000001"}},
    ],
)
def test_an_invalid_partial_batch_response_fails_the_whole_batch(answer):
    # As on Lambda: a complete failure, so the batch is retried and bisected like an error.
    with pytest.raises(InvalidResponse):
        batch_item_failures(answer, [wire_record(i) for i in range(1, 6)])


async def test_batch_item_failures_redeliver_exactly_the_failed_and_later_records(tmp_path):
    h = sink("tests.unit.helpers.handlers:fail_from_second", batch_size=10)
    await h.start()
    config = HandlerSinkConfig(type="handler", handler="x:y", batch_size=10)
    batch = [wire_record(i) for i in range(1, 6)]
    _, progress = await through_lane(h, config, tmp_path / "dlq.jsonl", batch)
    sent = [
        [r["dynamodb"]["SequenceNumber"] for r in event["Records"]] for event, _ in handlers.CALLS
    ]
    seqs = [r["dynamodb"]["SequenceNumber"] for r in batch]
    # First call: all five; the handler fails 2 and 3, so 2..5 come again; then 3..4 fail
    # again (it always fails its second and third records), and so on until one is left.
    assert sent[0] == seqs
    assert sent[1] == seqs[1:]
    assert sent[2] == seqs[2:]
    assert sent[3] == seqs[3:]
    assert sent[4] == seqs[4:]
    assert len(sent) == 5
    assert progress.frontier == seqs[-1]
    assert not (tmp_path / "dlq.jsonl").exists()


def test_load_handler_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"sinks\.x\.handler: .*not callable"):
        load_handler("tests.unit.helpers.handlers:not_callable", "sinks.x.handler")
    with pytest.raises(ConfigError, match="form"):
        load_handler("nocolon", "sinks.x.handler")
    assert load_handler("tests.unit.helpers.handlers:record_all") is handlers.record_all
