"""The byte budget holds against a sink that never returns: a worker process reading 1,000
shards of wide items (about 50 KB each) from the stream server stays within its baseline
memory plus ``max_buffered_bytes``, and its readers wait for room instead of reading on.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from fanout.testing.streamserver import Change, StreamServer
from tests.integration.process import WorkerProcess

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
SHARDS = 1000
RECORDS_PER_SHARD = 4
BUDGET = 96 * MIB
ATTRIBUTES, WIDTH = 50, 1000  # about 50 KB an item


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid``, in bytes."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) * 1024
    return found


def metrics(port: int) -> dict[str, float]:
    """Every sample of the worker's /metrics, summed over labels other than outcome/state
    (nothing while it does not answer yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            tag = sample.labels.get("outcome") or sample.labels.get("state")
            name = f"{sample.name}:{tag}" if tag else sample.name
            samples[name] = samples.get(name, 0.0) + sample.value
    return samples


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def start_worker(
    tmp_path: Path,
    server: StreamServer,
    table: str,
    port: int,
    sinks: dict[str, Any],
    **settings: Any,
) -> WorkerProcess:
    """A worker process reading ``table``'s stream from ``server`` into ``sinks``."""
    config: dict[str, Any] = {
        "streams": {
            "s": {
                "table": table,
                "endpoint_url": server.endpoint_url,
                "region": "us-east-1",
                "max_idle_interval": 0.25,
            }
        },
        "checkpoints": {"path": str(tmp_path / "fanout.db"), "interval": 1},
        "http": {"host": "127.0.0.1", "port": port},
        "shutdown_grace": 1,
        "sinks": sinks,
        **settings,
    }
    path = tmp_path / "fanout.yaml"
    path.write_text(yaml.safe_dump(config))
    return WorkerProcess(path, tmp_path / "out.jsonl", tmp_path / "worker.log")


def wide_item(shard: int, n: int) -> Change:
    keys = {"pk": {"S": f"s{shard}-{n}"}}
    image: dict[str, Any] = dict(keys)
    for a in range(ATTRIBUTES):
        image[f"attr{a:02d}"] = {"S": chr(97 + a % 26) * WIDTH}
    return Change("INSERT", keys, image, None)


def test_a_blocked_sink_keeps_the_worker_within_its_byte_budget(tmp_path: Path) -> None:
    server = StreamServer()
    stream = server.add_stream("Wide", shards=SHARDS, keys=("pk",))
    port = free_port()
    sinks = {
        "stuck": {
            "type": "handler",
            "handler": "tests.integration.budget_handlers:blocked",
            "timeout": 900,
            "copy_event": False,  # what it holds is what was read, nothing of its own
        }
    }
    with server.run_in_thread():
        worker = start_worker(tmp_path, server, "Wide", port, sinks, max_buffered_bytes=BUDGET)
        pid = worker.proc.pid
        try:
            # Baseline: every shard polled at least once, nothing to read yet.
            wait_until(
                lambda: metrics(port).get("fanout_get_records_calls_total:empty", 0) >= SHARDS,
                60,
                "every shard polled",
            )
            baseline = memory(pid)["VmRSS"]
            assert metrics(port)["fanout_buffered_bytes_limit"] == BUDGET

            for s, shard in enumerate(stream.shards):
                server.put(shard, [wide_item(s, n) for n in range(RECORDS_PER_SHARD)])
            written = SHARDS * RECORDS_PER_SHARD

            def saturated() -> bool:
                m = metrics(port)
                return (
                    m.get("fanout_buffered_bytes", 0) > 0.75 * BUDGET
                    and m.get("fanout_budget_wait_seconds_total", 0) > 1.0
                )

            wait_until(saturated, 40, "the budget to fill and readers to wait")
            time.sleep(2)  # readers that could still read would do so now
            m = metrics(port)
            peak = memory(pid)["VmHWM"]
            assert worker.proc.poll() is None, "the worker exited"
        finally:
            code = worker.terminate()
    log = (tmp_path / "worker.log").read_text(errors="replace")[-4000:]
    print(
        f"baseline RSS {baseline / MIB:.1f} MiB, peak RSS {peak / MIB:.1f} MiB, budget "
        f"{BUDGET / MIB:.0f} MiB, buffered {m['fanout_buffered_bytes'] / MIB:.1f} MiB, "
        f"records read {m['fanout_records_read_total']:.0f} of {written}"
    )
    assert m["fanout_buffered_bytes"] <= BUDGET
    assert m["fanout_records_read_total"] < written  # the readers stopped at the budget
    assert m.get("fanout_sink_records_total:delivered", 0) == 0  # the sink never returned
    assert peak <= baseline + BUDGET, (peak, baseline, log)
    assert code == 0, log


def test_the_default_budget_grows_and_shrinks_with_the_shards_being_read(tmp_path: Path) -> None:
    server = StreamServer()
    stream = server.add_stream("Few", shards=6, keys=("pk",))
    port = free_port()
    with server.run_in_thread():
        worker = start_worker(tmp_path, server, "Few", port, {"out": {"type": "stdout"}})
        try:

            def limit() -> float | None:
                return metrics(port).get("fanout_buffered_bytes_limit")

            wait_until(lambda: limit() == 6 * 16 * MIB, 30, "16 MiB for each of 6 shards")
            for shard in stream.shards[:4]:
                server.close_shard(shard)
            # two shards left: the least room, two full pages
            wait_until(lambda: limit() == 32 * MIB, 30, "the budget to shrink to 32 MiB")
        finally:
            code = worker.terminate()
    assert code == 0, (tmp_path / "worker.log").read_text(errors="replace")[-4000:]
