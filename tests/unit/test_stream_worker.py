"""A whole worker, in-process, on the fakes: lineage, splits, expiry, data loss, replaced
streams, starting positions and discovery, checked against what the memory sink received."""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import anyio
import pytest

from fanout.errors import IteratorExpired, ServiceError, SourceError, StreamNotFound, Throttled
from fanout.progress.store import Checkpoint
from tests.unit.stream_fakes import (
    Deliveries,
    FakeStream,
    FakeStreams,
    MemoryCheckpointStore,
    running,
    wait_delivered,
    wait_for,
    worker_config,
)


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fanout")


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == name]


def keys(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


def check_lineage(stream: FakeStream, into: Deliveries) -> int:
    """Every record of a child comes after the last record of its parent; returns how many
    parent/child pairs delivered records."""
    owner = {seq: s.shard_id for s in stream.shards.values() for seq in s.sequence_numbers}
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, seq in enumerate(into.seqs):
        sid = owner[seq]
        first.setdefault(sid, i)
        last[sid] = i
    pairs = 0
    for shard in stream.shards.values():
        parent = shard.parent_id
        if parent is None or shard.shard_id not in first or parent not in last:
            continue
        assert first[shard.shard_id] > last[parent], (shard.shard_id, parent)
        pairs += 1
    return pairs


def all_seqs(stream: FakeStream) -> set[str]:
    return {seq for s in stream.shards.values() for seq in s.sequence_numbers}


@pytest.fixture
def streams() -> FakeStreams:
    return FakeStreams(page_size=10)


@pytest.fixture
def store() -> MemoryCheckpointStore:
    return MemoryCheckpointStore()


@pytest.fixture
def into() -> Deliveries:
    return Deliveries()


# -- lineage ----------------------------------------------------------------------------------


async def test_three_generations_are_read_parent_first_and_finished_in_order(
    tmp_path, streams, store, into
):
    stream = streams.add_stream("Orders")
    a = next(iter(stream.shards.values()))
    written = streams.put(a, keys("k", 25))
    a2 = streams.rollover(a)
    written += streams.put(a2, keys("k", 25))
    a3 = streams.rollover(a2)
    written += streams.put(a3, keys("k", 25))
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store) as run:
        await wait_delivered(into, written)
        await wait_for(lambda: {a.shard_id, a2.shard_id} <= run.stream.finished)
    assert run.code == 0
    assert into.seqs == written  # in order, each once
    assert check_lineage(stream, into) == 2
    for shard in (a, a2):
        row = store.get(stream.arn, shard.shard_id)
        assert row is not None
        assert (row.sequence, row.finished) == (shard.sequence_numbers[-1], True)
    # the open shard's checkpoint is written at shutdown
    last = store.get(stream.arn, a3.shard_id)
    assert last is not None
    assert (last.sequence, last.finished) == (written[-1], False)
    # children were found by a CHILD_SHARDS lookup at their parent's end and start at
    # TRIM_HORIZON
    lookups = {c.shard_id for c in streams.calls_of("DescribeStream") if c.shard_id}
    assert {a.shard_id, a2.shard_id} <= lookups
    assert streams.iterator_types(a2) == streams.iterator_types(a3) == ["TRIM_HORIZON"]
    assert run.sample("fanout_checkpoints_written_total") >= 2


async def test_the_children_of_a_split_start_after_the_parent_and_run_in_parallel(
    tmp_path, streams, store, into
):
    streams.page_size = 2
    stream = streams.add_stream("Orders")
    b = next(iter(stream.shards.values()))
    parent = streams.put(b, keys("b", 6))
    b1, b2 = streams.split(b)
    in_b1 = streams.put(b1, keys("x", 10))
    in_b2 = streams.put(b2, keys("y", 10))
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store):
        await wait_delivered(into, parent + in_b1 + in_b2)
    assert check_lineage(stream, into) == 2
    order = [c.shard_id for c in streams.calls_of("GetRecords")]
    last_parent_read = max(i for i, sid in enumerate(order) if sid == b.shard_id)
    children = [sid for sid in order[last_parent_read + 1 :] if sid in (b1.shard_id, b2.shard_id)]
    switches = sum(1 for x, y in itertools.pairwise(children) if x != y)
    assert switches >= 2, children  # read side by side, not one after the other
    assert all(sid != b.shard_id for sid in order[last_parent_read + 1 :])


async def test_a_child_waits_while_its_parent_has_unsettled_records(tmp_path, streams, store, into):
    stream = streams.add_stream("Orders")
    a = next(iter(stream.shards.values()))
    first = streams.put(a, keys("k", 5))
    child = streams.rollover(a)
    second = streams.put(child, keys("k", 5))
    into.gate = anyio.Event()
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store):
        await wait_for(lambda: streams.calls_of("GetRecords", a) != [])
        await anyio.sleep(0.05)
        assert streams.iterator_types(child) == []  # the parent's records are not settled
        into.gate.set()
        await wait_delivered(into, first + second)
    assert check_lineage(stream, into) == 1


