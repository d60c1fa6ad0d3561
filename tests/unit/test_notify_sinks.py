"""The sns, sqs and eventbridge sinks against scripted fake clients: calls within the limits,
per-entry outcomes, order on FIFO destinations, the claim check, metrics and logs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

from fanout.aws.clients import AwsClients
from fanout.records import Record
from fanout.retry import RetryPolicy, no_wait
from fanout.sink import Sink, SinkContext
from fanout.testing.contract import make_records
from sinks.notify.eventbridge import EVENTBRIDGE
from sinks.notify.sns import SNS
from sinks.notify.sqs import SQS, SqsSink
from tests.unit.sqs_fakes import FakeSqs

# An answer rule: (entry, position) -> None (taken) or (code, sender_fault)
Rule = Callable[[dict[str, Any], int], tuple[str, bool] | None]


def client_error(code: str, status: int = 400) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": f"{code}!"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "Call")


class FakeSns:
    def __init__(self, *script: Rule | BaseException) -> None:
        self.script = list(script)
        self.calls: list[list[dict[str, Any]]] = []
        self.published: list[dict[str, Any]] = []

    async def publish_batch(self, TopicArn: str, PublishBatchRequestEntries: list[dict[str, Any]]):
        entries = PublishBatchRequestEntries
        assert len(entries) <= 10
        self.calls.append(entries)
        rule = self.script.pop(0) if self.script else None
        if isinstance(rule, BaseException):
            raise rule
        ok, failed = [], []
        for position, entry in enumerate(entries):
            answer = rule(entry, position) if rule else None
            if answer is None:
                self.published.append(entry)
                ok.append({"Id": entry["Id"], "MessageId": "m"})
            elif answer[0] != "silent":
                failed.append(
                    {
                        "Id": entry["Id"],
                        "Code": answer[0],
                        "SenderFault": answer[1],
                        "Message": "no",
                    }
                )
        return {"Successful": ok, "Failed": failed}


class FakeEvents:
    def __init__(self, *script: Rule | BaseException) -> None:
        self.script = list(script)
        self.calls: list[list[dict[str, Any]]] = []
        self.put: list[dict[str, Any]] = []

    async def put_events(self, Entries: list[dict[str, Any]]):
        assert len(Entries) <= 10
        self.calls.append(Entries)
        rule = self.script.pop(0) if self.script else None
        if isinstance(rule, BaseException):
            raise rule
        results = []
        for position, entry in enumerate(Entries):
            answer = rule(entry, position) if rule else None
            if answer is None:
                self.put.append(entry)
                results.append({"EventId": "e"})
            else:
                results.append({"ErrorCode": answer[0], "ErrorMessage": "no"})
        return {"FailedEntryCount": sum("ErrorCode" in r for r in results), "Entries": results}


class FakeS3:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.fail = fail

    async def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str):
        if self.fail is not None:
            raise self.fail
        self.objects[(Bucket, Key)] = Body


class Session:
    def __init__(self, clients: dict[str, Any]) -> None:
        self.clients = clients

    def create_client(self, service: str, **options: Any):
        @asynccontextmanager
        async def opened() -> AsyncIterator[Any]:
            yield self.clients[service]

        return opened()


@asynccontextmanager
async def started(sink_type: Any, options: dict[str, Any], **clients: Any) -> AsyncIterator[Any]:
    context = SinkContext.standalone("n", aws=AwsClients(session=Session(clients)))
    sink: Sink = sink_type.build("n", sink_type.config.model_validate(options), context)
    await sink.start()
    if isinstance(sink, SqsSink):
        assert sink.queue is not None
        sink.queue.retry = RetryPolicy(0, 0, sleep=no_wait)
    try:
        yield sink
    finally:
        await sink.stop()
        await context.aclose()


def padded(records: list[Record], size: int) -> list[Record]:
    for r in records:
        r["dynamodb"]["NewImage"]["pad"] = {"S": "x" * size}
    return records


def failure_count(sink: Any, code: str) -> float:
    registry = sink.context.metrics.registry
    value = registry.get_sample_value(
        "fanout_sink_entry_failures_total", {"sink": "n", "code": code}
    )
    return value or 0.0


SNS_OPTIONS = {"type": "sns", "topic_arn": "arn:aws:sns:eu-west-1:1:t"}
FIFO_SNS = {"type": "sns", "topic_arn": "arn:aws:sns:eu-west-1:1:t.fifo"}
EB_OPTIONS = {"type": "eventbridge", "source": "app.orders"}
QUEUE = "https://sqs.eu-west-1.amazonaws.com/1/q"


# -- splitting -----------------------------------------------------------------------------


async def test_calls_hold_at_most_ten_entries_and_the_size_limit():
    sns = FakeSns()
    records = padded(make_records(25), 30_000)  # ~31 KB each: 8 fit in 256 KiB
    async with started(SNS, SNS_OPTIONS, sns=sns) as sink:
        assert await sink.send(records) == {}
    sizes = [len(c) for c in sns.calls]
    assert sum(sizes) == 25
    assert max(sizes) == 8
    for call in sns.calls:
        assert sum(len(e["Message"]) for e in call) <= 262_144
    events = FakeEvents()
    async with started(EVENTBRIDGE, EB_OPTIONS, events=events) as sink:
        assert await sink.send(make_records(25)) == {}
    assert [len(c) for c in events.calls] == [10, 10, 5]


async def test_entries_carry_attributes_and_fifo_ids_from_the_key_and_event_id():
    sns = FakeSns()
    records = make_records(3)
    async with started(SNS, {**FIFO_SNS, "group_id": "{keys.pk}"}, sns=sns) as sink:
        assert await sink.send(records) == {}
    entries = sns.calls[0]
    assert [e["MessageGroupId"] for e in entries] == [
        r["dynamodb"]["Keys"]["pk"]["S"] for r in records
    ]
    assert [e["MessageDeduplicationId"] for e in entries] == [r["eventID"] for r in records]
    assert entries[1]["MessageAttributes"] == {
        "eventName": {"DataType": "String", "StringValue": "MODIFY"},
        "table": {"DataType": "String", "StringValue": "Contract"},
    }
    assert orjson.loads(entries[0]["Message"])["keys"] == {"pk": "item#0-0", "sk": 0}
    plain = FakeSns()
    async with started(SNS, {**SNS_OPTIONS, "attributes": {}}, sns=plain) as sink:
        await sink.send(records)
    assert all(set(e) == {"Id", "Message"} for e in plain.calls[0])


# -- per-entry outcomes ----------------------------------------------------------------------


async def test_sns_throttling_is_retryable_and_validation_permanent_with_the_code():
    def rule(entry: dict[str, Any], position: int) -> tuple[str, bool] | None:
        return {
            1: ("Throttled", True),
            3: ("InvalidParameter", True),
            5: ("InternalError", False),
        }.get(position)

    sns = FakeSns(rule)
    async with started(SNS, SNS_OPTIONS, sns=sns) as sink:
        failures = await sink.send(make_records(7))
        assert {i: f.retryable for i, f in failures.items()} == {1: True, 3: False, 5: True}
        assert failures[3].reason == "InvalidParameter: no"
        assert failure_count(sink, "Throttled") == 1
        assert failure_count(sink, "InvalidParameter") == 1


async def test_an_entry_sns_does_not_report_on_is_retried():
    sns = FakeSns(lambda e, p: ("silent", False) if p == 0 else None)
    async with started(SNS, SNS_OPTIONS, sns=sns) as sink:
        failures = await sink.send(make_records(2))
    assert list(failures) == [0]
    assert failures[0].retryable


async def test_eventbridge_throttling_and_internal_failures_are_retryable_others_permanent():
    def rule(entry: dict[str, Any], position: int) -> tuple[str, bool] | None:
        codes = {0: "ThrottlingException", 1: "InternalFailure", 2: "MalformedDetail"}
        return (codes[position], False) if position in codes else None

    events = FakeEvents(rule)
    async with started(EVENTBRIDGE, EB_OPTIONS, events=events) as sink:
        failures = await sink.send(make_records(4))
    assert {i: f.retryable for i, f in failures.items()} == {0: True, 1: True, 2: False}
    assert len(events.put) == 1


async def test_eventbridge_entries_have_source_detail_type_time_and_the_bus():
    events = FakeEvents()
    options = {**EB_OPTIONS, "event_bus_name": "orders", "detail_type": "{table}.{eventName}"}
    async with started(EVENTBRIDGE, options, events=events) as sink:
        await sink.send(make_records(2))
    first = events.calls[0][0]
    assert first["Source"] == "app.orders"
    assert first["DetailType"] == "Contract.INSERT"
    assert first["EventBusName"] == "orders"
    assert first["Time"].timestamp() == 1767225600
    assert orjson.loads(first["Detail"])["eventName"] == "INSERT"
    empty = FakeEvents()
    async with started(
        EVENTBRIDGE, {**EB_OPTIONS, "detail_type": "{old.status}"}, events=empty
    ) as sink:
        failures = await sink.send(make_records(2))  # the INSERT has no old image
    assert list(failures) == [0]
    assert not failures[0].retryable
    assert "detail_type" in failures[0].reason


async def test_sqs_sender_faults_are_permanent_server_faults_retryable():
    def rule(entry: dict[str, Any]) -> tuple[str, bool] | None:
        body = orjson.loads(entry["MessageBody"])
        n = int(body["keys"]["sk"])
        return {1: ("InvalidMessageContents", True), 2: ("ServiceUnavailable", False)}.get(n)

    sqs = FakeSqs([rule] * 4)
    async with started(SQS, {"type": "sqs", "queue_url": QUEUE}, sqs=sqs) as sink:
        failures = await sink.send(make_records(4))
        assert {i: f.retryable for i, f in failures.items()} == {1: False, 2: True}
        assert failures[1].reason.startswith("InvalidMessageContents")
        assert failure_count(sink, "ServiceUnavailable") == 1


# -- whole calls -----------------------------------------------------------------------------


async def test_a_call_refused_for_validation_is_made_again_entry_by_entry():
    bad = make_records(3)
    # the call of three is refused; alone, the second is refused again, the others go
    sns = FakeSns(
        client_error("InvalidParameter"), lambda e, p: None, client_error("InvalidParameter")
    )
    async with started(SNS, SNS_OPTIONS, sns=sns) as sink:
        failures = await sink.send(bad)
    assert [len(c) for c in sns.calls] == [3, 1, 1, 1]
    assert list(failures) == [1]
    assert not failures[1].retryable


async def test_entry_by_entry_a_fifo_sink_stops_at_a_retryable_refusal():
    sns = FakeSns(client_error("InvalidParameter"), lambda e, p: None, client_error("Throttling"))
    async with started(SNS, FIFO_SNS, sns=sns) as sink:
        failures = await sink.send(make_records(3))
        assert failure_count(sink, "Throttling") == 1  # the record held back is not counted
    assert [len(c) for c in sns.calls] == [3, 1, 1]  # the third is not sent alone
    assert sorted(failures) == [1, 2]
    assert failures[1].reason == "Throttling: Throttling!"
    assert failures[2].retryable
    assert failures[2].reason.startswith("not sent")


async def test_a_throttled_call_fails_its_entries_and_stops_the_batch():
    sns = FakeSns(client_error("Throttling", 400))
    async with started(SNS, SNS_OPTIONS, sns=sns) as sink:
        failures = await sink.send(make_records(25))
    assert len(sns.calls) == 1  # the other 15 were not pushed at a throttled topic
    assert sorted(failures) == list(range(25))
    assert all(f.retryable for f in failures.values())
    assert failures[0].reason == "Throttling: Throttling!"
    assert failures[20].reason.startswith("not sent")


async def test_access_denied_and_network_errors_are_retryable():
    for error in (
        client_error("AuthorizationError", 403),
        OSError("connection reset"),
        ResponseParserError("an HTML error page"),
    ):
        sns = FakeSns(error)
        async with started(SNS, SNS_OPTIONS, sns=sns) as sink:
            failures = await sink.send(make_records(2))
        assert sorted(failures) == [0, 1]
        assert all(f.retryable for f in failures.values())


# -- order -----------------------------------------------------------------------------------


async def test_fifo_stops_at_the_first_retryable_failure_and_holds_back_the_rest():
    sns = FakeSns(lambda e, p: ("Throttled", True) if p == 3 else None)
    async with started(SNS, FIFO_SNS, sns=sns) as sink:
        assert sink.ordered
        failures = await sink.send(make_records(25))
    assert len(sns.calls) == 1  # calls 2 and 3 wait
    assert sorted(failures) == list(range(3, 25))
    assert all(f.retryable for f in failures.values())


async def test_fifo_permanent_failures_do_not_hold_back_the_rest():
    sns = FakeSns(lambda e, p: ("InvalidParameter", True) if p == 3 else None)
    async with started(SNS, FIFO_SNS, sns=sns) as sink:
        failures = await sink.send(make_records(25))
    assert [len(c) for c in sns.calls] == [10, 10, 5]
    assert list(failures) == [3]
    assert not failures[3].retryable


async def test_standard_destinations_are_unordered_and_send_past_a_failure():
    sns = FakeSns(lambda e, p: ("Throttled", True) if p == 3 else None)
    async with started(SNS, SNS_OPTIONS, sns=sns) as sink:
        assert not sink.ordered
        failures = await sink.send(make_records(25))
    assert [len(c) for c in sns.calls] == [10, 10, 5]
    assert list(failures) == [3]


# -- too large -------------------------------------------------------------------------------


async def test_a_record_too_large_fails_permanently_with_the_sizes():
    records = make_records(3)
    padded(records[1:2], 300_000)
    sns = FakeSns()
    async with started(SNS, SNS_OPTIONS, sns=sns) as sink:
        failures = await sink.send(records)
        assert failure_count(sink, "MessageTooLarge") == 1
    (failure,) = failures.values()
    assert list(failures) == [1]
    assert not failure.retryable
    assert "exceeds the 262144-byte limit" in failure.reason
    assert failure.reason.startswith("MessageTooLarge: message of 30")
    assert len(sns.published) == 2


async def test_the_claim_check_puts_the_body_to_s3_and_sends_a_pointer():
    records = make_records(2)
    padded(records[:1], 300_000)
    s3, sns = FakeS3(), FakeSns()
    options = {**FIFO_SNS, "large_messages": {"bucket": "big", "prefix": "fanout/"}}
    async with started(SNS, options, sns=sns, s3=s3) as sink:
        assert await sink.send(records) == {}
        claims = sink.context.metrics.registry.get_sample_value(
            "fanout_sink_claim_checks_total", {"sink": "n"}
        )
    ((bucket, key), body) = next(iter(s3.objects.items()))
    assert (bucket, key) == ("big", f"fanout/n/{records[0]['eventID']}.json")
    assert orjson.loads(body)["new"]["pad"] == "x" * 300_000
    pointer_entry = sns.published[0]
    pointer = orjson.loads(pointer_entry["Message"])
    assert pointer["claim_check"]["key"] == key
    assert pointer["claim_check"]["bytes"] == len(body)
    assert pointer["eventID"] == records[0]["eventID"]
    assert pointer["keys"] == {"pk": "item#0-0", "sk": 0}
    # the pointer keeps the record's attributes and FIFO ids
    assert pointer_entry["MessageAttributes"]["eventName"]["StringValue"] == "INSERT"
    assert pointer_entry["MessageDeduplicationId"] == records[0]["eventID"]
    assert claims == 1


async def test_a_failed_claim_check_is_retryable_and_holds_back_a_fifo_batch():
    records = make_records(3)
    padded(records[1:2], 300_000)
    s3, sns = FakeS3(fail=client_error("SlowDown", 503)), FakeSns()
    options = {**FIFO_SNS, "large_messages": {"bucket": "big"}}
    async with started(SNS, options, sns=sns, s3=s3) as sink:
        failures = await sink.send(records)
    assert sorted(failures) == [1, 2]
    assert failures[1].retryable
    assert "claim check to S3 failed" in failures[1].reason
    assert [len(c) for c in sns.calls] == [1]  # only the record before it went out


# -- logs ------------------------------------------------------------------------------------


async def test_failures_are_logged_without_bodies(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO)
    records = padded(make_records(2), 10)
    records[0]["dynamodb"]["NewImage"]["secret"] = {"S": "do-not-log-me"}
    sns = FakeSns(lambda e, p: ("Throttled", True))
    async with started(SNS, SNS_OPTIONS, sns=sns) as sink:
        await sink.send(records)
    (line,) = [r for r in caplog.records if r.getMessage() == "notification_entries_failed"]
    assert line.__dict__["codes"] == {"Throttled": 2}
    for r in caplog.records:
        assert "do-not-log-me" not in r.getMessage() + repr(r.__dict__)


def test_the_region_comes_from_the_queue_url_or_the_arn():
    from sinks.notify.common import region_from_arn
    from sinks.notify.sqs import region_from_url

    assert region_from_url("https://sqs.eu-west-1.amazonaws.com/123/orders.fifo") == "eu-west-1"
    assert region_from_url("https://ap-south-1.queue.amazonaws.com/123/q") == "ap-south-1"
    assert region_from_url("https://queue.amazonaws.com/123/q") is None
    assert region_from_url("http://127.0.0.1:5000/123/q") is None
    assert region_from_arn("arn:aws:sns:eu-west-1:123:orders") == "eu-west-1"
    assert region_from_arn("orders") is None
