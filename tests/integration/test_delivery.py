"""Delivery semantics end to end: outages, failing sinks, dead-letters and redrive, kill -9.

Streams come from DynamoDB Local, SQS from moto. Outages are scaled down: seconds instead of
minutes, with retry budgets (attempts x backoff) sized to cover them or not.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import orjson
import pytest

from fanout.app import Worker
from fanout.cli import main
from fanout.config import load_config
from fanout.delivery.deadletter import read_entries
from fanout.stream.reader import ReaderOptions
from tests.integration import delivery_handlers as handlers
from tests.integration.process import WorkerProcess, read_lines, stream_records, wait_for

pytestmark = pytest.mark.integration

HANDLERS = "tests.integration.delivery_handlers"


@pytest.fixture(autouse=True)
def _reset_handlers():
    handlers.reset()
    yield
    handlers.reset()


def write_config(tmp_path: Path, table: str, endpoint: str, sinks: str) -> Path:
    path = tmp_path / "fanout.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            streams:
              orders:
                table: {table}
                endpoint_url: {endpoint}
                region: us-east-1
                max_idle_interval: 100ms
            checkpoints: {{path: {tmp_path}/fanout.db, interval: 200ms}}
            http: {{enabled: false}}
            shutdown_grace: 5s
            log_level: WARNING
            """
        )
        + "sinks:\n"
        + textwrap.indent(textwrap.dedent(sinks), "  ")
    )
    return path


@asynccontextmanager
async def running(config: Path) -> AsyncIterator[Worker]:
    """A worker in this process; stopped (and checked to exit cleanly) on the way out."""
    worker = Worker(
        load_config(config),
        handle_signals=False,
        reader_options=ReaderOptions(min_poll_interval=0.02),
    )
    codes: list[int] = []

    async def run() -> None:
        codes.append(await worker.run())

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(30):
            await worker.started.wait()
        try:
            yield worker
        finally:
            worker.stop()
    assert codes == [0]


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.05)
    assert predicate(), what


def put_items(ddb_client: Any, table: str, keys: list[str], start: int = 0) -> None:
    for i, key in enumerate(keys, start):
        ddb_client.put_item(TableName=table, Item={"pk": {"S": key}, "v": {"N": str(i)}})


async def put(ddb_client: Any, table: str, keys: list[str], start: int = 0) -> None:
    await anyio.to_thread.run_sync(put_items, ddb_client, table, keys, start)


def stream_seqs(ddbstreams_client: Any, stream_arn: str) -> list[str]:
    """Every sequence number of the stream, in order (DynamoDB Local has one shard)."""
    records = stream_records(ddbstreams_client, stream_arn)
    return [r["dynamodb"]["SequenceNumber"] for r in records]


def received(name: str) -> list[str]:
    return [r["dynamodb"]["SequenceNumber"] for r in handlers.RECEIVED.get(name, [])]


def dead(path: Path) -> list[dict[str, Any]]:
    return read_entries(path) if path.exists() else []