async def test_a_parent_missing_from_two_listings_lets_its_children_start(
    tmp_path, streams, store, into
):
    stream = streams.add_stream("Orders")
    parent = next(iter(stream.shards.values()))
    streams.put(parent, 3)
    child = streams.rollover(parent)
    fresh = streams.put(child, keys("c", 4))
    streams.remove_shard(parent)  # aged out: never read, no checkpoint
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store):
        await wait_delivered(into, fresh)
    listings = [c for c in streams.calls_of("DescribeStream") if c.shard_id is None]
    assert len(listings) >= 2


# -- reading faults -----------------------------------------------------------------------------


async def test_expired_iterators_resume_after_the_last_record_read(
    tmp_path, streams, store, into, caplog
):
    stream = streams.add_stream("Orders")
    shard = next(iter(stream.shards.values()))
    first = streams.put(shard, keys("k", 10))
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store) as run:
        await wait_delivered(into, first)
        streams.expire_iterators()
        second = streams.put(shard, keys("k", 10))
        await wait_delivered(into, second)
        # a fresh iterator that expires again: back off, then seek again
        streams.fail("GetRecords", lambda: IteratorExpired("GetRecords: expired"), times=2)
        third = streams.put(shard, keys("k", 10))
        await wait_delivered(into, third)
        expired = run.sample("fanout_get_records_calls_total", outcome="expired")
    assert into.seqs == first + second + third  # nothing skipped, nothing repeated
    assert expired == 3
    types = streams.iterator_types(shard)
    assert types == ["TRIM_HORIZON"] + ["AFTER_SEQUENCE_NUMBER"] * 3
    seeks = [c.args["sequence"] for c in streams.calls_of("GetShardIterator", shard)[1:]]
    assert seeks == [first[-1], second[-1], second[-1]]
    assert len(events(caplog, "iterator_expired")) == 3


async def test_throttling_and_server_errors_back_off_and_keep_the_iterator(
    tmp_path, streams, store, into, caplog
):
    stream = streams.add_stream("Orders")
    shard = next(iter(stream.shards.values()))
    written = streams.put(shard, keys("k", 10))
    streams.fail("GetRecords", lambda: Throttled("GetRecords: LimitExceededException"), times=3)
    streams.fail("GetRecords", lambda: ServiceError("GetRecords: 500"), times=1)
    streams.fail("GetShardIterator", lambda: Throttled("GetShardIterator: throttled"), times=3)
    streams.fail("GetShardIterator", lambda: SourceError("GetShardIterator: odd"), times=1)
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store) as run:
        await wait_delivered(into, written)
        throttled = run.sample("fanout_get_records_calls_total", outcome="throttled")
        errors = run.sample("fanout_get_records_calls_total", outcome="error")
    assert into.seqs == written
    assert (throttled, errors) == (3, 1)
    assert streams.iterator_types(shard) == ["TRIM_HORIZON"] * 5  # 4 failed, then one
    assert len(events(caplog, "get_records_failing")) == 2  # from the third failure on
    failed = events(caplog, "get_shard_iterator_failed")
    assert [r.__dict__["attempt"] for r in failed] == [3, 4]


async def test_an_unexpected_get_records_error_takes_a_new_iterator(
    tmp_path, streams, store, into, caplog
):
    stream = streams.add_stream("Orders")
    shard = next(iter(stream.shards.values()))
    first = streams.put(shard, keys("k", 5))
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store):
        await wait_delivered(into, first)
        streams.fail("GetRecords", lambda: SourceError("GetRecords: 400 ValidationException"))
        second = streams.put(shard, keys("k", 5))
        await wait_delivered(into, second)
    assert into.seqs == first + second
    assert events(caplog, "get_records_failed")
    assert streams.iterator_types(shard)[-1] == "AFTER_SEQUENCE_NUMBER"


async def test_empty_pages_in_the_middle_of_a_closed_shard_are_read_through(
    tmp_path, streams, store, into
):
    stream = streams.add_stream("Orders")
    shard = next(iter(stream.shards.values()))
    first = streams.put(shard, keys("k", 10))
    streams.empty_pages(shard, 6)
    second = streams.put(shard, keys("k", 10))
    streams.close(shard)
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store) as run:
        await wait_delivered(into, first + second)
        await wait_for(lambda: shard.shard_id in run.stream.finished)
        empty = run.sample("fanout_get_records_calls_total", outcome="empty")
    assert empty == 6


# -- data loss --------------------------------------------------------------------------------


async def _read_then_trim(tmp_path, streams, store, into, **stream_cfg: Any):
    """Read 10 records, stop; 10 more are written and 5 of them trimmed while down."""
    stream = streams.add_stream("Orders")
    shard = next(iter(stream.shards.values()))
    first = streams.put(shard, keys("k", 10))
    config = worker_config(tmp_path, into, stream_arn=stream.arn, stream=stream_cfg)
    async with running(config, streams, store):
        await wait_delivered(into, first)
    second = streams.put(shard, keys("k", 10))
    streams.trim(shard, 15)
    return stream, shard, first, second, config


