"""SqsQueue: SendMessageBatch within the SQS limits, FIFO ids, per-message failures, retries."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

from fanout.aws.sqs import (
    SQS_ASSUMED_MESSAGE_BYTES,
    SQS_MAX_MESSAGE_BYTES,
    CallTrouble,
    Message,
    SqsQueue,
    plan_batches,
)
from fanout.retry import RetryPolicy, no_wait
from tests.unit.sqs_fakes import FakeSqs

URL = "http://127.0.0.1:1/000000000000/q"


def queue(fake: FakeSqs, url: str = URL, **options) -> SqsQueue:
    return SqsQueue(fake, url, retry=RetryPolicy(0, 0, sleep=no_wait), **options)


def test_batches_hold_at_most_ten_messages_and_the_size_limit():
    assert plan_batches([1] * 23, 100) == [list(range(10)), list(range(10, 20)), [20, 21, 22]]
    assert plan_batches([40, 40, 40, 10, 90], 100) == [[0, 1], [2, 3], [4]]
    assert plan_batches([150, 10], 100) == [[0], [1]]  # too large: alone (send refuses it)
    assert plan_batches([], 100) == []


def test_a_message_counts_its_attributes_against_the_limit():
    plain = Message("é" * 10)
    assert plain.size == 20  # UTF-8 bytes
    tagged = Message(
        b"x" * 10,
        attributes={
            "sink": {"DataType": "String", "StringValue": "audit"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    assert tagged.size == 10 + (4 + 6 + 5) + (4 + 6 + 2)


async def test_messages_go_out_in_calls_within_the_limits_with_their_ids_and_attributes():
    fake = FakeSqs()
    q = queue(fake, max_message_bytes=2500)
    messages = [
        Message(
            f"{i:03d}" + "x" * 997,
            attributes={"n": {"DataType": "Number", "StringValue": str(i)}},
        )
        for i in range(12)
    ]
    assert await q.send(messages) == []
    assert [len(call) for call in fake.calls] == [2] * 6  # 2 x ~1 KB per 2.5 KB call
    sent = [entry for call in fake.calls for entry in call]
    assert [e["MessageBody"] for e in sent] == [m.body for m in messages]
    assert sent[3]["MessageAttributes"] == {"n": {"DataType": "Number", "StringValue": "3"}}
    assert all("MessageGroupId" not in e for e in sent)
    assert all(len({e["Id"] for e in call}) == len(call) for call in fake.calls)


async def test_fifo_messages_carry_group_and_deduplication_ids():
    fake = FakeSqs()
    q = queue(fake, url=URL + ".fifo")
    assert q.fifo
    await q.send([Message("a", group_id="g1", deduplication_id="d1"), Message("b", group_id="g2")])
    first, second = fake.calls[0]
    assert (first["MessageGroupId"], first["MessageDeduplicationId"]) == ("g1", "d1")
    assert second["MessageGroupId"] == "g2"
    assert "MessageDeduplicationId" not in second
    with pytest.raises(ValueError, match="group_id"):
        await q.send([Message("c")])


async def test_server_faults_are_retried_alone_and_sender_faults_reported_at_once():
    def first_call(entry):
        return {"1": ("InternalError", False), "2": ("InvalidMessageContents", True)}.get(
            entry["Id"]
        )

    fake = FakeSqs([first_call])
    troubles: list[CallTrouble] = []
    q = queue(fake, on_trouble=troubles.append)
    failures = await q.send([Message(str(i)) for i in range(4)])
    assert [[e["MessageBody"] for e in call] for call in fake.calls] == [
        ["0", "1", "2", "3"],
        ["1"],  # the server fault, alone; the refused message is not sent again
    ]
    assert [(f.index, f.code, f.sender_fault) for f in failures] == [
        (2, "InvalidMessageContents", True)
    ]
    assert str(failures[0]) == "InvalidMessageContents: x"
    assert troubles == [CallTrouble(1, 4, 2, "InvalidMessageContents: x", False)]


async def test_what_keeps_failing_is_reported_after_the_attempts():
    always = lambda entry: ("ServiceUnavailable", False) if entry["MessageBody"] == "1" else None  # noqa: E731
    fake = FakeSqs([always] * 10)
    failures = await queue(fake, attempts=3).send([Message(str(i)) for i in range(3)])
    assert len(fake.calls) == 3
    assert [(f.index, f.code) for f in failures] == [(1, "ServiceUnavailable")]
    assert sorted(fake.stored) == ["0", "2"]


async def test_a_call_that_fails_as_a_whole_is_retried_then_every_message_reported():
    class Down(FakeSqs):
        async def send_message_batch(self, QueueUrl, Entries):
            self.calls.append(Entries)
            raise OSError("connection refused")

    fake = Down()
    troubles: list[CallTrouble] = []
    failures = await queue(fake, attempts=4, on_trouble=troubles.append).send(
        [Message("a"), Message("b")]
    )
    assert len(fake.calls) == 4
    assert [(f.index, f.code, f.sender_fault) for f in failures] == [
        (0, "OSError", False),
        (1, "OSError", False),
    ]
    assert [t.attempt for t in troubles] == [1, 2, 3, 4]
    assert all(t.raised for t in troubles)


async def test_an_answer_that_cannot_be_parsed_is_a_failed_call():
    class Garbled(FakeSqs):
        async def send_message_batch(self, QueueUrl, Entries):
            self.calls.append(Entries)
            raise ResponseParserError("Unable to parse response: <html>502 Bad Gateway")

    fake = Garbled()
    failures = await queue(fake, attempts=2).send([Message("a")])
    assert len(fake.calls) == 2
    assert [(f.code, f.sender_fault) for f in failures] == [("ResponseParserError", False)]


async def test_retries_wait_with_the_retry_policy():
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    fail_twice = [lambda entry: ("Throttling", False)] * 2
    fake = FakeSqs(fail_twice)
    q = SqsQueue(fake, URL, retry=RetryPolicy(1.0, 1.0, floor=1.0, sleep=sleep))
    assert await q.send([Message("a")]) == []
    assert waits == [1.0, 1.0]


async def test_the_size_limit_is_the_queues_own_looked_up_once():
    fake = FakeSqs(MaximumMessageSize="1024")
    q = queue(fake)
    assert q.limit == SQS_MAX_MESSAGE_BYTES
    failures = await q.send([Message("x" * 1024), Message("x" * 1025)])
    assert q.limit == 1024
    assert [(f.index, f.code, f.sender_fault) for f in failures] == [(1, "MessageTooLong", True)]
    assert [len(call) for call in fake.calls] == [1]  # the oversized one is never sent
    assert (
        await queue(FakeSqs(MaximumMessageSize="4096"), max_message_bytes=2048).message_limit()
        == 2048
    )


class _Denied(FakeSqs):
    def __init__(self, code: str) -> None:
        super().__init__()
        self.code = code
        self.lookups = 0

    async def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]):
        self.lookups += 1
        raise ClientError(
            {"Error": {"Code": self.code, "Message": "not authorized"}}, "GetQueueAttributes"
        )


@pytest.mark.parametrize("code", ["AccessDenied", "AccessDeniedException"])
async def test_a_denied_size_lookup_assumes_256_kib_and_says_so(code, caplog):
    fake = _Denied(code)
    q = queue(fake)
    assert await q.message_limit() == SQS_ASSUMED_MESSAGE_BYTES == 262_144
    assert await q.send([Message("x")]) == []
    # batches keep under the assumed limit too (a queue refuses a larger batch whole)
    assert await q.send([Message("y" * 100_000) for _ in range(5)]) == []
    assert max(sum(len(e["MessageBody"]) for e in call) for call in fake.calls) <= 262_144
    assert fake.lookups == 1  # not asked again
    (line,) = [r for r in caplog.records if r.getMessage() == "sqs_queue_size_unknown"]
    assert line.levelname == "WARNING"
    assert line.__dict__["limit"] == SQS_ASSUMED_MESSAGE_BYTES
    assert "not authorized" not in line.__dict__["error"]  # the code, not the provider's text
    assert await queue(_Denied(code), max_message_bytes=4096).message_limit() == 4096


async def test_other_size_lookup_errors_are_raised():
    with pytest.raises(ClientError):
        await queue(_Denied("AWS.SimpleQueueService.NonExistentQueue")).message_limit()


async def test_received_messages_are_deleted_or_released_in_calls_of_ten():
    fake = FakeSqs()
    q = queue(fake)
    await q.send([Message(str(i)) for i in range(25)])
    received = []
    while got := await q.receive(visibility_s=60):
        received.extend(got)
    assert len(received) == 25
    assert await q.approximate_counts() == (0, 25)
    assert await q.delete([m["ReceiptHandle"] for m in received[:12]] + ["bogus"]) == {12}
    await q.release([m["ReceiptHandle"] for m in received[12:]])
    assert await q.approximate_counts() == (13, 0)
    peeked = await q.receive(visibility_s=0)
    assert len(peeked) == 10
    assert await q.approximate_counts() == (13, 0)  # a peek leaves them visible
