"""Backfill parts in-process: the read capacity budget, records, and a Scan segment that is
stopped and resumed from its saved position."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from fanout.backfill.budget import ReadBudget
from fanout.backfill.records import RecordMaker, parsed_key, version_time, wire_item
from fanout.backfill.segments import SegmentScan, Target
from fanout.config import SinkConfig
from fanout.filters import compile_filters
from fanout.observe.metrics import Metrics
from fanout.progress.store import SegmentRow
from fanout.records import Record, change_time
from fanout.sink import Failure, Failures
from tests.unit.delivery_fakes import MemoryDeadLetter, ScriptedSink, make_route

pytestmark = pytest.mark.anyio

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/2026-01-01T00:00:00.000"


class SimClock:
    """Time that passes only when slept."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds
        await anyio.lowlevel.checkpoint()


def page_cost(items: int, item_bytes: int) -> float:
    """What DynamoDB charges an eventually consistent Scan page: 0.5 per 4 KB, rounded up."""
    return 0.5 * math.ceil(items * item_bytes / 4096) if items else 0.5


@pytest.mark.parametrize(("rate", "item_bytes"), [(100.0, 300), (10.0, 2000), (1000.0, 50)])
async def test_the_budget_paces_segments_to_the_rate_and_never_runs_ahead_of_it(
    rate: float, item_bytes: int
) -> None:
    clock = SimClock()
    budget = ReadBudget(rate, clock=clock, sleep=clock.sleep)
    start = clock.now
    segments = 4
    worst_page = 0.0
    history: list[tuple[float, float]] = []  # (time a call started, consumed before it)

    async def segment() -> None:
        nonlocal worst_page
        for _ in range(60):
            limit, estimate = budget.page(segments)
            await budget.reserve(estimate)
            history.append((clock.now - start, budget.consumed))
            cost = page_cost(limit, item_bytes)
            worst_page = max(worst_page, cost)
            await anyio.lowlevel.checkpoint()  # the call is in flight
            budget.charge(estimate, cost, limit)

    async with anyio.create_task_group() as group:
        for _ in range(segments):
            group.start_soon(segment)
    elapsed = clock.now - start
    # Never ahead of the pace by more than one page per segment in flight ...
    for at, consumed in history:
        assert consumed <= rate * at + segments * worst_page + 1e-9, (at, consumed)
    assert budget.consumed <= rate * elapsed + segments * worst_page
    # ... and not far behind it: the budget is used, not wasted.
    assert budget.consumed >= 0.8 * rate * elapsed
    # pages are sized to a share of a second's budget, not a single huge call
    assert worst_page <= max(rate / 2, 0.5 * math.ceil(item_bytes / 4096))


async def test_the_budget_does_not_save_up_an_idle_spell() -> None:
    clock = SimClock()
    budget = ReadBudget(50.0, clock=clock, sleep=clock.sleep)
    clock.now += 3600  # an hour idle
    for _ in range(10):
        await budget.reserve(20.0)
        budget.charge(20.0, 20.0, 10)
    # at most one second's budget was banked: the 10th call starts after 180 units, which
    # needs (180 - 50) / 50 s of waiting
    assert clock.slept >= (180 - 50) / 50 - 1e-9


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ReadBudget(0)


def test_a_backfilled_record_has_the_lambda_shape_a_marker_and_a_version_below_its_start() -> None:
    maker = RecordMaker("b1", ["pk", "sk"], ARN, "us-east-1", version_time(1_800_000_000.7))
    parsed = {
        "pk": {"S": "a"},
        "sk": {"B": b"\x00\x01"},
        "bag": {"BS": [b"x"]},
        "deep": {"M": {"l": {"L": [{"B": b"y"}, {"N": "1"}]}}},
    }
    record = maker.record(parsed, read_at=1_800_000_100.0)
    assert record["eventName"] == "INSERT"
    assert record["eventSource"] == "aws:dynamodb"
    assert record["eventSourceARN"] == ARN
    assert record["eventID"].startswith("backfill-")
    assert record["fanout"] == {"backfill": True, "backfill_id": "b1", "read_at": 1_800_000_100.0}
    ddb = record["dynamodb"]
    assert ddb["Keys"] == {"pk": {"S": "a"}, "sk": {"B": "AAE="}}
    assert ddb["NewImage"]["bag"] == {"BS": ["eA=="]}
    assert ddb["NewImage"]["deep"]["M"]["l"]["L"][0] == {"B": "eQ=="}
    assert ddb["ApproximateCreationDateTime"] == 1_800_000_000 - 120
    assert ddb["SequenceNumber"] == "0"
    # the same item in the same backfill has the same eventID; another item another one
    assert maker.record(parsed, 0.0)["eventID"] == record["eventID"]
    other = maker.record({**parsed, "pk": {"S": "b"}}, 0.0)
    assert other["eventID"] != record["eventID"]
    # age and lag run from the read, the version from before the start
    assert change_time(record) == 1_800_000_100.0
    assert parsed_key(wire_item({"sk": {"B": b"\x00\x01"}})) == {"sk": {"B": b"\x00\x01"}}


