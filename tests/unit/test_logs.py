from __future__ import annotations

import io
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import anyio
import orjson
import pytest
from pydantic import SecretStr

from fanout.config import Config, Settings, SinkConfig
from fanout.observe import logs
from fanout.observe.logs import JsonFormatter, Redactor, TextFormatter, config_secrets
from fanout.testing.streamserver import Change, StreamServer

REPO = Path(__file__).resolve().parents[2]

# Values that must never reach a log line in these tests.
WEBHOOK_SECRET = "whsec-7f3a9c2e1b"
HOOK_TOKEN = "tok-Zq81LmN0pX"
SQS_PASSWORD = "p@ss/w0rd+x"
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def root_logging() -> Iterator[None]:
    """``logs.setup`` replaces the root handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    saved = logs.REDACTOR
    logs.REDACTOR = Redactor()
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        logs.REDACTOR = saved


def make_record(msg: str = "batch_retrying", exc: bool = False, **extra: Any) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError(f"boom {WEBHOOK_SECRET}")
        except RuntimeError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("fanout.dispatch", logging.WARNING, __file__, 1, msg, None, exc_info)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_timestamp_level_event_and_context_fields():
    line = JsonFormatter(Redactor()).format(
        make_record(stream="orders", shard="shardId-1", sink="search", seq="4900", records=3)
    )
    data = orjson.loads(line)
    assert list(data)[:4] == ["timestamp", "level", "logger", "event"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["timestamp"])
    assert data["level"] == "warning"
    assert data["event"] == "batch_retrying"
    assert data["logger"] == "fanout.dispatch"
    assert (data["stream"], data["shard"], data["sink"], data["seq"]) == (
        "orders",
        "shardId-1",
        "search",
        "4900",
    )
    assert data["records"] == 3
    assert "\n" not in line


def test_json_lines_encode_any_value():
    data = orjson.loads(
        JsonFormatter(Redactor()).format(make_record(path=Path("/x"), items={1, 2}, when=None))
    )
    assert data["path"] == "/x"
    assert sorted(data["items"]) == [1, 2]
    assert data["when"] is None


def test_text_lines_for_a_terminal():
    line = TextFormatter(Redactor()).format(
        make_record(stream="orders", sink="search", records=3, tags=["a"])
    )
    assert re.match(
        r"\d\d:\d\d:\d\d\.\d{3} warning batch_retrying "
        r"stream=orders sink=search records=3 tags=\[\"a\"\]$",
        line,
    )


def test_exceptions_are_logged_without_secrets():
    redactor = Redactor([WEBHOOK_SECRET])
    data = orjson.loads(JsonFormatter(redactor).format(make_record(exc=True)))
    assert "RuntimeError: boom ***" in data["exception"]
    text = TextFormatter(redactor).format(make_record(exc=True))
    assert WEBHOOK_SECRET not in text
    assert "boom ***" in text


def test_fields_with_secret_names_are_masked_whatever_their_value():
    data = orjson.loads(
        JsonFormatter(Redactor()).format(
            make_record(
                webhook_secret="abc",
                password="hunter2",
                headers={"Authorization": "Basic xyz", "Accept": "json"},
                api_key=None,
            )
        )
    )
    assert data["webhook_secret"] == "***"
    assert data["password"] == "***"
    assert data["headers"] == {"Authorization": "***", "Accept": "json"}
    assert data["api_key"] is None


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        (
            "https://AKIAIOSFODNN7EXAMPLE:secretpw@sqs.example/1/q",
            ["AKIAIOSFODNN7EXAMPLE", "secretpw"],
        ),
        ("POST https://user:pw123@hooks.example/x failed", ["user:pw123"]),
        ("https://ghp_abcdef123456@git.example/repo", ["ghp_abcdef123456"]),
        (
            "POST https://hook:p@ss/w0rd+x@hooks.example:8443/in failed",
            ["p@ss", "ss/w0rd", "w0rd+x"],
        ),
        ("(https://u:pw9x@h.example)", ["pw9x"]),
        ("GET /hook?token=abc123&x=1", ["abc123"]),
        (
            "url=https://q.example/?X-Amz-Signature=deadbeef&X-Amz-Security-Token=FQoG",
            ["deadbeef", "FQoG"],
        ),
        (
            "key id AKIAIOSFODNN7EXAMPLE and ASIAIOSFODNN7EXAMPLE",
            ["AKIAIOSFODNN7EXAMPLE", "ASIAIOSFODNN7EXAMPLE"],
        ),
        (
            "Authorization: AWS4-HMAC-SHA256 "
            "Credential=AKIDEXAMPLE/20240101/us-east-1/dynamodb/aws4_request, "
            "SignedHeaders=host, Signature=" + "ab" * 32,
            ["AKIDEXAMPLE/20240101", "ab" * 32],
        ),
        ("header Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", ["eyJhbGciOiJIUzI1NiJ9"]),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG", ["wJalrXUtnFEMI"]),
    ],
)
def test_credential_shaped_text_is_masked(text, leaked):
    cleaned = Redactor().redact(text)
    for secret in leaked:
        assert secret not in cleaned
    assert "***" in cleaned


@pytest.mark.parametrize(
    "text",
    [
        "shard shardId-00001 of arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/2024",
        "queue https://sqs.us-east-1.amazonaws.com/123456789012/orders-dlq",
        "GET https://search.example:9200/orders/_bulk?refresh=false&email=a@b.example&x=1",
        "mail ops@example.com about https://h.example/x",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert Redactor().redact(text) == text


def test_registered_secrets_are_masked_in_any_form():
    redactor = Redactor([SQS_PASSWORD, "my secret phrase", "abc"])
    for form in (
        SQS_PASSWORD,
        "p%40ss%2Fw0rd%2Bx",
        "my secret phrase",
        "my+secret+phrase",
        "my%20secret%20phrase",
    ):
        assert redactor.redact(f"failed: {form}!") == "failed: ***!"
    # too short to register: masking every "abc" would garble the logs and protect nothing
    assert redactor.redact("abc") == "abc"


class HookConfig(SinkConfig):
    """A sink config with the kinds of secret options sinks have."""

    type: Literal["hook"] = "hook"
    url: str
    secret: SecretStr
    signing_token: str | None = None
    headers: dict[str, str] = {}


def test_config_secrets_finds_every_secret_of_a_config(tmp_path):
    path = tmp_path / "fanout.yaml"
    path.write_text(
        "streams: {orders: {table: Orders}}\n"
        "sinks:\n"
        "  hook: {type: hook, url: 'https://h.example/in?token=${HOOK_TOKEN}',\n"
        "         secret: '${WEBHOOK_SECRET}'}\n"
        "  audit: {type: file, path: /tmp/a, dead_letter: {type: sqs, queue_url: '${DLQ_URL}'}}\n"
        "  other: {type: file, path: '${UNSET:-/tmp/b}'}\n"
    )
    env = {
        "HOOK_TOKEN": HOOK_TOKEN,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "DLQ_URL": f"https://dlquser:{SQS_PASSWORD}@sqs.example/1/q",
        "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "UNRELATED": "not-a-secret-value",
    }
    hook = HookConfig(
        url=f"https://h.example/in?token={HOOK_TOKEN}",
        secret=SecretStr(WEBHOOK_SECRET),
        signing_token="sig-token-value",
        headers={
            "Authorization": "Bearer header-token-1",
            "X-Api-Key": "api-key-value",
            "Accept": "json",
        },
    )
    settings = Settings(
        streams={
            "orders": {
                "table": "Orders",
                "endpoint_url": "http://ddb:pw-in-endpoint@127.0.0.1:8000",
            }
        },
        sinks={"hook": {"type": "hook"}},
    )
    secrets = set(config_secrets(Config(settings, {"hook": hook}), path, env))
    for value in (
        HOOK_TOKEN,
        WEBHOOK_SECRET,
        "sig-token-value",
        "Bearer header-token-1",
        "api-key-value",
        "pw-in-endpoint",
        env["DLQ_URL"],
        AWS_KEY_ID,
        AWS_SECRET,
    ):
        assert value in secrets, value
    assert "json" not in secrets
    assert "not-a-secret-value" not in secrets
    assert "/tmp/b" not in secrets  # a default written in the file is no secret


def test_setup_installs_a_masking_handler(root_logging):
    out = io.StringIO()
    handler = logs.setup("json", "DEBUG", out, secrets=[WEBHOOK_SECRET])
    assert logging.getLogger().handlers == [handler]
    logging.getLogger("fanout.test").info(
        "sink_started", extra={"sink": "hook", "note": f"s={WEBHOOK_SECRET}"}
    )
    logging.getLogger("botocore").debug("hidden: botocore logs headers at DEBUG")
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["sink_started"]
    assert lines[0]["note"] == "s=***"


def test_setup_masks_the_aws_credentials_of_the_environment(root_logging, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEBYaDH-session-token")
    out = io.StringIO()
    logs.setup("text", "INFO", out)
    logging.getLogger("fanout.test").warning(
        "oops %s / %s", AWS_SECRET, "FwoGZXIvYXdzEBYaDH-session-token"
    )
    assert AWS_SECRET not in out.getvalue()
    assert "session-token" not in out.getvalue()
    assert "oops *** / ***" in out.getvalue()


# -- end to end: `fanout run` never logs a secret -------------------------------------------


def leaky_handler(event: dict[str, Any], context: Any) -> None:
    """A handler whose errors echo what a careless HTTP client puts in its messages."""
    raise RuntimeError(
        f"POST https://hook:{os.environ['SQS_PASSWORD']}@hooks.example/in"
        f"?token={context.function_name} "
        f"failed (Authorization: Bearer {os.environ['WEBHOOK_SECRET']}; signed with "
        f"{os.environ['AWS_ACCESS_KEY_ID']}/{os.environ['AWS_SECRET_ACCESS_KEY']})"
    )


@pytest.mark.integration
async def test_fanout_run_logs_no_secret_from_config_environment_or_errors(tmp_path):
    async with StreamServer() as server:
        stream = server.add_stream("Orders", keys=("pk",))
        server.put(
            stream.shards[0],
            [Change("INSERT", {"pk": {"S": f"k{i}"}}, {"pk": {"S": f"k{i}"}}) for i in range(3)],
        )
        config = tmp_path / "fanout.yaml"
        config.write_text(
            f"""
