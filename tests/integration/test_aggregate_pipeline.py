"""Aggregates end to end: 10,000 random inserts, updates (group and amount changes) and
deletes on DynamoDB Local, through a real worker process with parallelization_factor 4 that
is killed with SIGKILL several times and runs for a while against an unreachable target (its
records are dead-lettered, then redriven). Afterwards every row of a running-totals table and
of a 1-minute-window table equals a recomputation from a scan of the source table, and a full
replay of the stream writes nothing."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import urllib.request
from collections import defaultdict
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.own_dynamodb import own_dynamodb_local
from tests.integration.process import (
    REPO,
    WorkerProcess,
    checkpoint,
    read_lines,
    stream_records,
    wait_for,
)

pytestmark = pytest.mark.integration

# This module writes thousands of stream records: a DynamoDB Local of its own keeps them from
# slowing the other modules' streams (tests/integration/own_dynamodb.py).
dynamodb_local, ddb_client, ddbstreams_client = own_dynamodb_local()

TOTAL, ITEMS, CUSTOMERS, REGIONS = 10_000, 300, 12, ("eu", "us", "ap")
WRITE_BATCH = 25  # BatchWriteItem's limit; the keys of one batch are distinct
KILLS = (2_500, 7_500)  # SIGKILL, restart
OUTAGE = (4_500, 5_500)  # a worker whose sinks point at a closed port, then SIGKILL


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(
    path: Path, source: str, ddb: str, db: Path, *, sink_endpoint: str, http_port: int = 0
) -> Path:
    http = f"{{host: 127.0.0.1, port: {http_port}}}" if http_port else "{enabled: false}"
    common = f"""
    region: us-east-1
    endpoint_url: {sink_endpoint}
    create_table: true
    batch_size: 200
    batch_window: 500ms
    parallelization_factor: 4
    retry: {{max_attempts: 3, initial_backoff: 50ms, max_backoff: 200ms}}
    measures:
      orders: count
      revenue: {{sum: amount}}"""
    # One application for every config of a test: the outage worker resumes where the
    # worker it replaces left off (a file's name would otherwise name its application).
    path.write_text(
        f"""
application: orders
streams:
  orders:
    table: {source}
    endpoint_url: {ddb}
    region: us-east-1
    max_idle_interval: 200ms
checkpoints: {{path: {db}, interval: 300ms}}
http: {http}
shutdown_grace: 10s
sinks:
  totals:
    type: aggregate
    table: {source}-totals
    group_by: [customer]
    window: none
    dead_letter: {{type: file, path: {db.parent}/dlq-totals.jsonl}}{common}
  per_minute:
    type: aggregate
    table: {source}-per-minute
    group_by: [customer, region]
    window: 1m
    dead_letter: {{type: file, path: {db.parent}/dlq-per_minute.jsonl}}{common}
