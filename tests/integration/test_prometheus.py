"""A real Prometheus scrapes a running worker; every PromQL expression of the Grafana
dashboard and of the alert rules runs against it: each parses, every panel returns data,
and every rule loads and evaluates."""

from __future__ import annotations

import json
import re
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import yaml

from fanout.testing.streamserver import Change, StreamServer
from tests.integration.test_operations import running, stream_config

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

# What Grafana puts in for its variables when the whole range of every stream and sink is shown.
GRAFANA_VARIABLES = {
    "__rate_interval": "15s",
    "__interval": "5s",
    "__range": "5m",
    "stream": ".*",
    "sink": ".*",
}


def substitute(expr: str) -> str:
    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in GRAFANA_VARIABLES, f"unknown Grafana variable ${name} in {expr}"
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


def dashboard_queries() -> list[tuple[str, str]]:
    data = json.loads((DEPLOY / "grafana" / "fanout-dashboard.json").read_text())
    return [
        (f"{panel['title']} [{target['refId']}]", substitute(target["expr"]))
        for panel in data["panels"]
        for target in panel.get("targets", [])
    ]


def alert_queries() -> list[tuple[str, str]]:
    data = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    return [(rule["alert"], rule["expr"]) for group in data["groups"] for rule in group["rules"]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.fail(
            "prometheus is not installed: it comes with Debian's prometheus package "
            "(`make system-deps`, or `apt-get install prometheus`)",
            pytrace=False,
        )
    return found


def prometheus_config(tmp_path: Path, worker_port: int) -> Path:
    """deploy/prometheus/prometheus.yml, pointed at the test worker and scraping every second."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(DEPLOY / "prometheus" / rule) for rule in config["rule_files"]]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{worker_port}"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


class PrometheusAPI:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        async with self.session.get(f"{self.base}{path}", params=params) as resp:
            body: dict[str, Any] = await resp.json(content_type=None)
            return body

    async def query(self, expr: str) -> dict[str, Any]:
        return await self.get("/api/v1/query", query=expr)

    async def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer = await self.query(expr)
            except aiohttp.ClientError:
                answer = {}
            if answer.get("status") == "success" and answer["data"]["result"]:
                result: list[dict[str, Any]] = answer["data"]["result"]
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"Prometheus never answered {expr!r} with data: {answer}")
            await anyio.sleep(0.25)


async def test_dashboard_and_alert_queries_run_against_a_real_prometheus(tmp_path):
    binary = prometheus_binary()
    async with StreamServer() as server:
        stream = server.add_stream("Orders", keys=("pk",))
        shard = stream.shards[0]
        server.put(
            shard,
            [Change("INSERT", {"pk": {"S": f"k{i}"}}, {"pk": {"S": f"k{i}"}}) for i in range(20)],
        )
        server.throttle("GetRecords", times=2)
        config = {
            "streams": {"orders": stream_config(server.endpoint_url, "Orders")},
            "checkpoints": {"path": str(tmp_path / "fanout.db"), "interval": 0.2},
            "sinks": {
                "audit": {"type": "file", "path": str(tmp_path / "audit.jsonl")},
                "flaky": {
                    "type": "handler",
                    "handler": "tests.integration.test_operations:poison_handler",
                    "batch_size": 5,
                    "retry": {"max_attempts": 2, "initial_backoff": 0.01, "max_backoff": 0.01},
                    "dead_letter": {"type": "file", "path": str(tmp_path / "dlq.jsonl")},
                },
            },
        }
        async with running(config) as worker:
            assert worker.http_port is not None
            port = free_port()
            log = (tmp_path / "prometheus.log").open("wb")
            process = await anyio.open_process(
                [
                    binary,
                    f"--config.file={prometheus_config(tmp_path, worker.http_port)}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=log,
            )
            try:
                async with aiohttp.ClientSession() as session:
                    api = PrometheusAPI(session, f"http://127.0.0.1:{port}")
                    await check_queries(api, lambda: server.put(shard, POISON))
            finally:
                process.terminate()
                with anyio.move_on_after(10):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                await process.aclose()
                log.close()


POISON = [
    Change("INSERT", {"pk": {"S": f"p{i}"}}, {"pk": {"S": f"p{i}"}, "poison": {"BOOL": True}})
    for i in range(2)
]


async def check_queries(api: PrometheusAPI, put_poison: Callable[[], object]) -> None:
    # The worker is scraped, and enough samples exist for rate() over the panels' window.
    (up,) = await api.wait_for('up{job="fanout"} == 1')
    assert up["metric"]["job"] == "fanout"
    await api.wait_for('count_over_time(fanout_records_read_total{stream="orders"}[15s]) >= 4')
    # Dead letters after Prometheus saw the counter at zero: increase() sees them.
    await api.wait_for('fanout_dlq_records_total{sink="flaky"} == 0')
    put_poison()
    await api.wait_for('fanout_sink_records_total{sink="flaky", outcome="dead_lettered"} > 0')
    await api.wait_for('fanout_get_records_calls_total{outcome="throttled"} > 0')

    problems = []
    for name, expr in dashboard_queries():
        answer = await api.query(expr)
        if answer.get("status") != "success":
            problems.append(f"panel {name}: {expr}: {answer.get('error')}")
        elif not answer["data"]["result"]:
            problems.append(f"panel {name}: {expr}: no data")
    for name, expr in alert_queries():
        answer = await api.query(expr)
        if answer.get("status") != "success":
            problems.append(f"alert {name}: {expr}: {answer.get('error')}")
    assert problems == []

    # The dashboard's variables have values.
    for label, metric in (
        ("stream", "fanout_records_read_total"),
        ("sink", "fanout_sink_records_total"),
    ):
        answer = await api.get(f"/api/v1/label/{label}/values", **{"match[]": metric})
        assert answer["status"] == "success"
        assert answer["data"]
    streams = await api.get(
        "/api/v1/label/stream/values", **{"match[]": "fanout_records_read_total"}
    )
    assert streams["data"] == ["orders"]

    # Prometheus loaded every alert rule and evaluated it without error.
    deadline = time.monotonic() + 20
    while True:
        rules = await api.get("/api/v1/rules")
        loaded = [r for g in rules["data"]["groups"] for r in g["rules"]]
        healthy = [r for r in loaded if r["health"] == "ok"]
        if len(loaded) == len(alert_queries()) == len(healthy):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"rules not all loaded and healthy: {loaded}")
        await anyio.sleep(0.25)
    # The dead letters of this run raise the alert meant for them.
    deadline = time.monotonic() + 20
    while True:
        alerts = await api.get("/api/v1/alerts")
        names = {a["labels"]["alertname"] for a in alerts["data"]["alerts"]}
        if "FanoutDeadLettersGrowing" in names:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"FanoutDeadLettersGrowing did not fire: {alerts}")
        await anyio.sleep(0.25)
