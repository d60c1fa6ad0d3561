"""The HTTP endpoint: ``/metrics`` (Prometheus), ``/healthz`` (alive), ``/readyz`` (working)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import orjson
from aiohttp import web
from anyio.abc import TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from fanout.app import Worker


def readiness(worker: Worker) -> tuple[bool, dict[str, object]]:
    """Ready when every stream is resolved and listed, and no shard is stalled."""
    problems: dict[str, object] = {}
    if not worker.started.is_set():
        problems["starting"] = True
    not_ready = [w.name for w in worker.workers if not w.ready]
    if not_ready:
        problems["streams_not_ready"] = not_ready
    stalled = worker.stalled_shards()
    if stalled:
        problems["stalled_shards"] = [
            {"stream": s, "shard": shard, "seconds": round(age, 1)} for s, shard, age in stalled
        ]
    return not problems, problems


def make_app(worker: Worker) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(worker.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        # Answering at all proves the event loop is running.
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def readyz(request: web.Request) -> web.Response:
        ok, problems = readiness(worker)
        body = orjson.dumps({"status": "ready" if ok else "not_ready", **problems})
        return web.Response(body=body, status=200 if ok else 503, content_type="application/json")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(
    worker: Worker, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Serve until cancelled; reports the bound port through ``task_status``."""
    http = worker.settings.http
    runner = web.AppRunner(make_app(worker), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, http.host, http.port)
        await site.start()
        port = http.port
        sockets = getattr(site._server, "sockets", None)
        if sockets:
            port = int(sockets[0].getsockname()[1])
        task_status.started(port)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
