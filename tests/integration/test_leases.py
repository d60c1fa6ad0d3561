"""Worker processes sharing a stream through a DynamoDB lease table (DynamoDB Local) while
the controllable stream server rolls shards over: spread, failover after SIGKILL, hand-over
on SIGTERM, a joining worker, a paused worker, and every record at every sink in order."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fanout.testing.streamserver import StreamServer
from tests.conftest import unique_name
from tests.integration.leasekit import (
    LeaseTable,
    Worker,
    Writer,
    check_key_order,
    counts,
    log_time,
    longest_overlap,
    shard_of,
    wait_until,
)
from tests.integration.process import REPO

pytestmark = pytest.mark.integration

LEASE = 4.0  # seconds; renewal every LEASE / 3
RENEW = LEASE / 3
SINKS = ("left", "right")


def write_config(
    path: Path, server: StreamServer, arn: str, ddb: str, table: str, application: str
) -> Path:
    path.write_text(
        f"""
application: {application}
streams:
  orders:
    stream_arn: "{arn}"
    endpoint_url: {server.endpoint_url}
    region: us-east-1
    max_idle_interval: 200ms
    discovery_interval: 2s
checkpoints:
  store: dynamodb
  table: {table}
  create_table: true
  endpoint_url: {ddb}
  region: us-east-1
  interval: 300ms
  lease_duration: {LEASE}s
http: {{enabled: false}}
shutdown_grace: 5s
sinks:
  left:
    type: handler
    handler: tests.integration.leasekit:log_delivery
    batch_size: 50
  right:
    type: handler
    handler: tests.integration.leasekit:log_delivery
    batch_size: 20
