"""The sqs dead-letter destination against moto's SQS server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest

from fanout.aws.clients import AwsClients
from fanout.delivery.deadletter import Letter
from fanout.delivery.deadletter.sqs import (
    OVERFLOW_KEY,
    SQS_MAX_MESSAGE_BYTES,
    SqsDeadLetter,
    load_body,
)
from fanout.errors import DeadLetterError
from tests.unit.test_sqs_dlq import make_entries

pytestmark = pytest.mark.integration


@pytest.fixture
async def aws() -> AsyncIterator[AwsClients]:
    clients = AwsClients()
    yield clients
    await clients.aclose()


def receive_all(sqs_client, url: str) -> list[str]:
    bodies: list[str] = []
    while True:
        answer = sqs_client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = answer.get("Messages", [])
        if not messages:
            return bodies
        for m in messages:
            bodies.append(m["Body"])
            sqs_client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


async def test_entries_arrive_whole_in_the_queue(moto_server, sqs_queue, sqs_client, tmp_path, aws):
    url = sqs_queue()
    dl = SqsDeadLetter(
        url,
        clients=aws,
        region="us-east-1",
        endpoint_url=moto_server.endpoint_url,
        overflow_dir=tmp_path,
    )
    entries = make_entries(25, pad=2000)
    try:
        await dl.write(entries)
    finally:
        await dl.aclose()
    bodies = receive_all(sqs_client, url)
    received = sorted((load_body(b)[0] for b in bodies), key=lambda e: e["sequence_number"])
    assert received == entries
    assert dl.limit == SQS_MAX_MESSAGE_BYTES


async def test_an_oversized_entry_goes_through_the_overflow_path(
    moto_server, sqs_queue, sqs_client, tmp_path, aws
):
    url = sqs_queue(MaximumMessageSize="2048")  # the queue's own, lower, limit
    dl = SqsDeadLetter(
        url,
        clients=aws,
        region="us-east-1",
        endpoint_url=moto_server.endpoint_url,
        overflow_dir=tmp_path / "o",
    )
    small = make_entries(1)[0]
    big = make_entries(2, pad=50_000)[1]
    try:
        await dl.write([small, big])
    finally:
        await dl.aclose()
    assert dl.limit == 2048
    bodies = receive_all(sqs_client, url)
    assert len(bodies) == 2
    pointers = [orjson.loads(b) for b in bodies if OVERFLOW_KEY in orjson.loads(b)]
    assert len(pointers) == 1
    assert pointers[0]["sequence_number"] == big["sequence_number"]
    loaded = {load_body(b)[0]["sequence_number"]: load_body(b) for b in bodies}
    whole, path = loaded[big["sequence_number"]]
    assert whole == big
    assert path is not None
    assert path.exists()
    assert loaded[small["sequence_number"]] == (small, None)


async def test_an_entry_larger_than_the_sqs_limit_is_never_truncated(
    moto_server, sqs_queue, sqs_client, tmp_path, aws
):
    url = sqs_queue()
    dl = SqsDeadLetter(
        url,
        clients=aws,
        region="us-east-1",
        endpoint_url=moto_server.endpoint_url,
        overflow_dir=tmp_path,
    )
    huge = make_entries(1, pad=SQS_MAX_MESSAGE_BYTES + 10)[0]
    try:
        await dl.write([huge])
    finally:
        await dl.aclose()
    (body,) = receive_all(sqs_client, url)
    assert len(body) < 4096
    assert load_body(body)[0] == huge


async def test_a_missing_queue_fails_the_write(moto_server, tmp_path, aws):
    url = f"{moto_server.endpoint_url}/000000000000/no-such-queue"
    dl = SqsDeadLetter(
        url,
        clients=aws,
        region="us-east-1",
        endpoint_url=moto_server.endpoint_url,
        overflow_dir=tmp_path,
    )
    try:
        with pytest.raises(DeadLetterError):
            await dl.write(make_entries(1))
    finally:
        await dl.aclose()


async def read_all(dl: SqsDeadLetter) -> list[Letter]:
    letters: list[Letter] = []
    async for batch in dl.read():
        assert len(batch) <= 10
        letters.extend(batch)
    return letters


def seq(letter: Letter) -> str:
    assert letter.entry is not None
    return str(letter.entry["sequence_number"])


async def test_entries_are_read_back_whole_then_acknowledged_or_released(
    moto_server, sqs_queue, tmp_path, aws
):
    url = sqs_queue(MaximumMessageSize="2048")
    dl = SqsDeadLetter(
        url,
        clients=aws,
        region="us-east-1",
        endpoint_url=moto_server.endpoint_url,
        overflow_dir=tmp_path / "o",
    )
    small = make_entries(12)
    big = make_entries(13, pad=50_000)[12]
    await dl.write([*small, big])
    (overflow,) = (tmp_path / "o").iterdir()

    letters = sorted(await read_all(dl), key=seq)
    assert [letter.entry for letter in letters] == [*small, big]
    assert await dl.approximate_counts() == (0, 13)  # received: hidden from other readers

    done = [letters[0], letters[12]]
    await dl.acknowledge(done, target="audit")
    assert not overflow.exists()  # the overflow file goes with its message
    await dl.release(letters[1:12])
    assert await dl.approximate_counts() == (11, 0)

    again = sorted(await read_all(dl), key=seq)
    assert [letter.entry for letter in again] == small[1:]
    await dl.acknowledge(again, target="audit")
    assert await read_all(dl) == []