streams:
  orders:
    table: Orders
    endpoint_url: "{server.endpoint_url}"
    region: us-east-1
    max_idle_interval: 100ms
checkpoints: {{path: {tmp_path}/fanout.db, interval: 100ms}}
http: {{host: 127.0.0.1, port: 0}}
shutdown_grace: 2s
sinks:
  leaky:
    type: handler
    handler: tests.unit.test_logs:leaky_handler
    function_name: "${{HOOK_TOKEN}}"
    retry: {{max_attempts: 2, initial_backoff: 0, max_backoff: 0, bisect_on_error: false}}
    dead_letter: {{type: file, path: {tmp_path}/dlq.jsonl}}
"""
        )
        env = dict(
            os.environ,
            PYTHONPATH=str(REPO),
            HOOK_TOKEN=HOOK_TOKEN,
            WEBHOOK_SECRET=WEBHOOK_SECRET,
            SQS_PASSWORD=SQS_PASSWORD,
            AWS_ACCESS_KEY_ID=AWS_KEY_ID,
            AWS_SECRET_ACCESS_KEY=AWS_SECRET,
        )
        process = await anyio.open_process(
            [
                sys.executable,
                "-m",
                "fanout",
                "run",
                "--config",
                str(config),
                "--log-format",
                "json",
            ],
            env=env,
            cwd=str(tmp_path),
        )
        output = bytearray()

        async def drain(receive: Any) -> None:
            async for chunk in receive:
                output.extend(chunk)

        async with process, anyio.create_task_group() as tg:
            assert process.stderr is not None
            assert process.stdout is not None
            tg.start_soon(drain, process.stderr)
            tg.start_soon(drain, process.stdout)
            dlq = tmp_path / "dlq.jsonl"
            with anyio.fail_after(30):
                while not (dlq.exists() and dlq.read_bytes().count(b"\n") >= 3):
                    await anyio.sleep(0.05)
            process.terminate()
            assert await process.wait() == 0
    text = output.decode()
    events = [orjson.loads(line)["event"] for line in text.splitlines() if line.startswith("{")]
    assert "sink_send_failed" in events
    assert "record_dead_lettered" in events
    for secret in (HOOK_TOKEN, WEBHOOK_SECRET, SQS_PASSWORD, AWS_KEY_ID, AWS_SECRET):
        assert secret not in text, secret
        assert secret[2:-2] not in text, secret  # nor a part of one
    assert "***" in text