"""
    )
    return path


def random_item(
    rng: random.Random, key: str, old: dict[str, Any] | None, version: int
) -> dict[str, Any]:
    """A new image: a new item, or a change of ``old`` (its customer, region or amount)."""
    item = dict(old) if old else {"pk": {"S": key}, "customer": {"S": "c0"}, "region": {"S": "eu"}}
    item["v"] = {"N": str(version)}  # a put that changes nothing writes no stream record
    if old is None or rng.random() < 0.3:
        item["customer"] = {"S": f"c{rng.randrange(CUSTOMERS)}"}
    if old is None or rng.random() < 0.2:
        item["region"] = {"S": rng.choice(REGIONS)}
    roll = rng.random()
    if roll < 0.03:
        item.pop("amount", None)  # a missing amount counts as 0
    elif roll < 0.05:
        item["amount"] = {"S": "n/a"}  # so does one that is not a number
    elif old is None or roll < 0.8:
        item["amount"] = {"N": f"{rng.randrange(-2_000, 100_000) / 100:.2f}"}
    return item


def write_batch(
    ddb_client: Any,
    table: str,
    rng: random.Random,
    current: dict[str, dict[str, Any]],
    version: int,
) -> None:
    """One BatchWriteItem of ``WRITE_BATCH`` distinct random items: puts (new items, or
    changes of their customer, region or amount) and deletes; ``current`` follows."""
    requests = []
    for n in rng.sample(range(ITEMS), WRITE_BATCH):
        key = f"k{n}"
        if key in current and rng.random() < 0.15:
            requests.append({"DeleteRequest": {"Key": {"pk": {"S": key}}}})
            del current[key]
        else:
            current[key] = random_item(rng, key, current.get(key), version)
            requests.append({"PutRequest": {"Item": current[key]}})
    ddb_client.batch_write_item(RequestItems={table: requests})


def dead_lettered(directory: Path, sink: str) -> bool:
    return len(read_lines(directory / f"dlq-{sink}.jsonl")) > 0


def scan(ddb_client: Any, table: str) -> list[dict[str, Any]]:
    pages = ddb_client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
    return [row for page in pages for row in page["Items"]]


def amount(item: dict[str, Any]) -> Decimal:
    value = item.get("amount", {})
    return Decimal(value["N"]) if "N" in value else Decimal(0)


def recompute(
    items: list[dict[str, Any]], last_change: dict[str, int], group_by: list[str], window: int
) -> dict[tuple[str, str], tuple[int, Decimal]]:
    """(group, window) -> (count, sum) from the table's items; an item counts in the window
    of its last change (docs/aggregate.md, windows)."""
    rows: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for item in items:
        group = "#".join(item[name]["S"] for name in group_by)
        created = last_change[item["pk"]["S"]]
        row = rows[(group, str(created - created % window) if window else "all")]
        row[0] += 1
        row[1] += amount(item)
    return {key: (count, total) for key, (count, total) in rows.items()}


def aggregate_rows(ddb_client: Any, table: str) -> dict[tuple[str, str], tuple[int, Decimal]]:
    return {
        (row["group"]["S"], row["window"]["S"]): (
            int(row["orders"]["N"]),
            Decimal(row["revenue"]["N"]),
        )
        for row in scan(ddb_client, table)
    }


def metric(port: int, name: str, sink: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    prefix = f'{name}{{sink="{sink}"}} '
    (line,) = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(line[len(prefix) :])


def redrive(config: Path, sink: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "fanout", "dlq", "redrive", "--sink", sink, "--json"]
    done = subprocess.run(
        [*command, "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    report: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return report


def test_aggregates_equal_a_recomputation_through_kills_an_outage_a_redrive_and_a_replay(
    tmp_path, dynamodb_local, ddb_table, ddb_client, ddbstreams_client
):
    source, stream_arn = ddb_table()
    endpoint = dynamodb_local.endpoint_url
    db = tmp_path / "fanout.db"
    config = write_config(tmp_path / "fanout.yaml", source, endpoint, db, sink_endpoint=endpoint)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: every call is refused
    outage = write_config(tmp_path / "outage.yaml", source, endpoint, db, sink_endpoint=closed)
    log = tmp_path / "worker.log"
    rng = random.Random(20261130)
    current: dict[str, dict[str, Any]] = {}
    worker = WorkerProcess(config, tmp_path / "unused.jsonl", log)
    progress = [0]

    def restart(with_config: Path) -> WorkerProcess:
        # Each worker must have made progress before it is killed.
        wait_for(lambda: checkpoint(db) > progress[0], 60, "progress before the kill")
        progress[0] = checkpoint(db)
        worker.kill()
        return WorkerProcess(with_config, tmp_path / "unused.jsonl", log)

    try:
        written = 0
        while written < TOTAL:
            write_batch(ddb_client, source, rng, current, written)
            before, written = written, written + WRITE_BATCH
            for mark in KILLS:
                if before < mark <= written:
                    worker = restart(config)
            if before < OUTAGE[0] <= written:
                worker = restart(outage)
            if before < OUTAGE[1] <= written:
                for sink in ("totals", "per_minute"):
                    wait_for(partial(dead_lettered, tmp_path, sink), 60, f"{sink} dead letters")
                worker.kill()
                worker = WorkerProcess(config, tmp_path / "unused.jsonl", log)
        records = stream_records(ddbstreams_client, stream_arn)
        assert len(records) == TOTAL
        last = max(int(r["dynamodb"]["SequenceNumber"]) for r in records)
        wait_for(lambda: checkpoint(db) >= last, 120, "the worker to settle every change")
        assert worker.terminate() == 0
    except BaseException:
        worker.proc.kill()
        print(log.read_text()[-5000:])
        raise

    # The outage dead-lettered records of both sinks; redrive them (some are superseded by
    # later changes of their items and are absorbed, the others apply). A record read twice
    # (a lease taken over after a kill) may be dead-lettered twice: it is delivered once.
    for sink in ("totals", "per_minute"):
        dead = read_lines(tmp_path / f"dlq-{sink}.jsonl")
        assert dead, sink
        assert {d["error"]["class"] for d in dead} == {"SinkUnavailable"}
        report = redrive(config, sink)
        unique = len({(d["shard_id"], d["sequence_number"]) for d in dead})
        assert (report["delivered"], report["failed"]) == (unique, 0), report
        assert report["duplicates"] == len(dead) - unique, report

    # Recompute from the table, with the window of each item's last change from the stream.
    items = scan(ddb_client, source)
    assert {i["pk"]["S"] for i in items} == set(current)
    last_change: dict[str, int] = {}
    for record in records:  # in stream order: the last one wins
        created = int(record["dynamodb"]["ApproximateCreationDateTime"].timestamp())
        last_change[record["dynamodb"]["Keys"]["pk"]["S"]] = created
    totals = recompute(items, last_change, ["customer"], 0)
    per_minute = recompute(items, last_change, ["customer", "region"], 60)
    assert aggregate_rows(ddb_client, f"{source}-totals") == totals
    assert aggregate_rows(ddb_client, f"{source}-per-minute") == per_minute
    assert len(per_minute) > len(totals) > 1

    # A full replay of the stream (a new checkpoint database) applies nothing.
    replay_db = tmp_path / "replay" / "fanout.db"
    replay_db.parent.mkdir()
    port = free_port()
    replay = tmp_path / "replay.yaml"
    write_config(replay, source, endpoint, replay_db, sink_endpoint=endpoint, http_port=port)
    worker = WorkerProcess(replay, tmp_path / "unused.jsonl", log)
    try:
        wait_for(lambda: checkpoint(replay_db) >= last, 120, "the replay to finish")
        for sink in ("totals", "per_minute"):
            assert metric(port, "fanout_aggregate_writes_total", sink) == 0
            assert metric(port, "fanout_aggregate_replays_absorbed_total", sink) >= ITEMS / 2
    finally:
        assert worker.terminate() == 0
    assert aggregate_rows(ddb_client, f"{source}-totals") == totals
    assert aggregate_rows(ddb_client, f"{source}-per-minute") == per_minute


def test_two_workers_sharing_the_stream_through_leases_keep_the_aggregates_exact(
    tmp_path, dynamodb_local, ddb_table, ddb_client, ddbstreams_client
):
    """Two workers of one application on one checkpoint store share the stream's shards
    through leases; one is killed with SIGKILL mid-stream and the other takes its shards
    over after the lease expires. The aggregates still equal a recomputation."""
    total = 3_000
    source, stream_arn = ddb_table()
    endpoint = dynamodb_local.endpoint_url
    db = tmp_path / "fanout.db"
    config = write_config(tmp_path / "fanout.yaml", source, endpoint, db, sink_endpoint=endpoint)
    config.write_text(
        config.read_text().replace("interval: 300ms}", "interval: 300ms, lease_duration: 2s}")
    )
    log = tmp_path / "worker.log"
    rng = random.Random(20261201)
    current: dict[str, dict[str, Any]] = {}
    workers = [WorkerProcess(config, tmp_path / "unused.jsonl", log) for _ in range(2)]
    written = 0
    while written < total:
        write_batch(ddb_client, source, rng, current, written)
        written += WRITE_BATCH
        if written == total // 2:
            wait_for(lambda: checkpoint(db) > 0, 60, "progress before the kill")
            owner = _lease_owner(db)
            # kill the worker that reads (the other holds no lease yet, or another shard's)
            victim = next((w for w in workers if f"-{w.proc.pid}-" in owner), workers[0])
            victim.kill()
            workers.remove(victim)
    records = stream_records(ddbstreams_client, stream_arn)
    assert len(records) == total
    last = max(int(r["dynamodb"]["SequenceNumber"]) for r in records)
    wait_for(lambda: checkpoint(db) >= last, 120, "the survivor to settle every change")
    (survivor,) = workers
    assert survivor.terminate() == 0

    items = scan(ddb_client, source)
    last_change: dict[str, int] = {}
    for record in records:
        created = int(record["dynamodb"]["ApproximateCreationDateTime"].timestamp())
        last_change[record["dynamodb"]["Keys"]["pk"]["S"]] = created
    assert aggregate_rows(ddb_client, f"{source}-totals") == recompute(
        items, last_change, ["customer"], 0
    )
    assert aggregate_rows(ddb_client, f"{source}-per-minute") == recompute(
        items, last_change, ["customer", "region"], 60
    )


def _lease_owner(db: Path) -> str:
    """The owners of the stream's leases in the SQLite store (worker ids name the pid)."""
    import sqlite3

    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT owner FROM checkpoints WHERE owner IS NOT NULL").fetchall()
    finally:
        con.close()
    return " ".join(str(owner) for (owner,) in rows)
