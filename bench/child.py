"""One measured consumer in its own process: ``python -m bench.child`` with a JSON spec on stdin.

Consumers:

* ``fanout``: the real ``fanout.app.Worker`` with benchmark sinks (see ``bench.sinks``); with
  ``processes`` N > 1 this process starts N members (``bench.child`` again, one worker each,
  sharing the shards through the SQLite store's leases as ``fanout run --processes N`` does)
  and reports their sums: records, CPU seconds of all of them, and the wall time from the
  first member's start to the last record any member read;
* ``floor``: an asyncio loop that only fetches GetRecords pages with aiohttp and parses them
  with ``orjson.loads``: the least any Python consumer of the wire protocol can do;
* ``aiobotocore``: what most users write first: aiobotocore's ``get_records`` and boto3's
  ``TypeDeserializer`` on every image, one task per shard.

The process prints ``READY`` once it is reading (when the spec asks for it) and, last, one
JSON line with what it measured: wall and CPU seconds of the measured window, records read,
peak RSS, and consumer-specific details. CPU is ``time.process_time()`` (every thread of this
process), so the stream server's work is never counted.

``--baseline`` runs an older checkout's copy of this module with the spec the current
harness writes, so the spec only grows by optional fields, and the fields an older child
reads (``consumer``, ``config``, ``url``, ``arn``, ``shards``, ``tune_gc``...) keep their meaning.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import time
from typing import Any, cast

import orjson

from bench.measure import Window, peak_rss_mb, ready

STREAMS = "DynamoDBStreams_20120810."
# The stream server checks the header's shape only; the floor does not sign.
_FAKE_AUTH = (
    "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/dynamodb/aws4_request, "
    "SignedHeaders=content-type;host;x-amz-target, Signature=0"
)


# -- fanout -------------------------------------------------------------------------------


async def run_fanout(spec: dict[str, Any]) -> dict[str, Any]:
    import anyio

    from bench import sinks as bench_sinks
    from fanout.app import Worker
    from fanout.config import build_config
    from fanout.observe import logs
    from fanout.runtime import tune_gc

    config = build_config(spec["config"], bench_sinks.registry())
    # As ``fanout run`` logs: child.log then has each line's fields, not just its message.
    logs.setup("text", spec["config"].get("log_level", "WARNING"))
    options = None
    if spec.get("min_poll_interval") is not None:
        from fanout.stream.reader import ReaderOptions

        options = ReaderOptions(min_poll_interval=spec["min_poll_interval"])
    group: dict[str, Any] = {}
    if spec.get("group_size", 1) > 1:
        group = {"group_size": spec["group_size"]}
    worker = Worker(config, handle_signals=False, reader_options=options, **group)
    if spec.get("tune_gc", True):
        tune_gc()  # as ``fanout run`` does
    shards: int = spec.get("shards", 0)
    expect: int = spec.get("expect_records", 0)
    expect_read: int = spec.get("expect_read", 0)
    timeout: float = spec.get("timeout", 600.0)
    window = Window()
    if spec.get("window_from") == "process":
        window.start()
    code: list[int] = []

    async def run() -> None:
        code.append(await worker.run())

    def running() -> int:
        return sum(len(w.running) for w in worker.workers)

    def finished() -> int:
        return sum(len(w.finished) for w in worker.workers)

    registry = worker.metrics.registry

    def read() -> int:
        total = 0.0
        for name in config.streams:
            total += registry.get_sample_value("fanout_records_read_total", {"stream": name}) or 0
        return int(total)

    def get_records_calls() -> int:
        total = 0.0
        for metric in registry.collect():
            if metric.name == "fanout_get_records_calls":
                total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
        return int(total)

    def pending() -> bool:
        return any(p.pending for w in worker.workers for p in list(w.progress.values()))

    timed_out = False
    lease_requests: list[list[Any]] = []
    leases_held = 0
    # A group member: when it last read a record or held unsettled ones (the group's wall
    # time ends at the latest of these; monotonic time is one clock for every process).
    last_active = time.monotonic()

    async def watch_activity() -> None:
        nonlocal last_active
        seen = -1
        while True:
            now = read()
            if now != seen or pending():
                seen, last_active = now, time.monotonic()
            await anyio.sleep(0.005)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await worker.started.wait()
        if spec.get("window_from") != "process":
            window.start()
        started_at = time.monotonic()
        if group:
            tg.start_soon(watch_activity)
        with anyio.move_on_after(timeout) as scope:
            if spec.get("ready_when_running"):
                while running() < spec["ready_when_running"]:
                    await anyio.sleep(0.01)
                ready()
            if spec.get("lease_window"):
                # the lease store's requests over a window, after a warm-up
                await anyio.sleep(spec.get("lease_warmup", 0.0))
                before = dict(getattr(worker.store, "requests", {}))
                window.start()
                await anyio.sleep(spec["lease_window"])
                after = dict(getattr(worker.store, "requests", {}))
                leases_held = len(worker.leases.held)
                lease_requests = [
                    [purpose, op, n - before.get((purpose, op), 0)]
                    for (purpose, op), n in sorted(after.items())
                ]
            elif expect:
                while sum(bench_sinks.counts.get(n, 0) for n in spec["expect_sinks"]) < expect:
                    await anyio.sleep(0.005)
            elif expect_read:
                while read() < expect_read or pending():
                    await anyio.sleep(0.01)
            else:
                while finished() < shards:
                    await anyio.sleep(0.01)
        timed_out = scope.cancelled_caught
        window.stop()
        ended_at = time.monotonic()
        worker.stop()
        if group:
            tg.cancel_scope.cancel()
    if group:
        ended_at = last_active
    return {
        "window_start": started_at,
        "window_end": ended_at,
        "consumer": "fanout",
        "records": read(),
        "wall": window.wall,
        "cpu": window.cpu,
        "peak_rss_mb": peak_rss_mb(),
        "sinks": dict(bench_sinks.counts),
        # records each bench handler (bench/handlers.py) was called with, if any ran
        "handled": dict(sys.modules["bench.handlers"].seen)
        if "bench.handlers" in sys.modules
        else {},
        "latencies": [lat for lat, _ in bench_sinks.latencies],
        "written": [written for _, written in bench_sinks.latencies],
        "finished_shards": finished(),
        "get_records_calls": get_records_calls(),
        "timed_out": timed_out,
        "exit_code": code[0] if code else None,
        "lease_requests": lease_requests,
        "leases_held": leases_held,
    }


# -- floor --------------------------------------------------------------------------------


async def run_floor(spec: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    url: str = spec["url"]
    arn: str = spec["arn"]
    if spec.get("tune_gc", True):
        # The floor parses pages and drops them: nothing it allocates is cyclic, so the
        # cycle collector has nothing to find and the floor does not pay for it.
        gc.collect()
        gc.freeze()
        gc.disable()
    window = Window()
    records = 0
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def call(op: str, body: dict[str, Any]) -> bytes:
            headers = {
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": STREAMS + op,
                "Authorization": _FAKE_AUTH,
            }
            async with http.post(url, data=orjson.dumps(body), headers=headers) as resp:
                payload = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{op}: HTTP {resp.status}: {payload[:200]!r}")
                return payload

        async def read(shard_id: str) -> None:
            nonlocal records
            answer = orjson.loads(
                await call(
                    "GetShardIterator",
                    {"StreamArn": arn, "ShardId": shard_id, "ShardIteratorType": "TRIM_HORIZON"},
                )
            )
            iterator: str | None = answer["ShardIterator"]
            while iterator:
                page = orjson.loads(await call("GetRecords", {"ShardIterator": iterator}))
                records += len(page["Records"])
                iterator = page.get("NextShardIterator")

        window.start()
        shard_ids: list[str] = []
        start: str | None = None
        while True:
            body: dict[str, Any] = {"StreamArn": arn}
            if start:
                body["ExclusiveStartShardId"] = start
            desc = orjson.loads(await call("DescribeStream", body))["StreamDescription"]
            shard_ids.extend(s["ShardId"] for s in desc["Shards"])
            start = desc.get("LastEvaluatedShardId")
            if not start:
                break
        await asyncio.gather(*(read(s) for s in shard_ids))
        window.stop()
    return {
        "consumer": "floor",
        "records": records,
        "wall": window.wall,
        "cpu": window.cpu,
        "peak_rss_mb": peak_rss_mb(),
    }


# -- aiobotocore + TypeDeserializer -------------------------------------------------------


async def run_aiobotocore(spec: dict[str, Any]) -> dict[str, Any]:
    from aiobotocore.session import get_session
    from boto3.dynamodb.types import TypeDeserializer

    url: str = spec["url"]
    arn: str = spec["arn"]
    deserializer = TypeDeserializer()
    window = Window()
    records = 0
    session = get_session()
    async with session.create_client(
        "dynamodbstreams", endpoint_url=url, region_name="us-east-1"
    ) as client:

        async def read(shard_id: str) -> None:
            nonlocal records
            answer = await client.get_shard_iterator(
                StreamArn=arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
            )
            iterator: str | None = answer["ShardIterator"]
            while iterator:
                page = await client.get_records(ShardIterator=iterator)
                for record in page["Records"]:
                    data = cast("dict[str, Any]", record["dynamodb"])
                    for part in ("NewImage", "OldImage"):
                        image = data.get(part)
                        if image is not None:
                            data[part] = {k: deserializer.deserialize(v) for k, v in image.items()}
                    records += 1
                iterator = page.get("NextShardIterator")

        window.start()
        shard_ids: list[str] = []
        kwargs: dict[str, Any] = {}
        while True:
            desc = (await client.describe_stream(StreamArn=arn, **kwargs))["StreamDescription"]
            shard_ids.extend(s["ShardId"] for s in desc["Shards"])
            last = desc.get("LastEvaluatedShardId")
            if not last:
                break
            kwargs = {"ExclusiveStartShardId": last}
        await asyncio.gather(*(read(s) for s in shard_ids))
        window.stop()
    return {
        "consumer": "aiobotocore",
        "records": records,
        "wall": window.wall,
        "cpu": window.cpu,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_group(spec: dict[str, Any]) -> dict[str, Any]:
    """``processes`` members, each a ``bench.child`` running one fanout worker; their sums."""
    count = int(spec["processes"])
    members = []
    for _ in range(count):
        member = dict(spec, processes=1, group_size=count)
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=os.environ,
        )
        assert proc.stdin is not None
        proc.stdin.write(orjson.dumps(member))
        proc.stdin.close()
        members.append(proc)
    results = []
    for proc in members:
        assert proc.stdout is not None
        out = proc.stdout.read()
        code = proc.wait()
        lines = [line for line in out.splitlines() if line.startswith(b"{")]
        if code != 0 or not lines:
            raise RuntimeError(f"a group member exited with {code}")
        results.append(orjson.loads(lines[-1]))
    start = min(r["window_start"] for r in results)
    end = max(r["window_end"] for r in results)
    sinks: dict[str, int] = {}
    for r in results:
        for name, n in r["sinks"].items():
            sinks[name] = sinks.get(name, 0) + n
    return {
        "consumer": "fanout",
        "processes": count,
        "records": sum(r["records"] for r in results),
        "wall": end - start,
        "cpu": sum(r["cpu"] for r in results),
        "peak_rss_mb": sum(r["peak_rss_mb"] for r in results),
        "sinks": sinks,
        "latencies": [],
        "written": [],
        "finished_shards": max(r["finished_shards"] for r in results),
        "get_records_calls": sum(r["get_records_calls"] for r in results),
        "timed_out": any(r["timed_out"] for r in results),
        "exit_code": max(r["exit_code"] or 0 for r in results),
        "members": [
            {k: r[k] for k in ("records", "cpu", "wall", "peak_rss_mb", "get_records_calls")}
            for r in results
        ],
    }


async def _fanout(spec: dict[str, Any]) -> dict[str, Any]:
    if spec.get("processes", 1) > 1:
        return await asyncio.to_thread(run_group, spec)
    return await run_fanout(spec)


async def _budget(spec: dict[str, Any]) -> dict[str, Any]:
    from bench.budget import run_budget

    return await run_budget(spec)


CONSUMERS = {
    "fanout": _fanout,
    "floor": run_floor,
    "aiobotocore": run_aiobotocore,
    "budget": _budget,
}


def main() -> int:
    spec: dict[str, Any] = orjson.loads(sys.stdin.buffer.read())
    profile = spec.get("profile")
    consumer = CONSUMERS[spec["consumer"]]
    result = asyncio.run(consumer(spec))
    if profile:
        result["profile"] = profile
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
