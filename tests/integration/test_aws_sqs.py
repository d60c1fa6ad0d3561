"""SqsQueue against moto's SQS server: limits, FIFO ids, attributes, per-message failures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from fanout.aws.clients import AwsClients
from fanout.aws.sqs import SQS_MAX_MESSAGE_BYTES, Message, SqsQueue
from fanout.retry import RetryPolicy, no_wait

pytestmark = pytest.mark.integration


@pytest.fixture
async def open_queue(moto_server) -> AsyncIterator[Callable[..., Any]]:
    clients = AwsClients()

    async def make(url: str, **options: Any) -> SqsQueue:
        client = await clients.client(
            "sqs", region="us-east-1", endpoint_url=moto_server.endpoint_url
        )
        return SqsQueue(client, url, retry=RetryPolicy(0, 0, sleep=no_wait), **options)

    yield make
    await clients.aclose()


def receive_all(sqs_client: Any, url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        answer = sqs_client.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
        )
        got = answer.get("Messages", [])
        if not got:
            return messages
        for m in got:
            messages.append(m)
            sqs_client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


async def test_many_large_messages_arrive_whole_with_their_attributes(
    open_queue, sqs_queue, sqs_client
):
    url = sqs_queue()
    q = await open_queue(url)
    # 25 x 200 KB: several calls of at most 1 MiB each, none of them refused for size.
    messages = [
        Message(
            f"{i:02d}" + "x" * 200_000,
            attributes={"seq": {"DataType": "Number", "StringValue": str(i)}},
        )
        for i in range(25)
    ]
    assert await q.send(messages) == []
    assert q.limit == SQS_MAX_MESSAGE_BYTES
    received = sorted(receive_all(sqs_client, url), key=lambda m: m["Body"][:2])
    assert [m["Body"] for m in received] == [m.body for m in messages]
    assert [m["MessageAttributes"]["seq"]["StringValue"] for m in received] == [
        str(i) for i in range(25)
    ]


async def test_fifo_ids_keep_order_per_group_and_drop_duplicates(open_queue, sqs_queue, sqs_client):
    url = sqs_queue(fifo=True)
    q = await open_queue(url)
    messages = [Message(f"a{i}", group_id="a", deduplication_id=f"a{i}") for i in range(12)]
    messages.append(Message("dup", group_id="a", deduplication_id="a3"))  # same id as a3
    assert await q.send(messages) == []
    received = receive_all(sqs_client, url)
    assert [m["Body"] for m in received] == [f"a{i}" for i in range(12)]
    assert {m["Attributes"]["MessageGroupId"] for m in received} == {"a"}


async def test_the_queues_own_size_limit_is_used(open_queue, sqs_queue, sqs_client):
    url = sqs_queue(MaximumMessageSize="2048")
    q = await open_queue(url)
    failures = await q.send([Message("s" * 2000), Message("b" * 3000), Message("t")])
    assert q.limit == 2048
    assert [(f.index, f.code, f.sender_fault) for f in failures] == [(1, "MessageTooLong", True)]
    assert sorted(m["Body"] for m in receive_all(sqs_client, url)) == ["s" * 2000, "t"]


async def test_received_messages_are_deleted_or_released(open_queue, sqs_queue):
    url = sqs_queue()
    q = await open_queue(url)
    await q.send([Message(str(i)) for i in range(15)])
    received: list[dict[str, Any]] = []
    while got := await q.receive(visibility_s=60):
        received.extend(got)
    assert sorted(int(m["Body"]) for m in received) == list(range(15))
    assert await q.approximate_counts() == (0, 15)
    assert await q.delete([m["ReceiptHandle"] for m in received[:11]]) == set()
    await q.release([m["ReceiptHandle"] for m in received[11:]])
    assert await q.approximate_counts() == (4, 0)


async def test_a_missing_queue_raises_when_its_limit_is_looked_up(open_queue, moto_server):
    from botocore.exceptions import ClientError

    q = await open_queue(f"{moto_server.endpoint_url}/000000000000/no-such-queue")
    with pytest.raises(ClientError):
        await q.send([Message("x")])
