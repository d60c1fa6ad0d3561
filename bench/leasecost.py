"""The lease table's cost: one worker on busy shards with the DynamoDB lease table, its
requests by purpose and the read and write units they make (docs/leases.md, "Cost")."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.harness import REGION, REPO, run_child, use_local_env
from bench.scenarios import Options, fanout_config, fanout_spec, stream_server
from bench.sinks import COUNT_TYPE


def item_size(item: dict[str, Any]) -> int:
    """A DynamoDB item's size as DynamoDB counts it: attribute names plus values (strings in
    UTF-8 bytes, numbers about one byte per two significant digits plus one, booleans one)."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        (kind, raw), *_ = value.items()
        if kind == "S":
            size += len(str(raw).encode())
        elif kind == "N":
            digits = str(raw).lstrip("-").replace(".", "").strip("0") or "0"
            size += (len(digits) + 1) // 2 + 1
        else:
            size += 1
    return size


def leases(opts: Options) -> dict[str, Any]:
    """One worker on busy shards with the DynamoDB lease table (DynamoDB Local) at the
    default lease settings: the table's requests by purpose, item sizes, and what that
    makes in DynamoDB read and write units per shard-hour and per worker-hour."""
    import math
    import threading

    import boto3

    from fanout.testing import dynamodb_local as local
    from fanout.testing.streamserver import Change

    use_local_env()
    emulator = local.fetch(local.default_cache_dir(REPO))
    shards = opts.lease_shards
    server, stream = stream_server(shards, 0, closed=False)
    stop = threading.Event()

    def write() -> None:  # every shard gets a record every 250 ms: its checkpoint moves
        i = 0
        while not stop.wait(0.25):
            for shard in stream.shards:
                i += 1
                keys = {"pk": {"S": f"item-{i % 500}"}, "sk": {"S": "v"}}
                server.put(shard, Change("MODIFY", keys, {**keys, "v": {"N": str(i)}}, None))

    work = Path(tempfile.mkdtemp(prefix="leases-", dir=opts.logs))
    with local.DynamoDBLocal(emulator_dir=emulator) as ddb, server.run_in_thread():
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        config = fanout_config(
            work,
            {"stream_arn": stream.arn, "endpoint_url": server.endpoint_url},
            {"audit": {"type": COUNT_TYPE}},
        )
        config["application"] = "bench"
        config["checkpoints"] = {  # lease_duration and interval at their defaults
            "store": "dynamodb",
            "table": "fanout-leases",
            "create_table": True,
            "endpoint_url": ddb.endpoint_url,
            "region": REGION,
        }
        spec = fanout_spec(
            opts,
            config,
            lease_window=opts.lease_seconds,
            lease_warmup=opts.lease_warmup,
            timeout=opts.lease_warmup + opts.lease_seconds + 120,
        )
        result = run_child(spec, work / "child.log", opts.lease_warmup + opts.lease_seconds + 180)
        stop.set()
        writer.join(5)
        client = boto3.client("dynamodb", endpoint_url=ddb.endpoint_url, region_name=REGION)
        items = client.query(
            TableName="fanout-leases",
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": "app#bench"}},
        )["Items"]
    counts: dict[str, int] = {}
    for purpose, op, n in result["lease_requests"]:
        counts[f"{purpose}:{op}"] = n
    hours = opts.lease_seconds / 3600
    shard_rows = [i for i in items if i["sk"]["S"].startswith("shard#")]
    shard_bytes = sum(item_size(i) for i in shard_rows) / max(1, len(shard_rows))
    all_bytes = sum(item_size(i) for i in items)
    heartbeats = counts.get("heartbeat:update_item", 0)
    scans = counts.get("scan:query", 0)
    checkpoints = counts.get("save:update_item", 0)
    other_writes = sum(
        n
        for key, n in counts.items()
        if key.split(":")[1] in ("update_item", "delete_item", "transact_write_items")
        and key not in ("heartbeat:update_item", "save:update_item")
    )
    return {
        "shards": shards,
        "seconds": opts.lease_seconds,
        "lease_duration": 10.0,
        "checkpoint_interval": 5.0,
        "requests": counts,
        "leases_held": result["leases_held"],
        "shard_row_bytes": round(shard_bytes),
        "application_bytes": all_bytes,
        "heartbeats_per_worker_hour": heartbeats / hours,
        "scans_per_worker_hour": scans / hours,
        "checkpoint_writes_per_shard_hour": checkpoints / shards / hours,
        "other_writes_per_shard_hour": other_writes / shards / hours,
        # a write of an item up to 1 KB is one write unit
        "wru_per_busy_shard_hour": checkpoints / shards / hours * math.ceil(shard_bytes / 1024),
        "wru_per_worker_hour": heartbeats / hours,
        # a strongly consistent read is one read unit per 4 KB: a shard's row in each scan
        "rru_per_shard_hour": scans / hours * shard_bytes / 4096,
        "rru_per_scan": math.ceil(all_bytes / 4096),
        "timed_out": result["timed_out"],
    }