def loss_log(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    (entry,) = events(caplog, "data_loss_detected")
    assert entry.levelno == logging.ERROR
    return entry.__dict__


async def test_trimmed_records_are_counted_and_reading_resumes(
    tmp_path, streams, store, into, caplog
):
    _, shard, first, second, config = await _read_then_trim(tmp_path, streams, store, into)
    async with running(config, streams, store) as run:
        await wait_delivered(into, second[5:])
        lost = run.sample("fanout_records_lost_total")
        gaps = run.sample("fanout_data_loss_events_total")
    assert (gaps, lost) == (1, 5)
    entry = loss_log(caplog)
    assert (entry["lost_after_seq"], entry["lost_before_seq"]) == (first[-1], second[5])
    assert entry["count_basis"] == "sequence_spacing"
    assert entry["lost_from_basis"] == "checkpoint"
    assert into.seqs == first + second[5:]
    assert streams.iterator_types(shard)[-2:] == ["AFTER_SEQUENCE_NUMBER", "TRIM_HORIZON"]


async def test_on_data_loss_fail_stops_the_worker_and_keeps_the_checkpoint(
    tmp_path, streams, store, into, caplog
):
    stream, shard, first, second, config = await _read_then_trim(
        tmp_path, streams, store, into, on_data_loss="fail"
    )
    async with running(config, streams, store, stop=False) as run:
        with anyio.fail_after(5):
            await run.exited.wait()
    assert run.code == 1
    assert not set(second) & into.distinct()
    row = store.get(stream.arn, shard.shard_id)
    assert row is not None
    assert row.sequence == first[-1]
    (failed,) = events(caplog, "worker_failed")
    assert "DataLossError" in failed.__dict__["error"]
    assert f"after sequence number {first[-1]}" in failed.__dict__["error"]


async def test_records_trimmed_while_reading_are_a_gap_found_by_get_records(
    tmp_path, streams, store, into, caplog
):
    streams.page_size = 5
    stream = streams.add_stream("Orders")
    shard = next(iter(stream.shards.values()))
    written = streams.put(shard, keys("k", 20))
    into.gate = gate = anyio.Event()
    config = worker_config(
        tmp_path, into, stream_arn=stream.arn, sink={"batch_size": 5, "max_buffered_records": 5}
    )
    async with running(config, streams, store):
        await wait_for(lambda: len(streams.calls_of("GetRecords")) >= 2)
        streams.trim(shard, 15)
        gate.set()
        await wait_delivered(into, written[15:])
    entry = loss_log(caplog)
    assert entry["lost_before_seq"] == written[15]
    assert entry["lost_from_basis"] == "record"
    assert entry["records_lost"] == 15 - written.index(entry["lost_after_seq"]) - 1


async def test_a_gap_through_the_end_of_a_closed_shard_is_counted_to_its_last_record(
    tmp_path, streams, store, into, caplog
):
    streams.page_size = 5
    stream = streams.add_stream("Orders")
    shard = next(iter(stream.shards.values()))
    written = streams.put(shard, keys("k", 20))
    streams.close(shard)
    into.gate = anyio.Event()
    config = worker_config(
        tmp_path, into, stream_arn=stream.arn, sink={"batch_size": 5, "max_buffered_records": 5}
    )
    async with running(config, streams, store):
        await wait_for(lambda: len(streams.calls_of("GetRecords")) >= 2)
        streams.trim(shard, 20)  # everything not read yet is gone
        into.gate.set()
        await wait_for(lambda: bool(events(caplog, "shard_finished")))
    entry = loss_log(caplog)
    assert entry["lost_before_seq"] is None
    assert entry["count_basis"] == "sequence_spacing"
    assert entry["records_lost"] == 20 - written.index(entry["lost_after_seq"]) - 1


async def test_a_gap_after_a_restart_without_a_page_to_go_by_counts_at_least_one(
    tmp_path, streams, store, into, caplog
):
    _, shard, _, _, config = await _read_then_trim(tmp_path, streams, store, into)
    streams.trim(shard, 20)  # everything after the checkpoint is gone
    streams.close(shard)
    async with running(config, streams, store):
        await wait_for(lambda: bool(events(caplog, "shard_finished")))
    entry = loss_log(caplog)
    assert (entry["records_lost"], entry["count_basis"]) == (1, "lower_bound")
    assert entry["lost_before_seq"] is None


async def test_a_shard_that_aged_out_unread_is_a_loss_of_unknown_size(
    tmp_path, streams, store, into, caplog
):
    stream = streams.add_stream("Orders")
    parent = next(iter(stream.shards.values()))
    first = streams.put(parent, keys("k", 5))
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store):
        await wait_delivered(into, first)
    streams.put(parent, 5)  # never read
    child = streams.rollover(parent)
    fresh = streams.put(child, keys("c", 5))
    streams.remove_shard(parent)
    async with running(config, streams, store) as run:
        await wait_delivered(into, fresh)
        gaps, lost = (
            run.sample("fanout_data_loss_events_total"),
            run.sample("fanout_records_lost_total"),
        )
    assert (gaps, lost) == (1, 0)
    entry = loss_log(caplog)
    assert (entry["shard"], entry["lost_after_seq"]) == (parent.shard_id, first[-1])
    assert entry["count_basis"] == "unknown"
    row = store.get(stream.arn, parent.shard_id)
    assert row is None or row.finished


