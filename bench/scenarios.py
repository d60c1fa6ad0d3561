"""The benchmark's options and what its scenarios share, and the latency, idle cost and
scale scenarios (throughput: ``bench/throughput.py``; lease cost: ``bench/leasecost.py``;
the byte budget: ``bench/budget.py``).

Each scenario returns a JSON-ready dict. The stream server runs in a thread of the driver
process and every measured consumer in a child process (``bench.child``), so a consumer's
CPU time and peak RSS are its own.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.harness import REGION, REPO, child, percentile, run_child, use_local_env
from bench.sinks import COUNT_TYPE, LATENCY_TYPE

if TYPE_CHECKING:
    from bench.baseline import Baseline
    from fanout.testing.streamserver import Stream, StreamServer

# Three sinks as a typical deployment has them: each with a Lambda filter on eventName and
# one image attribute (the sinks themselves only count).
FILTERED_SINKS: dict[str, dict[str, Any]] = {
    "search": {
        "type": COUNT_TYPE,
        "filters": [
            {
                "eventName": ["INSERT", "MODIFY"],
                "dynamodb": {"NewImage": {"status": {"S": ["SHIPPED", "PAID"]}}},
            }
        ],
    },
    "notify": {
        "type": COUNT_TYPE,
        "filters": [
            {
                "eventName": ["INSERT"],
                "dynamodb": {
                    "NewImage": {"customer": {"M": {"tier": {"S": ["gold", "platinum"]}}}}
                },
            }
        ],
    },
    "audit": {
        "type": COUNT_TYPE,
        "filters": [
            {
                "eventName": ["MODIFY", "REMOVE"],
                "dynamodb": {"OldImage": {"status": {"S": [{"anything-but": ["CANCELLED"]}]}}},
            }
        ],
    },
}


# The same three sinks as Lambda handlers (bench/handlers.py) at their default settings, as
# a user who moves stream handlers from Lambda runs them: two filtered, one taking everything.
HANDLER_SINKS: dict[str, dict[str, Any]] = {
    "search": {**FILTERED_SINKS["search"], "type": "handler", "handler": "bench.handlers:search"},
    "notify": {**FILTERED_SINKS["notify"], "type": "handler", "handler": "bench.handlers:notify"},
    "audit": {"type": "handler", "handler": "bench.handlers:audit"},
}

# The same three sinks with no filters: the filters' cost is the difference.
UNFILTERED_SINKS: dict[str, dict[str, Any]] = {
    name: {"type": COUNT_TYPE} for name in FILTERED_SINKS
}


@dataclass
class Options:
    """What to run and how big (``--quick`` shrinks everything)."""

    out: Path
    quick: bool = False
    throughput_shards: tuple[int, ...] = (4, 64)
    throughput_records: int = 256_000  # per shard count, spread over the shards
    consumers: tuple[str, ...] = (
        "fanout",
        "fanout-handlers",
        "fanout-unfiltered",
        "floor",
        "aiobotocore",
    )
    # fanout with this many worker processes (sharing the shards through the SQLite store's
    # leases, as `fanout run --processes N`), beside one process, on the largest shard count
    throughput_processes: tuple[int, ...] = (2,)
    latency_seconds: float = 30.0
    latency_rate: float = 200.0
    latency_warmup: float = 5.0
    idle_shards: int = 100
    idle_seconds: float = 60.0
    idle_warmup: float = 10.0
    idle_writes: int = 5
    max_idle_interval: float = 2.0
    min_poll_interval: float | None = None  # None: the worker's default
    lease_shards: int = 16
    lease_seconds: float = 60.0
    lease_warmup: float = 12.0
    scale_shards: int = 1000
    scale_records_per_shard: int = 20
    budget_shards: int = 1000
    budget_records_per_shard: int = 4
    budget_item_bytes: int = 50_000
    budget_bytes: int = 96 * 1024 * 1024
    # throughput: every consumer reads everything once per round (aiobotocore, twenty times
    # slower than the others and far from its target, only in the first)
    rounds: int = 3
    baseline: Baseline | None = None  # throughput: an older checkout to measure beside fanout
    profile: bool = False
    tune_gc: bool = True
    logs: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fanout-bench-")))

    @classmethod
    def quick_run(cls, out: Path) -> Options:
        return cls(
            out=out,
            quick=True,
            throughput_records=64_000,
            latency_seconds=10.0,
            latency_warmup=3.0,
            idle_seconds=10.0,
            idle_warmup=5.0,
            idle_writes=3,
            scale_records_per_shard=5,
            rounds=1,
            lease_seconds=20.0,
        )


def fanout_spec(opts: Options, config: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "consumer": "fanout",
        "config": config,
        "tune_gc": opts.tune_gc,
        "min_poll_interval": opts.min_poll_interval,
        **more,
    }


def fanout_config(
    work: Path,
    stream: dict[str, Any],
    sinks: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    return {
        "streams": {"bench": {"region": REGION, **stream}},
        "sinks": sinks,
        "checkpoints": {"path": str(work / "fanout.db")},
        "http": {"enabled": False},
        "log_level": "WARNING",
    }


def profile_path(opts: Options, name: str) -> Path | None:
    return opts.out / f"profile-{name}.txt" if opts.profile else None


def stream_server(
    shards: int, records_per_shard: int, *, closed: bool
) -> tuple[StreamServer, Stream]:
    from fanout.testing.streamserver import StreamServer

    server = StreamServer(page_size=1000)
    stream = server.add_stream("Orders", "NEW_AND_OLD_IMAGES", shards=shards)
    for i, shard in enumerate(stream.shards):
        if records_per_shard:
            server.fill(shard, records_per_shard, seed=i)
        if closed:
            server.close_shard(shard)
    return server, stream


# -- 2. latency ---------------------------------------------------------------------------


async def _write_steadily(
    endpoint: str, table: str, rate: float, warmup: float, seconds: float, stamp: str
) -> tuple[int, float]:
    """Put ``rate`` items per second for ``warmup + seconds``; stamp the items of the last
    ``seconds`` with their write time (warm-up: JIT of DynamoDB Local, first connections).

    Returns the number of writes and the worst lateness of a stamped write against its
    schedule (the writer's own hiccups, for reading the latencies).
    """
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    unstamped = int(rate * warmup)
    count = unstamped + int(rate * seconds)
    lateness = 0.0
    session = get_session()
    config = AioConfig(max_pool_connections=64)
    async with session.create_client(
        "dynamodb", endpoint_url=endpoint, region_name=REGION, config=config
    ) as ddb:
        limit = asyncio.Semaphore(64)

        async def put(i: int) -> None:
            async with limit:
                item = {
                    "pk": {"S": f"ORDER#{i:08d}"},
                    "status": {"S": "PAID" if i % 3 else "SHIPPED"},
                    "total": {"N": str(10 + i % 1000)},
                }
                if i >= unstamped:
                    item[stamp] = {"N": repr(time.time())}
                await ddb.put_item(TableName=table, Item=item)

        loop = asyncio.get_running_loop()
        start = loop.time() + 0.1
        tasks = []
        for i in range(count):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if i >= unstamped:
                lateness = max(lateness, loop.time() - due)
            tasks.append(asyncio.create_task(put(i)))
        await asyncio.gather(*tasks)
    return count, lateness


def latency(opts: Options) -> dict[str, Any]:
    """DynamoDB Local, a steady writer, and the time from each write to its sink."""
    import boto3

    from fanout.testing import dynamodb_local as local

    use_local_env()
    emulator = local.fetch(local.default_cache_dir(REPO))
    table = f"BenchLatency{int(time.time())}"
    with local.DynamoDBLocal(emulator_dir=emulator) as ddb:
        client = boto3.client("dynamodb", endpoint_url=ddb.endpoint_url, region_name=REGION)
        client.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        writes = int(opts.latency_rate * (opts.latency_warmup + opts.latency_seconds))
        work = Path(tempfile.mkdtemp(prefix="latency-", dir=opts.logs))
        sinks = {
            "timing": {"type": LATENCY_TYPE, "stamp": "written_at"},
            "search": FILTERED_SINKS["search"],
            "audit": FILTERED_SINKS["audit"],
        }
        spec = fanout_spec(
            opts,
            fanout_config(
                work,
                {
                    "table": table,
                    "endpoint_url": ddb.endpoint_url,
                    "max_idle_interval": opts.max_idle_interval,
                },
                sinks,
            ),
            ready_when_running=1,
            expect_records=writes,
            expect_sinks=["timing"],
            timeout=opts.latency_warmup + opts.latency_seconds + 120,
        )
        with child(spec, work / "child.log", profile=profile_path(opts, "latency")) as proc:
            proc.wait_ready(120)
            written, lateness = asyncio.run(
                _write_steadily(
                    ddb.endpoint_url,
                    table,
                    opts.latency_rate,
                    opts.latency_warmup,
                    opts.latency_seconds,
                    "written_at",
                )
            )
            result = proc.result(opts.latency_warmup + opts.latency_seconds + 180)
    values = [v * 1000 for v in result.pop("latencies")]
    stamps = result.pop("written")
    first = min(stamps, default=0.0)
    # the worst latency per second of the run: shows whether slow deliveries cluster
    worst: dict[int, float] = {}
    for value, when in zip(values, stamps, strict=True):
        second = int(when - first)
        worst[second] = max(worst.get(second, 0.0), value)
    return {
        "writes": written,
        "timed": len(values),
        "rate": opts.latency_rate,
        "seconds": opts.latency_seconds,
        "warmup_seconds": opts.latency_warmup,
        "writer_max_lateness_ms": lateness * 1000,
        "p50_ms": percentile(values, 50),
        "p95_ms": percentile(values, 95),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values) if values else float("nan"),
        "worst_ms_by_second": [round(worst.get(i, 0.0)) for i in range(max(worst, default=-1) + 1)],
        "worker_cpu_s": result["cpu"],
        "get_records_per_s": result["get_records_calls"] / result["wall"],
        "timed_out": result["timed_out"],
    }


# -- 3. idle cost -------------------------------------------------------------------------


def idle(opts: Options) -> dict[str, Any]:
    """Idle open shards: GetRecords calls per shard-hour, then the first write's latency."""
    from fanout.testing.streamserver import Change

    server, stream = stream_server(opts.idle_shards, 0, closed=False)
    shards = stream.shards
    work = Path(tempfile.mkdtemp(prefix="idle-", dir=opts.logs))
    sinks = {
        "timing": {"type": LATENCY_TYPE, "stamp": "written_at"},
        "search": FILTERED_SINKS["search"],
        "audit": FILTERED_SINKS["audit"],
    }
    writes = min(opts.idle_writes, len(shards))
    timeout = opts.idle_warmup + opts.idle_seconds + 60 + writes * opts.max_idle_interval
    rng = random.Random(7)
    with server.run_in_thread():
        spec = fanout_spec(
            opts,
            fanout_config(
                work,
                {
                    "stream_arn": stream.arn,
                    "endpoint_url": server.endpoint_url,
                    "max_idle_interval": opts.max_idle_interval,
                },
                sinks,
            ),
            ready_when_running=len(shards),
            expect_records=writes,
            expect_sinks=["timing"],
            timeout=timeout,
        )
        with child(spec, work / "child.log", profile=profile_path(opts, "idle")) as proc:
            proc.wait_ready(120)
            started = time.monotonic()
            time.sleep(opts.idle_warmup)
            warmup_calls = server.calls_for("GetRecords")
            warmup_elapsed = time.monotonic() - started
            server.reset_counters()
            window_start = time.monotonic()
            cpu_start = proc.cpu_seconds()
            time.sleep(opts.idle_seconds)
            calls = server.calls_for("GetRecords")
            idle_cpu = proc.cpu_seconds() - cpu_start
            per_shard = [server.calls_for("GetRecords", s) for s in shards]
            window = time.monotonic() - window_start
            for k in range(writes):
                # a random moment of the target shard's polling cycle
                time.sleep(rng.uniform(0.0, opts.max_idle_interval))
                keys = {"pk": {"S": f"IDLE#{k}"}, "sk": {"S": "META"}}
                image = {**keys, "written_at": {"N": repr(time.time())}}
                server.put(shards[k * (len(shards) // writes)], Change("INSERT", keys, image))
            result = proc.result(timeout)
    values = sorted(v * 1000 for v in result.pop("latencies"))
    shard_hours = len(shards) * window / 3600
    return {
        "shards": len(shards),
        "seconds": window,
        "warmup_seconds": warmup_elapsed,
        "max_idle_interval": opts.max_idle_interval,
        "get_records_calls": calls,
        "calls_per_shard_hour": calls / shard_hours,
        "max_calls_one_shard": max(per_shard),
        "warmup_calls_per_shard": warmup_calls / len(shards),
        "first_write_ms": values,
        "first_write_max_ms": values[-1] if values else float("nan"),
        "worker_cpu_share": idle_cpu / window,
        "timed_out": result["timed_out"],
    }


# -- 4. scale -----------------------------------------------------------------------------


def scale(opts: Options) -> dict[str, Any]:
    """Many closed shards with a little data each, in one worker process."""
    per_shard = opts.scale_records_per_shard
    # open shards, as a large table has them: their readers go on polling once drained
    server, stream = stream_server(opts.scale_shards, per_shard, closed=False)
    total = opts.scale_shards * per_shard
    work = Path(tempfile.mkdtemp(prefix="scale-", dir=opts.logs))
    with server.run_in_thread():
        spec = fanout_spec(
            opts,
            fanout_config(
                work,
                {"stream_arn": stream.arn, "endpoint_url": server.endpoint_url},
                FILTERED_SINKS,
            ),
            expect_read=total,
            window_from="process",
        )
        result = run_child(spec, work / "child.log", 1800, profile=profile_path(opts, "scale"))
        describe_calls = server.calls_for("DescribeStream")
        get_records_calls = server.calls_for("GetRecords")
    if result["records"] != total:
        raise RuntimeError(f"fanout read {result['records']} of {total} records")
    return {
        "shards": opts.scale_shards,
        "records": result["records"],
        "seconds": result["wall"],
        "cpu_s": result["cpu"],
        "peak_rss_mb": result["peak_rss_mb"],
        "describe_stream_calls": describe_calls,
        "get_records_calls": get_records_calls,
    }
