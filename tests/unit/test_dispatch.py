"""Delivery semantics: retries, bisection, give-ups, dead-letters, isolation, parallelism."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Sequence

import anyio
import pytest

from fanout.delivery import KeyedLane, Lane, ShardDispatch
from fanout.delivery.deadletter import PartialDeadLetterError
from fanout.filters import compile_filters
from fanout.observe.metrics import Metrics
from fanout.progress.store import LeaseToken
from fanout.progress.tracker import ShardProgress
from fanout.records import Record, deserialize_image
from fanout.sink import Failure, Failures
from tests.unit.delivery_fakes import (
    Behaviour,
    Events,
    MemoryDeadLetter,
    ScriptedSink,
    deliver_one,
    make_route,
    progress,
    rec,
    run_pages,
    seq_of,
    seqs,
)


class Boom(Exception):
    pass


def raise_if_contains(*bad: str) -> Behaviour:
    def behaviour(batch: Sequence[Record]) -> Failures:
        if any(r["dynamodb"]["SequenceNumber"] in bad for r in batch):
            raise Boom("poison")
        return {}

    return behaviour


def always_raise(batch: Sequence[Record]) -> Failures:
    raise ConnectionError("connection refused")


def pages_of(records: list[Record], size: int) -> list[list[Record]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


# -- bisection -----------------------------------------------------------------------------


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("position", [0, 137, 500, 999])
async def test_poison_record_in_1000_is_isolated_and_dead_lettered(ordered, position):
    records = [rec(i) for i in range(1000)]
    poison = seq_of(position)
    sink = ScriptedSink(ordered=ordered, behaviour=raise_if_contains(poison))
    dlq = MemoryDeadLetter()
    route = make_route(sink, dlq, batch_size=1000, retry={"max_attempts": 4})
    shard = await run_pages([route], [records])

    limit = math.ceil(math.log2(1000)) + 1
    per_round = [sum(1 for call in calls if poison in call) for calls in sink.events.rounds()]
    assert len(per_round) == 4  # one round per attempt
    assert all(0 < n <= limit for n in per_round), per_round
    assert per_round[1:] == [1, 1, 1]  # once isolated, only the poison record is re-sent
    assert dlq.seqs() == [poison]
    entry = dlq.entries[0]
    assert entry["record"] == records[position]  # the whole payload
    assert entry["error"]["class"] == "Boom"
    assert "poison" in entry["error"]["message"]
    assert "gave up after 4 attempts" in entry["error"]["message"]
    assert entry["attempts"] == 4
    assert entry["sink"] == "fake"
    assert entry["shard_id"] == shard.shard_id
    assert entry["stream_arn"] == shard.stream_arn
    assert entry["first_failure_at"] > 0
    delivered = seqs(sink.delivered)
    assert sorted(delivered) == sorted(s for s in seqs(records) if s != poison)
    assert len(delivered) == 999
    if ordered:
        assert delivered == [s for s in seqs(records) if s != poison]
    assert shard.frontier == seq_of(999)  # the shard keeps flowing


async def test_poison_isolation_call_counts_are_logarithmic():
    records = [rec(i) for i in range(1000)]
    sink = ScriptedSink(ordered=True, behaviour=raise_if_contains(seq_of(999)))
    route = make_route(sink, batch_size=1000, retry={"max_attempts": 1})
    await run_pages([route], [records])
    # 1000, 500, 250, 125, 63, 32, 16, 8, 4, 2, 1: the halves holding the poison record,
    # plus the healthy halves next to them (10), all in the first and only round.
    assert sink.calls_with(seq_of(999)) == 11
    assert len(sink.calls) == 21


async def test_bisect_off_gives_up_the_whole_batch():
    records = [rec(i) for i in range(10)]
    sink = ScriptedSink(behaviour=raise_if_contains(seq_of(3)))
    dlq = MemoryDeadLetter()
    route = make_route(
        sink, dlq, batch_size=10, retry={"max_attempts": 2, "bisect_on_error": False}
    )
    await run_pages([route], [records])
    assert sink.calls == [seqs(records)] * 2
    assert dlq.seqs() == seqs(records)


async def test_two_poison_records_next_to_each_other_are_both_isolated():
    records = [rec(i) for i in range(64)]
    sink = ScriptedSink(ordered=True, behaviour=raise_if_contains(seq_of(0), seq_of(1)))
    dlq = MemoryDeadLetter()
    route = make_route(sink, dlq, batch_size=64, retry={"max_attempts": 3})
    await run_pages([route], [records])
    assert dlq.seqs() == [seq_of(0), seq_of(1)]
    assert seqs(sink.delivered) == seqs(records[2:])


# -- per-record retries --------------------------------------------------------------------


def fail_times(times: dict[str, int], *, retryable: bool = True) -> Behaviour:
    """Fail each listed sequence number that many times (per-record answers)."""
    left = dict(times)

    def behaviour(batch: Sequence[Record]) -> Failures:
        failures: Failures = {}
        for i, r in enumerate(batch):
            s = r["dynamodb"]["SequenceNumber"]
            if left.get(s, 0) > 0:
                left[s] -= 1
                failures[i] = Failure(retryable, f"failed {s}")
        return failures

    return behaviour


async def test_ordered_sink_retries_the_failed_record_and_every_later_one():
    records = [rec(i) for i in range(10)]
    sink = ScriptedSink(ordered=True, behaviour=fail_times({seq_of(3): 2}))
    dlq = MemoryDeadLetter()
    route = make_route(sink, dlq, batch_size=10)
    await run_pages([route], [records])
    assert sink.calls == [seqs(records), seqs(records[3:]), seqs(records[3:])]
    assert len(sink.events.sleeps) == 2
    assert seqs(sink.delivered) == seqs(records)
    assert dlq.entries == []


async def test_ordered_sink_reports_after_the_first_failure_are_held_back_not_counted():
    # Lambda-style answer: everything from the lowest failure on is reported failed.
    bad = seq_of(2)

    def from_lowest(batch: Sequence[Record]) -> Failures:
        s = seqs(batch)
        if bad not in s:
            return {}
        first = s.index(bad)
        return {i: Failure(True, "batchItemFailures") for i in range(first, len(batch))}

    records = [rec(i) for i in range(8)]
    sink = ScriptedSink(ordered=True, behaviour=from_lowest)
    dlq = MemoryDeadLetter()
    route = make_route(sink, dlq, batch_size=8, retry={"max_attempts": 3})
    await run_pages([route], [records])
    # Only the first failing record uses up attempts; once it is given up the records
    # behind it are sent again at once and go through.
    assert dlq.seqs() == [bad]
    assert dlq.entries[0]["attempts"] == 3
    assert seqs(sink.delivered) == [s for s in seqs(records) if s != bad]
    assert sink.calls[-1] == seqs(records[3:])
    assert len(sink.events.sleeps) == 2


async def test_unordered_sink_retries_only_the_failed_records():
    records = [rec(i) for i in range(10)]
    sink = ScriptedSink(ordered=False, behaviour=fail_times({seq_of(2): 1, seq_of(7): 2}))
    dlq = MemoryDeadLetter()
    route = make_route(sink, dlq, batch_size=10)
    await run_pages([route], [records])
    assert sink.calls == [seqs(records), [seq_of(2), seq_of(7)], [seq_of(7)]]
    assert sorted(seqs(sink.delivered)) == seqs(records)
    assert dlq.entries == []


async def test_max_attempts_gives_up_after_exactly_that_many_attempts():
    records = [rec(i) for i in range(5)]
    sink = ScriptedSink(ordered=False, behaviour=fail_times({seq_of(1): 100}))
    dlq = MemoryDeadLetter()
    route = make_route(sink, dlq, batch_size=5, retry={"max_attempts": 3})
    await run_pages([route], [records])
    assert sink.calls_with(seq_of(1)) == 3
    assert dlq.seqs() == [seq_of(1)]
    assert dlq.entries[0]["attempts"] == 3
    assert dlq.entries[0]["error"]["class"] == "SinkFailure"
    assert "failed " + seq_of(1) in dlq.entries[0]["error"]["message"]
    assert sorted(seqs(sink.delivered)) == [s for s in seqs(records) if s != seq_of(1)]


async def test_max_record_age_gives_up_on_old_records_at_their_next_failure():
    old = rec(0, created=time.time() - 120)
    young = rec(1)
    sink = ScriptedSink(ordered=False, behaviour=fail_times({seq_of(0): 100, seq_of(1): 2}))
    dlq = MemoryDeadLetter()
    route = make_route(sink, dlq, retry={"max_attempts": -1, "max_record_age": 60})
    await run_pages([route], [[old, young]])
    assert sink.calls_with(seq_of(0)) == 1
    assert dlq.seqs() == [seq_of(0)]
    assert "older than max_record_age" in dlq.entries[0]["error"]["message"]
    assert seqs(sink.delivered) == [seq_of(1)]


async def test_unbounded_retries_keep_going_until_the_record_is_delivered():
    records = [rec(0)]
    sink = ScriptedSink(ordered=True, behaviour=fail_times({seq_of(0): 200}))
    dlq = MemoryDeadLetter()
    route = make_route(
        sink,
        dlq,
        retry={"max_attempts": -1, "max_record_age": -1, "initial_backoff": 1e-6},
    )
    await run_pages([route], [records])
    assert len(sink.calls) == 201
    assert dlq.entries == []
    assert seqs(sink.delivered) == [seq_of(0)]
    assert max(sink.events.sleeps) <= route.config.retry.max_backoff


@pytest.mark.parametrize("ordered", [True, False])
async def test_permanent_failures_go_straight_to_the_dead_letter_destination(ordered):
    records = [rec(i) for i in range(6)]
    sink = ScriptedSink(
        ordered=ordered, behaviour=fail_times({seq_of(1): 1, seq_of(4): 1}, retryable=False)
    )
    dlq = MemoryDeadLetter()
    route = make_route(sink, dlq, batch_size=6)
    await run_pages([route], [records])
    assert len(sink.calls) == 1
    assert sink.events.sleeps == []
    assert dlq.seqs() == [seq_of(1), seq_of(4)]
    assert {e["error"]["class"] for e in dlq.entries} == {"Rejected"}
    assert dlq.entries[0]["attempts"] == 1


# -- outages -------------------------------------------------------------------------------


class Outage:
    """A sink behaviour that raises while ``down`` (and counts the calls it failed)."""

    def __init__(self, down: bool = True) -> None:
        self.down = down
        self.failed = 0

    def __call__(self, batch: Sequence[Record]) -> Failures:
        if self.down:
            self.failed += 1
            raise ConnectionError("connection refused")
        return {}


@pytest.mark.parametrize("ordered", [True, False])
async def test_an_outage_within_the_budget_loses_and_dead_letters_nothing(ordered):
    records = [rec(i) for i in range(300)]
    outage = Outage()
    events = Events()
    sink = ScriptedSink(ordered=ordered, behaviour=outage, events=events)
    dlq = MemoryDeadLetter()
    route = make_route(sink, dlq, batch_size=100, retry={"max_attempts": 8})
    original = route.backoff.sleep

    async def sleep(seconds: float) -> None:
        await original(seconds)
        if len(events.sleeps) == 6:  # six retry rounds into the first batch: the sink is back
            outage.down = False

    route.backoff = type(route.backoff)(0.01, 0.1, sleep=sleep)
    shard = await run_pages([route], pages_of(records, 100))
    assert outage.failed > 0
    assert dlq.entries == []
    delivered = seqs(sink.delivered)
    assert sorted(delivered) == seqs(records)
    if ordered:
        assert delivered == seqs(records)
    assert shard.frontier == seq_of(299)


@pytest.mark.parametrize("ordered", [True, False])
async def test_an_outage_past_the_budget_dead_letters_exactly_the_affected_records_quickly(
    ordered,
):
    outage = Outage()
    sink = ScriptedSink(ordered=ordered, behaviour=outage)
    dlq = MemoryDeadLetter()
    route = make_route(sink, dlq, batch_size=100, retry={"max_attempts": 4})
    during_outage = [rec(i) for i in range(1000)]
    after = [rec(i) for i in range(1000, 1200)]

    async def recover_then_send_more(dispatch: ShardDispatch) -> None:
        while len(dlq.entries) < len(during_outage):
            await anyio.sleep(0)
        outage.down = False
        for page in pages_of(after, 100):
            await dispatch.submit(page, page[-1]["dynamodb"]["SequenceNumber"])

    shard = await run_pages([route], pages_of(during_outage, 100), during=recover_then_send_more)
    assert sorted(dlq.seqs()) == seqs(during_outage)
    assert len(dlq.seqs()) == len(set(dlq.seqs()))
    assert seqs(sink.delivered) == seqs(after)
    # Quickly: only the first batch waits through its retry rounds (an ordered sink one more,
    # to see a second record fail before the sink counts as down); after that, later
    # batches are given up on their first failed call.
    assert len(sink.events.sleeps) == (4 if ordered else 3)
    assert outage.failed <= 4 * 2 * (math.ceil(math.log2(100)) + 1) + 9
    assert shard.frontier == seq_of(1199)
    messages = {e["error"]["message"] for e in dlq.entries}
    assert all("ConnectionError" in m for m in messages)


# -- isolation and bounded memory ---------------------------------------------------------


async def test_a_failing_sink_does_not_stop_another_sink_on_the_same_shard():
    records = [rec(i) for i in range(2000)]
    broken = ScriptedSink("broken", ordered=True, behaviour=always_raise)
    healthy = ScriptedSink("healthy", ordered=True)
    metrics = Metrics()
    broken_dlq, healthy_dlq = MemoryDeadLetter(), MemoryDeadLetter()
    routes = [
        make_route(
            broken,
            broken_dlq,
            metrics=metrics,
            batch_size=50,
            max_buffered_records=100,
            retry={"max_attempts": 3},
        ),
        make_route(healthy, healthy_dlq, metrics=metrics, batch_size=50, max_buffered_records=100),
    ]
    shard = await run_pages(routes, pages_of(records, 100))
    assert seqs(healthy.delivered) == seqs(records)  # every record, in order
    assert sorted(broken_dlq.seqs()) == seqs(records)
    assert healthy_dlq.entries == []
    assert shard.frontier == seq_of(1999)


async def test_a_lane_never_buffers_more_than_max_buffered_records():
    seen: list[int] = []
    lane_ref: list[Lane] = []

    def behaviour(batch: Sequence[Record]) -> Failures:
        seen.append(lane_ref[0].buffered)
        return {}

    sink = ScriptedSink(behaviour=behaviour, pause=3)
    route = make_route(sink, batch_size=7, max_buffered_records=10, batch_window=0.05)
    shard = progress()
    dispatch = ShardDispatch(shard, [route], route.metrics)
    lane = dispatch.lanes[0]
    assert isinstance(lane, Lane)
    lane_ref.append(lane)
    records = [rec(i) for i in range(95)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatch.run)
        for page in pages_of(records, 25):  # pages larger than the bound
            await dispatch.submit(page, page[-1]["dynamodb"]["SequenceNumber"])
            assert lane.buffered <= 10
        dispatch.close()
    assert max(seen) <= 10
    assert seqs(sink.delivered) == seqs(records)
    assert shard.frontier == seq_of(94)


# -- parallelization -----------------------------------------------------------------------


@pytest.mark.parametrize("flaky", [False, True])
async def test_parallelization_factor_keeps_per_key_order_while_batches_overlap(flaky):
    keys = [f"key-{k}" for k in range(100)]
    records = [rec(i, key=keys[(i * 7919) % 100]) for i in range(10_000)]
    failing = {seq_of(i): 1 for i in range(0, 10_000, 97)} if flaky else {}
    sink = ScriptedSink(ordered=True, behaviour=fail_times(failing), pause=2)
    route = make_route(sink, batch_size=50, parallelization_factor=5)
    shard = progress()
    dispatch = ShardDispatch(shard, [route], route.metrics)
    assert isinstance(dispatch.lanes[0], KeyedLane)
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatch.run)
        for page in pages_of(records, 1000):
            await dispatch.submit(page, page[-1]["dynamodb"]["SequenceNumber"])
        dispatch.close()
    per_key: dict[str, list[int]] = defaultdict(list)
    for r in sink.delivered:
        per_key[r["dynamodb"]["Keys"]["pk"]["S"]].append(int(r["dynamodb"]["SequenceNumber"]))
    assert sum(len(v) for v in per_key.values()) == 10_000
    assert all(v == sorted(v) for v in per_key.values())
    assert sink.max_in_flight > 1  # batches of different keys were sent concurrently
    assert sink.max_in_flight <= 5
    assert shard.frontier == seq_of(9999)


# -- dead-letter destination failures ------------------------------------------------------


async def test_a_failing_dead_letter_destination_halts_the_shard_until_it_recovers(caplog):
    caplog.set_level(logging.WARNING, logger="fanout.dispatch")
    metrics = Metrics()
    sink = ScriptedSink(ordered=True, behaviour=fail_times({seq_of(3): 1}, retryable=False))
    dlq = MemoryDeadLetter()
    dlq.fail = True
    route = make_route(sink, dlq, metrics=metrics, batch_size=10)
    pages = [[rec(i) for i in range(10)], [rec(i) for i in range(10, 20)]]

    async def check_stalled_then_recover(dispatch: ShardDispatch) -> None:
        while dlq.attempts < 5:
            await anyio.sleep(0)
        assert dispatch.progress.frontier is None  # nothing settles past the stuck record
        assert dispatch.progress.pending
        failures = metrics.dlq_failures.labels("fake")._value.get()
        assert failures >= 4
        assert any(r.message == "dead_letter_failed" for r in caplog.records)
        dlq.fail = False

    shard = await run_pages([route], pages, during=check_stalled_then_recover)
    assert dlq.seqs() == [seq_of(3)]  # written once, nothing dropped
    assert shard.frontier == seq_of(19)
    assert not shard.pending
    failed = [r for r in caplog.records if r.message == "dead_letter_failed"]
    assert failed[0].__dict__["seq"] == seq_of(3)
    assert failed[0].__dict__["shard"] == shard.shard_id


async def test_a_partly_failed_dead_letter_write_is_retried_for_the_rest_only():
    class HalfDeadLetter(MemoryDeadLetter):
        async def write(self, entries):
            self.attempts += 1
            if self.attempts == 1 and len(entries) > 1:
                self.entries.extend(entries[:1])
                raise PartialDeadLetterError("one stored", entries[1:])
            self.entries.extend(entries)

    sink = ScriptedSink(
        ordered=False, behaviour=fail_times({seq_of(1): 1, seq_of(2): 1}, retryable=False)
    )
    dlq = HalfDeadLetter()
    route = make_route(sink, dlq, batch_size=5)
    await run_pages([route], [[rec(i) for i in range(5)]])
    assert dlq.seqs() == [seq_of(1), seq_of(2)]


# -- malformed and undecodable records -----------------------------------------------------


async def test_malformed_records_are_dead_lettered_for_every_sink_and_the_rest_flow():
    good = [rec(i) for i in range(6)]
    no_keys = rec(6)
    del no_keys["dynamodb"]["Keys"]
    no_ddb = {"eventID": "x", "eventName": "INSERT"}
    page = [*good[:3], no_keys, no_ddb, *good[3:]]
    page[-1] = rec(99)  # the page's last record is fine
    a, b = ScriptedSink("a"), ScriptedSink("b", ordered=False)
    dlq_a, dlq_b = MemoryDeadLetter(), MemoryDeadLetter()
    metrics = Metrics()
    routes = [
        make_route(a, dlq_a, metrics=metrics),
        make_route(b, dlq_b, metrics=metrics, parallelization_factor=3),
    ]
    shard = await run_pages(routes, [page])
    for dlq, name in ((dlq_a, "a"), (dlq_b, "b")):
        assert [e["record"] for e in dlq.entries] == [no_keys, no_ddb]
        assert [e["error"]["class"] for e in dlq.entries] == ["MalformedRecord"] * 2
        assert "dynamodb.Keys" in dlq.entries[0]["error"]["message"]
        assert "'dynamodb'" in dlq.entries[1]["error"]["message"]
        assert {e["sink"] for e in dlq.entries} == {name}
    expected = seqs([*good[:3], *good[3:5], rec(99)])
    assert seqs(a.delivered) == expected
    assert sorted(seqs(b.delivered)) == sorted(expected)
    assert shard.frontier == seq_of(99)


async def test_an_undecodable_image_is_isolated_and_dead_lettered_with_the_reason():
    def decode_all(batch: Sequence[Record]) -> Failures:
        for r in batch:
            deserialize_image(r["dynamodb"]["NewImage"])
        return {}

    records = [rec(i) for i in range(32)]
    records[9]["dynamodb"]["NewImage"] = {"n": {"ZZ": "?"}}
    sink = ScriptedSink(behaviour=decode_all)
    dlq = MemoryDeadLetter()
    route = make_route(sink, dlq, batch_size=32, retry={"max_attempts": 2})
    shard = await run_pages([route], [records])
    assert dlq.seqs() == [seq_of(9)]
    assert dlq.entries[0]["error"]["class"] == "ValueError"
    assert "unknown AttributeValue type 'ZZ'" in dlq.entries[0]["error"]["message"]
    assert len(sink.delivered) == 31
    assert shard.frontier == seq_of(31)


# -- logging -------------------------------------------------------------------------------


async def test_retries_give_ups_and_dead_letter_writes_are_logged_with_their_position(caplog):
    caplog.set_level(logging.INFO, logger="fanout.dispatch")
    sink = ScriptedSink(ordered=True, behaviour=fail_times({seq_of(2): 5}))
    dlq = MemoryDeadLetter()
    route = make_route(sink, dlq, batch_size=5, retry={"max_attempts": 2})
    shard = await run_pages([route], [[rec(i) for i in range(5)]])
    by_event = defaultdict(list)
    for r in caplog.records:
        by_event[r.message].append(r.__dict__)
    assert by_event["batch_retrying"]
    assert by_event["record_dead_lettered"]
    for fields in by_event["batch_retrying"] + by_event["record_dead_lettered"]:
        assert fields["stream"] == "orders"
        assert fields["shard"] == shard.shard_id
        assert fields["sink"] == "fake"
        assert fields["seq"] == seq_of(2)
    assert "gave up after 2 attempts" in by_event["record_dead_lettered"][0]["error"]


async def test_the_first_send_that_succeeds_is_the_only_call_on_the_happy_path():
    sink = ScriptedSink()
    route = make_route(sink, batch_size=100)
    lane = await deliver_one(route, [rec(i) for i in range(100)])
    assert len(sink.calls) == 1
    assert not lane.sink_down


async def test_ticket_frontier_moves_page_by_page():
    sink = ScriptedSink()
    route = make_route(sink, batch_size=3)
    shard = ShardProgress("orders", "arn", "s", "0")
    await run_pages([route], [[rec(i) for i in range(4)], [rec(4)]], shard=shard)
    assert shard.frontier == seq_of(4)
    assert not shard.tickets


@pytest.mark.parametrize("ordered", [True, False])
async def test_poison_records_and_transient_failures_never_pass_for_an_outage(ordered):
    # A poison record closing a batch leaves nothing to prove the sink works; the next
    # batches (another poison record, a transient failure in front) must still get their
    # own budget and bisection, not be dead-lettered as if the sink were down.
    poisons = {seq_of(9), seq_of(15), seq_of(29)}
    flaky = fail_times({seq_of(20): 1, seq_of(30): 2})

    def behaviour(batch: Sequence[Record]) -> Failures:
        if poisons & set(seqs(batch)):
            raise Boom("poison")
        return flaky(batch)

    records = [rec(i) for i in range(40)]
    sink = ScriptedSink(ordered=ordered, behaviour=behaviour)
    dlq = MemoryDeadLetter()
    route = make_route(sink, dlq, batch_size=10, retry={"max_attempts": 3})
    shard = await run_pages([route], pages_of(records, 10))
    assert sorted(dlq.seqs()) == sorted(poisons)
    assert all("gave up after 3 attempts" in e["error"]["message"] for e in dlq.entries)
    delivered = seqs(sink.delivered)
    assert sorted(delivered) == sorted(s for s in seqs(records) if s not in poisons)
    if ordered:
        assert delivered == [s for s in seqs(records) if s not in poisons]
    assert shard.frontier == seq_of(39)


async def test_poison_records_at_the_front_of_an_unordered_batch_are_each_isolated():
    poisons = {seq_of(0), seq_of(1), seq_of(2)}
    records = [rec(i) for i in range(16)]
    sink = ScriptedSink(ordered=False, behaviour=raise_if_contains(*poisons))
    dlq = MemoryDeadLetter()
    route = make_route(sink, dlq, batch_size=16, retry={"max_attempts": 3})
    await run_pages([route], [records])
    assert sorted(dlq.seqs()) == sorted(poisons)  # record 3 was not dead-lettered with 2
    assert sorted(seqs(sink.delivered)) == seqs(records[3:])


# -- a sink raising what no sink should -----------------------------------------------------


class Doom(BaseException):
    pass


def raise_base(exc: BaseException, *bad: str) -> Behaviour:
    def behaviour(batch: Sequence[Record]) -> Failures:
        if any(r["dynamodb"]["SequenceNumber"] in bad for r in batch):
            raise exc
        return {}

    return behaviour


@pytest.mark.parametrize(
    "exc",
    [SystemExit(0), KeyboardInterrupt(), GeneratorExit(), Doom("x"), asyncio.CancelledError()],
    ids=lambda exc: type(exc).__name__,
)
async def test_a_base_exception_from_a_sink_is_a_failed_attempt_isolated_and_dead_lettered(exc):
    records = [rec(i) for i in range(10)]
    sink = ScriptedSink(behaviour=raise_base(exc, seq_of(4)))
    dlq = MemoryDeadLetter()
    route = make_route(sink, dlq, batch_size=10, retry={"max_attempts": 2})
    shard = await run_pages([route], [records])
    assert dlq.seqs() == [seq_of(4)]
    (entry,) = dlq.entries
    assert entry["error"]["class"] == "CallCrashed"
    assert type(exc).__name__ in entry["error"]["message"]
    assert seqs(sink.delivered) == [s for s in seqs(records) if s != seq_of(4)]
    assert shard.frontier == seq_of(9)


async def test_the_workers_cancellation_of_a_lane_is_not_taken_for_a_sink_failure():
    entered = anyio.Event()

    class Hanging(ScriptedSink):
        async def send(self, batch: Sequence[Record]) -> Failures:
            entered.set()
            await anyio.sleep_forever()
            return {}

    sink = Hanging()
    dlq = MemoryDeadLetter()
    route = make_route(sink, dlq, batch_size=10)
    with anyio.move_on_after(5) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(deliver_one, route, [rec(1)])
            await entered.wait()
            tg.cancel_scope.cancel()
    assert not scope.cancelled_caught
    assert dlq.entries == []


async def test_records_no_sink_takes_are_kept_with_their_page_until_it_is_settled():
    # They are freed with the rest of the page, not one by one as the reader lets go of it.
    released = anyio.Event()

    class Held(ScriptedSink):
        async def send(self, batch: Sequence[Record]) -> Failures:
            await released.wait()
            return await super().send(batch)

    sink = Held()
    route = make_route(sink, predicate=compile_filters([{"eventName": ["INSERT"]}]))
    records = [rec(0), {**rec(1), "eventName": "MODIFY"}, rec(2), {**rec(3), "eventName": "REMOVE"}]
    shard = progress()
    dispatch = ShardDispatch(shard, [route], route.metrics)
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatch.run)
        await dispatch.submit(records, seq_of(3))
        (ticket,) = shard.tickets
        assert [id(r) for r in ticket.unrouted or []] == [id(records[1]), id(records[3])]
        released.set()
        dispatch.close()
    assert ticket.unrouted is None
    assert sink.delivered == [records[0], records[2]]
    assert shard.frontier == seq_of(3)


# -- leases -------------------------------------------------------------------------------------


class LapsedLease:
    """A lease whose renewals lapsed: nothing of its shard may reach a sink."""

    token = LeaseToken("worker-a", 1)

    def valid(self) -> bool:
        return False

    async def lost_wait(self) -> None:
        await anyio.sleep_forever()


@pytest.mark.parametrize("max_in_flight", [None, 1], ids=["idle gate", "gated"])
async def test_a_lane_sends_nothing_of_a_shard_whose_lease_lapsed(max_in_flight):
    # Records queued before the lease lapsed (a worker paused while its lanes held records)
    # wait for the shard to be stopped; none reaches the sink, on the hot path either.
    sink = ScriptedSink()
    options = {} if max_in_flight is None else {"max_in_flight": max_in_flight}
    route = make_route(sink, **options)
    shard = ShardProgress("orders", "arn", "shard-1", None, LapsedLease())
    lane = Lane(route, shard)
    assert route.gate.idle is (max_in_flight is None)
    records = [rec(i) for i in range(3)]
    ticket = shard.open(records[-1]["dynamodb"]["SequenceNumber"])
    ticket.pending += len(records)
    pending = ticket.pending
    with anyio.move_on_after(0.2) as waited:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lane.run)
            await lane.put(ticket, records)
            lane.close()
    assert waited.cancelled_caught  # still waiting for the shard to be stopped
    assert sink.calls == []
    assert ticket.pending == pending  # nothing settled
