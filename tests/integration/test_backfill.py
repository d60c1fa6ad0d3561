"""``fanout backfill`` end to end: DynamoDB Local, the local OpenSearch-like server, a worker
streaming, a thread changing the table throughout, a backfill killed with SIGKILL and
resumed. The index must equal the table, and the Scan must keep within its budget."""

from __future__ import annotations

import base64
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from fanout.testing.searchserver import SearchServer, ServerThread
from tests.conftest import STREAM
from tests.integration.process import REPO, WorkerProcess, index_as_documents, read_lines, wait_for

pytestmark = pytest.mark.integration

ITEMS = 20_000
SEGMENTS = 4
BUDGET = 100.0  # read capacity units per second (the config's)
FIRST_BUDGET = 50.0  # the first run's --max-rcu


def write_config(path: Path, table: str, ddb: str, search: str, db: Path) -> Path:
    path.write_text(
        f"""
streams:
  orders:
    table: {table}
    endpoint_url: {ddb}
    region: us-east-1
    starting_position: LATEST
    max_idle_interval: 200ms
checkpoints: {{path: {db}, interval: 300ms}}
http: {{enabled: false}}
shutdown_grace: 10s
backfill: {{read_capacity: {BUDGET}, segments: 2, progress_interval: 200ms}}
sinks:
  search:
    type: opensearch
    endpoint: {search}
    index: orders
    batch_size: 500
    max_bulk_actions: 500
    retry: {{max_attempts: 8, initial_backoff: 50ms, max_backoff: 300ms}}
    dead_letter: {{type: file, path: {db.parent}/dlq-search.jsonl}}
"""
    )
    return path


def item(rng: random.Random, pk: str, n: int) -> dict[str, Any]:
    return {
        "pk": {"S": pk},
        "v": {"N": str(n)},
        "price": {"N": f"{rng.randrange(100000) / 4:.2f}"},
        "tags": {"SS": sorted(rng.sample(["a", "b", "c", "d"], rng.randrange(1, 4)))},
        "blob": {"B": bytes([n % 256, 1, 2])},
        "pad": {"S": "p" * rng.randrange(100, 300)},
    }


def plain(value: dict[str, Any]) -> Any:
    ((tag, inner),) = value.items()
    if tag == "N":
        number = Decimal(inner)
        return int(number) if number == number.to_integral_value() else float(number)
    if tag == "B":
        return base64.b64encode(inner).decode()
    if tag == "SS":
        return sorted(inner)
    return inner


def table_as_documents(ddb_client: Any, table: str) -> dict[str, dict[str, Any]]:
    docs = {}
    for page in ddb_client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for row in page["Items"]:
            docs[row["pk"]["S"]] = {k: plain(v) for k, v in row.items()}
    return docs


def load_table(ddb_client: Any, table: str, rng: random.Random) -> None:
    rows = [item(rng, f"k{i}", 0) for i in range(ITEMS)]
    chunks = [rows[i : i + 25] for i in range(0, ITEMS, 25)]

    def write(chunk: list[dict[str, Any]]) -> None:
        requests: list[dict[str, Any]] = [{"PutRequest": {"Item": r}} for r in chunk]
        while requests:
            answer = ddb_client.batch_write_item(RequestItems={table: requests})
            requests = answer.get("UnprocessedItems", {}).get(table, [])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, chunks))


class Mutator(threading.Thread):
    """Updates, deletes and inserts items until stopped."""

    def __init__(self, ddb_client: Any, table: str) -> None:
        super().__init__(daemon=True)
        self.client, self.table = ddb_client, table
        self.rng = random.Random(7)
        self.stop = threading.Event()
        self.counts = {"update": 0, "delete": 0, "insert": 0}
        self.error: BaseException | None = None

    def run(self) -> None:
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                roll = self.rng.random()
                if roll < 0.3:
                    key = f"k{self.rng.randrange(ITEMS)}"
                    self.client.delete_item(TableName=self.table, Key={"pk": {"S": key}})
                    self.counts["delete"] += 1
                elif roll < 0.5:
                    key = f"n{n}"
                    self.client.put_item(TableName=self.table, Item=item(self.rng, key, n))
                    self.counts["insert"] += 1
                else:
                    key = f"k{self.rng.randrange(ITEMS)}"
                    self.client.put_item(TableName=self.table, Item=item(self.rng, key, n))
                    self.counts["update"] += 1
                time.sleep(0.002)
        except BaseException as exc:  # reported by the test
            self.error = exc


def backfill_command(config: Path, *options: str) -> list[str]:
    return [
        sys.executable, "-m", "fanout", "backfill", "--config", str(config), "--sink", "search",
        "--segments", str(SEGMENTS), "--json", *options,
    ]  # fmt: skip