def test_a_sink_filter_applies_to_backfilled_records() -> None:
    maker = RecordMaker("b1", ["pk"], ARN, "us-east-1", 1_800_000_000)
    only_inserts_of_red = compile_filters(
        [{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"color": {"S": ["red"]}}}}],
        path="f",
    )
    assert only_inserts_of_red is not None
    red = maker.record({"pk": {"S": "1"}, "color": {"S": "red"}}, 0.0)
    blue = maker.record({"pk": {"S": "2"}, "color": {"S": "blue"}}, 0.0)
    assert only_inserts_of_red(red)
    assert not only_inserts_of_red(blue)
    marked = compile_filters([{"fanout": {"backfill": [True]}}], path="f")
    assert marked is not None
    assert marked(red)


class FakeTable:
    """Scan over items ``k0..k{n-1}`` split into segments, with pages of ``Limit``."""

    def __init__(self, n: int, total_segments: int) -> None:
        self.items = [{"pk": {"S": f"k{i}"}, "v": {"N": str(i)}} for i in range(n)]
        self.total = total_segments
        self.calls: list[dict[str, Any]] = []
        self.fail_next = 0

    async def scan(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        await anyio.lowlevel.checkpoint()
        if self.fail_next:
            self.fail_next -= 1
            from botocore.exceptions import ClientError

            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}},
                "Scan",
            )
        mine = [it for it in self.items if int(it["pk"]["S"][1:]) % self.total == kwargs["Segment"]]
        start = kwargs.get("ExclusiveStartKey")
        if start is not None:
            at = next(i for i, it in enumerate(mine) if it["pk"] == start["pk"])
            mine = mine[at + 1 :]
        page = mine[: kwargs["Limit"]]
        answer: dict[str, Any] = {
            "Items": page,
            "ConsumedCapacity": {"CapacityUnits": 0.5 * max(1, len(page) // 40)},
        }
        if len(mine) > len(page):
            answer["LastEvaluatedKey"] = {"pk": page[-1]["pk"]}
        return answer


def segment_scan(
    table: FakeTable, sink: ScriptedSink, start: SegmentRow | None, dead: MemoryDeadLetter
) -> SegmentScan:
    target = Target("Orders", table.total, False, "orders", ARN, "b1")
    maker = RecordMaker("b1", ["pk"], ARN, "us-east-1", 1_800_000_000)
    budget = ReadBudget(1e6)
    route = make_route(sink, dead, batch_size=25, max_buffered_records=60)
    from fanout.retry import RetryPolicy, no_wait

    return SegmentScan(
        target,
        1,
        start,
        table.scan,
        budget,
        maker,
        [route],
        Metrics(),
        backoff=RetryPolicy(0.0, 0.0, sleep=no_wait),
    )


def keys(records: list[Record]) -> list[str]:
    return [r["dynamodb"]["Keys"]["pk"]["S"] for r in records]


async def test_a_segment_resumes_after_its_last_settled_page_and_loses_nothing() -> None:
    table = FakeTable(2000, total_segments=4)
    mine = [f"k{i}" for i in range(2000) if i % 4 == 1]
    stop_after = 200
    first_sink = ScriptedSink("s")
    dead = MemoryDeadLetter()
    first = segment_scan(table, first_sink, None, dead)

    async def stop_when_enough() -> None:
        while len(first_sink.delivered) < stop_after:
            await anyio.lowlevel.checkpoint()

    # The run is stopped (as a kill would) once some pages are delivered.
    async with anyio.create_task_group() as group:
        group.start_soon(first.run)
        await stop_when_enough()
        group.cancel_scope.cancel()
    saved = first.state()
    assert not saved.done
    assert saved.position is not None
    assert 0 < saved.items <= len(first_sink.delivered)
    assert keys(first_sink.delivered)[: saved.items] == mine[: saved.items]

    table.fail_next = 2  # throttled twice: retried
    second_sink = ScriptedSink("s")
    second = segment_scan(table, second_sink, saved, dead)
    await second.run()
    final = second.state()
    assert final.done
    assert final.items == len(mine)
    # the second run starts right after the saved page, and together nothing is missing
    assert keys(second_sink.delivered) == mine[saved.items :]
    assert set(keys(first_sink.delivered)) | set(keys(second_sink.delivered)) == set(mine)
    assert table.calls[-1].get("ExclusiveStartKey") is not None
    assert all(c["ReturnConsumedCapacity"] == "TOTAL" for c in table.calls)
    assert all(c["Segment"] == 1 and c["TotalSegments"] == 4 for c in table.calls)
    # a done segment reads nothing again
    calls = len(table.calls)
    await segment_scan(table, ScriptedSink("s"), final, dead).run()
    assert len(table.calls) == calls


async def test_a_record_the_sink_refuses_is_dead_lettered_and_the_segment_still_completes() -> None:
    table = FakeTable(200, total_segments=4)

    def refuse_k9(batch: Sequence[Record]) -> Failures:
        return {
            i: Failure(False, "mapper_parsing_exception")
            for i, r in enumerate(batch)
            if r["dynamodb"]["Keys"]["pk"]["S"] == "k9"
        }

    sink = ScriptedSink("s", behaviour=refuse_k9)
    dead = MemoryDeadLetter()
    scan = segment_scan(table, sink, None, dead)
    await scan.run()
    assert scan.state().done
    assert [e["record"]["dynamodb"]["Keys"]["pk"]["S"] for e in dead.entries] == ["k9"]
    assert dead.entries[0]["record"]["fanout"]["backfill"] is True
    assert len(sink.delivered) == 49


def test_sink_config_backfill_accepts_yaml_off() -> None:
    assert SinkConfig.model_validate({"type": "x", "backfill": False}).backfill == "off"
    assert SinkConfig.model_validate({"type": "x"}).backfill == "off"
    on = SinkConfig.model_validate({"type": "x", "backfill": "on_first_start"})
    assert on.backfill == "on_first_start"
    with pytest.raises(ValueError, match="backfill"):
        SinkConfig.model_validate({"type": "x", "backfill": "always"})


def _config(tmp_path: Any, sinks: str, streams: str = "orders: {table: Orders}") -> str:
    path = tmp_path / "app.yaml"
    path.write_text(
        f"streams: {{{streams}}}\ncheckpoints: {{path: {tmp_path / 'fanout.db'}}}\nsinks:\n{sinks}"
    )
    return str(path)


@pytest.mark.parametrize(
    ("sinks", "streams", "argv", "message"),
    [
        ("  out: {type: stdout}\n", None, ["--sink", "nope"], "unknown sink 'nope'"),
        (
            "  totals: {type: aggregate, table: Totals, group_by: [pk], measures: {n: count}}\n",
            None,
            ["--sink", "totals"],
            "cannot load aggregate sinks",
        ),
        (
            "  out: {type: stdout}\n",
            "orders: {table: Orders}, users: {table: Users}",
            ["--sink", "out"],
            "pass --stream",
        ),
        (
            "  out: {type: stdout, streams: [users]}\n",
            "orders: {table: Orders}, users: {table: Users}",
            ["--sink", "out", "--stream", "orders"],
            "does not feed",
        ),
        ("  out: {type: stdout}\n", None, ["--sink", "out", "--segments", "0"], "1 to 1000"),
        ("  out: {type: stdout}\n", None, ["--sink", "out", "--max-rcu", "-1"], "above 0"),
    ],
)
def test_fanout_backfill_refuses_bad_arguments_with_exit_code_2(
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
    sinks: str,
    streams: str | None,
    argv: list[str],
    message: str,
) -> None:
    from fanout.cli import main

    config = _config(tmp_path, sinks, *([streams] if streams else []))
    try:
        code = main(["backfill", "--config", config, *argv])
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "fanout.db").exists()  # refused before touching anything


def test_a_backfills_owner_is_gone_when_its_process_is_dead_or_silent() -> None:
    import os
    import socket
    import subprocess
    import sys

    from fanout.backfill.runner import STALE_OWNER_S, owner_gone

    host = socket.gethostname()
    now = 10_000.0

    def row(owner: str | None, owner_at: float) -> Any:
        from fanout.progress.store import BackfillRow

        return BackfillRow(
            "b", "orders", "T", "s", 1, 0, 0.0, "cli", owner=owner, owner_at=owner_at
        )

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert owner_gone(row(None, now), now)
    assert not owner_gone(row(f"{host}:{os.getpid()}:x", now - 1), now)  # alive, recent
    assert owner_gone(row(f"{host}:{dead.stdout.strip()}:x", now - 1), now)  # exited
    assert not owner_gone(row("elsewhere:1:x", now - 1), now)  # another host: by time only
    assert owner_gone(row("elsewhere:1:x", now - STALE_OWNER_S - 1), now)


def test_the_first_error_of_nested_exception_groups_is_raised_as_itself() -> None:
    from fanout.backfill.runner import first_error

    inner = KeyError("k")
    assert first_error(ExceptionGroup("a", [ExceptionGroup("b", [inner])])) is inner
    plain = ValueError("v")
    assert first_error(plain) is plain