def cli(*argv: str) -> tuple[int, Any]:
    """Run ``fanout ...`` in this process (its handlers share this module's state)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    text = out.getvalue()
    return code, orjson.loads(text) if "--json" in argv else text


# -- outages ---------------------------------------------------------------------------------


async def test_an_outage_within_the_retry_budget_loses_and_dead_letters_nothing(
    tmp_path, dynamodb_local, ddb_table, ddb_client, ddbstreams_client
):
    table, stream_arn = ddb_table()
    dlq = tmp_path / "dlq.jsonl"
    config = write_config(
        tmp_path,
        table,
        dynamodb_local.endpoint_url,
        f"""
        flaky:
          type: handler
          handler: {HANDLERS}:flaky
          batch_size: 10
          retry: {{max_attempts: 400, max_record_age: -1, initial_backoff: 20ms, max_backoff: 80ms}}
          dead_letter: {{type: file, path: {dlq}}}
        """,
    )
    keys = [f"k{i % 7}" for i in range(60)]
    async with running(config) as worker:
        handlers.DOWN = True
        await put(ddb_client, table, keys[:40])
        errors = worker.metrics.sink_errors.labels("flaky")
        await wait_until(lambda: errors._value.get() >= 5, 20, "failed sends")
        await anyio.sleep(3.0)  # the outage: well inside a budget of ~400 x 40 ms
        handlers.DOWN = False
        await put(ddb_client, table, keys[40:], start=40)
        await wait_until(lambda: len(received("flaky")) >= 60, 30, "every record delivered")
    truth = stream_seqs(ddbstreams_client, stream_arn)
    assert len(truth) == 60
    assert received("flaky") == truth  # each once, in stream order
    assert not dlq.exists()


async def test_an_outage_past_the_budget_dead_letters_exactly_the_affected_records_and_redrive_delivers_them(  # noqa: E501
    tmp_path, dynamodb_local, ddb_table, ddb_client, ddbstreams_client
):
    table, stream_arn = ddb_table()
    dlq = tmp_path / "dlq-flaky.jsonl"  # the default: next to the checkpoint database
    config = write_config(
        tmp_path,
        table,
        dynamodb_local.endpoint_url,
        f"""
        flaky:
          type: handler
          handler: {HANDLERS}:flaky
          batch_size: 10
          retry: {{max_attempts: 3, initial_backoff: 10ms, max_backoff: 30ms}}
        """,
    )
    async with running(config):
        handlers.DOWN = True
        await put(ddb_client, table, [f"a{i}" for i in range(40)])
        await wait_until(lambda: len(dead(dlq)) >= 40, 30, "the outage's records dead-lettered")
        handlers.DOWN = False
        await put(ddb_client, table, [f"b{i}" for i in range(20)], start=40)
        await wait_until(lambda: len(received("flaky")) >= 20, 30, "records after the outage")
    truth = stream_seqs(ddbstreams_client, stream_arn)
    entries = dead(dlq)
    assert [e["sequence_number"] for e in entries] == truth[:40]  # exactly the affected ones
    assert received("flaky") == truth[40:]
    assert all(e["record"]["dynamodb"]["Keys"]["pk"]["S"].startswith("a") for e in entries)
    assert {e["error"]["class"] for e in entries} == {"ConnectionError"}
    assert {e["stream_arn"] for e in entries} == {stream_arn}

    args = ("dlq", "redrive", "--config", str(config), "--sink", "flaky", "--json")
    code, report = await anyio.to_thread.run_sync(lambda: cli(*args))
    assert code == 0
    assert report["delivered"] == 40
    assert sorted(received("flaky")) == sorted(truth)
    code, report = await anyio.to_thread.run_sync(lambda: cli(*args))
    assert report["delivered"] == 0
    assert report["already_redriven"] == 40
    assert len(received("flaky")) == 60


async def test_a_failing_sink_never_holds_back_another_sink_on_the_same_stream(
    tmp_path, dynamodb_local, ddb_table, ddb_client, ddbstreams_client
):
    table, stream_arn = ddb_table()
    config = write_config(
        tmp_path,
        table,
        dynamodb_local.endpoint_url,
        f"""
        broken:
          type: handler
          handler: {HANDLERS}:broken
          batch_size: 20
          max_buffered_records: 40
          retry: {{max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms}}
        good:
          type: handler
          handler: {HANDLERS}:accept_all
          batch_size: 20
        """,
    )
    async with running(config) as worker:
        await put(ddb_client, table, [f"k{i % 13}" for i in range(300)])
        await wait_until(lambda: len(received("good")) >= 300, 60, "the healthy sink's records")
        await wait_until(
            lambda: len(dead(tmp_path / "dlq-broken.jsonl")) >= 300, 60, "the broken sink's DLQ"
        )
        (stream,) = worker.workers
        await wait_until(
            lambda: all(not p.pending for p in stream.progress.values()), 10, "settled"
        )
    truth = stream_seqs(ddbstreams_client, stream_arn)
    assert received("good") == truth  # every record, in order
    assert [e["sequence_number"] for e in dead(tmp_path / "dlq-broken.jsonl")] == truth


async def test_sqs_dead_letters_are_redriven_from_the_queue_once(
    tmp_path, dynamodb_local, ddb_table, ddb_client, moto_server, sqs_queue, sqs_client
):
    table, _ = ddb_table()
    queue = sqs_queue()
    config = write_config(
        tmp_path,
        table,
        dynamodb_local.endpoint_url,
        f"""
        picky:
          type: handler
          handler: {HANDLERS}:refuse_poison
          batch_size: 10
          retry: {{max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms}}
          dead_letter:
            type: sqs
            queue_url: {queue}
            region: us-east-1
            endpoint_url: {moto_server.endpoint_url}
        fixed:
          type: handler
          handler: {HANDLERS}:accept_all
          streams: []
        """,
    )
    keys = [f"poison{i}" if i % 10 == 4 else f"k{i}" for i in range(30)]
    async with running(config):
        await put(ddb_client, table, keys)
        await wait_until(lambda: len(received("picky")) >= 27, 30, "the healthy records")

        def queued() -> int:
            attrs = sqs_client.get_queue_attributes(
                QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
            return int(attrs["ApproximateNumberOfMessages"])

        await wait_until(lambda: queued() >= 3, 30, "three dead letters in the queue")
    code, summary = await anyio.to_thread.run_sync(
        lambda: cli("dlq", "inspect", "--config", str(config), "--sink", "picky", "--json")
    )
    assert summary[0]["pending"] == 3
    args = ("dlq", "redrive", "--config", str(config), "--sink", "picky", "--to", "fixed")
    code, report = await anyio.to_thread.run_sync(lambda: cli(*args, "--json"))
    assert code == 0
    assert report["delivered"] == 3
    assert sorted(r["dynamodb"]["Keys"]["pk"]["S"] for r in handlers.RECEIVED["fixed"]) == [
        "poison14",
        "poison24",
        "poison4",
    ]
    code, report = await anyio.to_thread.run_sync(lambda: cli(*args, "--json"))
    assert report["delivered"] == 0
    assert report["found"] == 0
    assert len(handlers.RECEIVED["fixed"]) == 3


# -- kill -9 ---------------------------------------------------------------------------------


def test_sigkill_during_retries_and_dead_letter_writes_loses_no_record(
    tmp_path, dynamodb_local, ddb_table, ddb_client, ddbstreams_client
):
    table, stream_arn = ddb_table()
    config = write_config(
        tmp_path,
        table,
        dynamodb_local.endpoint_url,
        f"""
        lambda:
          type: handler
          handler: {HANDLERS}:poison_and_flaky
          batch_size: 20
          retry: {{max_attempts: 3, initial_backoff: 20ms, max_backoff: 100ms}}
        """,
    )
    out, dlq, log = tmp_path / "out.jsonl", tmp_path / "dlq-lambda.jsonl", tmp_path / "w.log"
    keys = [f"poison{i}" if i % 25 == 7 else f"k{i}" for i in range(400)]
    put_items(ddb_client, table, keys)
    worker = WorkerProcess(config, out, log)
    for at_least in (2, 6):
        # Kill while poison records are being retried and dead-lettered.

        def enough(n: int = at_least) -> bool:
            return len(dead(dlq)) >= n

        wait_for(enough, 60, f"{at_least} dead letters")
        worker.kill()
        worker = WorkerProcess(config, out, log)
    truth = stream_seqs(ddbstreams_client, stream_arn)
    assert len(truth) == 400

    def settled() -> set[str]:
        return {r["seq"] for r in read_lines(out)} | {e["sequence_number"] for e in dead(dlq)}

    wait_for(lambda: set(truth) <= settled(), 120, "every record delivered or dead-lettered")
    assert worker.terminate() == 0
    delivered = {r["seq"] for r in read_lines(out)}
    entries = dead(dlq)
    poison = {s for s, k in zip(truth, keys, strict=True) if k.startswith("poison")}
    assert set(truth) <= delivered | {e["sequence_number"] for e in entries}
    assert not poison & delivered
    assert poison <= {e["sequence_number"] for e in entries}
    for e in entries:  # whole records, with why
        assert e["record"]["dynamodb"]["SequenceNumber"] == e["sequence_number"]
        assert e["error"]["class"] in {"ValueError", "SinkFailure"}
