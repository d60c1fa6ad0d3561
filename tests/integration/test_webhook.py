"""The webhook sink against a local receiver that verifies Standard Webhooks signatures and
answers from a script: outcomes, the spacing of retries and dead-letter entries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from fanout.config import build_config
from fanout.testing.contract import make_records
from fanout.testing.streamserver import Change, StreamServer
from sinks.notify.format import plain_body
from sinks.notify.webhook import WEBHOOK
from tests.integration.notify_kit import running_sink
from tests.integration.process import read_lines
from tests.integration.shardkit import running, wait_for
from tests.integration.webhook_receiver import Answer, Receiver, Request, serving

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"a secret of the receiver, 32 b!!").decode()


def as_json(value: Any) -> Any:
    from fanout.records import dumps_plain

    return orjson.loads(dumps_plain(value))


# -- signatures ------------------------------------------------------------------------------


async def test_requests_are_signed_and_carry_the_record_as_plain_json():
    records = make_records(3)
    with serving(Receiver(SECRET)) as receiver:
        options = {"type": "webhook", "url": receiver.url, "secret": SECRET}
        async with running_sink(WEBHOOK, options) as sink:
            assert await sink.send(records) == {}
    assert [r.rejected for r in receiver.requests] == [None, None, None]
    assert [r.webhook_id for r in receiver.requests] == [r["eventID"] for r in records]
    assert [r.json for r in receiver.requests] == [as_json(plain_body(r)) for r in records]
    for request in receiver.requests:
        assert abs(int(request.timestamp) - time.time()) < 60
        assert request.headers["Content-Type"] == "application/json"


async def test_a_raw_secret_and_configured_headers():
    with serving(Receiver("plain-shared-secret")) as receiver:
        options = {
            "type": "webhook",
            "url": receiver.url,
            "secret": "plain-shared-secret",
            "headers": {"Authorization": "Bearer abc", "X-Tenant": "t1"},
        }
        async with running_sink(WEBHOOK, options) as sink:
            assert await sink.send(make_records(1)) == {}
    (request,) = receiver.requests
    assert request.rejected is None
    assert request.headers["Authorization"] == "Bearer abc"
    assert request.headers["X-Tenant"] == "t1"


async def test_the_receiver_rejects_a_wrong_secret_and_the_sink_gives_up_on_it():
    with serving(Receiver(SECRET)) as receiver:
        wrong = "whsec_" + base64.b64encode(b"not the receiver's secret at all").decode()
        options = {"type": "webhook", "url": receiver.url, "secret": wrong}
        async with running_sink(WEBHOOK, options) as sink:
            failures = await sink.send(make_records(2))
    assert [r.rejected for r in receiver.requests] == ["no matching signature"] * 2
    assert sorted(failures) == [0, 1]
    assert not failures[0].retryable  # 401: permanent
    assert failures[0].reason == "HTTP 401: no matching signature"


async def test_the_receiver_rejects_an_old_timestamp_even_correctly_signed():
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    body = b'{"eventName":"INSERT"}'
    with serving(Receiver(SECRET)) as receiver:
        async with aiohttp.ClientSession() as session:
            for age in (0, 10 * 60, -10 * 60):
                stamp = str(int(time.time()) - age)
                mac = hmac.new(key, f"msg_1.{stamp}.".encode() + body, hashlib.sha256).digest()
                headers = {
                    "webhook-id": "msg_1",
                    "webhook-timestamp": stamp,
                    "webhook-signature": "v1," + base64.b64encode(mac).decode(),
                }
                async with session.post(receiver.url, data=body, headers=headers) as response:
                    await response.read()
    assert [r.status for r in receiver.requests] == [200, 401, 401]
    assert receiver.requests[1].rejected == "timestamp outside the tolerance"


# -- answers in a running worker -------------------------------------------------------------


def change(key: str) -> Change:
    keys = {"pk": {"S": key}}
    return Change("INSERT", keys, {**keys, "n": {"N": "1"}}, None)


def worker_config(server: StreamServer, arn: str, tmp_path: Path, hook: dict[str, Any]) -> Any:
    return build_config(
        {
            "streams": {
                "orders": {
                    "stream_arn": arn,
                    "endpoint_url": server.endpoint_url,
                    "region": "us-east-1",
                    "max_idle_interval": "100ms",
                }
            },
            "checkpoints": {"path": str(tmp_path / "fanout.db"), "interval": "100ms"},
            "http": {"enabled": False},
            "shutdown_grace": 5,
            "sinks": {
                "hook": {
                    "type": "webhook",
                    "secret": SECRET,
                    "timeout": 5,
                    "retry": {"initial_backoff": 0.05, "max_backoff": 0.2},
                    "dead_letter": {"type": "file", "path": str(tmp_path / "dlq.jsonl")},
                    **hook,
                }
            },
        }
    )


def for_key(receiver: Receiver, key: str) -> list[Request]:
    return [r for r in receiver.requests if r.keys == [key]]


async def test_answers_decide_outcomes_retry_spacing_and_dead_letters(tmp_path: Path):
    script = {
        "b": [Answer(429, retry_after="1"), Answer(200)],
        "c": [Answer(500), Answer(200)],
        "d": [Answer(400, text="no such customer")],
        "e": [Answer(408), Answer(503, retry_after="1"), Answer(200)],
    }
    dlq = tmp_path / "dlq.jsonl"
    with serving(Receiver(SECRET, by_key=script)) as receiver:
        async with StreamServer() as server:
            stream = server.add_stream("Orders", shards=1)
            server.put(stream, [change(k) for k in "abcdef"])
            config = worker_config(server, stream.arn, tmp_path, {"url": receiver.url})
            async with running(config):
                await wait_for(
                    lambda: set(receiver.accepted_keys()) == set("abcef") and dlq.exists(),
                    30,
                    "deliveries and the dead letter",
                )
    assert all(r.rejected is None for r in receiver.requests)  # every request was signed
    assert sorted(receiver.accepted_keys()) == list("abcef")  # each delivered once
    # 429 with Retry-After: 1 -> the next request to the hook comes a second later at least
    b = for_key(receiver, "b")
    assert [r.status for r in b] == [429, 200]
    assert b[1].at - b[0].at >= 1.0
    assert b[0].webhook_id == b[1].webhook_id  # the same message, retried
    first_after_429 = min(r.at for r in receiver.requests if r.at > b[0].at)
    assert first_after_429 - b[0].at >= 1.0
    # 500 without Retry-After -> retried after the backoff (well under a second here)
    c = for_key(receiver, "c")
    assert [r.status for r in c] == [500, 200]
    assert c[1].at - c[0].at < 1.0
    # 408 retried; 503 with Retry-After honoured
    e = for_key(receiver, "e")
    assert [r.status for r in e] == [408, 503, 200]
    assert e[2].at - e[1].at >= 1.0
    # 400 -> dead-lettered at once, with the answer as the reason
    assert [r.status for r in for_key(receiver, "d")] == [400]
    (entry,) = read_lines(dlq)
    assert entry["record"]["dynamodb"]["Keys"] == {"pk": {"S": "d"}}
    assert entry["error"] == {"class": "Rejected", "message": "HTTP 400: no such customer"}
    assert entry["attempts"] == 1
    # record mode keeps order: a key's first request comes after the previous key's success
    firsts = [for_key(receiver, k)[0].at for k in "abcdef"]
    assert firsts == sorted(firsts)


async def test_batch_mode_posts_records_together_and_retries_them_after_retry_after(
    tmp_path: Path,
):
    script = [Answer(503, retry_after="1"), Answer(200)]
    with serving(Receiver(SECRET, sequence=script)) as receiver:
        async with StreamServer() as server:
            stream = server.add_stream("Orders", shards=1)
            server.put(stream, [change(k) for k in "abcdef"])
            config = worker_config(
                server,
                stream.arn,
                tmp_path,
                {"url": receiver.url, "mode": "batch", "batch_window": 0.5},
            )
            async with running(config):
                await wait_for(lambda: len(receiver.accepted_keys()) == 6, 30, "the batch")
    first, second = receiver.requests
    assert first.status == 503
    assert second.status == 200
    assert second.at - first.at >= 1.0
    assert first.webhook_id == second.webhook_id
    assert first.webhook_id.startswith("batch_")
    assert first.body == second.body
    assert [r["keys"]["pk"] for r in second.json["records"]] == list("abcdef")
    assert not (tmp_path / "dlq.jsonl").exists()


async def test_batch_mode_isolates_the_record_the_receiver_refuses(tmp_path: Path):
    def refuse_poison(request: Request) -> Answer | None:
        return Answer(422, text="poison") if "p" in request.keys else None

    dlq = tmp_path / "dlq.jsonl"
    with serving(Receiver(SECRET, decide=refuse_poison)) as receiver:
        async with StreamServer() as server:
            stream = server.add_stream("Orders", shards=1)
            server.put(stream, [change(k) for k in "abcpefgh"])
            config = worker_config(
                server,
                stream.arn,
                tmp_path,
                {"url": receiver.url, "mode": "batch", "batch_window": 0.5},
            )
            async with running(config):
                await wait_for(
                    lambda: dlq.exists() and len(set(receiver.accepted_keys())) == 7,
                    30,
                    "the bisection",
                )
    assert sorted(receiver.accepted_keys()) == sorted("abcefgh")
    (entry,) = read_lines(dlq)
    assert entry["record"]["dynamodb"]["Keys"] == {"pk": {"S": "p"}}
    assert entry["error"]["message"] == "HTTP 422: poison"
