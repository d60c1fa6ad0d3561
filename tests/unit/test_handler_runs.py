"""Several batches of one lane in one trip to a handler's thread (``HandlerSink.send_run``,
``Lane._deliver_run``): each call is the call ``send`` makes, a run stops at the first batch
that fails, and what follows is delivered one batch at a time, in order."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from fanout.progress.tracker import ShardProgress
from fanout.records import Record
from sinks.handler import HandlerCrashed, HandlerSink, HandlerSinkConfig
from sinks.lambdaenv import HandlerTimeout
from tests.unit.delivery_fakes import through_lane
from tests.unit.helpers import run_handlers

ARN = "arn:aws:dynamodb:us-east-1:000000000000:table/T/stream/2024-01-01T00:00:00.000"
HANDLER = "tests.unit.helpers.run_handlers:scripted"


def seq(i: int) -> str:
    return f"{100 + i:021d}"


def record(i: int, do: str = "") -> Record:
    image: dict[str, Any] = {"pk": {"S": f"k{i}"}}
    if do:
        image["do"] = {"S": do}
    return {
        "eventID": f"e{i}",
        "eventName": "MODIFY",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": ARN,
        "dynamodb": {
            "ApproximateCreationDateTime": time.time(),
            "Keys": {"pk": {"S": f"k{i}"}},
            "NewImage": image,
            "SequenceNumber": seq(i),
            "SizeBytes": 40,
        },
    }


def batches(*todo: str, size: int = 3) -> list[list[Record]]:
    """One batch of ``size`` records per entry; the entry is what its handler call does."""
    return [
        [record(b * size + i, do if i == 0 else "") for i in range(size)]
        for b, do in enumerate(todo)
    ]


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    run_handlers.CALLS.clear()


async def started(**options: Any) -> HandlerSink:
    sink = HandlerSink("h", HandlerSinkConfig(type="handler", handler=HANDLER, **options))
    await sink.start()
    return sink


def firsts(todo: Sequence[Sequence[Record]]) -> list[str]:
    return [b[0]["dynamodb"]["SequenceNumber"] for b in todo]


async def test_a_run_calls_the_handler_once_per_batch_in_order() -> None:
    sink = await started()
    assert sink.sends_runs
    todo = batches("", "", "")
    run = await sink.send_run(todo, lambda: True)
    assert (len(run.seconds), run.failures, run.error) == (3, {}, None)
    assert run_handlers.CALLS == firsts(todo)


async def test_a_run_stops_at_a_batch_that_raises() -> None:
    sink = await started()
    todo = batches("", "raise", "")
    run = await sink.send_run(todo, lambda: True)
    assert len(run.seconds) == 1
    assert isinstance(run.error, ValueError)  # what the handler raised, as send raises it
    assert run_handlers.CALLS == firsts(todo)[:2]  # the third batch is not called


async def test_a_run_stops_at_a_batch_with_batch_item_failures() -> None:
    sink = await started()
    todo = batches("", "fail-last", "")
    run = await sink.send_run(todo, lambda: True)
    assert len(run.seconds) == 1
    assert run.error is None
    assert list(run.failures) == [2]  # the last record of the second batch
    assert run_handlers.CALLS == firsts(todo)[:2]


async def test_a_handler_exiting_the_interpreter_fails_its_batch_only() -> None:
    sink = await started()
    run = await sink.send_run(batches("", "exit", ""), lambda: True)
    assert len(run.seconds) == 1
    assert isinstance(run.error, HandlerCrashed)


async def test_every_call_of_a_run_has_the_whole_timeout() -> None:
    sink = await started(timeout=1)
    run = await sink.send_run(batches("sleep:0.6", "sleep:0.6", "sleep:0.6"), lambda: True)
    assert (len(run.seconds), run.error) == (3, None)  # 1.8 s in all, each call under 1 s


async def test_a_call_that_times_out_ends_the_run_and_no_later_batch_is_called() -> None:
    sink = await started(timeout=0.5)
    todo = batches("", "sleep:1.2", "")
    run = await sink.send_run(todo, lambda: True)
    assert len(run.seconds) == 1
    assert isinstance(run.error, HandlerTimeout)
    await anyio.sleep(1.2)  # the timed-out call returns meanwhile, on its thread
    assert run_handlers.CALLS == firsts(todo)[:2]
    assert len(run.seconds) == 1  # and changes nothing returned


async def test_a_run_stops_when_it_may_not_go_on() -> None:
    sink = await started()
    allowed = iter([True, False])
    run = await sink.send_run(batches("", "", ""), lambda: next(allowed))
    assert (len(run.seconds), run.failures, run.error) == (1, {}, None)
    assert len(run_handlers.CALLS) == 1


async def test_an_async_handler_or_worker_processes_send_no_runs() -> None:
    sink = HandlerSink(
        "h", HandlerSinkConfig(type="handler", handler="tests.unit.helpers.handlers:record_all")
    )
    assert not sink.sends_runs  # not started: no threads yet
    pooled = HandlerSink(
        "p", HandlerSinkConfig(type="handler", handler=HANDLER, isolation="process")
    )
    assert not pooled.sends_runs


async def deliver(
    tmp_path: Path, records: list[Record], *, batch_size: int = 3, **options: Any
) -> tuple[list[list[str]], ShardProgress, Path]:
    """Run one lane of a handler sink over ``records``: the batches each run got."""
    sink = await started(batch_size=batch_size, copy_event=True, **options)
    config = HandlerSinkConfig(type="handler", handler=HANDLER, batch_size=batch_size, **options)
    sent: list[list[str]] = []
    original = sink.send_run

    async def spy(todo: Sequence[Sequence[Record]], may_go_on: Any) -> Any:
        sent.extend([r["dynamodb"]["SequenceNumber"] for r in b] for b in todo)
        return await original(todo, may_go_on)

    sink.send_run = spy  # type: ignore[method-assign,assignment]
    dlq = tmp_path / "dlq.jsonl"
    route, progress = await through_lane(sink, config, dlq, records)
    assert route.private  # a handler that may change its records: Pristine on the way
    await sink.stop()
    return sent, progress, dlq


async def test_a_lane_sends_waiting_full_batches_as_one_run(tmp_path: Path) -> None:
    records = [record(i) for i in range(10)]
    sent, progress, dlq = await deliver(tmp_path, records)
    every = [r["dynamodb"]["SequenceNumber"] for r in records]
    # one run of three full batches (the first and the two waiting behind it), then the
    # last record alone through send
    assert sent == [every[0:3], every[3:6], every[6:9]]
    assert run_handlers.CALLS == [every[0], every[3], every[6], every[9]]
    assert progress.frontier == every[-1]
    assert not dlq.exists()


async def test_after_a_failed_batch_the_lane_recovers_it_then_sends_the_rest_in_order(
    tmp_path: Path,
) -> None:
    records = [record(i) for i in range(9)]
    records[3] = record(3, "raise")  # the second batch fails every time
    sent, progress, dlq = await deliver(tmp_path, records)
    every = [r["dynamodb"]["SequenceNumber"] for r in records]
    assert sent == [every[0:3], every[3:6], every[6:9]]  # the run: 1st ok, 2nd raised
    calls = run_handlers.CALLS
    assert calls[:2] == [every[0], every[3]]  # the third batch was not called in the run
    assert calls[-1] == every[6]  # ... but after the second was given up on
    assert calls.count(every[6]) == 1
    assert every[6] not in calls[:-1]
    assert progress.frontier == every[-1]
    lines = dlq.read_text().splitlines()
    assert len(lines) == 1  # record 3 alone, once bisected
    assert every[3] in lines[0]


async def test_under_max_in_flight_every_batch_goes_through_the_gate_alone(
    tmp_path: Path,
) -> None:
    records = [record(i) for i in range(9)]
    sent, progress, _ = await deliver(tmp_path, records, max_in_flight=2)
    assert sent == []  # no run: other shards' calls take turns at the gate with these
    every = [r["dynamodb"]["SequenceNumber"] for r in records]
    assert run_handlers.CALLS == [every[0], every[3], every[6]]
    assert progress.frontier == every[-1]