async def test_a_shard_aged_out_unread_fails_the_worker_with_on_data_loss_fail(
    tmp_path, streams, store, into, caplog
):
    stream = streams.add_stream("Orders")
    parent = next(iter(stream.shards.values()))
    first = streams.put(parent, keys("k", 5))
    config = worker_config(tmp_path, into, stream_arn=stream.arn, stream={"on_data_loss": "fail"})
    async with running(config, streams, store):
        await wait_delivered(into, first)
    streams.rollover(parent)
    streams.remove_shard(parent)
    async with running(config, streams, store, stop=False) as run:
        with anyio.fail_after(5):
            await run.exited.wait()
    assert run.code == 1
    assert "an unknown number of" in events(caplog, "worker_failed")[0].__dict__["error"]


async def test_a_closed_shard_removed_while_being_read_is_a_loss_counted_to_its_end(
    tmp_path, streams, store, into, caplog
):
    streams.page_size = 5
    stream = streams.add_stream("Orders")
    parent = next(iter(stream.shards.values()))
    written = streams.put(parent, keys("k", 20))
    child = streams.rollover(parent)
    fresh = streams.put(child, keys("c", 5))
    into.gate = anyio.Event()
    config = worker_config(
        tmp_path, into, stream_arn=stream.arn, sink={"batch_size": 5, "max_buffered_records": 5}
    )
    async with running(config, streams, store):
        await wait_for(lambda: len(streams.calls_of("GetRecords")) >= 2)
        streams.remove_shard(parent)
        into.gate.set()
        await wait_delivered(into, fresh)
    entry = loss_log(caplog)
    assert entry["shard"] == parent.shard_id
    read = written.index(entry["lost_after_seq"]) + 1
    assert entry["records_lost"] == 20 - read
    assert entry["count_basis"] == "sequence_spacing"
    assert check_lineage(stream, into) == 1


async def test_an_open_shard_removed_while_being_read_is_a_loss_of_unknown_size(
    tmp_path, streams, store, into, caplog
):
    streams.page_size = 5
    stream = streams.add_stream("Orders")
    parent = next(iter(stream.shards.values()))
    written = streams.put(parent, keys("k", 20))
    into.gate = anyio.Event()
    config = worker_config(
        tmp_path, into, stream_arn=stream.arn, sink={"batch_size": 5, "max_buffered_records": 5}
    )
    async with running(config, streams, store):
        await wait_for(lambda: len(streams.calls_of("GetRecords")) >= 2)
        child = streams.rollover(parent)  # the reader still takes its parent as open
        fresh = streams.put(child, keys("c", 5))
        streams.remove_shard(parent)
        into.gate.set()
        await wait_delivered(into, fresh)
    entry = loss_log(caplog)
    assert entry["shard"] == parent.shard_id
    assert entry["lost_after_seq"] in written
    assert (entry["records_lost"], entry["count_basis"]) == (None, "unknown")
    assert check_lineage(stream, into) == 1


async def test_a_shard_vanishing_after_its_last_record_was_read_is_no_loss(
    tmp_path, streams, store, into, caplog
):
    stream = streams.add_stream("Orders")
    shard = next(iter(stream.shards.values()))
    written = streams.put(shard, keys("k", 5))
    streams.empty_pages(shard, 1000)  # the end-of-shard page never comes
    streams.close(shard)
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store):
        await wait_delivered(into, written)
        streams.remove_shard(shard)
        await wait_for(lambda: bool(events(caplog, "shard_finished")))
    assert not events(caplog, "data_loss_detected")


# -- streams that end -----------------------------------------------------------------------------


async def test_a_replaced_table_stream_is_read_to_its_end_then_followed(
    tmp_path, streams, store, into, caplog
):
    old = streams.add_stream("Orders", shards=2)
    first = [s for sh in old.shards.values() for s in streams.put(sh, keys(sh.shard_id, 5))]
    config = worker_config(tmp_path, into, table="Orders")
    async with running(config, streams, store) as run:
        await wait_delivered(into, first)
        rest = [s for sh in old.shards.values() for s in streams.put(sh, keys("x", 5))]
        new = streams.add_stream("Orders", shards=2)  # disables the old one
        fresh = [s for sh in new.shards.values() for s in streams.put(sh, keys("x", 5))]
        await wait_delivered(into, rest + fresh)
        await wait_for(lambda: run.stream.stream_arn == new.arn)
        await wait_for(lambda: all(arn != old.arn for arn, _ in store.rows))
    assert run.code == 0
    index = {seq: i for i, seq in enumerate(into.seqs)}
    assert max(index[s] for s in first + rest) < min(index[s] for s in fresh)
    assert {d.arn for d in into.items if d.seq in set(fresh)} == {new.arn}
    (replaced,) = events(caplog, "stream_replaced")
    assert (replaced.__dict__["old_stream_arn"], replaced.__dict__["new_stream_arn"]) == (
        old.arn,
        new.arn,
    )
    assert replaced.__dict__["old_stream"] == "read to its end"
    assert events(caplog, "stream_disabled_and_read")
    for shard in new.shards.values():
        assert streams.iterator_types(shard) == ["TRIM_HORIZON"]
    assert store.starts[new.arn] == 0.0


