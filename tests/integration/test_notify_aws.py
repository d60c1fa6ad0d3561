"""The sqs, sns and eventbridge sinks against moto's server: every record arrives (read back
from SQS queues), FIFO ids and deduplication, records too large, the claim check to S3, and
per-entry failures injected into moto's answers."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from fanout.retry import RetryPolicy
from fanout.sink import SinkType
from fanout.testing.contract import make_records
from sinks.notify.eventbridge import EVENTBRIDGE
from sinks.notify.format import plain_body
from sinks.notify.sns import SNS
from sinks.notify.sqs import SQS
from tests.integration.notify_kit import bodies, drain, inject_failures, marked, running_sink

pytestmark = pytest.mark.integration


def as_json(value: Any) -> Any:
    """What a JSON parser reads back from ``value`` written as JSON."""
    from fanout.records import dumps_plain

    return orjson.loads(dumps_plain(value))


async def test_sqs_every_record_arrives_as_plain_json_with_attributes(
    moto_server, sqs_queue, sqs_client
):
    url = sqs_queue()
    records = make_records(25)
    options = {"type": "sqs", "queue_url": url, "endpoint_url": moto_server.endpoint_url}
    async with running_sink(SQS, options) as sink:
        assert not sink.ordered
        assert await sink.send(records) == {}
    received = drain(sqs_client, url)
    by_pk = {b["keys"]["pk"]: b for b in bodies(received)}
    assert len(received) == 25
    for record in records:
        assert by_pk[record["dynamodb"]["Keys"]["pk"]["S"]] == as_json(plain_body(record))
    attributes = {m["MessageAttributes"]["eventName"]["StringValue"] for m in received}
    assert attributes == {"INSERT", "MODIFY"}
    assert {m["MessageAttributes"]["table"]["StringValue"] for m in received} == {"Contract"}


async def test_sqs_fifo_groups_by_key_and_a_replay_is_stored_once(
    moto_server, sqs_queue, sqs_client
):
    url = sqs_queue(fifo=True)
    records = make_records(12)
    options = {
        "type": "sqs",
        "queue_url": url,
        "endpoint_url": moto_server.endpoint_url,
        "format": "raw",
        "group_id": "{table}/{keys.pk}",
    }
    async with running_sink(SQS, options) as sink:
        assert sink.ordered
        assert await sink.send(records) == {}
        assert await sink.send(records[4:]) == {}  # a replay after a crash
    received = drain(sqs_client, url)
    assert [b["eventID"] for b in bodies(received)] == [r["eventID"] for r in records]
    assert [m["Attributes"]["MessageGroupId"] for m in received] == [
        f"Contract/{r['dynamodb']['Keys']['pk']['S']}" for r in records
    ]
    assert [m["Attributes"]["MessageDeduplicationId"] for m in received] == [
        r["eventID"] for r in records
    ]


async def test_sns_records_arrive_through_a_subscribed_queue_and_fifo_drops_replays(
    moto_server, sqs_queue, sqs_client, sns_topic
):
    url = sqs_queue(fifo=True)
    topic = sns_topic(fifo=True, queue_url=url)
    records = make_records(23)
    options = {
        "type": "sns",
        "topic_arn": topic,
        "endpoint_url": moto_server.endpoint_url,
        "format": "raw",
        "attributes": {"eventName": "{eventName}", "status": "{new.status}"},
    }
    async with running_sink(SNS, options) as sink:
        assert await sink.send(records) == {}
        assert await sink.send(records[:10]) == {}  # replayed inside the window
    received = drain(sqs_client, url)
    assert [b["eventID"] for b in bodies(received)] == [r["eventID"] for r in records]
    assert bodies(received)[0] == records[0]
    first = received[1]["MessageAttributes"]
    assert {k: v["StringValue"] for k, v in first.items()} == {
        "eventName": "MODIFY",
        "status": "PAID",
    }
    # the default group id: the key attributes joined
    assert received[3]["Attributes"]["MessageGroupId"] == "item#0-3#3"


async def test_sns_standard_topic(moto_server, sqs_queue, sqs_client, sns_topic):
    url = sqs_queue()
    topic = sns_topic(queue_url=url)
    options = {"type": "sns", "topic_arn": topic, "endpoint_url": moto_server.endpoint_url}
    async with running_sink(SNS, options) as sink:
        assert not sink.ordered
        assert await sink.send(make_records(15)) == {}
    received = bodies(drain(sqs_client, url))
    assert sorted(b["keys"]["sk"] for b in received) == list(range(15))


async def test_eventbridge_events_arrive_through_a_rule_with_source_and_detail_type(
    moto_server, sqs_queue, sqs_client, event_bus
):
    url = sqs_queue()
    bus = event_bus(queue_url=url, source="app.orders")
    records = make_records(14)
    options = {
        "type": "eventbridge",
        "event_bus_name": bus,
        "source": "app.orders",
        "detail_type": "{table} {eventName}",
        "endpoint_url": moto_server.endpoint_url,
        "format": "template",
        "template": {"id": "keys.pk", "status": "new.status", "total": "new.total"},
    }
    async with running_sink(EVENTBRIDGE, options) as sink:
        assert await sink.send(records) == {}
    events = sorted(bodies(drain(sqs_client, url)), key=lambda e: e["detail"]["id"])
    assert len(events) == 14
    first = events[0]
    assert first["source"] == "app.orders"
    assert first["detail-type"] == "Contract INSERT"
    assert first["detail"] == {"id": "item#0-0", "status": "NEW", "total": 0.25}
    assert first["time"] == "2026-01-01T00:00:00Z"  # the change's time


async def test_records_too_large_fail_permanently_and_the_rest_arrive(
    moto_server, sqs_queue, sqs_client, sns_topic, event_bus
):
    records = make_records(5)
    records[2]["dynamodb"]["NewImage"]["pad"] = {"S": "x" * 300_000}
    endpoint = moto_server.endpoint_url
    small_queue = sqs_queue(MaximumMessageSize="2048")
    tiny = make_records(3)
    tiny[1]["dynamodb"]["NewImage"]["pad"] = {"S": "x" * 3000}
    async with running_sink(
        SQS, {"type": "sqs", "queue_url": small_queue, "endpoint_url": endpoint}
    ) as sink:
        failures = await sink.send(tiny)
    assert list(failures) == [1]
    assert not failures[1].retryable
    assert "exceeds the 2048-byte limit" in failures[1].reason
    assert len(drain(sqs_client, small_queue)) == 2

    topic_queue, bus_queue = sqs_queue(), sqs_queue()
    cases: list[tuple[SinkType[Any], dict[str, Any], str]] = [
        (SNS, {"type": "sns", "topic_arn": sns_topic(queue_url=topic_queue)}, topic_queue),
        (
            EVENTBRIDGE,
            {
                "type": "eventbridge",
                "event_bus_name": event_bus(queue_url=bus_queue),
                "source": "a",
            },
            bus_queue,
        ),
    ]
    for sink_type, options, url in cases:
        async with running_sink(sink_type, {**options, "endpoint_url": endpoint}) as sink:
            failures = await sink.send(records)
        assert list(failures) == [2], sink_type
        assert "exceeds the 262144-byte limit" in failures[2].reason
        assert len(drain(sqs_client, url)) == 4


async def test_the_claim_check_puts_large_bodies_to_s3_and_sends_pointers(
    moto_server, sqs_queue, sqs_client, s3_bucket, s3_client
):
    url = sqs_queue(fifo=True, MaximumMessageSize="4096")
    bucket = s3_bucket()
    records = make_records(3)
    records[1]["dynamodb"]["NewImage"]["pad"] = {"S": "y" * 10_000}
    options = {
        "type": "sqs",
        "queue_url": url,
        "endpoint_url": moto_server.endpoint_url,
        "large_messages": {
            "bucket": bucket,
            "prefix": "claims/",
            "endpoint_url": moto_server.endpoint_url,
        },
    }
    async with running_sink(SQS, options) as sink:
        assert await sink.send(records) == {}
        assert await sink.send(records) == {}  # a replay: same object, no second message
    received = drain(sqs_client, url)
    assert len(received) == 3
    pointer = bodies(received)[1]["claim_check"]
    assert pointer["bucket"] == bucket
    assert pointer["key"] == f"claims/n/{records[1]['eventID']}.json"
    stored = s3_client.get_object(Bucket=bucket, Key=pointer["key"])["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == pointer["sha256"]
    assert len(stored) == pointer["bytes"]
    assert orjson.loads(stored) == as_json(plain_body(records[1]))
    assert received[1]["MessageAttributes"]["eventName"]["StringValue"] == "MODIFY"
    listed = s3_client.list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in listed] == [pointer["key"]]


async def test_injected_per_entry_failures_end_as_documented(
    moto_server, monkeypatch, sqs_queue, sqs_client, sns_topic, event_bus
):
    answered = inject_failures(monkeypatch)
    endpoint = moto_server.endpoint_url
    queue, topic_queue, bus_queue = sqs_queue(), sqs_queue(), sqs_queue()
    cases: list[tuple[SinkType[Any], dict[str, Any], str, dict[int, str]]] = [
        (
            SQS,
            {"type": "sqs", "queue_url": queue},
            queue,
            {1: "InternalError", 3: "InvalidParameterValue!"},
        ),
        (
            SNS,
            {"type": "sns", "topic_arn": sns_topic(queue_url=topic_queue)},
            topic_queue,
            {1: "Throttled!", 3: "InvalidParameter!"},
        ),
        (
            EVENTBRIDGE,
            {
                "type": "eventbridge",
                "event_bus_name": event_bus(queue_url=bus_queue),
                "source": "a",
            },
            bus_queue,
            {1: "ThrottlingException", 3: "ValidationException"},
        ),
    ]
    for sink_type, options, url, marks in cases:
        answered.clear()
        records = marked(make_records(6), marks)
        async with running_sink(sink_type, {**options, "endpoint_url": endpoint}) as sink:
            if sink_type is SQS:
                sink.queue.retry = RetryPolicy(0.01, 0.01)
            failures = await sink.send(records)
            registry = sink.context.metrics.registry
            codes = {
                code.rstrip("!"): registry.get_sample_value(
                    "fanout_sink_entry_failures_total", {"sink": "n", "code": code.rstrip("!")}
                )
                for code in marks.values()
            }
        assert sorted(failures) == [1, 3], sink_type
        assert failures[1].retryable, failures[1]  # throttling, internal errors
        assert not failures[3].retryable, failures[3]  # validation
        assert failures[3].reason.startswith(marks[3].rstrip("!"))
        assert codes == dict.fromkeys(codes, 1.0)
        assert len(drain(sqs_client, url)) == 4
        if sink_type is SQS:
            # the server fault was retried inside SqsQueue, the sender fault was not
            assert answered.count("InternalError") == 4
            assert answered.count("InvalidParameterValue") == 1
