"""Overflows of the sqs dead-letter destination: stored once across retries, removed when
no message points at them, private to the worker's user."""

from __future__ import annotations

import stat
from typing import Any

import orjson
import pytest

from fanout.delivery.deadletter.overflow import FileOverflow
from fanout.delivery.deadletter.sqs import OVERFLOW_KEY, SqsDeadLetter
from fanout.errors import DeadLetterError
from fanout.retry import RetryPolicy, no_wait
from tests.unit.sqs_fakes import FakeSqs, fake_clients
from tests.unit.test_sqs_dlq import make_entries


def dead_letter(tmp_path, fake: FakeSqs, limit: int = 4096) -> SqsDeadLetter:
    return SqsDeadLetter(
        "http://127.0.0.1:1/000000000000/dlq",
        clients=fake_clients(fake),
        overflow_dir=tmp_path / "overflow",
        max_message_bytes=limit,
        backoff=RetryPolicy(0, 0, sleep=no_wait),
    )


def files(tmp_path) -> list[Any]:
    return list(FileOverflow(tmp_path / "overflow").stored())


class Down(FakeSqs):
    """Every SendMessageBatch call fails as a whole (an outage), until ``up``."""

    def __init__(self) -> None:
        super().__init__()
        self.up = False

    async def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]):
        if not self.up:
            self.calls.append(Entries)
            raise OSError("connection refused")
        return await super().send_message_batch(QueueUrl, Entries)


async def test_retries_during_an_outage_store_one_overflow_and_the_pointer_finds_it(tmp_path):
    big = make_entries(1, pad=20_000)
    fake = Down()
    dl = dead_letter(tmp_path, fake)
    for _ in range(5):  # the delivery layer retries the same entries until they are stored
        with pytest.raises(DeadLetterError):
            await dl.write(big)
    # the call failed as a whole: SQS may hold a pointer, so its overflow stays (one copy)
    assert len(files(tmp_path)) == 1
    fake.up = True
    await dl.write(big)
    (overflow,) = files(tmp_path)
    pointer = orjson.loads(fake.stored[0])[OVERFLOW_KEY]
    assert pointer["path"] == str(overflow)
    assert (await dl.load(fake.stored[0]))[0] == big[0]


async def test_an_overflow_whose_message_sqs_refused_to_store_is_removed(tmp_path):
    entries = make_entries(2, pad=20_000)
    always = lambda m: ("ServiceUnavailable", False)  # noqa: E731 - an answer: not stored
    fake = FakeSqs([always] * 4)  # four attempts, then the queue stores again
    dl = dead_letter(tmp_path, fake)
    with pytest.raises(DeadLetterError):
        await dl.write(entries)
    assert files(tmp_path) == []  # the records go elsewhere (or again): nothing is left behind
    await dl.write(entries)  # the queue answers again: stored once more, and kept
    assert len(files(tmp_path)) == 2
    loaded = [(await dl.load(body))[0] for body in fake.stored]
    assert sorted(e["sequence_number"] for e in loaded) == sorted(
        e["sequence_number"] for e in entries
    )


async def test_overflow_files_are_readable_by_the_worker_only(tmp_path):
    fake = FakeSqs()
    await dead_letter(tmp_path, fake).write(make_entries(1, pad=20_000))
    (overflow,) = files(tmp_path)
    assert stat.S_IMODE(overflow.stat().st_mode) == 0o600


async def test_acknowledging_a_pointer_message_removes_its_overflow(tmp_path):
    fake = FakeSqs()
    dl = dead_letter(tmp_path, fake)
    await dl.write(make_entries(1, pad=20_000))
    letters = [letter async for batch in dl.read() for letter in batch]
    assert [letter.entry is not None for letter in letters] == [True]
    await dl.acknowledge(letters, target="audit")
    assert files(tmp_path) == []
    assert fake.messages == {}