def progress_lines(log: Path) -> list[dict[str, Any]]:
    return [r for r in read_lines(log) if r.get("event") == "backfill_progress"]


def within_budget(consumed: float, seconds: float, rate: float) -> bool:
    # One page per segment may be in flight beyond the pace; pages are sized to a quarter
    # of a second's budget (see fanout.backfill.budget).
    return consumed <= rate * seconds + SEGMENTS * rate * 0.25


def test_a_killed_and_resumed_backfill_leaves_the_index_equal_to_the_changing_table(
    tmp_path, dynamodb_local, ddb_table, ddb_client
):
    # The items were there before the stream (as in a table a stream is added to later):
    # the stream holds only the changes made while the backfill runs.
    table, _ = ddb_table(stream=False)
    rng = random.Random(20261130)
    began = time.monotonic()
    load_table(ddb_client, table, rng)
    ddb_client.update_table(TableName=table, StreamSpecification=STREAM)
    print(f"loaded {ITEMS} items in {time.monotonic() - began:.1f} s")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with ServerThread(SearchServer()) as server:
        db = tmp_path / "fanout.db"
        config = write_config(
            tmp_path / "fanout.yaml", table, dynamodb_local.endpoint_url, server.url, db
        )
        log = tmp_path / "worker.log"
        worker = WorkerProcess(config, tmp_path / "unused.jsonl", log)
        mutator = Mutator(ddb_client, table)
        first_log = tmp_path / "backfill-1.log"
        try:
            wait_for(lambda: b"worker_started" in log.read_bytes(), 30, "the worker")
            mutator.start()
            time.sleep(0.5)
            # A first run, killed once it has loaded part of the table.
            with first_log.open("wb") as out:
                first = subprocess.Popen(
                    backfill_command(config, "--max-rcu", str(FIRST_BUDGET)),
                    cwd=REPO,
                    env=env,
                    stdout=out,
                    stderr=out,
                )
                wait_for(lambda: progress_lines(first_log) != [], 60, "the first backfill")
                # while it runs, another run of the same backfill is refused
                busy = subprocess.run(
                    backfill_command(config),
                    cwd=REPO,
                    env=env,
                    capture_output=True,
                    timeout=60,
                    check=False,
                )
                assert busy.returncode == 1, busy.stderr.decode()[-2000:]
                assert b"is running in" in busy.stderr
                wait_for(
                    lambda: any(p["items_settled"] >= 6000 for p in progress_lines(first_log)),
                    60,
                    "the first backfill to load items",
                )
                first.send_signal(signal.SIGKILL)
                assert first.wait(timeout=30) == -signal.SIGKILL  # killed, not finished
            # The second run resumes it.
            second = subprocess.run(
                backfill_command(config),
                cwd=REPO,
                env=env,
                capture_output=True,
                timeout=120,
                check=False,
            )
            assert second.returncode == 0, second.stderr.decode()[-3000:]
            time.sleep(0.5)
            mutator.stop.set()
            mutator.join(10)
            assert mutator.error is None
            print(f"backfilled at {time.monotonic() - began:.1f} s")
            expected = table_as_documents(ddb_client, table)
            wait_for(
                lambda: index_as_documents(server) == expected, 60, "the index to equal the table"
            )
            print(f"caught up at {time.monotonic() - began:.1f} s")
            assert worker.terminate() == 0
        except BaseException:
            mutator.stop.set()
            worker.proc.kill()
            print(log.read_text()[-3000:])
            print(first_log.read_text()[-3000:] if first_log.exists() else "")
            raise

    outcome = orjson.loads(second.stdout.splitlines()[-1])
    print("first run:", progress_lines(first_log)[-1])
    print("second run:", outcome, "changes:", mutator.counts)
    assert (outcome["done"], outcome["resumed"]) == (True, True)
    assert outcome["segments"] == SEGMENTS
    # The resumed run did not start over: the first run's settled pages were kept.
    assert outcome["total_items"] - outcome["items"] >= 5000
    assert min(mutator.counts.values()) > 100  # changes ran throughout
    # The index is the table: nothing missing, no deleted item back, no stale image.
    assert index_as_documents(server) == table_as_documents(ddb_client, table)
    assert read_lines(tmp_path / "dlq-search.jsonl") == []
    # The Scan kept within its read capacity budget, in both runs.
    assert outcome["consumed_rcu"] > 0
    assert outcome["read_capacity"] == BUDGET
    assert within_budget(outcome["consumed_rcu"], outcome["seconds"], BUDGET), outcome
    last = progress_lines(first_log)[-1]
    assert last["consumed_rcu"] > 0
    assert last["read_capacity"] == FIRST_BUDGET
    assert within_budget(last["consumed_rcu"], last["seconds"], FIRST_BUDGET), last


