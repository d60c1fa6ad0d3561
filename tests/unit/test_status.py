from __future__ import annotations

import time
from pathlib import Path

import anyio
import orjson
import pytest

from fanout.cli import main
from fanout.cli.status import collect, count_lines, render
from fanout.config import load_config
from fanout.progress.sqlite import SQLiteCheckpointStore
from fanout.progress.store import CheckpointRow

ORDERS_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/2024-01-01T00:00:00.000"
USERS_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Users/stream/2024-02-02T00:00:00.000"
GONE_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Gone/stream/2023-01-01T00:00:00.000"


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "fanout.yaml"
    path.write_text(
        f"""
streams:
  orders: {{table: Orders}}
  users: {{stream_arn: "{USERS_ARN}"}}
checkpoints: {{path: {tmp_path}/state/fanout.db}}
sinks:
  audit: {{type: file, path: {tmp_path}/audit.jsonl}}
  search:
    type: file
    path: {tmp_path}/search.jsonl
    dead_letter: {{type: file, path: {tmp_path}/search-dlq.jsonl}}
  notify:
    type: file
    path: {tmp_path}/notify.jsonl
    dead_letter: {{type: sqs, queue_url: "https://AKIAIOSFODNN7EXAMPLE:s3cr3t-pw@sqs.example/1/dlq"}}
"""
    )
    return path


def seed_store(tmp_path: Path) -> None:
    async def seed() -> None:
        store = SQLiteCheckpointStore(tmp_path / "state" / "fanout.db")
        await store.open()
        try:
            await store.save(
                [
                    CheckpointRow(ORDERS_ARN, "shardId-0001", "100", True),
                    CheckpointRow(ORDERS_ARN, "shardId-0002", "250", False),
                    CheckpointRow(USERS_ARN, "shardId-0009", None, False),
                    CheckpointRow(GONE_ARN, "shardId-0100", "5", False),
                ]
            )
        finally:
            await store.aclose()

    anyio.run(seed)
    # Three dead letters for `search`, none yet for `audit` (its default file next to the db).
    (tmp_path / "search-dlq.jsonl").write_bytes(b'{"a":1}\n{"a":2}\n{"a":3}\n')


def test_status_as_json(tmp_path, capsys):
    config = write_config(tmp_path)
    seed_store(tmp_path)
    assert main(["status", "--config", str(config), "--json"]) == 0
    status = orjson.loads(capsys.readouterr().out)
    assert status["checkpoint_store"] == f"{tmp_path}/state/fanout.db"
    shards = {(s["stream"], s["shard_id"]): s for s in status["shards"]}
    assert shards[("orders", "shardId-0001")]["state"] == "finished"
    assert shards[("orders", "shardId-0002")]["state"] == "open"
    assert shards[("orders", "shardId-0002")]["sequence_number"] == "250"
    assert shards[("users", "shardId-0009")]["sequence_number"] is None
    assert shards[("(not configured)", "shardId-0100")]["stream_arn"] == GONE_ARN
    for shard in status["shards"]:
        assert 0 <= shard["checkpoint_age_s"] < 60
    streams = {s["stream"]: s for s in status["streams"]}
    assert streams["orders"] | {"max_checkpoint_age_s": None} == {
        "stream": "orders",
        "source": "table Orders",
        "shards": 2,
        "open_shards": 1,
        "finished_shards": 1,
        "max_checkpoint_age_s": None,
        "held_shards": 0,
    }
    assert streams["users"]["source"] == USERS_ARN
    assert streams["users"]["open_shards"] == 1
    dlq = {d["sink"]: d for d in status["dead_letters"]}
    assert dlq["search"]["records"] == 3
    assert dlq["search"]["last_written_at"] is not None
    assert dlq["audit"] == {
        "sink": "audit",
        "type": "file",
        "destination": f"{tmp_path}/state/dlq-audit.jsonl",
        "records": 0,
        "last_written_at": None,
    }
    assert dlq["notify"]["records"] is None
    assert "s3cr3t-pw" not in dlq["notify"]["destination"]
    assert "AKIAIOSFODNN7EXAMPLE" not in dlq["notify"]["destination"]


def test_status_as_tables(tmp_path, capsys):
    config = write_config(tmp_path)
    seed_store(tmp_path)
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"checkpoint store: {tmp_path}/state/fanout.db"
    assert any(line.split()[:5] == ["orders", "table", "Orders", "2", "1"] for line in lines)
    assert any(line.split()[:4] == ["orders", "shardId-0002", "open", "250"] for line in lines)
    assert any(
        line.split()[:3] == ["search", f"{tmp_path}/search-dlq.jsonl", "3"] for line in lines
    )
    assert any(
        line.split()[:3] == ["notify", "https://***@sqs.example/1/dlq", "n/a"] for line in lines
    )
    assert "s3cr3t-pw" not in out


