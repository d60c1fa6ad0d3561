"""The ``budget`` scenario: peak RSS against ``max_buffered_bytes`` with a sink that hangs.

One worker process reads many open shards of wide items (about 50 KB each) into a sink that
never answers, so every record it reads stays buffered. The child measures its RSS once every
shard was polled and nothing was written yet (the baseline), then the driver writes the
records; the child waits until the budget is full and its readers wait for room, and reports
its peak RSS. The target: peak RSS minus baseline within the budget.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.harness import REGION, child
from bench.sinks import BLOCKED_TYPE

if TYPE_CHECKING:
    from bench.scenarios import Options
    from fanout.testing.streamserver import Change

MIB = 1024 * 1024


def wide_item(shard: int, n: int, size: int) -> Change:
    """An INSERT of an item of about ``size`` bytes in 1 KB string attributes."""
    from fanout.testing.streamserver import Change

    keys = {"pk": {"S": f"s{shard}-{n}"}}
    image: dict[str, Any] = dict(keys)
    for a in range(max(1, size // 1000)):
        image[f"attr{a:03d}"] = {"S": chr(97 + a % 26) * 1000}
    return Change("INSERT", keys, image, None)


def budget(opts: Options) -> dict[str, Any]:
    """Peak RSS of one worker holding everything it reads, against its byte budget."""
    from fanout.testing.streamserver import StreamServer

    shards, per_shard = opts.budget_shards, opts.budget_records_per_shard
    server = StreamServer()
    stream = server.add_stream("Wide", shards=shards, keys=("pk",))
    work = Path(tempfile.mkdtemp(prefix="budget-", dir=opts.logs))
    config: dict[str, Any] = {
        "streams": {
            "bench": {
                "stream_arn": stream.arn,
                "region": REGION,
                "max_idle_interval": 0.25,
            }
        },
        "sinks": {"stuck": {"type": BLOCKED_TYPE}},
        "checkpoints": {"path": str(work / "fanout.db")},
        "http": {"enabled": False},
        "log_level": "WARNING",
        "shutdown_grace": 1,
        "max_buffered_bytes": opts.budget_bytes,
    }
    with server.run_in_thread():
        config["streams"]["bench"]["endpoint_url"] = server.endpoint_url
        spec = {"consumer": "budget", "config": config, "shards": shards, "timeout": 120.0}
        with child(spec, work / "child.log") as proc:
            proc.wait_ready(120)
            started = time.monotonic()
            size = opts.budget_item_bytes
            for s, shard in enumerate(stream.shards):
                server.put(shard, [wide_item(s, n, size) for n in range(per_shard)])
            written_s = time.monotonic() - started
            result = proc.result(180)
    budget_mb = opts.budget_bytes / MIB
    over = result["peak_rss_mb"] - result["baseline_rss_mb"]
    return {
        "shards": shards,
        "records_written": shards * per_shard,
        "item_bytes": opts.budget_item_bytes,
        "records_read": result["records"],
        "budget_mb": budget_mb,
        "baseline_rss_mb": result["baseline_rss_mb"],
        "peak_rss_mb": result["peak_rss_mb"],
        "peak_over_baseline_mb": over,
        "over_baseline_per_budget": over / budget_mb,
        "buffered_mb": result["buffered_bytes"] / MIB,
        "reader_wait_s": result["budget_wait_s"],
        "fill_seconds": result["fill_seconds"],
        "write_seconds": written_s,
        "timed_out": result["timed_out"],
    }


def table(result: dict[str, Any]) -> list[str]:
    return [
        f"budget ({result['shards']:,} shards, {result['records_written']:,} items of "
        f"{result['item_bytes'] / 1000:.0f} KB, a sink that never answers)",
        f"  max_buffered_bytes {result['budget_mb']:.0f} MiB   baseline RSS "
        f"{result['baseline_rss_mb']:.0f} MiB   peak RSS {result['peak_rss_mb']:.0f} MiB "
        f"(+{result['peak_over_baseline_mb']:.0f} MiB, "
        f"{result['over_baseline_per_budget']:.0%} of the budget)",
        f"  buffered {result['buffered_mb']:.0f} MiB   read {result['records_read']:,} records   "
        f"readers waited {result['reader_wait_s']:,.0f} shard-seconds",
    ]


# -- the child process ------------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


async def run_budget(spec: dict[str, Any]) -> dict[str, Any]:
    """In the child: the worker with the blocked sink; READY once every shard was polled,
    then read until the budget is full and the readers wait."""
    import anyio

    from bench import sinks as bench_sinks
    from bench.measure import peak_rss_mb, ready
    from fanout.app import Worker
    from fanout.config import build_config

    config = build_config(spec["config"], bench_sinks.registry())
    worker = Worker(config, handle_signals=False)
    registry = worker.metrics.registry
    shards: int = spec["shards"]

    def sample(name: str, outcome: str | None = None) -> float:
        labels = {"stream": "bench"}
        if outcome is not None:
            labels["outcome"] = outcome
        return registry.get_sample_value(name, labels) or 0.0

    result: dict[str, Any] = {"consumer": "budget"}
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await worker.started.wait()
        with anyio.move_on_after(spec["timeout"]) as scope:
            while sample("fanout_get_records_calls_total", "empty") < shards:
                await anyio.sleep(0.05)
            result["baseline_rss_mb"] = _rss_mb()
            ready()
            started = time.monotonic()
            budget = worker.budget
            assert budget.limit is not None
            while budget.used < 0.75 * budget.limit or budget.waited_s < 1.0:
                await anyio.sleep(0.05)
            result["fill_seconds"] = time.monotonic() - started
            await anyio.sleep(2)  # anything that could still be read is read now
        result["timed_out"] = scope.cancelled_caught
        result["buffered_bytes"] = worker.budget.used
        result["budget_wait_s"] = worker.budget.waited_s
        result["records"] = int(sample("fanout_records_read_total"))
        result["peak_rss_mb"] = peak_rss_mb()
        result.setdefault("baseline_rss_mb", float("nan"))
        result.setdefault("fill_seconds", float("nan"))
        worker.stop()
    return result
