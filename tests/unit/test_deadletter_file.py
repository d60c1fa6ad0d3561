"""The file dead-letter destination read back: letters, acknowledgement in the sidecar."""

from __future__ import annotations

from typing import Any

import orjson

from fanout.delivery.deadletter import FileDeadLetter, Letter, entry, entry_key
from tests.unit.delivery_fakes import ARN, SHARD, rec


def dead(i: int) -> dict[str, Any]:
    return entry(
        record=rec(i),
        sink="audit",
        stream="orders",
        stream_arn=ARN,
        shard_id=SHARD,
        error_class="Boom",
        error_message="it broke",
        attempts=3,
        first_failure_at=1.0,
        last_failure_at=2.0,
    )


async def read_all(dl: FileDeadLetter) -> list[Letter]:
    return [letter async for batch in dl.read() for letter in batch]


async def test_a_missing_file_reads_as_nothing(tmp_path):
    assert await read_all(FileDeadLetter(tmp_path / "none.jsonl")) == []


async def test_entries_read_back_in_order_and_acknowledged_ones_are_marked(tmp_path):
    path = tmp_path / "dlq.jsonl"
    items = [dead(i) for i in range(5)]
    await FileDeadLetter(path).write(items)
    with path.open("ab") as fh:
        fh.write(b'{"cut short by a cra')  # a torn last line: never acknowledged, skipped

    dl = FileDeadLetter(path)
    assert dl.location == str(path)
    letters = await read_all(dl)
    assert [letter.entry for letter in letters] == items
    assert not any(letter.acknowledged for letter in letters)

    await dl.acknowledge(letters[1:3], target="spare")
    await dl.acknowledge(letters[1:2], target="spare")  # again: nothing new recorded
    await dl.release(letters[3:])  # nothing to do for a file
    lines = [orjson.loads(line) for line in dl.sidecar.path.read_bytes().splitlines()]
    assert [(line["key"], line["to"]) for line in lines] == [
        (entry_key(items[1]), "spare"),
        (entry_key(items[2]), "spare"),
    ]

    later = await read_all(FileDeadLetter(path))  # a later reader, e.g. the next redrive
    assert [letter.acknowledged for letter in later] == [False, True, True, False, False]
    assert len(path.read_bytes().splitlines()) == 6  # the dead-letter file is never rewritten
