"""The HTTP endpoint: ``/metrics`` (Prometheus), ``/healthz`` (alive), ``/readyz`` (working).

``/healthz`` answers 200 whenever the event loop runs: a liveness probe that fails only when
the process is wedged. ``/readyz`` answers 200 only while the worker is doing its job, and
503 with the reasons as JSON otherwise: component names and short error codes
(``AccessDeniedException``, ``timeout``, ...), never a provider's text, which can hold ARNs,
account ids and more (the log line of the failure has it):

* ``starting`` / ``stopping``: before the shard readers run, or once a shutdown began;
* ``checkpoint_store``: the store did not answer a cheap query within ``_STORE_TIMEOUT_S``
  (on a connection and thread of its own where the store has ``probe()``, so the answer
  never waits behind checkpoint writes);
* ``streams_not_ready``: a stream was never resolved and listed;
* ``streams_unreachable``: a stream's latest shard discovery failed, or none succeeded for
  more than two discovery intervals (plus the request timeout);
* ``stalled_shards``: a shard with pending records made no progress for longer than
  ``http.stall_timeout`` (a sink blocks, or the dead-letter destination keeps failing).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import anyio
import orjson
from aiohttp import web
from anyio.abc import TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from fanout.errors import FanoutError


class StreamView(Protocol):
    """What readiness needs to know of one configured stream."""

    @property
    def name(self) -> str: ...
    @property
    def ready(self) -> bool: ...
    @property
    def discovery_error(self) -> str | None: ...
    @property
    def discovered_at(self) -> float | None: ...
    @property
    def discovery_interval(self) -> float: ...


class Probed(Protocol):
    """What readiness needs to know of one store."""

    async def load(self, stream_arn: str) -> Mapping[str, object]: ...


@runtime_checkable
class Probeable(Protocol):
    """A store with a check of its own that never waits behind its writes (SQLite's)."""

    async def probe(self) -> None: ...


class ReadinessView(Protocol):
    """What ``/readyz`` needs to know of the worker."""

    @property
    def started(self) -> anyio.Event: ...
    @property
    def stopping(self) -> bool: ...
    @property
    def store(self) -> Probed: ...
    @property
    def streams(self) -> Sequence[StreamView]: ...

    def stalled_shards(self) -> list[tuple[str, str, float]]: ...


class WorkerView(ReadinessView, Protocol):
    """What the endpoint needs of the worker (``fanout.app.Worker`` is one)."""

    @property
    def registry(self) -> CollectorRegistry: ...
    @property
    def listen(self) -> tuple[str, int]: ...

    def update_gauges(self) -> None: ...


# A SQLite query on the primary key answers in microseconds; a store that takes longer than
# this is wedged (a stuck disk) or held by a long write, and the pod should not get traffic.
_STORE_TIMEOUT_S = 2.0
# Slack on top of two discovery intervals before a stream counts as unreachable: one
# DescribeStream round can take up to a request timeout per page.
_DISCOVERY_SLACK_S = 60.0
# The stream ARN used for the store probe: no such stream exists, so the query reads no rows.
_PROBE_ARN = "fanout:readiness-probe"
# An AWS-style error code in an error's text: ``AccessDeniedException``, ``ThrottlingException``,
# ``ResourceNotFoundException``, ``ExpiredTokenException``, ``InternalServerError``...
_CODE = re.compile(
    r"\b([A-Z][A-Za-z0-9]*(?:Exception|Error|Denied|NotFound|Expired|Exceeded|Throttled|"
    r"Unavailable|Timeout))\b"
)


def error_code(text: str, default: str) -> str:
    """The first AWS-style error code in ``text``, else ``default``: what ``/readyz`` shows
    instead of the text."""
    found = _CODE.search(text)
    return found.group(1) if found else default


async def store_problem(worker: ReadinessView) -> str | None:
    """None when the checkpoint store answers a cheap query in time, else why not."""
    store = worker.store
    try:
        with anyio.fail_after(_STORE_TIMEOUT_S):
            if isinstance(store, Probeable):
                await store.probe()
            else:
                await store.load(_PROBE_ARN)
    except TimeoutError:
        return "timeout"
    except FanoutError as exc:
        return error_code(str(exc), type(exc).__name__)
    return None


def stream_problems(worker: ReadinessView, now: float | None = None) -> dict[str, Any]:
    """Streams never listed, and streams whose discovery failed or is overdue."""
    now = time.monotonic() if now is None else now
    problems: dict[str, Any] = {}
    not_ready = [w.name for w in worker.streams if not w.ready]
    if not_ready:
        problems["streams_not_ready"] = not_ready
    unreachable: list[dict[str, Any]] = []
    for w in worker.streams:
        if not w.ready:
            continue
        if w.discovery_error is not None:
            error = error_code(w.discovery_error, "discovery_failed")
            unreachable.append({"stream": w.name, "error": error})
            continue
        overdue = 2 * w.discovery_interval + _DISCOVERY_SLACK_S
        if w.discovered_at is not None and now - w.discovered_at > overdue:
            unreachable.append(
                {
                    "stream": w.name,
                    "error": "discovery_overdue",
                    "seconds": round(now - w.discovered_at),
                }
            )
    if unreachable:
        problems["streams_unreachable"] = unreachable
    return problems


async def readiness(worker: ReadinessView) -> tuple[bool, dict[str, Any]]:
    """``(ready, problems)``: ready when started, the store and streams answer, no stall."""
    problems: dict[str, Any] = {}
    if not worker.started.is_set():
        problems["starting"] = True
        return False, problems
    if worker.stopping:
        problems["stopping"] = True
    store = await store_problem(worker)
    if store is not None:
        problems["checkpoint_store"] = store
    problems.update(stream_problems(worker))
    stalled = worker.stalled_shards()
    if stalled:
        problems["stalled_shards"] = [
            {"stream": s, "shard": shard, "seconds": round(age, 1)} for s, shard, age in stalled
        ]
    return not problems, problems


def make_app(worker: WorkerView) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        # Gauges derived from the shards' state are refreshed on every scrape, not only
        # on the checkpoint loop's beat.
        worker.update_gauges()
        body = generate_latest(worker.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        # Answering at all proves the event loop is running.
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def readyz(request: web.Request) -> web.Response:
        ok, problems = await readiness(worker)
        body = orjson.dumps({"status": "ready" if ok else "not_ready", **problems})
        return web.Response(body=body, status=200 if ok else 503, content_type="application/json")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(
    worker: WorkerView, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Serve until cancelled; reports the bound port through ``task_status``."""
    host, port = worker.listen
    runner = web.AppRunner(make_app(worker), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        for address in runner.addresses:  # the port bound, when port 0 picked a free one
            port = int(address[1])
            break
        task_status.started(port)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
