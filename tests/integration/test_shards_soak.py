"""Soak: many shards, many rollovers, faults everywhere, a restart; and a 2,500-shard stream.

Both run in ``make test`` (marked slow, each well under a minute).
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import anyio
import pytest

from fanout.testing.streamserver import Shard, StreamServer
from tests.integration.shardkit import (
    COLLECTOR,
    all_seqs,
    check_key_order,
    check_lineage,
    make_config,
    put_keys,
    record_calls,
    running,
    wait_delivered,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LINEAGES = 200
GENERATIONS = 5  # rollovers after the first generation of shards
KEYS = 4
VERSIONS = 4  # records per key and generation


@pytest.fixture(autouse=True)
def _collector(caplog: pytest.LogCaptureFixture) -> None:
    COLLECTOR.reset()
    caplog.set_level(logging.WARNING, logger="fanout")


async def test_soak_rollovers_splits_throttling_expiry_and_a_restart(tmp_path: Path) -> None:
    started = time.monotonic()
    rng = random.Random(7)
    async with StreamServer(page_size=25, seed=7) as server:
        stream = server.add_stream("Orders", shards=LINEAGES)
        # (open shard, the keys written to it); a split hands half the keys to each child
        slots: list[tuple[Shard, list[str]]] = [
            (shard, [f"l{i}-k{k}" for k in range(KEYS)]) for i, shard in enumerate(stream.shards)
        ]
        server.fail(None, "LimitExceededException", times=None, probability=0.10)
        server.fail("GetRecords", "ExpiredIteratorException", times=None, probability=0.02)
        config = make_config(
            server,
            tmp_path,
            stream_arn=stream.arn,
            stream={"max_idle_interval": "200ms", "discovery_interval": "2s", "max_shards": 2000},
            checkpoints={"path": str(tmp_path / "fanout.db"), "interval": "200ms"},
        )

        def write_generation(gen: int) -> None:
            for shard, keys in slots:
                for version in range(VERSIONS):
                    put_keys(server, shard, keys, gen * VERSIONS + version)

        def roll(gen: int) -> None:
            nonlocal slots
            rolled: list[tuple[Shard, list[str]]] = []
            for shard, keys in slots:
                if gen == 2 and len(keys) > 1 and rng.random() < 0.1:
                    left, right = server.split(shard)
                    half = len(keys) // 2
                    rolled += [(left, keys[:half]), (right, keys[half:])]
                else:
                    rolled.append((server.rollover(shard), keys))
            slots = rolled

        COLLECTOR.gate = anyio.Event()  # the sink holds the first generations back...
        async with running(config) as first_run:
            for gen in range(3):
                write_generation(gen)
                roll(gen)  # ...so three generations of every lineage wait their turn
                server.expire_iterators()
                await anyio.sleep(0.3)
            COLLECTOR.gate.set()
            COLLECTOR.delay = 0.01
            await anyio.sleep(0.3)
            # Stopped in the middle of it all: the restart resumes from the checkpoints.
        assert first_run.code == 0
        at_stop = len(COLLECTOR.seen), len(all_seqs(stream))
        async with running(config) as second_run:
            for gen in range(3, GENERATIONS):
                write_generation(gen)
                roll(gen)
                server.expire_iterators()
                await anyio.sleep(0.4)
            write_generation(GENERATIONS)  # the last generation stays open
            expected = all_seqs(stream)
            await wait_delivered(expected, timeout=45)
            throttled = second_run.sample("fanout_get_records_calls_total", outcome="throttled")
            expired = second_run.sample("fanout_get_records_calls_total", outcome="expired")
            lost = second_run.sample("fanout_data_loss_events_total")
        assert second_run.code == 0
        shards = len(stream.shards)
        faults = sum(server.errors.values())
    took = time.monotonic() - started
    records = LINEAGES * KEYS * VERSIONS * (GENERATIONS + 1)
    assert len(expected) == records
    assert COLLECTOR.distinct() == expected  # every record at least once, nothing else
    assert shards >= LINEAGES * (GENERATIONS + 1)
    pairs = check_lineage(stream, COLLECTOR.deliveries)
    assert pairs == shards - LINEAGES
    assert check_key_order(COLLECTOR.deliveries) == LINEAGES * KEYS
    assert throttled > 0
    assert expired > 0
    assert faults > 500
    assert lost == 0
    assert 0 < at_stop[0] < at_stop[1]
    assert took < 60


async def test_a_stream_of_2500_shards_is_listed_in_25_pages_and_read(tmp_path: Path) -> None:
    lineages, generations = 500, 5
    async with StreamServer() as server:
        stream = server.add_stream("Orders", shards=lineages)
        current = list(stream.shards)
        for gen in range(generations):
            for i, shard in enumerate(current):
                put_keys(server, shard, [f"l{i}-a", f"l{i}-b"], gen)
            if gen < generations - 1:
                current = [server.rollover(shard) for shard in current]
        assert len(stream.shards) == 2500
        calls = record_calls(server)
        config = make_config(
            server,
            tmp_path,
            stream_arn=stream.arn,
            stream={"max_idle_interval": "1s", "max_shards": 3000},
        )
        async with running(config) as run:
            await wait_for(lambda: run.stream.ready, 50, "the first listing")
            await wait_delivered(all_seqs(stream), timeout=50)
            listed = len(run.stream.listed)
            finished = len(run.stream.finished)
        assert run.code == 0
    assert listed == 2500
    assert finished == 2000  # every closed shard read to its end
    listing = [c for c in calls if c.op == "DescribeStream" and "ShardFilter" not in c.body]
    assert sorted(c.page or 0 for c in listing) == list(range(25))  # one listing, 25 pages
    assert check_lineage(stream, COLLECTOR.deliveries) == 2000
    assert len(COLLECTOR.deliveries) == 5000
