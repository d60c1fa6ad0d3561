from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import anyio
from prometheus_client.parser import text_string_to_metric_families

from fanout.app import Worker
from fanout.config import build_config
from fanout.errors import CheckpointError
from fanout.observe import health
from fanout.observe.metrics import Metrics


@dataclass
class FakeStream:
    name: str
    ready: bool = True
    discovery_error: str | None = None
    discovered_at: float | None = field(default_factory=time.monotonic)
    discovery_interval: float = 60.0


class FakeStore:
    def __init__(self) -> None:
        self.error: Exception | None = None
        self.delay = 0.0
        self.calls = 0

    async def load(self, stream_arn: str) -> dict[str, Any]:
        self.calls += 1
        await anyio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return {}


class FakeWorker:
    def __init__(self) -> None:
        self.started = anyio.Event()
        self.stopping = False
        self.store = FakeStore()
        self.streams: list[FakeStream] = [FakeStream("orders")]
        self.stalled: list[tuple[str, str, float]] = []
        self.metrics = Metrics()

    def stalled_shards(self) -> list[tuple[str, str, float]]:
        return self.stalled


async def ready(worker: FakeWorker) -> tuple[bool, dict[str, Any]]:
    return await health.readiness(worker)


async def test_not_ready_while_starting_and_the_store_is_not_touched():
    worker = FakeWorker()
    assert await ready(worker) == (False, {"starting": True})
    assert worker.store.calls == 0
    worker.started.set()
    assert await ready(worker) == (True, {})
    assert worker.store.calls == 1


async def test_not_ready_once_stopping():
    worker = FakeWorker()
    worker.started.set()
    worker.stopping = True
    assert await ready(worker) == (False, {"stopping": True})


async def test_not_ready_when_the_checkpoint_store_fails():
    worker = FakeWorker()
    worker.started.set()
    worker.store.error = CheckpointError("checkpoint store /x/fanout.db: disk I/O error")
    ok, problems = await ready(worker)
    assert not ok
    # the component and a code; the text (paths, ARNs, account ids) stays in the logs
    assert problems == {"checkpoint_store": "CheckpointError"}
    worker.store.error = None
    assert await ready(worker) == (True, {})


async def test_not_ready_when_the_checkpoint_store_does_not_answer(monkeypatch):
    monkeypatch.setattr(health, "_STORE_TIMEOUT_S", 0.05)
    worker = FakeWorker()
    worker.started.set()
    worker.store.delay = 1.0
    ok, problems = await ready(worker)
    assert not ok
    assert problems["checkpoint_store"] == "timeout"


async def test_not_ready_until_every_stream_was_listed():
    worker = FakeWorker()
    worker.started.set()
    worker.streams.append(FakeStream("users", ready=False, discovered_at=None))
    assert await ready(worker) == (False, {"streams_not_ready": ["users"]})


async def test_not_ready_when_the_last_discovery_failed():
    worker = FakeWorker()
    worker.started.set()
    worker.streams[0].discovery_error = "DescribeStream: 500 InternalServerError"
    ok, problems = await ready(worker)
    assert not ok
    assert problems == {
        "streams_unreachable": [{"stream": "orders", "error": "InternalServerError"}]
    }


async def test_not_ready_when_no_discovery_succeeded_for_too_long():
    worker = FakeWorker()
    worker.started.set()
    stream = worker.streams[0]
    stream.discovery_interval = 10.0
    stream.discovered_at = time.monotonic() - 2 * 10 - health._DISCOVERY_SLACK_S + 5
    assert await ready(worker) == (True, {})
    stream.discovered_at = time.monotonic() - 2 * 10 - health._DISCOVERY_SLACK_S - 5
    ok, problems = await ready(worker)
    assert not ok
    assert problems["streams_unreachable"][0]["stream"] == "orders"
    assert problems["streams_unreachable"][0]["error"] == "discovery_overdue"


async def test_not_ready_while_a_shard_is_stalled():
    worker = FakeWorker()
    worker.started.set()
    worker.stalled = [("orders", "shardId-1", 312.345)]
    ok, problems = await ready(worker)
    assert not ok
    assert problems == {
        "stalled_shards": [{"stream": "orders", "shard": "shardId-1", "seconds": 312.3}]
    }


