"""No secret in any output: known secrets (AWS credentials, a password in a webhook URL, the
OpenSearch basic-auth password from its environment variable, a webhook signing secret, a
``${VAR}`` of the config) are set, and every output is searched for them: a worker's log,
``/readyz``, ``/healthz`` and ``/metrics``, every command's stdout and stderr, and the
traceback of a worker process dying on an unexpected exception."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.process import WorkerProcess, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "aWsSeCrEt0123456789abcdefXYZqrs",
    "OPENSEARCH_USERNAME": "fanout",
    "OPENSEARCH_PASSWORD": "osPw-Z7q2w9e4r1",
    "FANOUT_TEST_DLQ_TOKEN": "dlqTok-3n5b7v9c",
}
HOOK_PASSWORD = "hookPw-8f3k2m9x"
HMAC_SECRET = "hmacKey-4t8y1u6i"
NEEDLES = [v for k, v in SECRETS.items() if k != "OPENSEARCH_USERNAME"]
NEEDLES += [HOOK_PASSWORD, HMAC_SECRET]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def leaks(text: str) -> list[str]:
    return [n for n in NEEDLES if n in text]


def fanout(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fanout", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return str(answer.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())


def test_no_output_of_a_worker_or_a_command_shows_a_secret(
    tmp_path, dynamodb_local, ddb_table, ddb_client
):
    table, _ = ddb_table()
    dead, port = free_port(), free_port()
    hook = f"http://fanout:{HOOK_PASSWORD}@127.0.0.1:{dead}/hook"
    config = tmp_path / "fanout.yaml"
    config.write_text(
        f"""
streams:
  orders: {{table: {table}, endpoint_url: "{dynamodb_local.endpoint_url}", region: us-east-1,
            max_idle_interval: 100ms}}
checkpoints: {{path: "{tmp_path}/fanout.db", interval: 200ms}}
http: {{host: 127.0.0.1, port: {port}, stall_timeout: 1s}}
shutdown_grace: 3s
sinks:
  hook:
    type: webhook
    url: "{hook}"
    secret: {HMAC_SECRET}
    retry: {{max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms}}
    dead_letter: {{type: file, path: "{tmp_path}/dlq-${{FANOUT_TEST_DLQ_TOKEN}}.jsonl"}}
  search:
    type: opensearch
    endpoint: "http://127.0.0.1:{dead}"
    index: orders
    auth: {{type: basic}}
    retry: {{max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms}}
"""
    )
    env = {**os.environ, **SECRETS, "PYTHONPATH": str(REPO)}
    outputs: dict[str, str] = {}
    ddb_client.put_item(TableName=table, Item={"pk": {"S": "k1"}})

    # the worker: its log and its HTTP endpoint, while both sinks fail
    log = tmp_path / "worker.log"
    saved = dict(os.environ)
    os.environ.update(SECRETS)
    try:
        worker = WorkerProcess(config, tmp_path / "out.jsonl", log)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        wait_for(lambda: "record_dead_lettered" in log.read_text(), 30, "a dead letter")
        wait_for(lambda: '"ready"' in get(f"http://127.0.0.1:{port}/readyz"), 30, "ready")
        for path in ("/readyz", "/healthz", "/metrics"):
            outputs[path] = get(f"http://127.0.0.1:{port}{path}")
    finally:
        worker.terminate()
    outputs["worker log"] = log.read_text()
    assert 'outcome="dead_lettered"' in outputs["/metrics"]

    # every command
    triggers = REPO / "tests" / "integration" / "triggers" / "triggers.json"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        config.read_text().replace(f'url: "{hook}"', f'url: "ftp://fanout:{HOOK_PASSWORD}@x"')
    )
    for argv in (
        ("validate", "--config", str(config)),
        ("validate", "--config", str(bad)),
        ("status", "--config", str(config)),
        ("status", "--config", str(config), "--json"),
        ("dlq", "inspect", "--config", str(config)),
        ("dlq", "inspect", "--config", str(config), "--json"),
        ("dlq", "redrive", "--config", str(config), "--sink", "hook"),
        ("import", "--from", str(triggers), "--table", table),
        ("schema",),
    ):
        done = fanout(*argv, env=env)
        outputs[" ".join(argv)] = done.stdout + done.stderr
    # the ${VAR} is masked where a command prints it; the bad config's error names the field
    assert "dlq-***.jsonl" in outputs[f"dlq inspect --config {config}"]
    assert "sinks.hook.url" in outputs[f"validate --config {bad}"]

    # a worker process dying on an unexpected exception (its task, thread and traceback)
    crash = f"""
import asyncio, os, sys, threading
import fanout.app
async def run(self):
    secret = "{hook} " + os.environ["AWS_SECRET_ACCESS_KEY"] + " {HMAC_SECRET}"
    async def lost():
        raise ValueError("task: " + secret)
    task = asyncio.ensure_future(lost())
    await asyncio.sleep(0.05)
    del task  # never awaited: asyncio reports it to the loop's exception handler
    import gc; gc.collect()
    thread = threading.Thread(target=lambda: 1 / 0 if False else (_ for _ in ()).throw(
        RuntimeError("thread: " + secret)))
    thread.start(); thread.join()
    raise RuntimeError("unexpected: " + secret)
fanout.app.Worker.run = run
from fanout.cli import main
sys.exit(main(["run", "--config", {str(config)!r}]))
"""
    died = subprocess.run(
        [sys.executable, "-c", crash],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    outputs["crash"] = died.stdout + died.stderr
    assert died.returncode != 0
    assert "RuntimeError: unexpected: http://***@127.0.0.1" in outputs["crash"]
    assert "thread: " in outputs["crash"]
    assert "loop_error" in outputs["crash"]

    found = {name: leaks(text) for name, text in outputs.items() if leaks(text)}
    assert found == {}, json.dumps({k: outputs[k][-3000:] for k in found}, indent=1)
