"""The core guarantees against DynamoDB Local and a real worker process."""

from __future__ import annotations

import random
import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.integration.own_dynamodb import own_dynamodb_local
from tests.integration.process import WorkerProcess, read_lines, stream_records, wait_for

pytestmark = pytest.mark.integration

# This module writes thousands of stream records: a DynamoDB Local of its own keeps them from
# slowing the other modules' streams (tests/integration/own_dynamodb.py).
dynamodb_local, ddb_client, ddbstreams_client = own_dynamodb_local()


def write_config(tmp_path: Path, table: str, endpoint: str) -> Path:
    config = tmp_path / "fanout.yaml"
    config.write_text(
        f"""
streams:
  orders:
    table: {table}
    endpoint_url: {endpoint}
    region: us-east-1
    max_idle_interval: 200ms
checkpoints: {{path: {tmp_path}/fanout.db, interval: 300ms}}
http: {{enabled: false}}
shutdown_grace: 10s
sinks:
  lambda:
    type: handler
    handler: tests.integration.helpers:record
    batch_size: 50
  audit:
    type: file
    path: {tmp_path}/audit.jsonl
    batch_size: 30
"""
    )
    return config


def audit_lines(path: Path) -> list[dict[str, Any]]:
    rows = []
    for r in read_lines(path):
        ddb = r["dynamodb"]
        rows.append(
            {
                "id": r["eventID"],
                "seq": ddb["SequenceNumber"],
                "key": ddb["Keys"]["pk"]["S"],
                "name": r["eventName"],
                "arn": r.get("eventSourceARN"),
            }
        )
    return rows


def stream_truth(ddb_streams, stream_arn: str) -> list[dict[str, Any]]:
    """Every record of the stream, read directly: the ground truth."""
    return [
        {
            "id": r["eventID"],
            "seq": r["dynamodb"]["SequenceNumber"],
            "key": r["dynamodb"]["Keys"]["pk"]["S"],
            "name": r["eventName"],
        }
        for r in stream_records(ddb_streams, stream_arn)
    ]


