"""Shard lifecycle and stream faults: the real worker against the scripted stream server.

Every test drives ``fanout.app.Worker`` through the wire protocol and checks what reached
the sink: every record not deliberately trimmed is delivered, children never before their
parents, per-key order across rollovers and splits, and trimmed records counted exactly.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from fanout.config import build_config
from fanout.progress.store import Checkpoint
from fanout.testing.streamserver import Change, StreamServer
from tests.integration.shardkit import (
    COLLECTOR,
    check_key_order,
    check_lineage,
    events,
    iterator_types,
    make_config,
    put_keys,
    record_calls,
    running,
    wait_delivered,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _collector(caplog: pytest.LogCaptureFixture) -> None:
    COLLECTOR.reset()
    caplog.set_level(logging.INFO, logger="fanout")


def keys(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


# -- lineage ----------------------------------------------------------------------------------


async def test_rollovers_and_splits_keep_lineage_and_key_order(tmp_path: Path) -> None:
    async with StreamServer(page_size=10) as server:
        stream = server.add_stream("Orders", shards=2)
        a, b = stream.shards
        ka, kb = keys("a", 20), keys("b", 20)
        calls = record_calls(server)
        put_keys(server, a, ka, 1)
        put_keys(server, b, kb, 1)
        config = make_config(server, tmp_path, stream_arn=stream.arn)
        COLLECTOR.delay = 0.002
        async with running(config) as run:
            await wait_delivered(stream.shards[0].sequence_numbers[:5])
            a2 = server.rollover(a)  # while a is being read
            put_keys(server, a2, ka, 2)
            b1, b2 = server.split(b)
            put_keys(server, b1, kb[:10], 2)
            put_keys(server, b2, kb[10:], 2)
            put_keys(server, b1, kb[:10], 3)
            put_keys(server, b2, kb[10:], 3)
            a3 = server.rollover(a2)
            put_keys(server, a3, ka, 3)
            c1, c2 = server.split(b1)
            put_keys(server, c1, kb[:5], 4)
            put_keys(server, c2, kb[5:10], 4)
            await wait_delivered(s for sh in stream.shards for s in sh.sequence_numbers)
            finished = set(run.stream.finished)
        assert run.code == 0
    deliveries = COLLECTOR.deliveries
    assert {d.seq for d in deliveries} == {s for sh in stream.shards for s in sh.sequence_numbers}
    assert check_lineage(stream, deliveries) == 6
    assert check_key_order(deliveries) == 40
    assert {a.shard_id, a2.shard_id, b.shard_id, b1.shard_id} <= finished
    # The two children of a split were read side by side: their deliveries interleave.
    owner = {s: sh.shard_id for sh in (b1, b2) for s in sh.sequence_numbers}
    order = [owner[d.seq] for d in deliveries if d.seq in owner]
    switches = sum(1 for x, y in itertools.pairwise(order) if x != y)
    assert switches >= 2, order
    # Children start at TRIM_HORIZON, found by a CHILD_SHARDS lookup (discovery_interval 1h).
    for child in (a2, a3, b1, b2, c1, c2):
        assert iterator_types(calls, child.shard_id) == ["TRIM_HORIZON"]
    lookups = [c for c in calls if c.op == "DescribeStream" and "ShardFilter" in c.body]
    listings = [c for c in calls if c.op == "DescribeStream" and "ShardFilter" not in c.body]
    assert {c.body["ShardFilter"]["ShardId"] for c in lookups} >= {a.shard_id, b.shard_id}
    assert len(listings) == 1


async def test_shard_end_finds_children_at_once_and_checkpoints_the_parent_finished(
    tmp_path: Path,
) -> None:
    async with StreamServer() as server:
        stream = server.add_stream("Orders")
        parent = stream.shards[0]
        first = put_keys(server, parent, keys("k", 30), 1)
        calls = record_calls(server)
        config = make_config(server, tmp_path, stream_arn=stream.arn)  # discovery every hour
        async with running(config) as run:
            await wait_delivered(first)
            child = server.rollover(parent)
            started = time.monotonic()
            second = put_keys(server, child, keys("k", 30), 2)
            await wait_delivered(second, timeout=5)
            took = time.monotonic() - started
            rows = {r.shard_id: r for r in await run.worker.store.all()}
        assert run.code == 0
    assert took < 3
    assert (rows[parent.shard_id].sequence, rows[parent.shard_id].finished) == (
        first[-1],
        True,
    )  # finished, at its last record
    lookups = [c for c in calls if c.op == "DescribeStream" and "ShardFilter" in c.body]
    assert [c.body["ShardFilter"] for c in lookups] == [
        {"Type": "CHILD_SHARDS", "ShardId": parent.shard_id}
    ]
    listings = [c for c in calls if c.op == "DescribeStream" and "ShardFilter" not in c.body]
    assert len(listings) == 1  # the one at start-up
    assert iterator_types(calls, child.shard_id) == ["TRIM_HORIZON"]
    check_lineage(stream, COLLECTOR.deliveries)


async def test_finished_shards_are_pruned_once_no_longer_listed(tmp_path: Path) -> None:
    async with StreamServer() as server:
        stream = server.add_stream("Orders")
        parent = stream.shards[0]
        first = put_keys(server, parent, keys("k", 5), 1)
        child = server.rollover(parent)
        second = put_keys(server, child, keys("k", 5), 2)
        config = make_config(
            server, tmp_path, stream_arn=stream.arn, stream={"discovery_interval": "100ms"}
        )
        async with running(config) as run:
            await wait_delivered(first + second)

            async def stored() -> dict[str, Checkpoint]:
                return {r.shard_id: r for r in await run.worker.store.all()}

            await wait_for(lambda: parent.shard_id in run.stream.finished)
            assert (await stored())[parent.shard_id].finished is True
            server.remove_shard(parent)  # aged out of the stream (24 h after it closed)
            await wait_for(lambda: parent.shard_id not in run.stream.finished, 5)
            rows = await stored()
        assert run.code == 0
        assert run.sample("fanout_data_loss_events_total") == 0
    assert parent.shard_id not in rows
    assert child.shard_id in rows


# -- discovery --------------------------------------------------------------------------------


def build_lineages(server: StreamServer, lineages: int, generations: int, per_shard: int) -> Any:
    """A stream of ``lineages`` shards rolled over ``generations - 1`` times (every shard
    but the last generation closed), ``per_shard`` records in each."""
    stream = server.add_stream("Orders", shards=lineages)
    current = list(stream.shards)
    for gen in range(generations):
        for i, shard in enumerate(current):
            put_keys(server, shard, [f"l{i}-{j}" for j in range(per_shard)], gen + 1)
        if gen < generations - 1:
            current = [server.rollover(shard) for shard in current]
    return stream


@pytest.mark.parametrize(("lineages", "generations"), [(50, 3), (400, 3)])
async def test_discovery_pages_through_more_than_100_and_1000_shards(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, lineages: int, generations: int
) -> None:
    async with StreamServer() as server:
        stream = build_lineages(server, lineages, generations, 2)
        total = lineages * generations
        pages = (total + 99) // 100
        calls = record_calls(server)
        fault = server.fail("DescribeStream", "InternalServerError", times=2, page=pages - 1)
        config = make_config(
            server,
            tmp_path,
            stream_arn=stream.arn,
            stream={"max_idle_interval": "1s", "max_shards": 2000},
        )
        async with running(config) as run:
            await wait_delivered((s for sh in stream.shards for s in sh.sequence_numbers), 60)
            errors = run.sample("fanout_discovery_errors_total")
            listed = len(run.stream.listed)
        assert run.code == 0
    assert fault.fired == 2
    assert errors == 2
    failed = events(caplog, "discovery_failed")
    assert [r.__dict__["shards_listed"] for r in failed] == [(pages - 1) * 100] * 2
    assert listed == total
    listing = [c for c in calls if c.op == "DescribeStream" and "ShardFilter" not in c.body]
    by_page = [c.page or 0 for c in listing]
    # One listing: every page once, the failed last page three times (kept what it had).
    assert sorted(by_page) == sorted([*range(pages), pages - 1, pages - 1])
    assert check_lineage(stream, COLLECTOR.deliveries) == lineages * (generations - 1)


async def test_discovery_that_keeps_failing_is_visible_and_reads_what_it_listed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with StreamServer() as server:
        stream = server.add_stream("Orders", shards=250)
        for i, shard in enumerate(stream.shards):
            put_keys(server, shard, [f"s{i}"], 1)
        server.fail("DescribeStream", "InternalServerError", times=None, page=2)
        config = make_config(
            server, tmp_path, stream_arn=stream.arn, stream={"max_idle_interval": "1s"}
        )
        early = [s for sh in stream.shards[:200] for s in sh.sequence_numbers]
        late = [s for sh in stream.shards[200:] for s in sh.sequence_numbers]
        async with running(config) as run:
            await wait_delivered(early)
            await wait_for(lambda: run.sample("fanout_discovery_errors_total") >= 3)
            assert not run.stream.ready
            assert run.stream.discovery_error is not None
            assert not set(late) & COLLECTOR.distinct()
            server.clear_faults()
            await wait_delivered(late)
            assert run.stream.ready
            assert run.stream.discovery_error is None
        assert run.code == 0
    assert len(events(caplog, "discovery_failed")) >= 3
    assert events(caplog, "discovery_recovered")


# -- faults while reading ---------------------------------------------------------------------


async def test_expired_iterators_reseek_after_the_last_record(tmp_path: Path) -> None:
    async with StreamServer(page_size=10) as server:
        stream = server.add_stream("Orders", shards=2)
        written = [
            s
            for i, sh in enumerate(stream.shards)
            for s in put_keys(server, sh, [f"k{i}-{j}" for j in range(150)], 1)
        ]
        calls = record_calls(server)
        server.fail("GetRecords", "ExpiredIteratorException", times=None, probability=0.15)
        config = make_config(server, tmp_path, stream_arn=stream.arn)
        async with running(config) as run:
            await wait_delivered(written[:20])
            server.expire_iterators()
            await wait_delivered(written)
            expired = run.sample("fanout_get_records_calls_total", outcome="expired")
        assert run.code == 0
    assert expired >= 3
    assert sorted(COLLECTOR.seqs) == sorted(written)  # re-seeks skip and repeat nothing
    after = [c for c in calls if c.body.get("ShardIteratorType") == "AFTER_SEQUENCE_NUMBER"]
    assert len(after) >= expired - 2
    check_key_order(COLLECTOR.deliveries)


async def test_throttling_and_server_errors_back_off_and_recover(tmp_path: Path) -> None:
    async with StreamServer(page_size=20) as server:
        stream = server.add_stream("Orders", shards=3)
        written = [
            s
            for i, sh in enumerate(stream.shards)
            for s in put_keys(server, sh, [f"k{i}-{j}" for j in range(100)], 1)
        ]
        server.throttle("GetRecords", times=None, probability=0.3)
        server.fail("GetRecords", "InternalServerError", times=None, probability=0.1)
        server.fail("GetRecords", 503, times=5)
        server.fail("GetRecords", "reset", times=3)
        server.fail("GetShardIterator", "LimitExceededException", times=3)
        server.fail("DescribeStream", "ProvisionedThroughputExceededException", times=2)
        config = make_config(server, tmp_path, stream_arn=stream.arn)
        async with running(config) as run:
            await wait_delivered(written, 30)
            throttled = run.sample("fanout_get_records_calls_total", outcome="throttled")
            failed = run.sample("fanout_get_records_calls_total", outcome="error")
        assert run.code == 0
    assert throttled >= 5
    assert failed >= 8
    assert sorted(COLLECTOR.seqs) == sorted(written)
    check_key_order(COLLECTOR.deliveries)


async def test_empty_pages_in_the_middle_of_a_shard_are_read_through(tmp_path: Path) -> None:
    async with StreamServer(page_size=10) as server:
        stream = server.add_stream("Orders", shards=2)
        open_shard, closed_shard = stream.shards
        written = put_keys(server, open_shard, keys("o", 30), 1)
        written += put_keys(server, closed_shard, keys("c", 30), 1)
        server.inject_empty_pages(open_shard, 6, at=10)
        server.inject_empty_pages(open_shard, 3, at=20)
        server.inject_empty_pages(closed_shard, 8, at=15)
        server.inject_empty_pages(closed_shard, 4, at=30)  # at its very end
        server.close_shard(closed_shard)
        config = make_config(server, tmp_path, stream_arn=stream.arn)
        async with running(config) as run:
            await wait_delivered(written, 10)
            await wait_for(lambda: closed_shard.shard_id in run.stream.finished, 5)
            empty = run.sample("fanout_get_records_calls_total", outcome="empty")
        assert run.code == 0
    assert empty >= 21
    assert sorted(COLLECTOR.seqs) == sorted(written)


# -- data loss --------------------------------------------------------------------------------


def loss_log(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    (record,) = events(caplog, "data_loss_detected")
    assert record.levelno == logging.ERROR
    return record.__dict__


async def test_records_trimmed_after_the_checkpoint_are_counted_exactly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with StreamServer() as server:
        stream = server.add_stream("Orders")
        shard = stream.shards[0]
        first = put_keys(server, shard, keys("k", 100), 1)
        config = make_config(server, tmp_path, stream_arn=stream.arn)
        async with running(config):
            await wait_delivered(first)
        second = put_keys(server, shard, keys("k", 100), 2)
        assert server.trim(shard, up_to_seq=second[39]) == 140  # 40 never read
        async with running(config) as run:
            await wait_delivered(second[40:])
            lost = run.sample("fanout_records_lost_total")
            gaps = run.sample("fanout_data_loss_events_total")
        assert run.code == 0
    assert (lost, gaps) == (40, 1)
    assert not set(second[:40]) & COLLECTOR.distinct()
    assert sorted(COLLECTOR.seqs) == sorted(first + second[40:])
    entry = loss_log(caplog)
    assert entry["lost_after_seq"] == first[-1]
    assert entry["lost_before_seq"] == second[40]
    assert entry["records_lost"] == 40
    assert entry["count_basis"] == "sequence_spacing"
    assert entry["lost_from_basis"] == "checkpoint"
    assert entry["policy"] == "resume_trim_horizon"


async def test_records_trimmed_while_the_reader_is_behind_are_counted_exactly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with StreamServer(page_size=10) as server:
        stream = server.add_stream("Orders")
        shard = stream.shards[0]
        written = put_keys(server, shard, keys("k", 100), 1)
        COLLECTOR.gate = anyio.Event()
        config = make_config(
            server,
            tmp_path,
            stream_arn=stream.arn,
            sink={"batch_size": 10, "max_buffered_records": 10},
        )
        async with running(config) as run:
            # The sink holds the first page; the reader holds the second (the lane is full).
            await wait_for(lambda: server.records_served[shard.shard_id] == 20)
            await anyio.sleep(0.2)
            assert server.records_served[shard.shard_id] == 20
            assert server.trim(shard, up_to_seq=written[49]) == 50  # 30 of them unread
            COLLECTOR.gate.set()
            await wait_delivered(written[50:])
            lost = run.sample("fanout_records_lost_total")
        assert run.code == 0
    assert lost == 30
    assert sorted(COLLECTOR.seqs) == sorted(written[:20] + written[50:])
    entry = loss_log(caplog)
    assert (entry["lost_after_seq"], entry["lost_before_seq"]) == (written[19], written[50])
    assert entry["lost_from_basis"] == "record"
    assert entry["lost_from"] is not None
    assert entry["lost_until"] is not None


async def test_a_checkpoint_older_than_the_retention_is_reported_and_the_gap_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with StreamServer(retention=24 * 3600) as server:
        stream = server.add_stream("Orders")
        shard = stream.shards[0]
        first = put_keys(server, shard, keys("k", 50), 1)
        config = make_config(server, tmp_path, stream_arn=stream.arn)
        async with running(config):
            await wait_delivered(first)
        unread = put_keys(server, shard, keys("k", 30), 2)
        server.advance(25 * 3600)  # the worker was down for 25 hours
        third = put_keys(server, shard, keys("k", 20), 3)
        with sqlite3.connect(tmp_path / "fanout.db") as db:
            db.execute("UPDATE checkpoints SET updated_at = updated_at - 25 * 3600")
        db.close()
        async with running(config) as run:
            await wait_delivered(third)
            lost = run.sample("fanout_records_lost_total")
        assert run.code == 0
    assert lost == len(unread)
    (old,) = events(caplog, "checkpoint_older_than_retention")
    assert old.__dict__["seq"] == first[-1]
    entry = loss_log(caplog)
    assert entry["records_lost"] == 30
    assert (entry["lost_after_seq"], entry["lost_before_seq"]) == (first[-1], third[0])
    assert sorted(COLLECTOR.seqs) == sorted(first + third)


async def test_on_data_loss_fail_stops_the_worker_with_a_clear_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with StreamServer() as server:
        stream = server.add_stream("Orders")
        shard = stream.shards[0]
        first = put_keys(server, shard, keys("k", 20), 1)
        config = make_config(
            server, tmp_path, stream_arn=stream.arn, stream={"on_data_loss": "fail"}
        )
        async with running(config):
            await wait_delivered(first)
        second = put_keys(server, shard, keys("k", 20), 2)
        server.trim(shard, up_to_seq=second[4])
        async with running(config, stop=False) as run:
            with anyio.fail_after(10):
                await run.exited.wait()
            rows = await run.worker.store.all()
        assert run.code == 1
        assert run.sample("fanout_data_loss_events_total") == 1
        assert run.sample("fanout_records_lost_total") == 5
    assert not set(second) & COLLECTOR.distinct()  # nothing past the gap
    assert [r.sequence for r in rows] == [first[-1]]  # the checkpoint stays before the gap
    (failed,) = events(caplog, "worker_failed")
    message = failed.__dict__["error"]
    assert "DataLossError" in message
    assert f"after sequence number {first[-1]}" in message
    assert "on_data_loss is 'fail'" in message


async def test_a_shard_that_aged_out_unread_is_a_data_loss_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with StreamServer() as server:
        stream = server.add_stream("Orders")
        parent = stream.shards[0]
        first = put_keys(server, parent, keys("k", 20), 1)
        config = make_config(server, tmp_path, stream_arn=stream.arn)
        async with running(config):
            await wait_delivered(first)
        put_keys(server, parent, keys("k", 10), 2)  # never read
        child = server.rollover(parent)
        second = put_keys(server, child, keys("k", 10), 3)
        server.remove_shard(parent)
        async with running(config) as run:
            await wait_delivered(second)
            gaps = run.sample("fanout_data_loss_events_total")
            lost = run.sample("fanout_records_lost_total")
        assert run.code == 0
    assert (gaps, lost) == (1, 0)  # how many were in it cannot be known
    entry = loss_log(caplog)
    assert entry["shard"] == parent.shard_id
    assert entry["lost_after_seq"] == first[-1]
    assert entry["count_basis"] == "unknown"


async def test_a_shard_removed_while_being_read_is_a_data_loss_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with StreamServer(page_size=10) as server:
        stream = server.add_stream("Orders")
        parent = stream.shards[0]
        written = put_keys(server, parent, keys("k", 50), 1)
        COLLECTOR.gate = anyio.Event()
        config = make_config(
            server,
            tmp_path,
            stream_arn=stream.arn,
            sink={"batch_size": 10, "max_buffered_records": 10},
        )
        async with running(config) as run:
            await wait_for(lambda: server.records_served[parent.shard_id] == 20)
            child = server.rollover(parent)
            second = put_keys(server, child, keys("k", 10), 2)
            server.remove_shard(parent)
            COLLECTOR.gate.set()
            await wait_delivered(second)
        assert run.code == 0
    entry = loss_log(caplog)
    assert entry["shard"] == parent.shard_id
    assert entry["lost_after_seq"] == written[19]
    assert sorted(COLLECTOR.seqs) == sorted(written[:20] + second)
    check_lineage(stream, COLLECTOR.deliveries)


# -- streams that end -------------------------------------------------------------------------


async def test_a_replaced_stream_is_read_to_its_end_then_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with StreamServer() as server:
        old = server.add_stream("Orders", shards=2)
        first = [s for sh in old.shards for s in put_keys(server, sh, keys(sh.shard_id, 10), 1)]
        calls = record_calls(server)
        config = make_config(
            server, tmp_path, table="Orders", stream={"discovery_interval": "200ms"}
        )
        async with running(config) as run:
            await wait_delivered(first)
            COLLECTOR.delay = 0.05  # the old stream's last records are still in flight...
            # An item's changes are in one shard of a stream: each shard gets its own keys.
            rest = [
                s
                for i, sh in enumerate(old.shards)
                for s in put_keys(server, sh, keys(f"x{i}-", 20), 2)
            ]
            server.disable_stream("Orders")
            new = server.add_stream("Orders", shards=2)  # ...when the new stream starts
            fresh = [
                s
                for i, sh in enumerate(new.shards)
                for s in put_keys(server, sh, keys(f"x{i}-", 20), 3)
            ]
            await wait_delivered(rest + fresh)
            arn_now = run.stream.stream_arn
            rows = await run.worker.store.all()
        assert run.code == 0
    assert arn_now == new.arn
    index = {d.seq: i for i, d in enumerate(COLLECTOR.deliveries)}
    assert max(index[s] for s in first + rest) < min(index[s] for s in fresh)
    assert {d.arn for d in COLLECTOR.deliveries if d.seq in set(fresh)} == {new.arn}
    check_key_order(COLLECTOR.deliveries)
    (replaced,) = events(caplog, "stream_replaced")
    assert (replaced.__dict__["old_stream_arn"], replaced.__dict__["new_stream_arn"]) == (
        old.arn,
        new.arn,
    )
    assert replaced.levelno == logging.WARNING
    for shard in new.shards:
        assert iterator_types(calls, shard.shard_id) == ["TRIM_HORIZON"]
    assert old.arn not in {r.stream_arn for r in rows}  # the old stream's checkpoints are gone


async def test_a_stream_deleted_with_unread_records_is_reported_then_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with StreamServer() as server:
        old = server.add_stream("Orders")
        first = put_keys(server, old.shards[0], keys("k", 10), 1)
        config = make_config(
            server, tmp_path, table="Orders", stream={"discovery_interval": "200ms"}
        )
        async with running(config) as run:
            await wait_delivered(first)
            put_keys(server, old.shards[0], keys("k", 10), 2)
            server.delete_stream("Orders")  # gone at once, before those were read
            new = server.add_stream("Orders")
            fresh = put_keys(server, new.shards[0], keys("k", 10), 3)
            await wait_delivered(fresh)
            gaps = run.sample("fanout_data_loss_events_total")
        assert run.code == 0
    assert gaps == 1
    assert events(caplog, "stream_gone")
    assert loss_log(caplog)["count_basis"] == "unknown"
    assert events(caplog, "stream_replaced")[0].__dict__["old_stream"] == "gone"


async def test_a_stream_arn_source_fails_once_its_stream_is_disabled_and_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with StreamServer() as server:
        stream = server.add_stream("Orders")
        first = put_keys(server, stream.shards[0], keys("k", 10), 1)
        config = make_config(
            server, tmp_path, stream_arn=stream.arn, stream={"discovery_interval": "200ms"}
        )
        async with running(config, stop=False) as run:
            await wait_delivered(first)
            rest = put_keys(server, stream.shards[0], keys("k", 10), 2)
            server.disable_stream(stream)
            with anyio.fail_after(10):
                await run.exited.wait()
        assert run.code == 1
    assert sorted(COLLECTOR.seqs) == sorted(first + rest)
    (failed,) = events(caplog, "stream_failed")
    assert "was disabled and every record in it was read" in failed.__dict__["error"]


async def test_a_stream_arn_source_fails_when_its_stream_is_gone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with StreamServer() as server:
        stream = server.add_stream("Orders")
        first = put_keys(server, stream.shards[0], keys("k", 10), 1)
        config = make_config(server, tmp_path, stream_arn=stream.arn)
        async with running(config, stop=False) as run:
            await wait_delivered(first)
            server.delete_stream(stream)
            with anyio.fail_after(10):
                await run.exited.wait()
        assert run.code == 1
    (failed,) = events(caplog, "stream_failed")
    assert "does not exist (ResourceNotFoundException)" in failed.__dict__["error"]


async def test_a_stream_replaced_while_the_worker_was_down_is_finished_first(
    tmp_path: Path,
) -> None:
    async with StreamServer() as server:
        old = server.add_stream("Orders")
        shard = old.shards[0]
        put_keys(server, shard, keys("old", 5), 0, at=time.time() - 3600)
        calls = record_calls(server)
        config = make_config(
            server,
            tmp_path,
            table="Orders",
            stream={"starting_position": "LATEST", "discovery_interval": "200ms"},
        )
        async with running(config):
            await wait_for(lambda: iterator_types(calls, shard.shard_id) == ["LATEST"])
            seen = put_keys(server, shard, keys("k", 5), 1)
            await wait_delivered(seen)
        down = put_keys(server, shard, keys("k", 5), 2)  # while the worker is down
        server.disable_stream("Orders")
        new = server.add_stream("Orders")
        fresh = put_keys(server, new.shards[0], keys("k", 5), 3)
        async with running(config) as run:
            await wait_delivered(down + fresh)
        assert run.code == 0
    seqs = COLLECTOR.seqs
    assert seqs == seen + down + fresh  # leftovers first; the new stream from TRIM_HORIZON
    assert iterator_types(calls, new.shards[0].shard_id) == ["TRIM_HORIZON"]


# -- progress ---------------------------------------------------------------------------------


async def test_a_blocked_shard_is_reported_stalled_and_an_idle_one_is_not(
    tmp_path: Path,
) -> None:
    async with StreamServer() as server:
        stream = server.add_stream("Orders", shards=2)
        blocked, idle = stream.shards
        put_keys(server, blocked, keys("blocked", 5), 1)
        quiet = put_keys(server, idle, keys("idle", 5), 1)
        COLLECTOR.blocked_keys = set(keys("blocked", 5))
        config = make_config(
            server,
            tmp_path,
            stream_arn=stream.arn,
            http={"enabled": False, "stall_timeout": "300ms"},
            shutdown_grace=0.2,
        )
        async with running(config) as run:
            await wait_delivered(quiet)
            await anyio.sleep(1.0)
            stalled = run.worker.stalled_shards()
            now = time.monotonic()
            progress = run.stream.progress
            blocked_age = now - progress[blocked.shard_id].last_progress
            idle_age = now - progress[idle.shard_id].last_progress
            gauge = run.worker.metrics.registry.get_sample_value(
                "fanout_stalled_shards", {"stream": "orders"}
            )
    assert [(s, shard) for s, shard, _ in stalled] == [("orders", blocked.shard_id)]
    assert stalled[0][2] > 0.8
    assert blocked_age > 0.8
    assert idle_age < 0.5  # caught up and idle counts as progress
    assert gauge == 1


# -- starting positions -----------------------------------------------------------------------


async def test_latest_is_resolved_once_and_a_restart_skips_nothing_written_meanwhile(
    tmp_path: Path,
) -> None:
    async with StreamServer() as server:
        stream = server.add_stream("Orders", shards=2)
        a, b = stream.shards
        hour_ago = time.time() - 3600
        old = put_keys(server, a, keys("a", 5), 0, at=hour_ago)
        old += put_keys(server, b, keys("b", 5), 0, at=hour_ago)
        closed = server.add_shard(stream)
        old += put_keys(server, closed, keys("c", 5), 0, at=hour_ago)
        c2 = server.rollover(closed)
        calls = record_calls(server)
        config = make_config(
            server, tmp_path, stream_arn=stream.arn, stream={"starting_position": "LATEST"}
        )
        async with running(config):
            await wait_for(
                lambda: all(iterator_types(calls, s.shard_id) == ["LATEST"] for s in (a, b, c2))
            )
            seen = put_keys(server, a, keys("a", 5), 1)
            await wait_delivered(seen)
        # Written while the worker is down: b never had a checkpoint, a's child is new.
        down = put_keys(server, a, keys("a", 5), 2)
        down += put_keys(server, b, keys("b", 5), 2)
        down += put_keys(server, c2, keys("c", 5), 2)
        a2 = server.rollover(a)
        down += put_keys(server, a2, keys("a", 5), 3)
        async with running(config) as run:
            await wait_delivered(down)
            await anyio.sleep(0.3)
        assert run.code == 0
    assert sorted(COLLECTOR.seqs) == sorted(seen + down)
    assert not set(old) & COLLECTOR.distinct()
    assert iterator_types(calls, closed.shard_id) == []  # closed at the first start: skipped
    assert iterator_types(calls, a.shard_id) == ["LATEST", "AFTER_SEQUENCE_NUMBER"]
    assert iterator_types(calls, b.shard_id) == ["LATEST", "TRIM_HORIZON"]
    assert iterator_types(calls, a2.shard_id) == ["TRIM_HORIZON"]
    check_lineage(stream, COLLECTOR.deliveries)


async def test_latest_start_skips_nothing_when_its_iterator_expires(tmp_path: Path) -> None:
    async with StreamServer() as server:
        stream = server.add_stream("Orders")
        shard = stream.shards[0]
        old = put_keys(server, shard, keys("k", 5), 0, at=time.time() - 3600)
        calls = record_calls(server)
        config = make_config(
            server, tmp_path, stream_arn=stream.arn, stream={"starting_position": "LATEST"}
        )
        async with running(config):
            await wait_for(lambda: iterator_types(calls, shard.shard_id) == ["LATEST"])
            await anyio.sleep(0.2)
            server.expire_iterators()
            fresh = put_keys(server, shard, keys("k", 5), 1)  # before the next seek
            await wait_delivered(fresh)
    assert sorted(COLLECTOR.seqs) == sorted(fresh)
    assert not set(old) & COLLECTOR.distinct()
    assert iterator_types(calls, shard.shard_id) == ["LATEST", "TRIM_HORIZON"]


async def test_at_timestamp_is_emulated_from_trim_horizon(tmp_path: Path) -> None:
    async with StreamServer() as server:
        stream = server.add_stream("Orders")
        shard = stream.shards[0]
        now = time.time()
        start = now - 3600
        older = put_keys(server, shard, keys("k", 5), 0, at=now - 7200)
        slack = put_keys(server, shard, keys("k", 5), 1, at=start - 30)  # rounding slack
        newer = put_keys(server, shard, keys("k", 5), 2, at=now - 600)
        child = server.rollover(shard)
        in_child = put_keys(server, child, keys("k", 5), 3)
        calls = record_calls(server)
        config = make_config(
            server,
            tmp_path,
            stream_arn=stream.arn,
            stream={"starting_position": "AT_TIMESTAMP", "starting_timestamp": start},
        )
        async with running(config):
            await wait_delivered(newer + in_child)
        async with running(config):  # a restart resumes from the checkpoints
            await anyio.sleep(0.3)
    assert sorted(COLLECTOR.seqs) == sorted(slack + newer + in_child)
    assert not set(older) & COLLECTOR.distinct()
    assert iterator_types(calls, shard.shard_id) == ["TRIM_HORIZON"]


async def test_ttl_deletions_arrive_as_lambda_spells_them_and_match_lambda_ttl_filters(
    tmp_path: Path,
) -> None:
    async with StreamServer() as server:
        stream = server.add_stream("Orders")
        gone = {"pk": {"S": "expired"}}
        plain = {"pk": {"S": "deleted"}}
        seqs = server.put(
            stream.shards[0],
            [
                Change("REMOVE", gone, old_image=gone, ttl=True),
                Change("REMOVE", plain, old_image=plain),
            ],
        )
        config = make_config(server, tmp_path, stream_arn=stream.arn)
        # Lambda's documented filter for deletions made by Time to Live, on a file sink.
        ttl_filter = {
            "userIdentity": {"type": ["Service"], "principalId": ["dynamodb.amazonaws.com"]}
        }
        out = tmp_path / "expired.jsonl"
        raw = {
            **config.settings.model_dump(mode="json"),
            "sinks": {
                **config.settings.sinks,
                "expired": {"type": "file", "path": str(out), "filters": [ttl_filter]},
            },
        }
        async with running(build_config(raw)):
            await wait_delivered(seqs)  # both reached the unfiltered sink
        lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    (record,) = lines
    assert record["dynamodb"]["Keys"] == gone
    assert record["userIdentity"] == {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