async def test_a_table_without_a_stream_waits_for_one(tmp_path, streams, store, into, caplog):
    old = streams.add_stream("Orders")
    first = streams.put(next(iter(old.shards.values())), keys("k", 3))
    config = worker_config(tmp_path, into, table="Orders")
    async with running(config, streams, store):
        await wait_delivered(into, first)
        streams.disable_stream(old)
        await wait_for(lambda: bool(events(caplog, "stream_ended_waiting")))
        new = streams.add_stream("Orders")
        fresh = streams.put(next(iter(new.shards.values())), keys("k", 3))
        await wait_delivered(into, fresh)
    (waiting,) = events(caplog, "stream_ended_waiting")
    assert waiting.__dict__["error"] == "no stream enabled"


async def test_a_deleted_table_stream_with_unread_records_is_a_loss_then_followed(
    tmp_path, streams, store, into, caplog
):
    old = streams.add_stream("Orders")
    shard = next(iter(old.shards.values()))
    first = streams.put(shard, keys("k", 5))
    config = worker_config(tmp_path, into, table="Orders")
    async with running(config, streams, store) as run:
        await wait_delivered(into, first)
        streams.empty_pages(shard, 10**6)  # what follows is never read
        streams.put(shard, 5)
        streams.delete_stream(old)
        new = streams.add_stream("Orders")
        fresh = streams.put(next(iter(new.shards.values())), keys("n", 5))
        await wait_delivered(into, fresh)
        gaps = run.sample("fanout_data_loss_events_total")
    assert gaps == 1
    assert events(caplog, "stream_gone")
    assert loss_log(caplog)["count_basis"] == "unknown"
    assert events(caplog, "stream_replaced")[0].__dict__["old_stream"] == "gone"


async def test_a_stream_replaced_while_the_worker_was_down_is_finished_first(
    tmp_path, streams, store, into, caplog
):
    old = streams.add_stream("Orders")
    shard = next(iter(old.shards.values()))
    config = worker_config(tmp_path, into, table="Orders", stream={"starting_position": "LATEST"})
    async with running(config, streams, store):
        await wait_for(lambda: streams.iterator_types(shard) == ["LATEST"])
        seen = streams.put(shard, keys("k", 3))
        await wait_delivered(into, seen)
    down = streams.put(shard, keys("k", 3))
    new = streams.add_stream("Orders")
    fresh = streams.put(next(iter(new.shards.values())), keys("k", 3))
    async with running(config, streams, store):
        await wait_delivered(into, down + fresh)
    assert into.seqs == seen + down + fresh
    assert events(caplog, "stream_leftovers")
    assert streams.iterator_types(next(iter(new.shards.values()))) == ["TRIM_HORIZON"]


async def test_a_stream_arn_source_fails_once_its_stream_is_disabled_and_read(
    tmp_path, streams, store, into, caplog
):
    stream = streams.add_stream("Orders")
    first = streams.put(next(iter(stream.shards.values())), keys("k", 5))
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store, stop=False) as run:
        await wait_delivered(into, first)
        streams.disable_stream(stream)
        with anyio.fail_after(5):
            await run.exited.wait()
    assert run.code == 1
    (failed,) = events(caplog, "stream_failed")
    assert "was disabled and every record in it was read" in failed.__dict__["error"]


async def test_a_stream_arn_source_fails_when_its_stream_is_gone(
    tmp_path, streams, store, into, caplog
):
    stream = streams.add_stream("Orders")
    first = streams.put(next(iter(stream.shards.values())), keys("k", 5))
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store, stop=False) as run:
        await wait_delivered(into, first)
        streams.delete_stream(stream)
        with anyio.fail_after(5):
            await run.exited.wait()
    assert run.code == 1
    (failed,) = events(caplog, "stream_failed")
    assert "does not exist (ResourceNotFoundException)" in failed.__dict__["error"]


async def test_a_table_without_any_stream_fails_at_start(tmp_path, streams, store, into, caplog):
    streams.tables["Orders"] = None
    config = worker_config(tmp_path, into, table="Orders")
    async with running(config, streams, store, stop=False) as run:
        with anyio.fail_after(5):
            await run.exited.wait()
    assert run.code == 1
    assert "has no stream enabled" in events(caplog, "stream_failed")[0].__dict__["error"]


# -- starting positions -------------------------------------------------------------------------


async def test_latest_skips_closed_shards_reads_open_ones_from_latest_and_is_kept(
    tmp_path, streams, store, into
):
    stream = streams.add_stream("Orders", shards=2)
    a, b = stream.shards.values()
    hour_ago = time.time() - 3600
    old = streams.put(a, keys("a", 3), at=hour_ago) + streams.put(b, keys("b", 3), at=hour_ago)
    closed = streams.add_shard(stream)
    old += streams.put(closed, keys("c", 3), at=hour_ago)
    c2 = streams.rollover(closed)
    config = worker_config(
        tmp_path, into, stream_arn=stream.arn, stream={"starting_position": "LATEST"}
    )
    async with running(config, streams, store):
        await wait_for(
            lambda: all(streams.iterator_types(s) == ["LATEST"] for s in (a, b, c2)),
        )
        seen = streams.put(a, keys("a", 3))
        await wait_delivered(into, seen)
    skipped = store.get(stream.arn, closed.shard_id)  # closed at the first start: not read
    assert skipped is not None
    assert (skipped.sequence, skipped.finished) == (None, True)
    down = streams.put(a, keys("a", 3)) + streams.put(b, keys("b", 3))
    down += streams.put(c2, keys("c", 3))
    async with running(config, streams, store):
        await wait_delivered(into, down)
    assert sorted(into.seqs) == sorted(seen + down)
    assert not set(old) & into.distinct()
    assert streams.iterator_types(closed) == []
    assert streams.iterator_types(a) == ["LATEST", "AFTER_SEQUENCE_NUMBER"]
    assert streams.iterator_types(b) == ["LATEST", "TRIM_HORIZON"]


