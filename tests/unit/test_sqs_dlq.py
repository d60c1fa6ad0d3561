"""SqsDeadLetter's batching, partial failures, overflow and reading back, against a fake queue."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from fanout.aws.clients import AwsClients
from fanout.config import build_config
from fanout.delivery.deadletter import Letter, PartialDeadLetterError, entry
from fanout.delivery.deadletter.sqs import OVERFLOW_KEY, SqsDeadLetter, load_body
from fanout.errors import DeadLetterError
from fanout.retry import RetryPolicy, no_wait
from tests.unit.delivery_fakes import ARN, SHARD, rec
from tests.unit.sqs_fakes import FakeSession, FakeSqs, fake_clients


def make_entries(n: int, pad: int = 0) -> list[dict[str, Any]]:
    result = []
    for i in range(n):
        record = rec(i)
        if pad:
            record["dynamodb"]["NewImage"]["blob"] = {"S": "x" * pad}
        result.append(
            entry(
                record=record,
                sink="audit",
                stream="orders",
                stream_arn=ARN,
                shard_id=SHARD,
                error_class="Boom",
                error_message="boom",
                attempts=3,
                first_failure_at=1.0,
                last_failure_at=2.0,
            )
        )
    return result


def dead_letter(
    tmp_path, fake: FakeSqs, limit: int = 1_048_576, fifo: bool = False
) -> SqsDeadLetter:
    url = "http://127.0.0.1:1/000000000000/dlq" + (".fifo" if fifo else "")
    return SqsDeadLetter(
        url,
        clients=fake_clients(fake),
        overflow_dir=tmp_path / "overflow",
        max_message_bytes=limit,
        backoff=RetryPolicy(0, 0, sleep=no_wait),
    )


async def test_entries_are_sent_in_batches_of_at_most_ten_and_arrive_whole(tmp_path):
    fake = FakeSqs()
    entries = make_entries(23)
    await dead_letter(tmp_path, fake).write(entries)
    assert [len(c) for c in fake.calls] == [10, 10, 3]
    assert [load_body(b)[0] for b in fake.stored] == entries


async def test_a_batch_never_exceeds_the_total_payload_limit(tmp_path):
    fake = FakeSqs()
    entries = make_entries(6, pad=1500)
    dl = dead_letter(tmp_path, fake, limit=4096)
    await dl.write(entries)
    for call in fake.calls:
        assert sum(len(m["MessageBody"].encode()) for m in call) <= 4096
    assert [load_body(b)[0] for b in fake.stored] == entries


async def test_an_oversized_entry_goes_to_an_overflow_file_behind_a_pointer(tmp_path):
    fake = FakeSqs()
    small, big = make_entries(1)[0], make_entries(1, pad=10_000)[0]
    await dead_letter(tmp_path, fake, limit=4096).write([small, big])
    bodies = [orjson.loads(b) for b in fake.stored]
    assert OVERFLOW_KEY not in bodies[0]
    pointer = bodies[1][OVERFLOW_KEY]
    assert bodies[1]["sequence_number"] == big["sequence_number"]
    assert "record" not in bodies[1]
    assert all(len(b.encode()) <= 4096 for b in fake.stored)
    whole, path = load_body(fake.stored[1])
    assert whole == big  # nothing truncated
    assert path is not None
    assert path.parent == (tmp_path / "overflow").resolve()
    assert pointer["bytes"] == len(orjson.dumps(big))


async def test_failed_entries_of_a_batch_are_retried_alone(tmp_path):
    entries = make_entries(5)
    fail_two = lambda m: ("InternalError", False) if m["Id"] in ("1", "3") else None  # noqa: E731
    fake = FakeSqs([fail_two])
    await dead_letter(tmp_path, fake).write(entries)
    assert len(fake.calls) == 2
    retried = [load_body(m["MessageBody"])[0] for m in fake.calls[1]]
    assert retried == [entries[1], entries[3]]
    assert sorted(load_body(b)[0]["sequence_number"] for b in fake.stored) == sorted(
        e["sequence_number"] for e in entries
    )


async def test_a_refused_message_is_resent_through_the_overflow_path(tmp_path):
    entries = make_entries(2)
    refuse = lambda m: ("InvalidMessageContents", True) if m["Id"] == "0" else None  # noqa: E731
    fake = FakeSqs([refuse])
    await dead_letter(tmp_path, fake).write(entries)
    pointer = orjson.loads(fake.calls[1][0]["MessageBody"])
    assert "InvalidMessageContents" in pointer[OVERFLOW_KEY]["reason"]
    assert load_body(fake.calls[1][0]["MessageBody"])[0] == entries[0]


async def test_entries_that_keep_failing_raise_naming_only_those(tmp_path):
    entries = make_entries(4)
    always = lambda m: ("ServiceUnavailable", False) if m["Id"] == "0" else None  # noqa: E731
    fake = FakeSqs([always] * 10)
    with pytest.raises(PartialDeadLetterError) as info:
        await dead_letter(tmp_path, fake).write(entries)
    assert info.value.remaining == [entries[0]]
    assert len(fake.stored) == 3


async def test_all_failing_raises_dead_letter_error(tmp_path):
    class Down(FakeSqs):
        async def send_message_batch(self, QueueUrl, Entries):
            self.calls.append(Entries)
            raise OSError("connection refused")

    fake = Down()
    with pytest.raises(DeadLetterError) as info:
        await dead_letter(tmp_path, fake).write(make_entries(3))
    assert not isinstance(info.value, PartialDeadLetterError)
    assert len(fake.calls) == 4


async def test_fifo_queues_get_group_and_deduplication_ids(tmp_path):
    fake = FakeSqs()
    entries = make_entries(2)
    await dead_letter(tmp_path, fake, fifo=True).write(entries)
    first = fake.calls[0][0]
    assert first["MessageGroupId"]
    assert len(first["MessageDeduplicationId"]) == 64
    assert first["MessageDeduplicationId"] != fake.calls[0][1]["MessageDeduplicationId"]


def test_a_pointer_whose_file_changed_is_refused(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(b"{}")
    body = orjson.dumps({OVERFLOW_KEY: {"path": str(path), "sha256": "0" * 64}})
    with pytest.raises(DeadLetterError):
        load_body(body)


# -- reading back ------------------------------------------------------------------------------


async def read_all(dl: SqsDeadLetter) -> list[Letter]:
    letters: list[Letter] = []
    async for batch in dl.read():
        assert len(batch) <= 10
        letters.extend(batch)
    return letters


async def test_entries_are_read_back_whole_then_acknowledged_or_released(tmp_path):
    fake = FakeSqs()
    dl = dead_letter(tmp_path, fake, limit=4096)
    entries = [*make_entries(12), make_entries(1, pad=10_000)[0]]
    entries[-1]["sequence_number"] = "big"
    await dl.write(entries)
    (overflow,) = (tmp_path / "overflow").iterdir()

    letters = await read_all(dl)
    assert [letter.entry for letter in letters] == entries
    assert not any(letter.acknowledged for letter in letters)
    assert len(fake.hidden) == 13  # received: hidden from other readers meanwhile

    await dl.acknowledge([letters[0], letters[-1]], target="audit")
    assert len(fake.deleted) == 2
    assert not overflow.exists()  # the whole entry goes with its pointer message
    await dl.release(letters[1:-1])
    assert not fake.hidden

    again = await read_all(dl)
    assert [letter.entry for letter in again] == entries[1:-1]


async def test_an_unreadable_message_is_read_as_a_letter_without_entry(tmp_path):
    fake = FakeSqs()
    dl = dead_letter(tmp_path, fake)
    await dl.write(make_entries(1))
    missing = orjson.dumps({OVERFLOW_KEY: {"path": str(tmp_path / "gone.json"), "sha256": "0"}})
    fake.messages["m-bad"] = {"MessageId": "m-bad", "ReceiptHandle": "r-bad", "Body": missing}
    letters = await read_all(dl)
    assert letters[0].entry is not None
    assert letters[1].entry is None
    assert "gone.json" in letters[1].error
    await dl.release(letters[1:])
    assert fake.hidden == {"m1"}


async def test_reads_and_writes_share_the_process_client_with_the_configured_endpoint(
    tmp_path,
):
    fake = FakeSqs()
    session = FakeSession(fake)
    clients = AwsClients(session=session)
    config = build_config(
        {
            "streams": {"orders": {"table": "Orders"}},
            "checkpoints": {"path": str(tmp_path / "fanout.db")},
            "sinks": {
                name: {
                    "type": "stdout",
                    "dead_letter": {
                        "type": "sqs",
                        "queue_url": "http://127.0.0.1:1/000000000000/dlq",
                        "region": "eu-west-1",
                        "endpoint_url": "http://127.0.0.1:1",
                    },
                }
                for name in ("audit", "search")
            },
        }
    )
    audit = SqsDeadLetter.for_sink(config, "audit", clients)
    search = SqsDeadLetter.for_sink(config, "search", clients)
    assert audit.overflow_dir == tmp_path / "dlq-overflow"
    await audit.write(make_entries(2))
    await search.write(make_entries(1))
    assert len(await read_all(audit)) == 3
    assert session.created == [("sqs", "eu-west-1", "http://127.0.0.1:1")]  # one client
    await clients.aclose()
