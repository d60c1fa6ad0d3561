"""``fanout dlq inspect|redrive`` over file dead-letter destinations."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from fanout.cli import main
from fanout.delivery.deadletter import FileDeadLetter, entry, read_entries
from tests.unit.delivery_fakes import ARN, SHARD, rec, seq_of, seqs
from tests.unit.helpers import dlq_handlers

T = TypeVar("T")


@pytest.fixture(autouse=True)
def _reset():
    dlq_handlers.RECEIVED.clear()
    dlq_handlers.REFUSE.clear()
    yield
    dlq_handlers.RECEIVED.clear()
    dlq_handlers.REFUSE.clear()


def config(tmp_path: Path, handler: str = "collect") -> Path:
    path = tmp_path / "fanout.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            streams:
              orders: {{table: Orders, endpoint_url: "http://127.0.0.1:1", region: us-east-1}}
            checkpoints: {{path: {tmp_path}/fanout.db}}
            sinks:
              audit:
                type: handler
                handler: "tests.unit.helpers.dlq_handlers:{handler}"
                batch_size: 4
                retry: {{initial_backoff: 0, max_backoff: 0}}
              spare:
                type: handler
                handler: "tests.unit.helpers.dlq_handlers:collect"
                retry: {{initial_backoff: 0, max_backoff: 0}}
            """
        )
    )
    return path


def dead(i: int, sink: str = "audit", error_class: str = "Boom") -> dict[str, Any]:
    return entry(
        record=rec(i),
        sink=sink,
        stream="orders",
        stream_arn=ARN,
        shard_id=SHARD,
        error_class=error_class,
        error_message="it broke",
        attempts=10,
        first_failure_at=1.0,
        last_failure_at=2.0,
    )


async def fill(tmp_path: Path, items: list[dict[str, Any]]) -> None:
    await FileDeadLetter(tmp_path / "dlq-audit.jsonl").write(items)


def run_cli(capsys: Any, *argv: str) -> tuple[int, Any]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, orjson.loads(out) if "--json" in argv else out


async def test_redrive_delivers_each_record_once_and_a_second_run_delivers_nothing(
    tmp_path, capsys
):
    cfg = config(tmp_path)
    items = [dead(i) for i in range(10)]
    await fill(tmp_path, [*items[:5], dead(100, sink="spare"), *items[5:], dead(3)])
    code, report = await anyio_run(
        run_cli, capsys, "dlq", "redrive", "--config", str(cfg), "--sink", "audit", "--json"
    )
    assert code == 0
    assert report["delivered"] == 10
    assert report["duplicates"] == 1  # seq 3 was dead-lettered twice
    assert report["other_sinks"] == 1
    assert seqs(dlq_handlers.RECEIVED) == [seq_of(i) for i in range(10)]

    code, report = await anyio_run(
        run_cli, capsys, "dlq", "redrive", "--config", str(cfg), "--sink", "audit", "--json"
    )
    assert code == 0
    assert report["delivered"] == 0
    assert report["already_redriven"] == 11
    assert len(dlq_handlers.RECEIVED) == 10  # nothing delivered twice
    # The dead-letter file itself is never rewritten.
    assert len(read_entries(tmp_path / "dlq-audit.jsonl")) == 12


async def test_records_that_fail_again_stay_and_can_go_to_another_sink(tmp_path, capsys):
    cfg = config(tmp_path, handler="refuse_some")
    await fill(tmp_path, [dead(i) for i in range(6)])
    dlq_handlers.REFUSE.update({seq_of(2), seq_of(4)})
    args = ("dlq", "redrive", "--config", str(cfg), "--sink", "audit", "--attempts", "2", "--json")
    code, report = await anyio_run(run_cli, capsys, *args)
    assert code == 1
    assert report["delivered"] == 4
    assert report["failed"] == 2
    code, summary = await anyio_run(
        run_cli, capsys, "dlq", "inspect", "--config", str(cfg), "--sink", "audit", "--json"
    )
    assert summary[0]["pending"] == 2
    assert summary[0]["redriven"] == 4

    dlq_handlers.RECEIVED.clear()
    code, report = await anyio_run(run_cli, capsys, *args[:-1], "--to", "spare", "--json")
    assert code == 0
    assert report["target"] == "spare"
    assert seqs(dlq_handlers.RECEIVED) == [seq_of(2), seq_of(4)]


async def test_inspect_counts_per_sink_and_error_class(tmp_path, capsys):
    cfg = config(tmp_path)
    await fill(
        tmp_path,
        [dead(1), dead(2, error_class="Rejected"), dead(3), dead(4, sink="spare")],
    )
    await FileDeadLetter(tmp_path / "dlq-spare.jsonl").write([dead(5, sink="spare")])
    code, summary = await anyio_run(
        run_cli, capsys, "dlq", "inspect", "--config", str(cfg), "--json"
    )
    assert code == 0
    by_sink = {s["sink"]: s for s in summary}
    assert by_sink["audit"]["pending"] == 3
    assert by_sink["audit"]["errors"] == {"Boom": 2, "Rejected": 1}
    assert by_sink["audit"]["oldest"] <= by_sink["audit"]["newest"]
    assert by_sink["spare"]["pending"] == 1
    code, text = await anyio_run(run_cli, capsys, "dlq", "inspect", "--config", str(cfg))
    assert "sink audit: 3 dead-lettered, 0 redriven" in text
    assert "Boom: 2" in text


def test_a_sink_destination_cannot_be_read_back(tmp_path, capsys):
    cfg = config(tmp_path)
    text = cfg.read_text().replace(
        "batch_size: 4\n", "batch_size: 4\n    dead_letter: {type: sink, sink: spare}\n"
    )
    cfg.write_text(text)
    code = main(["dlq", "redrive", "--config", str(cfg), "--sink", "audit"])
    assert code == 2
    assert "dead-letters into sink 'spare'; read them from there" in capsys.readouterr().err
    code, summary = run_cli(capsys, "dlq", "inspect", "--config", str(cfg), "--json")
    assert code == 0
    assert summary[0]["destination"] == "sink:spare"


def test_unknown_sink_is_a_usage_error(tmp_path, capsys):
    cfg = config(tmp_path)
    code = main(["dlq", "redrive", "--config", str(cfg), "--sink", "nope"])
    assert code == 2
    assert "unknown sink" in capsys.readouterr().err


async def anyio_run(fn: Callable[..., T], *args: Any) -> T:
    # main() starts its own event loop: run it in a worker thread, away from the test's.
    import anyio.to_thread

    return await anyio.to_thread.run_sync(lambda: fn(*args))


async def test_redrive_closes_the_clients_its_sink_used(tmp_path):
    from fanout.cli.dlq import Redriver
    from fanout.config import load_config

    redriver = Redriver(load_config(config(tmp_path)), "audit", 1)
    async with redriver:
        redriver.context.http.session()  # as an HTTP sink does
        assert redriver.context.http.opened
    assert not redriver.context.http.opened