async def test_latest_start_skips_nothing_when_its_iterator_expires(tmp_path, streams, store, into):
    stream = streams.add_stream("Orders")
    shard = next(iter(stream.shards.values()))
    old = streams.put(shard, keys("k", 3), at=time.time() - 3600)
    config = worker_config(
        tmp_path, into, stream_arn=stream.arn, stream={"starting_position": "LATEST"}
    )
    async with running(config, streams, store):
        await wait_for(lambda: streams.iterator_types(shard) == ["LATEST"])
        streams.expire_iterators(shard)
        fresh = streams.put(shard, keys("k", 3))
        await wait_delivered(into, fresh)
    assert into.seqs == fresh
    assert not set(old) & into.distinct()
    assert streams.iterator_types(shard) == ["LATEST", "TRIM_HORIZON"]


async def test_at_timestamp_is_read_from_trim_horizon_skipping_older_records(
    tmp_path, streams, store, into
):
    stream = streams.add_stream("Orders")
    shard = next(iter(stream.shards.values()))
    now = time.time()
    start = now - 3600
    older = streams.put(shard, keys("k", 5), at=now - 7200)
    slack = streams.put(shard, keys("k", 5), at=start - 30)  # the rounding slack
    newer = streams.put(shard, keys("k", 5), at=now - 600)
    child = streams.rollover(shard)
    in_child = streams.put(child, keys("k", 5))
    config = worker_config(
        tmp_path,
        into,
        stream_arn=stream.arn,
        stream={"starting_position": "AT_TIMESTAMP", "starting_timestamp": start},
    )
    async with running(config, streams, store):
        await wait_delivered(into, slack + newer + in_child)
    async with running(config, streams, store):  # a restart resumes from the checkpoints
        await anyio.sleep(0.05)
    assert into.seqs == slack + newer + in_child
    assert not set(older) & into.distinct()
    assert streams.iterator_types(shard) == ["TRIM_HORIZON"]
    assert store.starts[stream.arn] == start


# -- discovery --------------------------------------------------------------------------------


async def test_discovery_pages_through_every_shard_and_starts_them_as_it_goes(
    tmp_path, store, into
):
    streams = FakeStreams(describe_page_size=2)
    stream = streams.add_stream("Orders", shards=5)
    written = [s for sh in stream.shards.values() for s in streams.put(sh, keys(sh.shard_id, 2))]
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store) as run:
        await wait_delivered(into, written)
        assert len(run.stream.listed) == 5
        assert run.stream.ready
    starts = [c.args["start"] for c in streams.calls_of("DescribeStream") if not c.shard_id][:3]
    ids = list(stream.shards)
    assert starts == [None, ids[1], ids[3]]


async def test_a_failing_discovery_page_is_retried_from_where_it_stopped(
    tmp_path, store, into, caplog
):
    streams = FakeStreams(describe_page_size=2)
    stream = streams.add_stream("Orders", shards=5)
    written = [s for sh in stream.shards.values() for s in streams.put(sh, keys(sh.shard_id, 2))]
    ids = list(stream.shards)
    streams.fail(
        "DescribeStream",
        lambda: ServiceError("DescribeStream: 500"),
        times=2,
        where=lambda c: c.args["start"] == ids[1],
    )
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store) as run:
        await wait_delivered(into, written)
        assert run.stream.discovery_error is None
        assert run.stream.discovered_at is not None
        errors = run.sample("fanout_discovery_errors_total")
    assert errors == 2
    failed = events(caplog, "discovery_failed")
    assert [r.__dict__["attempt"] for r in failed] == [1, 2]
    assert [r.__dict__["shards_listed"] for r in failed] == [2, 2]
    assert all(0 < r.__dict__["retry_in_s"] <= 0.05 for r in failed)  # capped by the interval
    (recovered,) = events(caplog, "discovery_recovered")
    assert (recovered.__dict__["failures"], recovered.__dict__["pages"]) == (2, 3)
    first_pages = [c.args["start"] for c in streams.calls_of("DescribeStream") if not c.shard_id]
    assert first_pages[:4] == [None, ids[1], ids[1], ids[1]]  # never from the start again


async def test_a_stream_that_cannot_be_listed_is_not_ready(tmp_path, streams, store, into):
    stream = streams.add_stream("Orders")
    fault = streams.fail(
        "DescribeStream", lambda: Throttled("DescribeStream: throttled"), times=None
    )
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store) as run:
        await wait_for(lambda: run.stream.discovery_error is not None)
        assert not run.stream.ready
        fault.times = 0
        await wait_for(lambda: run.stream.ready)
        assert run.stream.discovery_error is None