def checkpoints(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    con = sqlite3.connect(db)
    try:
        return {
            s: int(q)
            for s, q in con.execute(
                "SELECT shard_id, sequence_number FROM checkpoints"
                " WHERE sequence_number IS NOT NULL"
            )
        }
    finally:
        con.close()


def change(
    ddb_client,
    table: str,
    rng: random.Random,
    versions: dict[str, int],
    keys: int,
    among: list[int] | None = None,
) -> None:
    key = f"k{rng.choice(among) if among else rng.randrange(keys)}"
    if key in versions and rng.random() < 0.15:
        ddb_client.delete_item(TableName=table, Key={"pk": {"S": key}})
        del versions[key]
        return
    versions[key] = versions.get(key, 0) + 1
    ddb_client.put_item(
        TableName=table,
        Item={
            "pk": {"S": key},
            "v": {"N": str(versions[key])},
            "pad": {"S": "x" * rng.randrange(50)},
        },
    )


def write_changes(
    ddb_client,
    table: str,
    count: int,
    versions: dict[str, int],
    *,
    seed: int,
    keys: int,
    writers: int = 4,
) -> None:
    """``count`` random puts and deletes over ``keys`` keys, from ``writers`` threads that
    each own a share of the keys (so each key's changes are written in order). ``versions``
    (each key's last version, kept across calls) makes every put a change."""
    from concurrent.futures import ThreadPoolExecutor

    def writer(lane: int) -> None:
        rng = random.Random(seed * 100 + lane)
        mine = [k for k in range(keys) if k % writers == lane]
        for _ in range(count // writers + (1 if lane < count % writers else 0)):
            change(ddb_client, table, rng, versions, keys, among=mine)

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(writer, range(writers)))


def assert_in_order_per_key(delivered: list[dict[str, Any]], truth: list[dict[str, Any]]) -> None:
    """Per key, the records delivered (first deliveries, in delivery order) are exactly the
    records written, in the order written."""
    expected: dict[str, list[str]] = defaultdict(list)
    for r in truth:
        expected[r["key"]].append(r["seq"])
    seen: set[str] = set()
    got: dict[str, list[str]] = defaultdict(list)
    for r in delivered:
        if r["seq"] not in seen:
            seen.add(r["seq"])
            got[r["key"]].append(r["seq"])
    assert got == expected


def test_sigkill_twice_mid_stream_loses_nothing(tmp_path, dynamodb_local, ddb_table, ddb_client):
    import boto3

    table, stream_arn = ddb_table()
    streams = boto3.client("dynamodbstreams", endpoint_url=dynamodb_local.endpoint_url)
    config = write_config(tmp_path, table, dynamodb_local.endpoint_url)
    out, audit, db = tmp_path / "lambda.jsonl", tmp_path / "audit.jsonl", tmp_path / "fanout.db"
    total, keys = 5000, 300

    # (lines delivered to the handler before the kill, checkpoint after the kill)
    kills: list[tuple[int, dict[str, int]]] = []
    worker = WorkerProcess(config, out, tmp_path / "worker.log")
    written, versions = 0, dict[str, int]()
    for seed, upto in enumerate((1500, 3300, total)):
        write_changes(ddb_client, table, upto - written, versions, seed=seed, keys=keys)
        written = upto
        if upto < total:
            # Let it get some way into the stream, then kill it without warning.
            half = upto // 2
            wait_for(lambda: len(read_lines(out)) > half, 60, "deliveries before the kill")  # noqa: B023
            worker.kill()
            kills.append((len(read_lines(out)), checkpoints(db)))
            worker = WorkerProcess(config, out, tmp_path / "worker.log")

    truth = stream_truth(streams, stream_arn)
    assert len(truth) == total
    want = {r["id"] for r in truth}
    wait_for(
        lambda: (
            want <= {r["id"] for r in read_lines(out)}
            and want <= {r["id"] for r in audit_lines(audit)}
        ),
        120,
        "every change at both sinks",
    )
    assert worker.terminate() == 0

    lambda_rows, audit_rows = read_lines(out), audit_lines(audit)
    # 1. every change reached both sinks at least once, with Lambda's eventSourceARN
    assert {r["id"] for r in lambda_rows} == want
    assert {r["id"] for r in audit_rows} == want
    assert {r["arn"] for r in lambda_rows} == {stream_arn}
    # 2. per key, order of delivery matches order of writing
    assert_in_order_per_key(lambda_rows, truth)
    assert_in_order_per_key(audit_rows, truth)
    # 3. duplicates only for records after the checkpoint at the time of the kill
    assert len(kills) == 2
    for (delivered_before, cp), next_kill in zip(
        kills, [*kills[1:], (len(lambda_rows), {})], strict=True
    ):
        assert cp, "a checkpoint was written before the kill"
        (checkpoint,) = cp.values()
        before = {r["seq"] for r in lambda_rows[:delivered_before]}
        redelivered = [
            r for r in lambda_rows[delivered_before : next_kill[0]] if r["seq"] in before
        ]
        assert all(int(r["seq"]) > checkpoint for r in redelivered)
    duplicates = len(lambda_rows) - len(want)
    assert duplicates < total  # bounded by what was in flight, never a full replay


def test_sigterm_writes_the_checkpoint_so_restart_has_no_duplicates(
    tmp_path, dynamodb_local, ddb_table, ddb_client
):
    table, _ = ddb_table()
    config = write_config(tmp_path, table, dynamodb_local.endpoint_url)
    out, db = tmp_path / "lambda.jsonl", tmp_path / "fanout.db"
    rng = random.Random(5)
    versions: dict[str, int] = {}

    for _ in range(300):
        change(ddb_client, table, rng, versions, 40)
    worker = WorkerProcess(config, out, tmp_path / "worker.log")
    wait_for(lambda: len(read_lines(out)) >= 300, 60, "first 300 deliveries")
    assert worker.terminate() == 0
    first = read_lines(out)
    assert len(first) == 300
    assert max(checkpoints(db).values()) == max(int(r["seq"]) for r in first)

    for _ in range(100):
        change(ddb_client, table, rng, versions, 40)
    worker = WorkerProcess(config, out, tmp_path / "worker.log")
    wait_for(lambda: len(read_lines(out)) >= 400, 60, "next 100 deliveries")
    time.sleep(1.0)  # anything replayed would show up by now
    assert worker.terminate() == 0
    rows = read_lines(out)
    assert len(rows) == 400
    assert len({r["id"] for r in rows}) == 400
