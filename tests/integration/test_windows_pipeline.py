"""Tumbling windows end to end: DynamoDB Local as the stream, a worker process with the
SQLite store, SIGKILLed while a window is open."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.integration.process import WorkerProcess, read_lines, wait_for

WINDOW = 2


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
  sums:
    type: handler
    handler: tests.integration.window_handlers:sum_values
    tumbling_window: {WINDOW}s
    batch_size: 3
"""
    )
    return config


def put(ddb_client: Any, table: str, n: int) -> None:
    ddb_client.put_item(TableName=table, Item={"pk": {"S": f"k{n}"}, "n": {"N": str(n)}})


def epoch(text: str) -> float:
    assert text.endswith("Z")
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_window_state_survives_sigkill_with_one_final_call_per_window(
    tmp_path, dynamodb_local, ddb_table, ddb_client
):
    table, stream_arn = ddb_table()
    config = write_config(tmp_path, table, dynamodb_local.endpoint_url)
    out = tmp_path / "calls.jsonl"
    worker = WorkerProcess(config, out, tmp_path / "worker.log")
    first, second = range(1, 8), range(8, 15)

    def applied() -> set[int]:
        return {v for c in read_lines(out) if not c["final"] for v in c["values"]}

    # DynamoDB Local rounds creation times down to the minute: the first records' window
    # is already over, so it closes at once, and the next records go to the window of now.
    for n in first[:3]:
        put(ddb_client, table, n)
    wait_for(lambda: any(c["final"] for c in read_lines(out)), 30, "the first window's end")
    for n in first[3:]:
        put(ddb_client, table, n)
        time.sleep(0.05)
    wait_for(lambda: set(first) <= applied(), 30, "records in an open window")
    worker.kill()  # at once: a window is open, its state stored at the last flush or not
    before = len(read_lines(out))
    assert not read_lines(out)[-1]["final"]

    worker = WorkerProcess(config, out, tmp_path / "worker.log")
    for n in second:
        put(ddb_client, table, n)
        time.sleep(0.05)
    expected = sum(first) + sum(second)

    def final_total() -> int:
        return sum(c["state_in"].get("total", 0) for c in read_lines(out) if c["final"])

    # Every window ends by the clock (WINDOW s and a grace second after its end).
    wait_for(lambda: final_total() >= expected, 40, "the final calls of every window")
    time.sleep(WINDOW + 1.2)  # nothing else comes: no second final call of any window
    assert worker.terminate() == 0

    calls = read_lines(out)
    finals = [c for c in calls if c["final"]]
    # 1. the sum of the final states is the sum of every value: across the SIGKILL nothing
    # was lost and no batch was applied twice to a stored state
    assert final_total() == expected
    assert sum(c["state_in"]["count"] for c in finals) == len(first) + len(second)
    # 2. exactly one final call per window and shard, with no records
    per_window = Counter((c["shard"], c["window"]["start"]) for c in finals)
    assert set(per_window.values()) == {1}, per_window
    assert all(c["values"] == [] for c in finals)
    assert not any(c["early"] for c in calls)  # DynamoDB Local's shard never ends
    # 3. window boundaries: WINDOW seconds, aligned, spelled as Lambda does, never overlapping
    starts = sorted(epoch(c["window"]["start"]) for c in finals)
    for c in calls:
        start, end = epoch(c["window"]["start"]), epoch(c["window"]["end"])
        assert end - start == WINDOW
        assert start % WINDOW == 0
    assert all(b - a >= WINDOW for a, b in itertools.pairwise(starts))
    assert {c["arn"] for c in calls} == {stream_arn}
    # 4. state is carried across calls of a window: a call after the first gets the sum so
    # far (the first call of a window gets {})
    by_window: dict[str, list[dict[str, Any]]] = {}
    for c in calls[before:]:
        by_window.setdefault(c["window"]["start"], []).append(c)
    for window_calls in by_window.values():
        running = window_calls[0]["state_in"].get("total", 0)
        for c in window_calls:
            assert c["state_in"].get("total", 0) == running
            running += sum(c["values"])
