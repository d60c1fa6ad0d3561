"""``python -m bench.aggregate``: throughput of the aggregate sink on DynamoDB Local.

Generates a stream of random inserts, updates (customer and amount changes) and deletes over a
few hundred items, splits it into lanes by item key as ``parallelization_factor`` does, and
sends each lane's batches to one aggregate sink in stream order, all lanes at once. Then sends
the whole stream again (a full replay, all absorbed). Prints changes per second for both
passes, transactions, and the changes applied, for running totals and for 1-minute windows.

DynamoDB Local runs in the same machine and does most of the work; its transactions cost about
1 ms per action on a 2-core machine, so the figures are a floor for the sink's own overhead
and say nothing about DynamoDB's service limits.
"""

from __future__ import annotations

import argparse
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import orjson

from fanout.records import item_key
from fanout.sink import SinkContext
from fanout.testing import dynamodb_local as local
from sinks.aggregate import AGGREGATE, AggregateSink

REPO = Path(__file__).resolve().parents[1]
T0 = 1_767_225_600
ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/2026-01-01T00:00:00.000"


def stream(changes: int, items: int, customers: int, seed: int = 1) -> list[dict[str, Any]]:
    """Records in stream order, one second apart."""
    rng = random.Random(seed)
    current: dict[str, dict[str, Any]] = {}
    records = []
    for n in range(changes):
        key = f"k{rng.randrange(items)}"
        old = current.get(key)
        ddb: dict[str, Any] = {
            "ApproximateCreationDateTime": T0 + n // 10,
            "Keys": {"pk": {"S": key}},
            "SequenceNumber": f"{10**20 + n:021d}",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        }
        if old is not None:
            ddb["OldImage"] = old
        if old is not None and rng.random() < 0.15:
            event = "REMOVE"
            del current[key]
        else:
            new = dict(old or {"pk": {"S": key}, "customer": {"S": "c0"}})
            if old is None or rng.random() < 0.3:
                new["customer"] = {"S": f"c{rng.randrange(customers)}"}
            new["amount"] = {"N": f"{rng.randrange(100_000) / 100}"}
            ddb["NewImage"] = current[key] = new
            event = "MODIFY" if old else "INSERT"
        records.append(
            {"eventID": str(n), "eventName": event, "eventSourceARN": ARN, "dynamodb": ddb}
        )
    return records


async def run_pass(sink: AggregateSink, lanes: list[list[dict[str, Any]]], batch: int) -> float:
    """Send every lane's records in batches, lanes concurrently; seconds taken."""

    async def lane(records: list[dict[str, Any]]) -> None:
        for start in range(0, len(records), batch):
            chunk = records[start : start + batch]
            while chunk:
                failures = await sink.send(chunk)
                chunk = [chunk[i] for i in sorted(failures) if failures[i].retryable]

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for records in lanes:
            tg.start_soon(lane, records)
    return time.perf_counter() - started


async def measure(endpoint: str, window: str, args: argparse.Namespace) -> dict[str, Any]:
    records = stream(args.changes, args.items, args.customers)
    lanes: list[list[dict[str, Any]]] = [[] for _ in range(args.lanes)]
    for record in records:
        lanes[hash(item_key(record)) % args.lanes].append(record)
    config = AGGREGATE.config.model_validate(
        {
            "type": "aggregate",
            "table": f"bench-{uuid.uuid4().hex[:10]}",
            "group_by": ["customer"],
            "window": window,
            "measures": {"orders": "count", "revenue": {"sum": "amount"}},
            "region": "us-east-1",
            "endpoint_url": endpoint,
            "create_table": True,
        }
    )
    context = SinkContext.standalone("bench")
    sink = AGGREGATE.build("bench", config, context)
    assert isinstance(sink, AggregateSink)
    registry = context.metrics.registry

    def value(name: str) -> float:
        return registry.get_sample_value(name, {"sink": "bench"}) or 0.0

    try:
        await sink.start()
        cpu = time.process_time()
        first = await run_pass(sink, lanes, args.batch)
        cpu = time.process_time() - cpu
        applied = value("fanout_aggregate_writes_total")
        transactions = value("fanout_aggregate_transactions_total")
        replay = await run_pass(sink, lanes, args.batch)
    finally:
        await sink.stop()
        await context.aclose()
    return {
        "window": window,
        "changes": len(records),
        "changes_per_s": round(len(records) / first),
        "sink_cpu_ms_per_change": round(cpu / len(records) * 1000, 3),
        "applied": int(applied),
        "transactions": int(transactions),
        "conflict_rounds": int(value("fanout_aggregate_conflicts_total")),
        "replay_changes_per_s": round(len(records) / replay),
        "absorbed": int(value("fanout_aggregate_replays_absorbed_total")),
        "writes_after_replay": int(value("fanout_aggregate_writes_total")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--customers", type=int, default=12)
    parser.add_argument("--lanes", type=int, default=4, help="parallelization_factor")
    parser.add_argument("--batch", type=int, default=100, help="records per send")
    args = parser.parse_args()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(name, value)
    emulator = local.fetch(local.default_cache_dir(REPO))
    server = local.DynamoDBLocal(emulator_dir=emulator).start()
    try:
        for window in ("none", "1m"):
            result = anyio.run(measure, server.endpoint_url, window, args)
            print(orjson.dumps(result).decode())
    finally:
        server.stop()


if __name__ == "__main__":
    main()