def test_checkpoint_ages_come_from_the_update_times(tmp_path):
    config = load_config(write_config(tmp_path))
    seed_store(tmp_path)
    later = time.time() + 7200
    status = collect(config, now=later)
    ages = {s["shard_id"]: s["checkpoint_age_s"] for s in status["shards"]}
    assert 7190 < ages["shardId-0002"] < 7300
    orders = next(s for s in status["streams"] if s["stream"] == "orders")
    assert orders["max_checkpoint_age_s"] == ages["shardId-0002"]
    text = render(status)
    assert "2.0h" in text


def test_status_without_a_checkpoint_store_says_so(tmp_path, capsys):
    config = write_config(tmp_path)
    assert main(["status", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "no checkpoint store at" in err
    assert not (tmp_path / "state" / "fanout.db").exists()


def test_status_with_a_bad_config(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("streams: {}\nsinks: {}\n")
    assert main(["status", "--config", str(path)]) == 2
    assert "invalid configuration" in capsys.readouterr().err


def test_status_masks_secrets_of_the_config_in_destinations(tmp_path, monkeypatch, capsys):
    from fanout.observe import logs

    monkeypatch.setattr(logs, "REDACTOR", logs.Redactor())
    monkeypatch.setenv("DLQ_QUEUE", "queue-named-by-a-secret-9f2")
    config = tmp_path / "fanout.yaml"
    config.write_text(
        f"""
streams: {{orders: {{table: Orders}}}}
checkpoints: {{path: {tmp_path}/state/fanout.db}}
sinks:
  notify:
    type: file
    path: {tmp_path}/notify.jsonl
    dead_letter: {{type: sqs, queue_url: "https://sqs.example/1/${{DLQ_QUEUE}}"}}
"""
    )
    seed_store(tmp_path)
    assert main(["status", "--config", str(config), "--json"]) == 0
    out = capsys.readouterr().out
    assert "queue-named-by-a-secret-9f2" not in out
    assert "https://sqs.example/1/***" in out


def test_status_needs_a_config(monkeypatch, capsys):
    monkeypatch.delenv("FANOUT_CONFIG", raising=False)
    assert main(["status"]) == 2
    assert "no config file" in capsys.readouterr().err


def test_status_reads_the_config_from_the_environment(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path)
    seed_store(tmp_path)
    monkeypatch.setenv("FANOUT_CONFIG", str(config))
    assert main(["status", "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["shards"]


@pytest.mark.parametrize(
    ("data", "expected"), [(b"", 0), (b"{}\n", 1), (b"{}\n" * 300_000, 300_000)]
)
def test_count_lines(tmp_path, data, expected):
    path = tmp_path / "dlq.jsonl"
    path.write_bytes(data)
    assert count_lines(path) == expected


def test_status_shows_the_application_owners_lease_ages_and_workers(tmp_path, capsys):
    from fanout.progress.store import Claim, WorkerRow

    config = write_config(tmp_path)
    seed_store(tmp_path)

    async def lease() -> None:
        store = SQLiteCheckpointStore(tmp_path / "state" / "fanout.db", "fanout")
        rows = await store.load(ORDERS_ARN)
        await store.take(
            [Claim(ORDERS_ARN, "shardId-0002", None, rows["shardId-0002"].counter)], "w1"
        )
        now = time.time()
        await store.heartbeat(WorkerRow("w1", 3, now - 1, now - 100, "host-a", 41, "audit=file", 1))
        await store.heartbeat(
            WorkerRow("w2", 9, now - 3600, now - 7200, "host-b", 42, "audit=file", 0)
        )
        await store.aclose()

    anyio.run(lease)
    assert main(["status", "--config", str(config), "--json"]) == 0
    status = orjson.loads(capsys.readouterr().out)
    assert status["application"] == "fanout"
    assert status["lease_duration_s"] == 10.0
    shards = {s["shard_id"]: s for s in status["shards"]}
    assert shards["shardId-0002"]["owner"] == "w1"
    assert 0 <= shards["shardId-0002"]["lease_age_s"] < 60
    assert shards["shardId-0001"]["owner"] is None
    workers = {w["worker_id"]: w for w in status["workers"]}
    assert workers["w1"]["live"] is True
    assert workers["w2"]["live"] is False
    assert workers["w1"]["host"] == "host-a"
    streams = {s["stream"]: s for s in status["streams"]}
    assert streams["orders"]["held_shards"] == 1
    assert main(["status", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["application:", "fanout"]
    assert any(line.split()[:1] == ["w1"] and line.split()[-1] == "live" for line in lines)
    assert any(line.split()[:2] == ["orders", "shardId-0002"] and "w1" in line for line in lines)


def test_status_reads_the_application_of_the_config_file_name_or_its_setting(tmp_path, capsys):
    base = write_config(tmp_path).read_text()
    named = tmp_path / "orders.yaml"
    named.write_text(base)
    set_apart = tmp_path / "other.yaml"
    set_apart.write_text("application: billing\n" + base)
    seed_store(tmp_path)  # rows of the application "fanout"
    for path, application in ((named, "orders"), (set_apart, "billing")):
        assert main(["status", "--config", str(path), "--json"]) == 0
        status = orjson.loads(capsys.readouterr().out)
        assert status["application"] == application
        assert status["shards"] == []  # another application's checkpoints are not its own
