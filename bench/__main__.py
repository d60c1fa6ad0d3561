"""``python -m bench`` (``make bench``): fanout's benchmark; prints a table, writes JSON.

Scenarios (all by default; pick with ``--scenario``, repeatable):

* ``throughput``: closed shards of pre-built 1,000-record pages on 4 and 64 shards, read to
  the end by fanout (three filtered null sinks; ``fanout-handlers``: the same as Lambda
  handlers at their default settings; ``fanout-unfiltered``), by the floor (aiohttp + orjson
  only, collector off) and by aiobotocore + TypeDeserializer; records/s and CPU seconds per
  million records; on 64 shards also by fanout as two worker processes sharing the shards
  (``--processes``);
* ``latency``: DynamoDB Local, 200 writes/s, write-to-sink latency percentiles;
* ``idle``: 100 idle shards; GetRecords calls per idle shard-hour, then the latency of the
  first write to an idle shard;
* ``scale``: 1,000 shards with a little data each; time to discover and drain, peak RSS;
* ``budget``: 1,000 shards of wide items (about 50 KB each) into a sink that never answers,
  with ``max_buffered_bytes`` 96 MiB; peak RSS over the RSS before records flowed, against
  the budget (``bench/budget.py``);
* ``leases``: one worker on 16 busy shards with the DynamoDB lease table (DynamoDB Local) at
  the default lease settings; the table's requests by purpose and the read and write units
  they make per shard-hour and per worker-hour (docs/leases.md, "Cost").

``--quick`` shrinks every scenario to a run of a minute or two. Results land in
``bench/results/<UTC time>.json`` (``--out`` to change the directory).

Throughput runs three rounds by default (``--rounds N``: medians and the best round; the
slow aiobotocore consumer reads once) and can measure
an older commit beside the current tree in the same run (``--baseline REV``, e.g.
``python -m bench -s throughput --consumers fanout,fanout-handlers --rounds 4 --baseline
main``: each of the two as of REV runs right after its current self; see
``bench/baseline.py``).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from bench import budget, leasecost, scenarios, throughput
from bench.baseline import BaselineError, checkout
from bench.harness import REPO

SCENARIOS: dict[str, Callable[[scenarios.Options], dict[str, Any]]] = {
    "throughput": throughput.throughput,
    "latency": scenarios.latency,
    "idle": scenarios.idle,
    "scale": scenarios.scale,
    "budget": budget.budget,
    "leases": leasecost.leases,
}

# (scenario, description, how to read the value from the results, comparison, bound)
TARGETS: list[tuple[str, str, Callable[[dict[str, Any]], float], str, float]] = [
    (
        "throughput",
        "fanout / floor records/s, 4 shards",
        lambda r: r["ratios"]["4"]["vs_floor"],
        ">=",
        0.8,
    ),
    (
        "throughput",
        "fanout / floor records/s, 64 shards",
        lambda r: r["ratios"]["64"]["vs_floor"],
        ">=",
        0.8,
    ),
    (
        "throughput",
        "fanout with handler sinks (defaults) / floor records/s, 4 shards",
        lambda r: r["ratios"]["4"]["handlers_vs_floor"],
        ">=",
        0.5,
    ),
    (
        "throughput",
        "fanout with handler sinks (defaults) / floor CPU per record, 4 shards",
        lambda r: r["ratios"]["4"]["handlers_cpu_vs_floor"],
        "<=",
        2.0,
    ),
    (
        "throughput",
        "fanout / aiobotocore records/s, 4 shards",
        lambda r: r["ratios"]["4"]["vs_aiobotocore"],
        ">=",
        4.0,
    ),
    (
        "throughput",
        "extra CPU per record for filters on 3 sinks, 4 shards",
        lambda r: r["ratios"]["4"]["filter_cpu_overhead"],
        "<=",
        0.15,
    ),
    (
        "throughput",
        "fanout 2 processes / 1 process records/s, 64 shards",
        lambda r: r["ratios"]["64"]["processes_2"],
        ">=",
        1.6,
    ),
    ("latency", "p50 write-to-sink ms", lambda r: r["p50_ms"], "<=", 150.0),
    ("latency", "p99 write-to-sink ms", lambda r: r["p99_ms"], "<=", 500.0),
    (
        "idle",
        "GetRecords calls per idle shard-hour",
        lambda r: r["calls_per_shard_hour"],
        "<=",
        1800.0,
    ),
    (
        "idle",
        "first write to an idle shard, ms over max_idle_interval",
        lambda r: r["first_write_max_ms"] - r["max_idle_interval"] * 1000,
        "<=",
        250.0,
    ),
    ("scale", "peak RSS MB, 1,000 shards", lambda r: r["peak_rss_mb"], "<=", 300.0),
    (
        "budget",
        "peak RSS over baseline / max_buffered_bytes, blocked sink",
        lambda r: r["over_baseline_per_budget"],
        "<=",
        1.0,
    ),
    (
        "leases",
        "lease table write units per busy shard-hour",
        lambda r: r["wru_per_busy_shard_hour"],
        "<=",
        760.0,
    ),
    (
        "leases",
        "lease table read units per shard-hour",
        lambda r: r["rru_per_shard_hour"],
        "<=",
        100.0,
    ),
]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scenario",
        "-s",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable); default: all",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, short periods")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--shards",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        help="throughput: shard counts, comma separated (default 4,64)",
    )
    parser.add_argument("--records", type=int, help="throughput: records per shard count")
    parser.add_argument(
        "--consumers",
        type=lambda s: tuple(s.split(",")),
        help="throughput: fanout,fanout-handlers,fanout-unfiltered,floor,aiobotocore (default all)",
    )
    parser.add_argument(
        "--processes",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        help="throughput: also run fanout with these numbers of worker processes sharing the "
        "shards, beside one process, on the largest shard count (default 2; 1 for none)",
    )
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        help="throughput: read everything this many times per consumer, alternating the "
        "order; report the median and the best round (default 3; aiobotocore reads once; "
        "--quick: 1)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="throughput: also run fanout as of REV (a commit, branch or tag), checked out "
        "into .cache/bench-baseline/<short sha>, next to the current tree's fanout",
    )
    parser.add_argument(
        "--baseline-dir",
        type=Path,
        metavar="DIR",
        help="where --baseline checkouts go (default .cache/bench-baseline)",
    )
    parser.add_argument("--idle-seconds", type=float, help="idle: measured period (default 60)")
    parser.add_argument("--idle-shards", type=int, help="idle: shard count (default 100)")
    parser.add_argument(
        "--idle-writes", type=int, help="idle: first writes to distinct idle shards (default 5)"
    )
    parser.add_argument("--latency-seconds", type=float, help="latency: writing period")
    parser.add_argument(
        "--max-idle-interval", type=float, help="latency and idle: the stream's max_idle_interval"
    )
    parser.add_argument(
        "--min-poll-interval",
        type=float,
        help="latency and idle: the readers' wait after a partial page (default: the worker's)",
    )
    parser.add_argument("--scale-shards", type=int, help="scale: shard count (default 1000)")
    parser.add_argument("--scale-records", type=int, help="scale: records per shard (default 20)")
    parser.add_argument(
        "--budget-mb", type=int, help="budget: max_buffered_bytes in MiB (default 96)"
    )
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="throughput: run fanout and the floor with CPython's default collector settings "
        "(by default fanout runs as `fanout run` tunes it, and the floor with it off)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample every fanout child with py-spy (collapsed stacks next to the results)",
    )
    return parser


def options(args: argparse.Namespace) -> scenarios.Options:
    out: Path = args.out
    opts = scenarios.Options.quick_run(out) if args.quick else scenarios.Options(out=out)
    if args.shards:
        opts.throughput_shards = args.shards
    if args.records:
        opts.throughput_records = args.records
    if args.consumers:
        opts.consumers = args.consumers
    if args.processes:
        opts.throughput_processes = args.processes
    if args.rounds is not None:
        opts.rounds = args.rounds
    if args.idle_seconds is not None:
        opts.idle_seconds = args.idle_seconds
    if args.idle_shards is not None:
        opts.idle_shards = args.idle_shards
    if args.idle_writes is not None:
        opts.idle_writes = args.idle_writes
    if args.latency_seconds is not None:
        opts.latency_seconds = args.latency_seconds
    if args.max_idle_interval is not None:
        opts.max_idle_interval = args.max_idle_interval
    if args.min_poll_interval is not None:
        opts.min_poll_interval = args.min_poll_interval
    if args.scale_shards is not None:
        opts.scale_shards = args.scale_shards
    if args.scale_records is not None:
        opts.scale_records_per_shard = args.scale_records
    if args.budget_mb is not None:
        opts.budget_bytes = args.budget_mb * 1024 * 1024
    opts.profile = args.profile
    opts.tune_gc = not args.default_gc
    return opts


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "load_average_1m": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _fmt(value: float, digits: int = 0) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def _throughput_table(tp: dict[str, Any]) -> list[str]:
    rounds = tp.get("rounds", 1)
    several = rounds > 1
    title = "throughput (closed shards, 1,000-record pages, NEW_AND_OLD_IMAGES"
    if several:
        title += f"; medians of {rounds} rounds, best round in brackets"
    lines = [title + ")"]
    width = max([17, *(len(row["consumer"]) for row in tp["rows"])])
    best_rate = f" {'(best)':>10}" if several else ""
    best_cpu = f" {'(best)':>8}" if several else ""
    lines.append(
        f"  {'consumer':<{width}} {'shards':>6} {'records':>9} {'seconds':>8} "
        f"{'records/s':>10}{best_rate} {'CPU s/M rec':>11}{best_cpu} {'peak RSS MB':>11} "
        f"{'server CPU':>10}"
    )
    for row in tp["rows"]:
        best_rate = best_cpu = ""
        if several:
            best_rate = " " + f"({row['best_records_per_s']:,.0f})".rjust(10)
            best_cpu = " " + f"({row['best_cpu_s_per_million']:.1f})".rjust(8)
        lines.append(
            f"  {row['consumer']:<{width}} {row['shards']:>6} {row['records']:>9,} "
            f"{row['wall']:>8.2f} {row['records_per_s']:>10,.0f}{best_rate} "
            f"{row['cpu_s_per_million']:>11.1f}{best_cpu} {row['peak_rss_mb']:>11.0f} "
            f"{row['server_cpu'] / row['wall']:>10.0%}"
        )
    for row in tp["rows"]:
        if row.get("reread"):
            lines.append(
                f"  {row['consumer']} on {row['shards']} shards read {row['reread']:,} records "
                f"twice over {row['rounds']} rounds: leases that moved between its processes "
                "were read again from their checkpoints (at least once)"
            )
    by = {(row["consumer"], row["shards"]): row for row in tp["rows"]}
    baseline = tp.get("baseline")
    for shards, ratio in tp["ratios"].items():
        parts = []
        for other in ("floor", "aiobotocore"):
            if f"vs_{other}" in ratio:
                parts.append(f"{other} x{ratio[f'vs_{other}']:.2f}")
        if "handlers_vs_floor" in ratio:
            parts.append(
                f"with handler sinks: floor x{ratio['handlers_vs_floor']:.2f}, "
                f"CPU/record x{ratio['handlers_cpu_vs_floor']:.2f} the floor's"
            )
        if "filter_cpu_overhead" in ratio:
            parts.append(f"filters +{ratio['filter_cpu_overhead']:.0%} CPU/record")
        for key, value in ratio.items():
            if key.startswith("processes_"):
                parts.append(f"{key.removeprefix('processes_')} processes x{value:.2f}")
        if parts:
            lines.append(f"  fanout on {shards} shards: " + ", ".join(parts))
        for prefix, name in (("", "fanout"), ("handlers_", "fanout-handlers")):
            if not baseline or f"{prefix}vs_baseline" not in ratio:
                continue
            old_name = name + baseline["consumer"].removeprefix("fanout")
            new, old = by[(name, int(shards))], by[(old_name, int(shards))]
            lines.append(
                f"  {name} vs {old_name} ({baseline['rev']}) on {shards} shards: "
                f"records/s {new['records_per_s']:,.0f} vs {old['records_per_s']:,.0f} "
                f"(x{ratio[f'{prefix}vs_baseline']:.2f}), CPU s/M rec "
                f"{new['cpu_s_per_million']:.1f} vs {old['cpu_s_per_million']:.1f} "
                f"(x{ratio[f'{prefix}cpu_vs_baseline']:.2f})"
            )
    return lines


def table(results: dict[str, Any]) -> str:
    lines: list[str] = []
    tp = results.get("throughput")
    if tp:
        lines.extend(_throughput_table(tp))
    lat = results.get("latency")
    if lat:
        lines.append(
            f"latency (DynamoDB Local, {lat['rate']:.0f} writes/s, {lat['timed']} timed over "
            f"{lat['seconds']:.0f}s after {lat['warmup_seconds']:.0f}s of warm-up writes)"
        )
        lines.append(
            f"  p50 {_fmt(lat['p50_ms'])} ms   p95 {_fmt(lat['p95_ms'])} ms   "
            f"p99 {_fmt(lat['p99_ms'])} ms   max {_fmt(lat['max_ms'])} ms   "
            f"GetRecords {lat['get_records_per_s']:.1f}/s"
        )
    idle = results.get("idle")
    if idle:
        lines.append(
            f"idle ({idle['shards']} open shards, {idle['seconds']:.0f}s after "
            f"{idle['warmup_seconds']:.0f}s warm-up, max_idle_interval "
            f"{idle['max_idle_interval']:g}s)"
        )
        lines.append(
            f"  GetRecords per idle shard-hour {idle['calls_per_shard_hour']:,.0f}   "
            f"warm-up calls per shard {idle['warmup_calls_per_shard']:.1f}   "
            f"worker CPU {idle['worker_cpu_share']:.1%} of a core"
        )
        lines.append(
            "  "
            "first write delivered in " + ", ".join(_fmt(v) for v in idle["first_write_ms"]) + " ms"
        )
    ls = results.get("leases")
    if ls:
        lines.append(
            f"lease table ({ls['shards']} busy shards, {ls['seconds']:.0f}s, lease_duration "
            f"{ls['lease_duration']:g}s, checkpoints every {ls['checkpoint_interval']:g}s)"
        )
        lines.append(
            f"  per shard-hour: {ls['checkpoint_writes_per_shard_hour']:,.0f} checkpoint writes "
            f"({ls['wru_per_busy_shard_hour']:,.0f} WRU), {ls['rru_per_shard_hour']:,.1f} RRU "
            f"(its {ls['shard_row_bytes']} B row in each scan), other writes "
            f"{ls['other_writes_per_shard_hour']:,.1f}"
        )
        lines.append(
            f"  per worker-hour: {ls['heartbeats_per_worker_hour']:,.0f} heartbeats "
            f"({ls['wru_per_worker_hour']:,.0f} WRU), {ls['scans_per_worker_hour']:,.0f} scans "
            f"of {ls['rru_per_scan']} RRU each"
        )
    sc = results.get("scale")
    if sc:
        lines.append(f"scale ({sc['shards']:,} shards, {sc['records']:,} records, one process)")
        lines.append(
            f"  discover + drain {sc['seconds']:.1f}s   CPU {sc['cpu_s']:.1f}s   "
            f"peak RSS {sc['peak_rss_mb']:.0f} MB   DescribeStream calls "
            f"{sc['describe_stream_calls']}"
        )
    bg = results.get("budget")
    if bg:
        lines.extend(budget.table(bg))
    return "\n".join(lines)


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for scenario, what, get, op, bound in TARGETS:
        if scenario not in results:
            continue
        try:
            value = float(get(results[scenario]))
        except (KeyError, TypeError):
            continue
        ok = value >= bound if op == ">=" else value <= bound
        checks.append({"target": what, "value": value, "bound": f"{op} {bound:g}", "met": ok})
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    opts = options(args)
    chosen = args.scenario or list(SCENARIOS)
    if args.baseline is not None:
        if "throughput" not in chosen:
            parser.error("--baseline applies to the throughput scenario (-s throughput)")
        try:
            opts.baseline = checkout(args.baseline, root=args.baseline_dir)
        except BaselineError as exc:
            parser.error(f"--baseline {args.baseline}: {exc}")
        print(
            f"baseline {args.baseline}: {opts.baseline.sha} in {opts.baseline.tree}",
            file=sys.stderr,
        )
    started = datetime.datetime.now(datetime.UTC)
    results: dict[str, Any] = {}
    opts.out.mkdir(parents=True, exist_ok=True)
    host = machine()
    if host["load_average_1m"] > 0.5:
        print(
            f"note: load average {host['load_average_1m']:.1f} at start; other processes "
            "compete for the CPU (records/s suffers, CPU s/M records much less)",
            file=sys.stderr,
        )
    for name in chosen:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = SCENARIOS[name](opts)
    checks = check_targets(results)
    report: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "quick": opts.quick,
        "machine": host,
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "results": results,
        "targets": checks,
    }
    path = opts.out / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(table(results))
    if checks:
        print("targets")
        for check in checks:
            mark = "ok  " if check["met"] else "MISS"
            print(f"  {mark} {check['target']}: {check['value']:,.2f} ({check['bound']})")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
