"""Operating a real worker: /metrics values move as records flow, /readyz follows stalls and
unreachable streams. Against DynamoDB Local, and the scripted stream server where a fault
has to be injected."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.to_thread
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fanout.app import Worker
from fanout.config import build_config
from fanout.retry import RetryPolicy
from fanout.stream.reader import ReaderOptions
from fanout.testing.streamserver import Change, StreamServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# -- handlers the workers below call (imported by path, as users' handlers are) ------------

GATE: anyio.Event | None = None


async def blocking_handler(event: dict[str, Any], context: Any) -> None:
    """Blocks until the test opens the gate: a sink that hangs."""
    assert GATE is not None
    await GATE.wait()


def poison_handler(event: dict[str, Any], context: Any) -> None:
    """Fails any batch holding an INSERT marked poison (bisection isolates them)."""
    for record in event["Records"]:
        image = record["dynamodb"].get("NewImage") or {}
        if record["eventName"] == "INSERT" and "poison" in image:
            raise RuntimeError(f"cannot handle {record['dynamodb']['Keys']['pk']['S']}")


# -- helpers --------------------------------------------------------------------------------


async def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as r,
    ):
        return r.status, await r.text()


async def samples(port: int) -> Samples:
    _, text = await scrape(port)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def get(values: Samples, name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), float("nan"))


async def wait_for(
    port: int, check: Callable[[Samples], bool], timeout: float = 30.0, what: str = ""
) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        values = await samples(port)
        if check(values):
            return values
        if time.monotonic() > deadline:
            interesting = {k: v for k, v in values.items() if not k[0].endswith("_created")}
            pytest.fail(f"timed out waiting for {what}: {interesting}")
        await anyio.sleep(0.1)


async def readyz(port: int) -> tuple[int, dict[str, Any]]:
    status, text = await scrape(port, "/readyz")
    return status, orjson.loads(text)


async def wait_ready(port: int, ready: bool, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await readyz(port)
        if (status == 200) == ready:
            return body
        if time.monotonic() > deadline:
            pytest.fail(f"/readyz stayed {status} {body}")
        await anyio.sleep(0.05)


@asynccontextmanager
async def running(config: dict[str, Any]) -> AsyncIterator[Worker]:
    """A worker of ``config`` on a free port, stopped gracefully afterwards."""
    config.setdefault("http", {}).update(host="127.0.0.1", port=0)
    worker = Worker(
        build_config(config),
        handle_signals=False,
        backoff=RetryPolicy(0.01, 0.05),
        reader_options=ReaderOptions(
            min_poll_interval=0.0, retry=RetryPolicy(0.02, 10.0, floor=0.5)
        ),
    )
    async with anyio.create_task_group() as tg:
        result: list[int] = []

        async def run() -> None:
            result.append(await worker.run())

        tg.start_soon(run)
        with anyio.fail_after(30):
            while worker.http_port is None or not worker.started.is_set():
                if result:
                    pytest.fail(f"the worker exited with {result[0]}")
                await anyio.sleep(0.02)
        try:
            yield worker
        finally:
            global GATE
            if GATE is not None:
                GATE.set()
            worker.stop()
    assert result == [0]


def stream_config(endpoint: str, table: str, **more: Any) -> dict[str, Any]:
    return {
        "table": table,
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "max_idle_interval": 0.1,
        **more,
    }


# -- DynamoDB Local -----------------------------------------------------------------------------


async def test_metrics_follow_records_through_every_sink(
    tmp_path, dynamodb_local, ddb_table, ddb_client
):
    table, _ = ddb_table()
    poison = {"k3", "k13", "k23"}
    config = {
        "streams": {"orders": stream_config(dynamodb_local.endpoint_url, table)},
        "checkpoints": {"path": str(tmp_path / "fanout.db"), "interval": 0.2},
        "sinks": {
            "audit": {"type": "file", "path": str(tmp_path / "audit.jsonl")},
            "inserts": {
                "type": "file",
                "path": str(tmp_path / "inserts.jsonl"),
                "filters": [{"eventName": ["INSERT"]}],
            },
            "flaky": {
                "type": "handler",
                "handler": "tests.integration.test_operations:poison_handler",
                "batch_size": 10,
                "retry": {"max_attempts": 2, "initial_backoff": 0.01, "max_backoff": 0.01},
                "dead_letter": {"type": "file", "path": str(tmp_path / "flaky-dlq.jsonl")},
            },
        },
    }

    def write() -> None:
        for i in range(30):
            item: dict[str, Any] = {"pk": {"S": f"k{i}"}, "v": {"N": "1"}}
            if f"k{i}" in poison:
                item["poison"] = {"BOOL": True}
            ddb_client.put_item(TableName=table, Item=item)
        for i in range(10):
            ddb_client.put_item(TableName=table, Item={"pk": {"S": f"k{i}"}, "v": {"N": "2"}})

    async with running(config) as worker:
        port = worker.http_port
        assert port is not None
        await anyio.to_thread.run_sync(write)
        s = "orders"

        def settled(v: Samples) -> bool:
            return (
                get(v, "fanout_sink_records_total", stream=s, sink="audit", outcome="delivered")
                == 40
                and get(
                    v, "fanout_sink_records_total", stream=s, sink="inserts", outcome="delivered"
                )
                == 30
                and get(
                    v, "fanout_sink_records_total", stream=s, sink="flaky", outcome="dead_lettered"
                )
                == 3
                and get(v, "fanout_sink_records_total", stream=s, sink="flaky", outcome="delivered")
                == 37
                and get(v, "fanout_in_flight_records", stream=s) == 0
            )

        v = await wait_for(port, settled, what="every record settled")
        # records per sink match what was written
        assert get(v, "fanout_records_read_total", stream=s) == 40
        assert (
            get(v, "fanout_sink_records_total", stream=s, sink="inserts", outcome="filtered") == 10
        )
        assert get(v, "fanout_sink_records_total", stream=s, sink="audit", outcome="retried") == 0
        # the injected failure shows in retries, errors and the dead-letter counters
        assert get(v, "fanout_sink_records_total", stream=s, sink="flaky", outcome="retried") >= 3
        assert get(v, "fanout_retries_total", sink="flaky") >= 1
        assert get(v, "fanout_sink_errors_total", sink="flaky") >= 3
        assert get(v, "fanout_dlq_records_total", sink="flaky") == 3
        assert get(v, "fanout_dlq_write_failures_total", sink="flaky") == 0
        assert get(v, "fanout_retries_total", sink="audit") == 0
        assert get(v, "fanout_dlq_records_total", sink="audit") == 0
        dead = [
            orjson.loads(line) for line in (tmp_path / "flaky-dlq.jsonl").read_bytes().splitlines()
        ]
        assert sorted(d["record"]["dynamodb"]["Keys"]["pk"]["S"] for d in dead) == sorted(poison)
        # reading, delivery timing, shards
        assert get(v, "fanout_get_records_calls_total", stream=s, outcome="records") >= 1
        assert get(v, "fanout_end_to_end_lag_seconds_count", sink="audit") >= 1
        assert get(v, "fanout_sink_send_seconds_count", sink="flaky") >= 4
        assert get(v, "fanout_shards", stream=s, state="active") == 1
        assert get(v, "fanout_data_loss_events_total", stream=s) == 0
        # caught up: the iterator age falls to (near) zero, empty pages are counted
        v = await wait_for(
            port,
            lambda v: (
                get(v, "fanout_iterator_age_seconds", stream=s) <= 1.0
                and get(v, "fanout_get_records_calls_total", stream=s, outcome="empty") >= 1
            ),
            what="iterator age near zero",
        )
        # checkpoints are written and current; nothing stalled
        v = await wait_for(
            port,
            lambda v: (
                get(v, "fanout_checkpoints_written_total", stream=s) >= 1
                and get(v, "fanout_checkpoint_age_seconds") < 2
            ),
            what="checkpoints",
        )
        assert get(v, "fanout_checkpoint_failures_total") == 0
        assert get(v, "fanout_stalled_shards", stream=s) == 0
        assert get(v, "fanout_progress_age_seconds", stream=s) < 5
        assert (await readyz(port))[0] == 200


async def test_readyz_turns_unready_while_a_sink_blocks_and_ready_after(
    tmp_path, dynamodb_local, ddb_table, ddb_client
):
    global GATE
    GATE = anyio.Event()
    table, _ = ddb_table()
    config = {
        "streams": {"orders": stream_config(dynamodb_local.endpoint_url, table)},
        "checkpoints": {"path": str(tmp_path / "fanout.db"), "interval": 0.1},
        "http": {"stall_timeout": 0.5},
        "sinks": {
            "stuck": {
                "type": "handler",
                "handler": "tests.integration.test_operations:blocking_handler",
                "timeout": 60,
            }
        },
    }
    async with running(config) as worker:
        port = worker.http_port
        assert port is not None
        await wait_ready(port, True)
        await anyio.to_thread.run_sync(
            lambda: ddb_client.put_item(TableName=table, Item={"pk": {"S": "a"}})
        )
        started = time.monotonic()
        body = await wait_ready(port, False)
        # unready once the stall timeout passed, not much later
        assert time.monotonic() - started < 10
        (stalled,) = body["stalled_shards"]
        assert stalled["stream"] == "orders"
        assert stalled["seconds"] >= 0.5  # rounded to 0.1 s
        v = await samples(port)
        assert get(v, "fanout_stalled_shards", stream="orders") == 1
        assert get(v, "fanout_in_flight_records", stream="orders") >= 1
        assert get(v, "fanout_progress_age_seconds", stream="orders") > 0.5
        # the sink recovers: ready again, nothing stalled
        assert GATE is not None
        GATE.set()
        await wait_ready(port, True)
        v = await samples(port)
        assert get(v, "fanout_stalled_shards", stream="orders") == 0
        assert (
            get(v, "fanout_sink_records_total", stream="orders", sink="stuck", outcome="delivered")
            == 1
        )
    GATE = None


async def test_the_compose_seed_script_creates_a_table_with_a_stream(
    dynamodb_local, ddb_client, request
):
    import runpy
    import uuid

    table = f"seed-{uuid.uuid4().hex[:8]}"
    seed = runpy.run_path(str(REPO / "deploy" / "seed.py"))
    code = await anyio.to_thread.run_sync(
        seed["main"],
        [
            "--endpoint-url",
            dynamodb_local.endpoint_url,
            "--table",
            table,
            "--rate",
            "0",
            "--count",
            "5",
        ],
    )
    try:
        assert code == 0
        desc = ddb_client.describe_table(TableName=table)["Table"]
        assert desc["StreamSpecification"]["StreamEnabled"] is True
        assert ddb_client.scan(TableName=table, Select="COUNT")["Count"] >= 1
    finally:
        ddb_client.delete_table(TableName=table)


# -- the scripted stream server: faults on demand ----------------------------------------------


async def test_iterator_age_reports_the_backlog_then_falls_to_zero(tmp_path):
    async with StreamServer() as server:
        stream = server.add_stream("Orders", keys=("pk",))
        hour_ago = time.time() - 3600
        server.put(
            stream.shards[0],
            [Change("INSERT", {"pk": {"S": f"k{i}"}}, {"pk": {"S": f"k{i}"}}) for i in range(5)],
            at=hour_ago,
        )
        # the first page is read, then GetRecords is throttled: the reader is behind
        server.throttle("GetRecords", after=1, times=None)
        config = {
            "streams": {"orders": stream_config(server.endpoint_url, "Orders")},
            "checkpoints": {"path": str(tmp_path / "fanout.db"), "interval": 0.1},
            "sinks": {"audit": {"type": "file", "path": str(tmp_path / "audit.jsonl")}},
        }
        async with running(config) as worker:
            port = worker.http_port
            assert port is not None
            v = await wait_for(
                port,
                lambda v: (
                    get(v, "fanout_get_records_calls_total", stream="orders", outcome="throttled")
                    >= 2
                ),
                what="throttled calls",
            )
            assert 3500 < get(v, "fanout_iterator_age_seconds", stream="orders") < 3700
            assert get(v, "fanout_records_read_total", stream="orders") == 5
            # lag from the change to its delivery: about an hour
            assert get(v, "fanout_end_to_end_lag_seconds_bucket", sink="audit", le="3600.0") == 0
            assert get(v, "fanout_end_to_end_lag_seconds_bucket", sink="audit", le="21600.0") >= 1
            server.clear_faults()
            await wait_for(
                port,
                lambda v: get(v, "fanout_iterator_age_seconds", stream="orders") < 1.0,
                what="iterator age back to zero",
            )


async def test_readyz_turns_unready_while_the_stream_is_unreachable(tmp_path):
    async with StreamServer() as server:
        server.add_stream("Orders", keys=("pk",))
        config = {
            "streams": {
                "orders": stream_config(server.endpoint_url, "Orders", discovery_interval=0.2)
            },
            "checkpoints": {"path": str(tmp_path / "fanout.db"), "interval": 0.1},
            "sinks": {"audit": {"type": "file", "path": str(tmp_path / "audit.jsonl")}},
        }
        async with running(config) as worker:
            port = worker.http_port
            assert port is not None
            await wait_ready(port, True)
            server.fail("DescribeStream", "InternalServerError", times=None)
            body = await wait_ready(port, False)
            (problem,) = body["streams_unreachable"]
            assert problem["stream"] == "orders"
            v = await samples(port)
            assert get(v, "fanout_discovery_errors_total", stream="orders") >= 1
            server.clear_faults()
            await wait_ready(port, True)
