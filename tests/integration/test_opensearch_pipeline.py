"""Replication into OpenSearch end to end: DynamoDB Local, a real worker process, the local
_bulk server with faults, a SIGKILL, a dead-lettered record and its redrive, and a full
replay. The index must equal the table, and no stale change may ever have been accepted."""

from __future__ import annotations

import base64
import itertools
import random
import subprocess
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from fanout.testing.searchserver import SearchServer, ServerThread
from sinks.opensearch.document import version_of
from tests.integration.own_dynamodb import own_dynamodb_local
from tests.integration.process import (
    REPO,
    WorkerProcess,
    checkpoint,
    index_as_documents,
    read_lines,
    stream_records,
    wait_for,
)

pytestmark = pytest.mark.integration

# This module writes thousands of stream records: a DynamoDB Local of its own keeps them from
# slowing the other modules' streams (tests/integration/own_dynamodb.py).
dynamodb_local, ddb_client, ddbstreams_client = own_dynamodb_local()

TOTAL, KEYS = 5000, 300


def write_config(path: Path, table: str, ddb: str, search: str, db: Path) -> Path:
    path.write_text(
        f"""
streams:
  orders:
    table: {table}
    endpoint_url: {ddb}
    region: us-east-1
    max_idle_interval: 200ms
checkpoints: {{path: {db}, interval: 300ms}}
http: {{enabled: false}}
shutdown_grace: 10s
sinks:
  search:
    type: opensearch
    endpoint: {search}
    index: orders
    document_id: "{{pk}}#{{sk}}"
    batch_size: 100
    parallelization_factor: 2
    max_bulk_actions: 40
    retry: {{max_attempts: 8, initial_backoff: 50ms, max_backoff: 300ms}}
    dead_letter: {{type: file, path: {db.parent}/dlq-search.jsonl}}
"""
    )
    return path


def item(rng: random.Random, pk: str, sk: str, n: int, poison: bool = False) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "pk": {"S": pk},
        "sk": {"S": sk},
        "v": {"N": str(n)},
        "price": {"N": f"{rng.randrange(100000) / 4:.2f}"},
        "tags": {"SS": sorted(rng.sample(["a", "b", "c", "d"], rng.randrange(1, 4)))},
        "meta": {"M": {"lines": {"L": [{"N": str(rng.randrange(9))}, {"S": "x"}]}}},
        "flag": {"BOOL": rng.random() < 0.5},
        "blob": {"B": bytes([n % 256, 1, 2])},
        "pad": {"S": "p" * rng.randrange(40)},
    }
    if rng.random() < 0.2:
        attrs["note"] = {"NULL": True}
    if poison:
        attrs["poison"] = {"BOOL": True}
    return attrs


def plain(value: dict[str, Any]) -> Any:
    """The test's own reading of a typed value as boto3's low-level client returns it."""
    ((tag, inner),) = value.items()
    if tag == "N":
        number = Decimal(inner)
        return int(number) if number == number.to_integral_value() else float(number)
    if tag == "B":
        return base64.b64encode(inner).decode()
    if tag in ("SS", "NS", "BS"):
        return sorted(plain({tag[0]: v}) for v in inner)
    if tag == "M":
        return {k: plain(v) for k, v in inner.items()}
    if tag == "L":
        return [plain(v) for v in inner]
    return None if tag == "NULL" else inner


def table_as_documents(ddb_client: Any, table: str) -> dict[str, dict[str, Any]]:
    docs = {}
    for page in ddb_client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for row in page["Items"]:
            docs[f"{row['pk']['S']}#{row['sk']['S']}"] = {k: plain(v) for k, v in row.items()}
    return docs


def accepted_writes(server: SearchServer) -> int:
    return sum(w.accepted for w in server.writes())