@pytest.mark.parametrize("store", ["sqlite", "dynamodb"])
def test_a_sink_with_backfill_on_first_start_is_loaded_once_by_the_worker(
    tmp_path, dynamodb_local, ddb_table, ddb_client, store
):
    table, _ = ddb_table()
    rng = random.Random(5)
    for i in range(300):
        ddb_client.put_item(TableName=table, Item=item(rng, f"k{i}", 0))
    with ServerThread(SearchServer()) as server:
        db = tmp_path / "fanout.db"
        config = write_config(
            tmp_path / "fanout.yaml", table, dynamodb_local.endpoint_url, server.url, db
        )
        text = config.read_text().replace(
            "    type: opensearch\n", "    type: opensearch\n    backfill: on_first_start\n"
        )
        if store == "dynamodb":
            lease_table = f"{table}-leases"[:255]
            text = text.replace(
                f"checkpoints: {{path: {db}, interval: 300ms}}",
                f"checkpoints: {{store: dynamodb, table: {lease_table}, create_table: true, "
                f"endpoint_url: {dynamodb_local.endpoint_url}, region: us-east-1, "
                "interval: 300ms}",
            )
            assert "store: dynamodb" in text
        config.write_text(text)
        log = tmp_path / "worker.log"
        worker = WorkerProcess(config, tmp_path / "unused.jsonl", log)
        try:
            wait_for(lambda: len(server.documents("orders")) == 300, 30, "the backfill")
            # changes after it are streamed over the backfilled documents
            ddb_client.delete_item(TableName=table, Key={"pk": {"S": "k1"}})
            ddb_client.put_item(TableName=table, Item=item(rng, "k2", 9))
            expected = table_as_documents(ddb_client, table)
            wait_for(lambda: index_as_documents(server) == expected, 30, "the changes")
            assert worker.terminate() == 0
            # the next start does not load it again
            worker = WorkerProcess(config, tmp_path / "unused.jsonl", log)
            wait_for(lambda: log.read_bytes().count(b"worker_started") == 2, 30, "a restart")
            time.sleep(1.0)
            assert worker.terminate() == 0
        except BaseException:
            worker.proc.kill()
            print(log.read_text()[-4000:])
            raise
    events = [r.get("event") for r in read_lines(log)]
    assert events.count("backfill_planned") == 1
    assert events.count("backfill_started") == 1
    assert events.count("backfill_done") == 1
    done = next(r for r in read_lines(log) if r.get("event") == "backfill_done")
    # planned before the sink set was recorded, then taken and run (hence "resumed")
    assert (done["items"], done["done"], done["resumed"]) == (300, True, True)


def test_sigterm_stops_a_backfill_which_saves_its_progress_and_the_next_run_resumes_at_once(
    tmp_path, dynamodb_local, ddb_table, ddb_client
):
    table, _ = ddb_table()
    rng = random.Random(9)
    for i in range(400):
        ddb_client.put_item(TableName=table, Item=item(rng, f"k{i}", 0))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with ServerThread(SearchServer()) as server:
        config = write_config(
            tmp_path / "fanout.yaml",
            table,
            dynamodb_local.endpoint_url,
            server.url,
            tmp_path / "fanout.db",
        )
        log = tmp_path / "backfill.log"
        with log.open("wb") as out:
            # 2 RCU/s: about 25 items a second, so it is stopped half way
            run = subprocess.Popen(
                backfill_command(config, "--max-rcu", "2"),
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=out,
            )
            wait_for(
                lambda: any(p["items_settled"] > 0 for p in progress_lines(log)), 30, "progress"
            )
            run.send_signal(signal.SIGTERM)
            assert run.wait(timeout=30) == 1
        assert b"stopped by a signal" in log.read_bytes()
        con = sqlite3.connect(tmp_path / "fanout.db")
        try:
            saved = con.execute("SELECT SUM(items) FROM backfill_segments").fetchone()[0]
            owners = con.execute("SELECT owner, done FROM backfills").fetchall()
        finally:
            con.close()
        assert owners == [(None, 0)]  # given up, not done
        assert saved > 0
        # given up on the way out: the next run takes it at once and finishes it
        began = time.monotonic()
        rest = subprocess.run(
            backfill_command(config), cwd=REPO, env=env, capture_output=True, timeout=60
        )
        assert rest.returncode == 0, rest.stderr.decode()[-2000:]
        outcome = orjson.loads(rest.stdout.splitlines()[-1])
        assert outcome["resumed"] is True
        assert outcome["items"] == 400 - saved
        assert outcome["total_items"] == 400
        assert time.monotonic() - began < 20
        assert len(server.documents("orders")) == 400
