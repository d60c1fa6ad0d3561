"""Optional Sentry reports (FANOUT_SENTRY_DSN): handler and sink failures with stream, shard,
sink and sequence number tags, rate-limited, and never a record's contents. A transport that
keeps what it is given stands in for the network."""

from __future__ import annotations

import logging
import sys
from typing import Any

import anyio
import orjson
import pytest
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from fanout.app import Worker
from fanout.config import build_config
from fanout.errors import ConfigError
from fanout.observe import sentry
from fanout.retry import RetryPolicy, no_wait
from fanout.testing.streamserver import Change, StreamServer

DSN = "https://public@sentry.example/1"
SECRET_PAYLOAD = "card-4111111111111111"


class Kept(Transport):
    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        event = envelope.get_event()
        if event is not None:
            self.events.append(dict(event))


@pytest.fixture
def kept():
    transport = Kept()
    reporter = sentry.setup({sentry.ENV_DSN: DSN}, transport=transport, min_interval_s=60)
    assert reporter is not None
    yield transport
    reporter.close()


def poison_handler(event: dict[str, Any], context: Any) -> None:
    for record in event["Records"]:
        if "card" in record["dynamodb"]["NewImage"]:
            raise ValueError("cannot charge this order")


def test_nothing_happens_without_a_dsn():
    assert sentry.setup({}) is None


def test_a_dsn_without_the_sdk_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentry_sdk", None)
    with pytest.raises(ConfigError, match=r"pip install 'fanout\[sentry\]'"):
        sentry.setup({sentry.ENV_DSN: DSN})


def test_only_failures_are_reported_once_a_minute_per_kind(kept):
    log = logging.getLogger("fanout.dispatch")
    fields = {"stream": "orders", "shard": "shardId-1", "sink": "audit", "seq": "100"}
    log.warning("batch_retrying", extra=fields)  # a retry is not a report
    for seq in ("100", "101", "102"):
        log.warning("sink_send_failed", extra={**fields, "seq": seq, "error": "OSError: disk"})
    log.warning("sink_send_failed", extra={**fields, "sink": "search", "error": "OSError: x"})
    assert [e["tags"]["sink"] for e in kept.events] == ["audit", "search"]
    first = kept.events[0]
    assert first["level"] == "warning"
    assert first["message"] == "sink_send_failed: OSError: disk"
    assert first["tags"] == {
        "event": "sink_send_failed",
        "error_class": "OSError",
        "stream": "orders",
        "shard": "shardId-1",
        "sink": "audit",
        "sequence_number": "100",
    }


async def test_handler_failures_in_a_worker_are_reported_without_the_record(kept, tmp_path):
    async with StreamServer() as server:
        stream = server.add_stream("Orders", keys=("pk",))
        server.put(
            stream.shards[0],
            [
                Change("INSERT", {"pk": {"S": "a"}}, {"pk": {"S": "a"}}),
                Change(
                    "INSERT",
                    {"pk": {"S": "b"}},
                    {"pk": {"S": "b"}, "card": {"S": SECRET_PAYLOAD}},
                ),
            ],
        )
        config = build_config(
            {
                "streams": {
                    "orders": {
                        "table": "Orders",
                        "endpoint_url": server.endpoint_url,
                        "region": "us-east-1",
                        "max_idle_interval": 0.05,
                    }
                },
                "checkpoints": {"path": str(tmp_path / "fanout.db")},
                "http": {"enabled": False},
                "sinks": {
                    "charge": {
                        "type": "handler",
                        "handler": "tests.unit.test_sentry:poison_handler",
                        "retry": {"max_attempts": 2},
                    }
                },
            }
        )
        worker = Worker(config, handle_signals=False, backoff=RetryPolicy(0.0, 0.0, sleep=no_wait))
        dlq = config.dead_letter_path("charge")
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(20):
                while not dlq.exists():
                    await anyio.sleep(0.02)
            worker.stop()
    names = [e["tags"]["event"] for e in kept.events]
    assert "sink_send_failed" in names
    assert "record_dead_lettered" in names
    given_up = next(e for e in kept.events if e["tags"]["event"] == "record_dead_lettered")
    assert given_up["level"] == "error"
    assert given_up["tags"]["sink"] == "charge"
    assert given_up["tags"]["stream"] == "orders"
    assert given_up["tags"]["shard"].startswith("shardId-")
    assert given_up["tags"]["sequence_number"].isdigit()
    assert given_up["tags"]["error_class"] == "ValueError"
    assert "cannot charge this order" in given_up["message"]
    sent = orjson.dumps(kept.events).decode()
    assert SECRET_PAYLOAD not in sent
    assert "NewImage" not in sent
    for event in kept.events:
        assert set(event) <= sentry._EVENT_KEYS
        assert "breadcrumbs" not in event
        assert "request" not in event