async def test_children_found_by_discovery_when_the_child_lookup_keeps_failing(
    tmp_path, streams, store, into, caplog
):
    stream = streams.add_stream("Orders")
    parent = next(iter(stream.shards.values()))
    first = streams.put(parent, keys("k", 3))
    child = streams.rollover(parent)
    second = streams.put(child, keys("k", 3))
    streams.fail(
        "DescribeStream",
        lambda: ServiceError("DescribeStream: 503"),
        times=None,
        where=lambda c: c.shard_id is not None,  # every CHILD_SHARDS lookup
    )
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store):
        await wait_delivered(into, first + second)
    assert len(events(caplog, "child_lookup_failed")) == 5


async def test_a_child_lookup_asks_again_until_the_child_is_listed(
    tmp_path, streams, store, into, caplog
):
    stream = streams.add_stream("Orders")
    parent = next(iter(stream.shards.values()))
    first = streams.put(parent, keys("k", 3))
    streams.close(parent)
    lookups: list[Any] = []
    second: list[str] = []

    def appear(call: Any) -> bool:  # the child shows up at the third lookup
        if call.shard_id == parent.shard_id:
            lookups.append(call)
            if len(lookups) == 3:
                child = streams.add_shard(stream, parent=parent)
                second.extend(streams.put(child, keys("k", 3)))
        return False

    streams.fail("DescribeStream", lambda: AssertionError("never"), times=None, where=appear)
    config = worker_config(
        tmp_path, into, stream_arn=stream.arn, stream={"discovery_interval": 3600}
    )
    async with running(config, streams, store):
        await wait_delivered(into, first)
        await wait_for(lambda: len(second) == 3)
        await wait_delivered(into, second)
    assert len(lookups) == 3
    (started,) = events(caplog, "children_started")
    assert started.__dict__["shard"] == parent.shard_id


async def test_a_closed_shard_without_children_is_left_to_discovery(tmp_path, streams, store, into):
    stream = streams.add_stream("Orders")
    parent = next(iter(stream.shards.values()))
    first = streams.put(parent, keys("k", 3))
    streams.close(parent)
    config = worker_config(
        tmp_path, into, stream_arn=stream.arn, stream={"discovery_interval": 3600}
    )
    async with running(config, streams, store) as run:
        await wait_delivered(into, first)
        await wait_for(lambda: parent.shard_id in run.stream.finished)
        await wait_for(lambda: len(streams.calls_of("DescribeStream")) >= 7)
    lookups = [c for c in streams.calls_of("DescribeStream") if c.shard_id]
    listings = [c for c in streams.calls_of("DescribeStream") if not c.shard_id]
    assert len(lookups) == 5
    assert len(listings) == 2  # at start, and at once after the lookups gave up


async def test_shards_beyond_max_shards_wait_their_turn(tmp_path, streams, store, into, caplog):
    stream = streams.add_stream("Orders", shards=3)
    written = []
    for sh in stream.shards.values():
        written += streams.put(sh, keys(sh.shard_id, 3))
        streams.close(sh)
    config = worker_config(tmp_path, into, stream_arn=stream.arn, stream={"max_shards": 1})
    async with running(config, streams, store) as run:
        await wait_delivered(into, written)
        await wait_for(lambda: len(run.stream.finished) == 3)
    assert events(caplog, "shards_waiting")[0].__dict__["waiting"] == 2


async def test_finished_checkpoints_of_unlisted_shards_are_pruned(
    tmp_path, streams, store, into, caplog
):
    stream = streams.add_stream("Orders")
    parent = next(iter(stream.shards.values()))
    first = streams.put(parent, keys("k", 3))
    child = streams.rollover(parent)
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store) as run:
        await wait_delivered(into, first)
        await wait_for(lambda: parent.shard_id in run.stream.finished)
        streams.remove_shard(parent)
        await wait_for(lambda: store.get(stream.arn, parent.shard_id) is None)
        await wait_for(lambda: parent.shard_id not in run.stream.finished)
    assert events(caplog, "checkpoints_pruned")
    assert streams.iterator_types(child) == ["TRIM_HORIZON"]


async def test_an_old_unfinished_checkpoint_is_reported_at_start(
    tmp_path, streams, store, into, caplog
):
    stream = streams.add_stream("Orders")
    shard = next(iter(stream.shards.values()))
    written = streams.put(shard, keys("k", 4))
    store.rows[(stream.arn, shard.shard_id)] = Checkpoint(
        stream.arn, shard.shard_id, written[1], False, time.time() - 2 * 86400
    )
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store):
        await wait_delivered(into, written[2:])
    (old,) = events(caplog, "checkpoint_older_than_retention")
    assert old.__dict__["seq"] == written[1]
    assert into.seqs == written[2:]


# -- the checkpoint store ---------------------------------------------------------------------