"""
    )
    return path


@pytest.fixture
def server() -> Iterator[StreamServer]:
    server = StreamServer()
    with server.run_in_thread():
        yield server


def fanout_status(config: Path) -> dict[str, Any]:
    """``fanout status --json`` for ``config``, run as a user would."""
    done = subprocess.run(
        [sys.executable, "-m", "fanout", "status", "--config", str(config), "--json"],
        capture_output=True,
        check=True,
        cwd=REPO,
    )
    status: dict[str, Any] = orjson.loads(done.stdout)
    return status


def balanced(table: LeaseTable, ids: list[str]) -> bool:
    owners = table.open_owners()
    if not owners or any(owner not in ids for owner in owners.values()):
        return False
    spread = counts(owners, ids).values()
    return max(spread) - min(spread) <= 1


def test_three_workers_spread_fail_over_hand_over_and_let_a_fourth_join(
    request, tmp_path, server, dynamodb_local
):
    stream = server.add_stream("Orders", shards=24)
    table_name = unique_name(request, "leases", limit=60)
    config = write_config(
        tmp_path / "orders.yaml",
        server,
        stream.arn,
        dynamodb_local.endpoint_url,
        table_name,
        "orders",
    )
    writer = Writer(server, stream).start()
    workers = {name: Worker(config, tmp_path, name) for name in ("w1", "w2", "w3")}
    table = LeaseTable(dynamodb_local.endpoint_url, table_name, "orders")
    try:
        wait_until(lambda: len(table.workers()) == 3, 60, "three workers registered")
        ids = table.workers()
        wid = {name: ids[w.pid] for name, w in workers.items()}

        # 1. spread within one of even
        wait_until(lambda: balanced(table, list(wid.values())), 30, "an even spread")

        # 2. SIGKILL: its shards are picked up within 2 lease durations + 1 renewal
        killed = wid["w1"]
        held = [s for s, owner in table.open_owners().items() if owner == killed]
        assert held
        t_kill = time.monotonic()
        workers["w1"].kill()
        picked = wait_until(
            lambda: all(owner in (wid["w2"], wid["w3"]) for owner in table.open_owners().values()),
            4 * LEASE,
            "the killed worker's shards taken over",
        )
        failover = picked - t_kill
        assert failover <= 2 * LEASE + RENEW, failover
        assert failover >= LEASE - RENEW  # they did wait for the lease to expire

        # 3. SIGTERM: handed over without waiting for expiry
        wait_until(lambda: balanced(table, [wid["w2"], wid["w3"]]), 30, "two even workers")
        t_term, t_term_wall = time.monotonic(), time.time()
        workers["w2"].signal(signal.SIGTERM)
        handed = wait_until(
            lambda: all(owner == wid["w3"] for owner in table.open_owners().values()),
            4 * LEASE,
            "the stopped worker's shards handed over",
        )
        assert workers["w2"].wait() == 0
        handover = handed - t_term
        # a peer could take them by expiry only a lease duration after w2's last heartbeat,
        # and w2 renewed until it released them
        assert handover < LEASE, handover
        taken = {
            e["shard"]: e["reason"]
            for e in workers["w3"].events("lease_taken")
            if e["from"] == wid["w2"] and log_time(e) >= t_term_wall - 0.5
        }
        assert "expired" not in taken.values(), taken

        # 4. a fourth worker joins and gets its share
        workers["w4"] = Worker(config, tmp_path, "w4")
        wait_until(lambda: workers["w4"].pid in table.workers(), 60, "the fourth registered")
        wid["w4"] = table.workers()[workers["w4"].pid]
        wait_until(lambda: balanced(table, [wid["w3"], wid["w4"]]), 30, "the fourth's share")
    finally:
        writer.stop()
    try:
        every = {
            r["dynamodb"]["SequenceNumber"] for shard in stream.shards for r in shard.records()
        }

        def delivered(sink: str) -> set[str]:
            return {
                line["seq"]
                for w in workers.values()
                for line in w.deliveries()
                if line["sink"] == sink
            }

        wait_until(lambda: all(every <= delivered(sink) for sink in SINKS), 60, "every record", 0.5)
    finally:
        codes = {name: w.stop() for name, w in workers.items() if name != "w1"}
        table.close()
    assert codes == {"w2": 0, "w3": 0, "w4": 0}
    assert writer.rollovers >= 5  # shards rolled over throughout (one every 1.5 s)
    lines = [line for w in workers.values() for line in w.deliveries()]
    for sink in SINKS:
        assert {line["seq"] for line in lines if line["sink"] == sink} == every
        assert check_key_order(lines, sink) == 24 * 4
    # no shard was read by two workers for longer than one lease duration
    worst, shard = longest_overlap(
        [line for line in lines if line["sink"] == "left"], shard_of(stream), gap=LEASE
    )
    assert worst <= LEASE, (worst, shard)
    assert len(every) == writer.written
    print(
        f"\nleases: {len(every)} records, {writer.rollovers} rollovers; failover "
        f"{failover:.2f}s (bound {2 * LEASE + RENEW:.1f}s), hand-over {handover:.2f}s, "
        f"longest overlap {worst:.2f}s; duplicates at left "
        f"{sum(1 for line in lines if line['sink'] == 'left') - len(every)}"
    )


def test_a_paused_worker_neither_delivers_nor_checkpoints_the_shards_it_lost(
    request, tmp_path, server, dynamodb_local
):
    stream = server.add_stream("Orders", shards=8)
    table_name = unique_name(request, "leases", limit=60)
    config = write_config(
        tmp_path / "paused.yaml",
        server,
        stream.arn,
        dynamodb_local.endpoint_url,
        table_name,
        "paused",
    )
    writer = Writer(server, stream, per_tick=3, rollover_every=0).start()
    a, b = Worker(config, tmp_path, "a"), Worker(config, tmp_path, "b")
    table = LeaseTable(dynamodb_local.endpoint_url, table_name, "paused")
    try:
        wait_until(lambda: len(table.workers()) == 2, 60, "two workers registered")
        ids = table.workers()
        wa, wb = ids[a.pid], ids[b.pid]

        def settled() -> bool:
            # balanced, and a holds its shards itself (a row handed to a is a's in the
            # table a moment before a takes it up)
            if not balanced(table, [wa, wb]):
                return False
            mine = {s for s, owner in table.open_owners().items() if owner == wa}
            taken = {e["shard"] for e in a.events("lease_taken")}
            return bool(mine) and mine <= taken

        wait_until(settled, 30, "an even spread, taken up")
        lost = {s for s, owner in table.open_owners().items() if owner == wa}
        assert len(lost) == 4
        a.signal(signal.SIGSTOP)
        wait_until(
            lambda: all(owner == wb for owner in table.open_owners().values()),
            4 * LEASE,
            "b took the paused worker's shards",
        )
        time.sleep(RENEW)  # b moves their checkpoints past where a stopped
        before = {lease.shard_id: lease.sequence for lease in table.leases()}
        t_cont = time.time()
        a.signal(signal.SIGCONT)
        samples = []
        deadline = time.monotonic() + 3 * RENEW
        while time.monotonic() < deadline:
            samples.append({lease.shard_id: lease.sequence for lease in table.leases()})
            time.sleep(0.1)
        status = fanout_status(config)
        assert status["application"] == "paused"
        assert status["checkpoint_store"].startswith(f"dynamodb table {table_name}")
        assert {w["worker_id"] for w in status["workers"] if w["live"]} == {wa, wb}
        owned = {s["shard_id"]: s["owner"] for s in status["shards"] if s["state"] == "open"}
        assert set(owned.values()) <= {wa, wb, None}
    finally:
        writer.stop()
        code_a, code_b = a.stop(), b.stop()
        table.close()
    assert (code_a, code_b) == (0, 0)
    # a dropped each lost lease when it woke up, before delivering anything of it...
    lost_events = [e for e in a.events("lease_lost") if e["shard"] in lost]
    assert {e["shard"] for e in lost_events} == lost
    retaken: dict[str, float] = {}
    for event in a.events("lease_taken"):
        if event["shard"] in lost and log_time(event) >= t_cont - 1:
            retaken.setdefault(event["shard"], log_time(event))
    late = [
        line
        for line in a.deliveries()
        if line["t"] >= t_cont
        and (owner := shard_of(stream).get(line["seq"])) in lost
        and line["t"] < retaken.get(owner, float("inf"))
    ]
    assert late == [], f"{len(late)} records of lost shards delivered after SIGCONT"
    print(
        f"\npaused: {len(lost)} shards lost, {len(lost_events)} lease_lost events, "
        f"{len(retaken)} taken back later by hand-over, {len(samples)} checkpoint samples"
    )
    # ...and no checkpoint of those shards went back to where a had been
    for sample in samples:
        for shard in lost:
            assert int(sample[shard] or 0) >= int(before[shard] or 0)
