"""Sinks that change their records change only their own: other sinks, retries and
dead-letter entries see every record as it was read."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

import anyio
import orjson
import pytest

from fanout.delivery.private import private_parts
from fanout.records import Record
from fanout.sink import Failure, Failures
from sinks.handler import HandlerSink, HandlerSinkConfig
from tests.unit.delivery_fakes import (
    Events,
    MemoryDeadLetter,
    ScriptedSink,
    make_route,
    rec,
    run_pages,
    seq_of,
)
from tests.unit.helpers import handlers


def objects(value: Any) -> Iterator[int]:
    """The ids of every dict and list inside ``value`` (itself included)."""
    if isinstance(value, dict):
        yield id(value)
        for item in value.values():
            yield from objects(item)
    elif isinstance(value, list):
        yield id(value)
        for item in value:
            yield from objects(item)


def shares_nothing(a: Sequence[Record], b: Sequence[Record]) -> bool:
    """No dict or list inside a record of ``a`` is one inside a record of ``b``."""
    mine = {i for record in a for i in objects(record)}
    return not any(i in mine for record in b for i in objects(record))


def test_sinks_that_do_not_change_records_share_the_originals():
    page = [rec(i) for i in range(4)]
    parts = private_parts([page, page[1:3]], [False, False])
    assert parts[0] is page
    assert all(a is b for a, b in zip(parts[1], page[1:3], strict=True))


def test_a_private_sink_gets_originals_only_of_records_no_one_else_receives():
    page = [rec(i) for i in range(6)]
    shared = page[::2]  # records 0, 2, 4 also go to a sink that reads them as they are
    parts = private_parts([shared, page], [False, True])
    assert parts[0] == shared
    assert all(a is b for a, b in zip(parts[0], shared, strict=True))
    mine = parts[1]
    assert mine == page  # same values, same order
    for i, record in enumerate(mine):
        if i % 2:
            assert record is page[i]  # nobody else has it
        else:
            assert shares_nothing([record], page)  # a deep copy


def test_two_private_sinks_on_the_same_records_never_share_an_object():
    page = [rec(i) for i in range(5)]
    first, second, reader = private_parts([page, page, page[:2]], [True, True, False])
    assert first == second == page
    assert reader == page[:2]
    assert shares_nothing(first, second)
    assert shares_nothing(first, reader)
    assert shares_nothing(second, reader)
    # one of them may keep the originals of the records the plain sink does not read
    assert first[2] is page[2] or second[2] is page[2]


def test_the_private_sink_with_the_most_records_keeps_their_originals():
    page = [rec(i) for i in range(6)]
    few, most = private_parts([page[:2], page], [True, True])
    assert all(a is b for a, b in zip(most, page, strict=True))  # no copy at all
    assert few == page[:2]
    assert shares_nothing(few, most)


def test_a_private_sink_alone_gets_the_page_as_it_is():
    page = [rec(i) for i in range(3)]
    (mine,) = private_parts([page], [True])
    assert mine is page


class Scribbler(ScriptedSink):
    """Changes every record it is given, nested images included, then answers as told."""

    mutates_records = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[list[Record]] = []

    async def send(self, batch: Sequence[Record]) -> Failures:
        self.seen.append(copy.deepcopy(list(batch)))
        answer = await super().send(batch)
        for record in batch:
            record["dynamodb"]["NewImage"]["n"]["N"] = "scribbled"
            record["dynamodb"]["Keys"].clear()
            record["eventName"] = "SCRIBBLED"
        return answer


def fail_first_send_of(seq: str) -> Any:
    sent: set[str] = set()

    def behaviour(batch: Sequence[Record]) -> Failures:
        seqs = [r["dynamodb"]["SequenceNumber"] for r in batch]
        if seq in seqs and seq not in sent:
            sent.add(seq)
            return {seqs.index(seq): Failure(True, "try again")}
        return {}

    return behaviour


async def test_a_sink_changing_its_records_changes_nothing_another_sink_a_retry_or_a_dlq_sees():
    pages = [[rec(i) for i in range(p * 50, p * 50 + 50)] for p in range(4)]
    pristine = copy.deepcopy(pages)
    poison = seq_of(70)

    def refuse_poison(batch: Sequence[Record]) -> Failures:
        return {
            i: Failure(False, "refused")
            for i, r in enumerate(batch)
            if r["dynamodb"]["SequenceNumber"] == poison
        }

    scribbler = Scribbler("scribbler", behaviour=fail_first_send_of(seq_of(120)))
    reader = ScriptedSink("reader", behaviour=refuse_poison)
    filtered = Scribbler("filtered")
    dead = MemoryDeadLetter()
    routes = [
        make_route(scribbler, batch_size=30),
        make_route(reader, dead, batch_size=30),
        make_route(filtered, batch_size=30, predicate=lambda r: int(r["eventID"][1:]) % 3 == 0),
    ]
    await run_pages(routes, pages)

    everything = [r for page in pristine for r in page]
    assert reader.delivered == [r for r in everything if r["dynamodb"]["SequenceNumber"] != poison]
    assert [e["record"] for e in dead.entries] == [everything[70]]
    # every send of the scribbler, the retry after its failure included, saw pristine records
    by_seq = {r["dynamodb"]["SequenceNumber"]: r for r in everything}
    for batch in scribbler.seen + filtered.seen:
        assert batch == [by_seq[r["dynamodb"]["SequenceNumber"]] for r in batch]
    retried = [b for b in scribbler.seen if b[0]["dynamodb"]["SequenceNumber"] == seq_of(120)]
    assert len(retried) == 2  # the failed send and its retry, both pristine
    assert [r for b in filtered.seen for r in b] == [
        r for r in everything if int(r["eventID"][1:]) % 3 == 0
    ]


async def test_a_sink_changing_records_it_gives_up_dead_letters_them_as_they_were():
    page = [rec(i) for i in range(10)]
    pristine = copy.deepcopy(page)

    def refuse_third(batch: Sequence[Record]) -> Failures:
        return {2: Failure(False, "refused")} if len(batch) > 2 else {}

    scribbler = Scribbler("scribbler", behaviour=refuse_third)
    dead = MemoryDeadLetter()
    await run_pages([make_route(scribbler, dead, batch_size=10)], [page])
    assert [e["record"] for e in dead.entries] == [pristine[2]]


@pytest.fixture
def handler_route() -> Any:
    def make(spec: str, **options: Any) -> Any:
        config = HandlerSinkConfig(type="handler", handler=spec, **options)
        sink = HandlerSink("handler", config)
        sink.events = Events()  # type: ignore[attr-defined]  # where make_route logs sleeps
        return sink, make_route(sink, batch_size=25)  # type: ignore[arg-type]

    return make


async def test_a_lambda_handler_changing_its_event_changes_nothing_another_sink_receives(
    handler_route,
):
    sink, route = handler_route("tests.unit.helpers.handlers:mutate")
    await sink.start()
    try:
        pages = [[rec(i) for i in range(p * 100, p * 100 + 100)] for p in range(3)]
        pristine = copy.deepcopy(pages)
        other = ScriptedSink("other")
        await run_pages([route, make_route(other, batch_size=40)], pages)
        assert other.delivered == [r for page in pristine for r in page]
    finally:
        await sink.stop()


def test_which_handler_sinks_get_records_of_their_own(handler_route):
    assert handler_route("tests.unit.helpers.handlers:mutate")[1].private
    # copy_event off: the handler shares the records with other sinks
    assert not handler_route("tests.unit.helpers.handlers:mutate", copy_event=False)[1].private
    # in worker processes the records travel serialized, which is a copy already
    assert not handler_route("tests.unit.helpers.handlers:mutate", isolation="process")[1].private


async def test_a_handler_that_empties_its_records_still_gets_batch_item_failures_right(
    handler_route,
):
    sink, route = handler_route("tests.unit.helpers.handlers:scramble_then_fail_second")
    await sink.start()
    try:
        page = [rec(i) for i in range(3)]
        handlers.CALLS.clear()
        await run_pages([route], [page])
        # the second record and the third were retried, as the answer asked
        assert [len(event["Records"]) for event, _ in handlers.CALLS] == [3, 2]
    finally:
        await sink.stop()


async def test_retries_of_a_sink_changing_its_records_parse_its_pages_again():
    """In the worker the reader keeps each page's answer (``Reread``): a failed send of a
    private sink is retried with records parsed again from it, never with a kept copy."""
    from fanout.delivery import ShardDispatch
    from fanout.stream.reader import Reread
    from tests.unit.delivery_fakes import ARN, progress

    pages = [[rec(i) for i in range(p * 40, p * 40 + 40)] for p in range(3)]
    for page in pages:
        page[0]["userIdentity"] = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
    answers = []
    for page in pages:
        wire = copy.deepcopy(page)
        for record in wire:
            del record["eventSourceARN"]  # GetRecords has no eventSourceARN: Reread stamps it
        answers.append(orjson.dumps({"Records": wire, "NextShardIterator": "next"}))
    pristine = copy.deepcopy(pages)
    for page in pristine:
        page[0]["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    for page in pages:
        page[0]["userIdentity"] = dict(pristine[0][0]["userIdentity"])

    parsed = 0

    class Counting(Reread):
        def __call__(self) -> list[Record]:
            nonlocal parsed
            parsed += 1
            return super().__call__()

    scribbler = Scribbler("scribbler", behaviour=fail_first_send_of(seq_of(50)))
    other = ScriptedSink("other")
    routes = [make_route(scribbler, batch_size=25), make_route(other, batch_size=25)]
    shard = progress()
    dispatch = ShardDispatch(shard, routes, routes[0].metrics)
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatch.run)
        for page, answer in zip(pages, answers, strict=True):
            await dispatch.submit(
                page, page[-1]["dynamodb"]["SequenceNumber"], 0, Counting(answer, ARN)
            )
        dispatch.close()

    everything = [r for page in pristine for r in page]
    assert other.delivered == everything
    by_seq = {r["dynamodb"]["SequenceNumber"]: r for r in everything}
    for batch in scribbler.seen:
        assert batch == [by_seq[r["dynamodb"]["SequenceNumber"]] for r in batch]
    assert parsed == 1  # only the page of the failed batch, only once
    assert shard.frontier == seq_of(119)
