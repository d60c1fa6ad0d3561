"""The throughput scenario: closed shards full of 1,000-record pages, read to the end by
each consumer (fanout with null sinks, with Lambda handlers at their defaults, without
filters; the floor; aiobotocore), in rounds."""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.harness import REPO, run_child
from bench.scenarios import (
    FILTERED_SINKS,
    HANDLER_SINKS,
    UNFILTERED_SINKS,
    Options,
    fanout_config,
    profile_path,
    stream_server,
)

if TYPE_CHECKING:
    from fanout.testing.streamserver import Stream, StreamServer


@dataclass(frozen=True)
class _Consumer:
    """A throughput consumer: its name in the results, what bench.child runs, from which tree."""

    name: str
    kind: str  # the spec's "consumer": fanout, floor or aiobotocore
    sinks: dict[str, dict[str, Any]] | None = None  # fanout's sinks
    tree: Path = REPO
    processes: int = 1  # fanout worker processes sharing the shards


def _throughput_consumers(opts: Options) -> list[_Consumer]:
    """The consumers of one round, in order; the baseline, if any, runs right after fanout
    (and right after fanout-handlers, when it runs: the same handler sinks, older code)."""
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
            if opts.baseline is not None:
                old = opts.baseline.named(name)
                consumers.append(_Consumer(old, "fanout", HANDLER_SINKS, opts.baseline.tree))
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
    opts: Options,
    consumer: _Consumer,
    server: StreamServer,
    stream: Stream,
    round_: int,
    total: int,
) -> dict[str, Any]:
    """One consumer reads every shard of ``stream`` (``total`` records) to the end, once.

    Several worker processes may read a few pages twice: a lease that moves between them
    (a hand-over near the end of the run) is read again from its checkpoint, as leases
    promise (at least once). Those are reported (``reread``); rates count each record once.
    """
    shards = len(stream.shards)
    work = Path(tempfile.mkdtemp(prefix=f"tp-{consumer.name}-", dir=opts.logs))
    spec: dict[str, Any] = {
        "consumer": consumer.kind,
        "url": server.endpoint_url,
        "arn": stream.arn,
        "shards": shards,
    }
    if consumer.sinks is not None:
        spec["config"] = fanout_config(
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
        profile=profile_path(opts, profile),
        tree=consumer.tree,
    )
    # the stream server runs in this process; nothing else here uses CPU meanwhile
    result["server_cpu"] = time.process_time() - server_cpu
    result.pop("latencies", None)
    result.pop("written", None)
    records = result["records"]
    if records != total and not (consumer.processes > 1 and records > total):
        raise RuntimeError(f"{consumer.name} read {records} of {total} records")
    result["reread"] = records - total
    result.update(
        consumer=consumer.name,
        tree=str(consumer.tree),
        records_per_s=total / result["wall"] if result["wall"] else 0.0,
        cpu_s_per_million=result["cpu"] / total * 1e6 if total else 0.0,
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
        records=expected,
        reread=sum(r["reread"] for r in runs),
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
        server, stream = stream_server(shards, per_shard, closed=True)
        runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in consumers}
        with server.run_in_thread():
            for round_ in range(opts.rounds):
                for consumer in consumers if round_ % 2 == 0 else consumers[::-1]:
                    if consumer.kind == "aiobotocore" and round_ > 0:
                        continue
                    result = _read_all(opts, consumer, server, stream, round_, total)
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
            for prefix, name in (("", "fanout"), ("handlers_", "fanout-handlers")):
                new, old = by.get((name, shards)), by.get((opts.baseline.named(name), shards))
                if new and old and old["records_per_s"] and old["cpu_s_per_million"]:
                    # above 1: the current tree reads faster / needs more CPU per record
                    entry[f"{prefix}vs_baseline"] = new["records_per_s"] / old["records_per_s"]
                    entry[f"{prefix}cpu_vs_baseline"] = (
                        new["cpu_s_per_million"] / old["cpu_s_per_million"]
                    )
        ratios[str(shards)] = entry
    return {
        "rows": rows,
        "ratios": ratios,
        "rounds": opts.rounds,
        "statistic": "median",
        "baseline": opts.baseline.describe() if opts.baseline is not None else None,
    }
