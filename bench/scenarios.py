"""The benchmark scenarios: throughput, latency, idle cost, scale and lease cost (the
byte budget's is in ``bench/budget.py``).

Each scenario returns a JSON-ready dict. The stream server runs in a thread of the driver
process and every measured consumer in a child process (``bench.child``), so a consumer's
CPU time and peak RSS are its own.
"""

from __future__ import annotations

import asyncio
import random
import statistics
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


def _fanout_spec(opts: Options, config: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "consumer": "fanout",
        "config": config,
        "tune_gc": opts.tune_gc,
        "min_poll_interval": opts.min_poll_interval,
        **more,
    }


def _fanout_config(
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


def _profile_path(opts: Options, name: str) -> Path | None:
    return opts.out / f"profile-{name}.txt" if opts.profile else None


# -- 1. throughput ------------------------------------------------------------------------


def _stream_server(
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


@dataclass(frozen=True)
class _Consumer:
    """A throughput consumer: its name in the results, what bench.child runs, from which tree."""

    name: str
    kind: str  # the spec's "consumer": fanout, floor or aiobotocore
    sinks: dict[str, dict[str, Any]] | None = None  # fanout's sinks
    tree: Path = REPO
    processes: int = 1  # fanout worker processes sharing the shards


def _throughput_consumers(opts: Options) -> list[_Consumer]:
    """The consumers of one round, in order; the baseline, if any, runs right after fanout."""
    names = list(opts.consumers)
    if opts.baseline is not None and "fanout" not in names:
        names.insert(0, "fanout")
    consumers: list[_Consumer] = []
    for name in names:
        if name == "fanout":
            consumers.append(_Consumer(name, "fanout", FILTERED_SINKS))
            if opts.baseline is not None:
                consumers.append(
                    _Consumer(opts.baseline.consumer, "fanout", FILTERED_SINKS, opts.baseline.tree)
                )
        elif name == "fanout-unfiltered":
            consumers.append(_Consumer(name, "fanout", UNFILTERED_SINKS))
        elif name == "fanout-handlers":
            consumers.append(_Consumer(name, "fanout", HANDLER_SINKS))
        else:
            consumers.append(_Consumer(name, name))
    if "fanout" in names:
        for count in opts.throughput_processes:
            if count > 1:
                consumers.append(
                    _Consumer(f"fanout-{count}p", "fanout", FILTERED_SINKS, processes=count)
                )
    return consumers


def _read_all(
    opts: Options, consumer: _Consumer, server: StreamServer, stream: Stream, round_: int
) -> dict[str, Any]:
    """One consumer reads every shard of ``stream`` to the end, once."""
    shards = len(stream.shards)
    work = Path(tempfile.mkdtemp(prefix=f"tp-{consumer.name}-", dir=opts.logs))
    spec: dict[str, Any] = {
        "consumer": consumer.kind,
        "url": server.endpoint_url,
        "arn": stream.arn,
        "shards": shards,
    }
    if consumer.sinks is not None:
        spec["config"] = _fanout_config(
            work, {"stream_arn": stream.arn, "endpoint_url": server.endpoint_url}, consumer.sinks
        )
    if consumer.kind != "aiobotocore":
        spec["tune_gc"] = opts.tune_gc
    if consumer.processes > 1:
        spec["processes"] = consumer.processes
    profile = f"{consumer.name}-{shards}" + (f"-{round_ + 1}" if opts.rounds > 1 else "")
    server_cpu = time.process_time()
    result = run_child(
        spec,
        work / "child.log",
        timeout=1800,
        profile=_profile_path(opts, profile),
        tree=consumer.tree,
    )
    # the stream server runs in this process; nothing else here uses CPU meanwhile
    result["server_cpu"] = time.process_time() - server_cpu
    result.pop("latencies", None)
    result.pop("written", None)
    records = result["records"]
    result.update(
        consumer=consumer.name,
        tree=str(consumer.tree),
        records_per_s=records / result["wall"] if result["wall"] else 0.0,
        cpu_s_per_million=result["cpu"] / records * 1e6 if records else 0.0,
    )
    return result


def _summary(runs: list[dict[str, Any]], shards: int, expected: int) -> dict[str, Any]:
    """One row from a consumer's rounds: medians, the best round, and every round."""
    rates = [r["records_per_s"] for r in runs]
    cpus = [r["cpu_s_per_million"] for r in runs]
    row = dict(runs[-1])  # consumer-specific details (sink counts...) of the last round
    row.update(
        shards=shards,
        expected=expected,
        rounds=len(runs),
        wall=statistics.median(r["wall"] for r in runs),
        cpu=statistics.median(r["cpu"] for r in runs),
        server_cpu=statistics.median(r["server_cpu"] for r in runs),
        peak_rss_mb=max(r["peak_rss_mb"] for r in runs),
        records_per_s=statistics.median(rates),
        best_records_per_s=max(rates),
        cpu_s_per_million=statistics.median(cpus),
        best_cpu_s_per_million=min(cpus),
        per_round=[
            {k: r[k] for k in ("wall", "cpu", "server_cpu", "records_per_s", "cpu_s_per_million")}
            for r in runs
        ],
    )
    if "timed_out" in row:
        row["timed_out"] = any(r["timed_out"] for r in runs)
    return row


def throughput(opts: Options) -> dict[str, Any]:
    """Closed shards full of 1,000-record pages, read to the end by each consumer.

    With ``rounds`` > 1 every consumer reads everything once per round, in the order of
    :func:`_throughput_consumers` in even rounds and in reverse in odd ones, so drift over
    the run (other load, thermal state) touches every consumer alike; rows report medians
    and the best round. A baseline consumer always runs next to fanout.
    """
    every = _throughput_consumers(opts)
    rows: list[dict[str, Any]] = []
    for shards in opts.throughput_shards:
        largest = shards == max(opts.throughput_shards)
        consumers = [c for c in every if c.processes == 1 or largest]
        per_shard = max(1, opts.throughput_records // shards)
        total = per_shard * shards
        server, stream = _stream_server(shards, per_shard, closed=True)
        runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in consumers}
        with server.run_in_thread():
            for round_ in range(opts.rounds):
                for consumer in consumers if round_ % 2 == 0 else consumers[::-1]:
                    if consumer.kind == "aiobotocore" and round_ > 0:
                        continue
                    result = _read_all(opts, consumer, server, stream, round_)
                    if result["records"] != total:
                        raise RuntimeError(
                            f"{consumer.name} read {result['records']} of {total} records"
                        )
                    runs[consumer.name].append(result)
        rows.extend(_summary(runs[c.name], shards, total) for c in consumers)
    by = {(r["consumer"], r["shards"]): r for r in rows}
    ratios: dict[str, dict[str, float]] = {}
    for shards in opts.throughput_shards:
        fan = by.get(("fanout", shards))
        if fan is None:
            continue
        entry: dict[str, float] = {}
        for other in ("floor", "aiobotocore"):
            base = by.get((other, shards))
            if base and base["records_per_s"]:
                entry[f"vs_{other}"] = fan["records_per_s"] / base["records_per_s"]
        handlers = by.get(("fanout-handlers", shards))
        floor = by.get(("floor", shards))
        if handlers and floor and floor["records_per_s"] and floor["cpu_s_per_million"]:
            # the default configuration a Lambda user runs, against the floor
            entry["handlers_vs_floor"] = handlers["records_per_s"] / floor["records_per_s"]
            entry["handlers_cpu_vs_floor"] = (
                handlers["cpu_s_per_million"] / floor["cpu_s_per_million"]
            )
        bare = by.get(("fanout-unfiltered", shards))
        if bare and bare["cpu_s_per_million"]:
            # CPU per record with three filtered sinks over the same run without filters.
            entry["filter_cpu_overhead"] = fan["cpu_s_per_million"] / bare["cpu_s_per_million"] - 1
        for count in opts.throughput_processes:
            several = by.get((f"fanout-{count}p", shards))
            if several and count > 1 and fan["records_per_s"]:
                # above 1: N processes read faster than one (2 cores: at most about 2)
                entry[f"processes_{count}"] = several["records_per_s"] / fan["records_per_s"]
        if opts.baseline is not None:
            old = by[(opts.baseline.consumer, shards)]
            if old["records_per_s"] and old["cpu_s_per_million"]:
                # above 1: the current tree reads faster / needs more CPU per record
                entry["vs_baseline"] = fan["records_per_s"] / old["records_per_s"]
                entry["cpu_vs_baseline"] = fan["cpu_s_per_million"] / old["cpu_s_per_million"]
        ratios[str(shards)] = entry
    return {
        "rows": rows,
        "ratios": ratios,
        "rounds": opts.rounds,
        "statistic": "median",
        "baseline": opts.baseline.describe() if opts.baseline is not None else None,
    }


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
        spec = _fanout_spec(
            opts,
            _fanout_config(
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
        with child(spec, work / "child.log", profile=_profile_path(opts, "latency")) as proc:
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

    server, stream = _stream_server(opts.idle_shards, 0, closed=False)
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
        spec = _fanout_spec(
            opts,
            _fanout_config(
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
        with child(spec, work / "child.log", profile=_profile_path(opts, "idle")) as proc:
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
    server, stream = _stream_server(opts.scale_shards, per_shard, closed=False)
    total = opts.scale_shards * per_shard
    work = Path(tempfile.mkdtemp(prefix="scale-", dir=opts.logs))
    with server.run_in_thread():
        spec = _fanout_spec(
            opts,
            _fanout_config(
                work,
                {"stream_arn": stream.arn, "endpoint_url": server.endpoint_url},
                FILTERED_SINKS,
            ),
            expect_read=total,
            window_from="process",
        )
        result = run_child(spec, work / "child.log", 1800, profile=_profile_path(opts, "scale"))
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


# -- 5. lease table cost --------------------------------------------------------------------


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
    server, stream = _stream_server(shards, 0, closed=False)
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
        config = _fanout_config(
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
        spec = _fanout_spec(
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