def test_the_index_equals_the_table_through_faults_a_kill_a_redrive_and_a_replay(
    tmp_path, dynamodb_local, ddb_table, ddb_client, ddbstreams_client
):
    table, stream_arn = ddb_table(sort_key=True)
    rng = random.Random(20261130)
    with ServerThread(SearchServer()) as server:
        db = tmp_path / "fanout.db"
        config = write_config(
            tmp_path / "fanout.yaml", table, dynamodb_local.endpoint_url, server.url, db
        )
        log = tmp_path / "worker.log"
        # Transient item rejections (each retried once) and mapping errors for poison.
        server.reject(0.03, times=1, seed=3)
        server.refuse(lambda doc: doc.get("poison") is True, reason="failed to parse [poison]")
        worker = WorkerProcess(config, tmp_path / "unused.jsonl", log)
        versions: dict[tuple[str, str], int] = {}
        try:
            for i in range(TOTAL):
                key = (f"k{rng.randrange(KEYS)}", f"s{rng.randrange(2)}")
                poison = i in (3000, 3500)
                if i == 3000:
                    key = ("poisoned", "last")  # its last change: only the redrive brings it
                elif i == 3500:
                    key = ("poisoned", "overwritten")
                elif i == 3600:
                    key = ("poisoned", "overwritten")  # a newer change the redrive must not undo
                if key in versions and rng.random() < 0.15 and not poison:
                    ddb_client.delete_item(
                        TableName=table, Key={"pk": {"S": key[0]}, "sk": {"S": key[1]}}
                    )
                    del versions[key]
                else:
                    versions[key] = versions.get(key, 0) + 1
                    attrs = item(rng, key[0], key[1], versions[key], poison)
                    ddb_client.put_item(TableName=table, Item=attrs)
                if i == 1200:
                    server.throttle(3, retry_after=0.2)
                    server.fail(2, status=503)
                if i == 2000:
                    wait_for(lambda: accepted_writes(server) > 1000, 60, "writes before the kill")
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

        # Two records were dead-lettered (mapping errors); redrive them once the cluster
        # takes them: the last change of its item lands, the overwritten one is stale.
        dead = read_lines(tmp_path / "dlq-search.jsonl")
        assert sorted(d["record"]["dynamodb"]["Keys"]["sk"]["S"] for d in dead) == [
            "last",
            "overwritten",
        ]
        assert "failed to parse [poison]" in dead[0]["error"]["message"]
        assert "poisoned#last" not in server.documents("orders")
        server.clear_faults()
        command = ["-m", "fanout", "dlq", "redrive", "--sink", "search", "--json"]
        redrive = subprocess.run(
            [sys.executable, *command, "--config", str(config)],
            cwd=REPO,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert redrive.returncode == 0, redrive.stderr.decode()
        assert b"Unclosed" not in redrive.stderr, redrive.stderr.decode()
        report = orjson.loads(redrive.stdout.splitlines()[-1])
        assert (report["delivered"], report["failed"]) == (2, 0)

        # A full replay of the stream (a new checkpoint database) must change nothing.
        before = server.documents("orders")
        replay_db = tmp_path / "replay" / "fanout.db"
        replay_db.parent.mkdir()
        replay = write_config(
            tmp_path / "replay.yaml", table, dynamodb_local.endpoint_url, server.url, replay_db
        )
        worker = WorkerProcess(replay, tmp_path / "unused.jsonl", log)
        try:
            wait_for(lambda: checkpoint(replay_db) >= last, 120, "the replay to finish")
        finally:
            assert worker.terminate() == 0
        assert server.documents("orders") == before

        # 1. The index is the table.
        assert index_as_documents(server) == table_as_documents(ddb_client, table)

        # 2. No stale change was ever accepted: per document, every accepted write carries a
        #    strictly newer (creation time, sequence number) than the one accepted before.
        by_version: dict[tuple[str, int | None], tuple[int, int]] = {}
        for r in records:
            keys = r["dynamodb"]["Keys"]
            created = int(r["dynamodb"]["ApproximateCreationDateTime"].timestamp())
            seq = int(r["dynamodb"]["SequenceNumber"])
            doc_id = f"{keys['pk']['S']}#{keys['sk']['S']}"
            by_version[(doc_id, version_of(created, seq))] = (created, seq)
        accepted: dict[str, list[tuple[int, int]]] = defaultdict(list)
        refused_stale = 0
        writes = server.writes()
        for write in writes:
            if write.error == "version_conflict_engine_exception":
                refused_stale += 1
            if not write.accepted:
                continue
            assert write.version_type == "external"
            meta = (write.source or {}).get("_fanout")
            when = (
                (meta["created"], int(meta["seq"]))
                if meta
                else by_version[(write.id, write.version)]
            )
            assert by_version[(write.id, write.version)] == when
            accepted[write.id].append(when)
        for doc_id, stamps in accepted.items():
            assert all(a < b for a, b in itertools.pairwise(stamps)), doc_id
        # the replays were really offered and refused
        assert refused_stale >= TOTAL
        assert sum(w.error == "es_rejected_execution_exception" for w in writes) > 50
        throttled = [r for r in server.requests() if r.status in (429, 503)]
        assert len(throttled) == 5