@asynccontextmanager
async def served(tmp_path) -> AsyncIterator[tuple[Worker, str]]:
    config = build_config(
        {
            "streams": {"orders": {"table": "Orders"}},
            "checkpoints": {"path": str(tmp_path / "fanout.db")},
            "http": {"host": "127.0.0.1", "port": 0},
            "sinks": {"audit": {"type": "file", "path": str(tmp_path / "a.jsonl")}},
        }
    )
    worker = Worker(config, handle_signals=False)
    async with anyio.create_task_group() as tg:
        port = await tg.start(health.serve, worker)
        try:
            yield worker, f"http://127.0.0.1:{port}"
        finally:
            tg.cancel_scope.cancel()
    await worker.store.aclose()


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, resp.headers["Content-Type"], await resp.text()


async def test_endpoints_over_http(tmp_path):
    async with served(tmp_path) as (worker, base):
        status, ctype, body = await get(f"{base}/healthz")
        assert (status, body) == (200, '{"status":"ok"}')
        assert ctype.startswith("application/json")

        status, _, body = await get(f"{base}/readyz")
        assert status == 503
        assert '"starting":true' in body

        worker.started.set()
        status, _, body = await get(f"{base}/readyz")
        assert (status, body) == (200, '{"status":"ready"}')

        status, ctype, body = await get(f"{base}/metrics")
        assert status == 200
        assert ctype.startswith("text/plain; version=")
        names = {f.name for f in text_string_to_metric_families(body)}
        assert {"fanout_build_info", "fanout_records_read", "fanout_sink_records"} <= names

        status, _, _ = await get(f"{base}/nope")
        assert status == 404


async def test_metrics_scrape_refreshes_the_derived_gauges(tmp_path):
    async with served(tmp_path) as (worker, base):
        now = time.monotonic()
        progress = SimpleNamespace(
            shard_id="s1",
            last_progress=now - 50,
            tickets=[SimpleNamespace(pending=7)],
            pending=True,
        )
        worker.workers = cast("Any", [SimpleNamespace(name="orders", progress={"s1": progress})])
        _, _, body = await get(f"{base}/metrics")
        values = {
            (s.name, s.labels.get("stream")): s.value
            for f in text_string_to_metric_families(body)
            for s in f.samples
        }
        assert values[("fanout_in_flight_records", "orders")] == 7
        assert values[("fanout_progress_age_seconds", "orders")] >= 49


async def test_the_store_check_never_waits_behind_a_checkpoint_write(tmp_path, monkeypatch):
    import threading

    from fanout.progress.sqlite import SQLiteCheckpointStore
    from fanout.progress.store import CheckpointRow

    store = SQLiteCheckpointStore(tmp_path / "fanout.db")
    await store.open()
    release = threading.Event()
    original = store._save

    def stuck_save(rows: Any) -> None:
        release.wait()  # a checkpoint write held up by a slow disk
        original(rows)

    monkeypatch.setattr(store, "_save", stuck_save)
    worker = FakeWorker()
    worker.store = cast("Any", store)
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.save, [CheckpointRow("arn", "shard-1", "1")])
        await anyio.sleep(0.05)
        with anyio.fail_after(1):
            assert await health.store_problem(worker) is None
        release.set()
    await store.aclose()


async def test_readiness_shows_codes_never_the_providers_text():
    worker = FakeWorker()
    worker.started.set()
    worker.streams[0].discovery_error = (
        "DescribeStream: AccessDeniedException: User: arn:aws:sts::123456789012:assumed-role/"
        "fanout/i-0abc is not authorized to perform: dynamodb:DescribeStream on resource: "
        "arn:aws:dynamodb:eu-west-1:123456789012:table/Orders/stream/2024"
    )
    worker.store.error = CheckpointError("lease table arn:aws:dynamodb:eu-west-1:123456789012:x")
    ok, problems = await ready(worker)
    assert not ok
    assert problems == {
        "checkpoint_store": "CheckpointError",
        "streams_unreachable": [{"stream": "orders", "error": "AccessDeniedException"}],
    }
    assert "123456789012" not in str(problems)