async def test_a_failing_store_holds_the_stream_until_it_answers(
    tmp_path, streams, store, into, caplog
):
    stream = streams.add_stream("Orders")
    parent = next(iter(stream.shards.values()))
    first = streams.put(parent, keys("k", 3))
    child = streams.rollover(parent)
    second = streams.put(child, keys("k", 3))
    store.failures, store.fail_ops = 2, {"load"}
    into.gate = anyio.Event()
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store) as run:
        await wait_for(lambda: streams.calls_of("GetRecords", parent) != [])
        store.failures, store.fail_ops = 3, {"save"}
        into.gate.set()
        await wait_delivered(into, first + second)
        failures = run.worker.metrics.registry.get_sample_value("fanout_checkpoint_failures_total")
    assert failures == 5
    assert [r.__dict__["attempt"] for r in events(caplog, "checkpoint_store_failed")] == [1, 2]
    assert len(events(caplog, "checkpoint_failed")) == 3
    row = store.get(stream.arn, parent.shard_id)
    assert row is not None
    assert (row.sequence, row.finished) == (first[-1], True)
    assert check_lineage(stream, into) == 1


async def test_table_lookups_are_retried_on_throttling(tmp_path, streams, store, into, caplog):
    stream = streams.add_stream("Orders")
    first = streams.put(next(iter(stream.shards.values())), keys("k", 3))
    streams.fail("DescribeTable", lambda: Throttled("DescribeTable: throttled"), times=2)
    config = worker_config(tmp_path, into, table="Orders")
    async with running(config, streams, store):
        await wait_delivered(into, first)
    assert [r.__dict__["attempt"] for r in events(caplog, "source_call_failed")] == [1, 2]


async def test_a_stream_not_found_while_reading_asks_discovery(
    tmp_path, streams, store, into, caplog
):
    stream = streams.add_stream("Orders")
    shard = next(iter(stream.shards.values()))
    first = streams.put(shard, keys("k", 3))
    streams.fail(
        "GetRecords", lambda: StreamNotFound("GetRecords: ResourceNotFoundException"), times=1
    )
    streams.fail(
        "DescribeStream",
        lambda: ServiceError("DescribeStream: 500"),
        times=1,
        where=lambda c: c.args["limit"] == 1,
    )
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store):
        await wait_delivered(into, first)
    assert not events(caplog, "data_loss_detected")


async def test_a_prune_that_fails_is_tried_again_at_the_next_listing(
    tmp_path, streams, store, into, caplog
):
    stream = streams.add_stream("Orders")
    parent = next(iter(stream.shards.values()))
    first = streams.put(parent, keys("k", 3))
    streams.rollover(parent)
    config = worker_config(tmp_path, into, stream_arn=stream.arn)
    async with running(config, streams, store) as run:
        await wait_delivered(into, first)
        await wait_for(lambda: parent.shard_id in run.stream.finished)
        store.failures, store.fail_ops = 1, {"prune"}
        streams.remove_shard(parent)
        await wait_for(lambda: store.get(stream.arn, parent.shard_id) is None)
    assert events(caplog, "checkpoint_prune_failed")
    assert events(caplog, "checkpoints_pruned")


async def test_a_table_deleted_after_its_stream_ended_is_waited_for(
    tmp_path, streams, store, into, caplog
):
    old = streams.add_stream("Orders")
    first = streams.put(next(iter(old.shards.values())), keys("k", 3))
    config = worker_config(tmp_path, into, table="Orders")
    async with running(config, streams, store):
        await wait_delivered(into, first)
        streams.disable_stream(old)
        del streams.tables["Orders"]  # the table itself is gone
        await wait_for(lambda: bool(events(caplog, "stream_ended_waiting")))
        new = streams.add_stream("Orders")
        fresh = streams.put(next(iter(new.shards.values())), keys("k", 3))
        await wait_delivered(into, fresh)
    (waiting,) = events(caplog, "stream_ended_waiting")
    assert "Table: Orders not found" in waiting.__dict__["error"]


async def test_leftovers_are_read_even_when_the_table_has_no_stream_now(
    tmp_path, streams, store, into
):
    old = streams.add_stream("Orders")
    shard = next(iter(old.shards.values()))
    first = streams.put(shard, keys("k", 3))
    config = worker_config(tmp_path, into, table="Orders")
    async with running(config, streams, store):
        await wait_delivered(into, first)
    down = streams.put(shard, keys("k", 3))
    streams.disable_stream(old)
    async with running(config, streams, store) as run:
        await wait_delivered(into, down)
        new = streams.add_stream("Orders")
        fresh = streams.put(next(iter(new.shards.values())), keys("k", 3))
        await wait_delivered(into, fresh)
        assert run.stream.stream_arn == new.arn
    assert into.seqs == first + down + fresh


async def test_a_stream_gone_with_unread_shards_fails_with_on_data_loss_fail(
    tmp_path, streams, store, into, caplog
):
    old = streams.add_stream("Orders")
    shard = next(iter(old.shards.values()))
    first = streams.put(shard, keys("k", 3))
    config = worker_config(tmp_path, into, table="Orders", stream={"on_data_loss": "fail"})
    async with running(config, streams, store, stop=False) as run:
        await wait_delivered(into, first)
        streams.delete_stream(old)
        with anyio.fail_after(5):
            await run.exited.wait()
    assert run.code == 1
    assert "the stream is gone" in events(caplog, "worker_failed")[0].__dict__["error"]
