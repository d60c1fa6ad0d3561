"""A local stand-in for the OpenSearch document APIs a replicating sink uses, for tests.

No OpenSearch can be installed on the test machines; this server implements what the
``opensearch`` sink relies on, as OpenSearch documents it:

* ``POST /_bulk`` and ``POST /{index}/_bulk`` (NDJSON; ``index``, ``create``, ``delete``
  actions with ``_index``, ``_id``, ``routing``, ``version``, ``version_type``); the answer
  has OpenSearch's shape (``took``, ``errors``, ``items`` with ``_index``, ``_id``,
  ``_version``, ``result``, ``status`` and ``error: {type, reason}``). Malformed requests,
  unknown action parameters, ids over 512 bytes and bodies over ``max_content_length``
  (413) fail the whole request, as they do there;
* external versioning: ``external`` (and ``external_gt``) writes need a version greater than
  the stored one, ``external_gte`` greater or equal, else 409
  ``version_conflict_engine_exception`` with ``current version [N]`` in the reason;
* tombstones: a delete keeps its version for ``index.gc_deletes`` (default 60 s) even when
  the document did not exist (404 ``not_found``); until then an older write conflicts, after
  that it creates the document again;
* ``POST /_mget`` (``docs`` or ``ids``, ``_source_includes``), ``GET /{index}/_doc/{id}``,
  ``PUT /{index}`` with settings and mappings, ``GET /{index}/_settings``
  (``flat_settings``, ``include_defaults``), ``PUT /{index}/_settings``, ``GET /``;
* Basic auth and SigV4 checking (the signature is recomputed with botocore from the headers
  the request names as signed, as AWS does);
* faults on demand: whole ``_bulk`` requests answered 429 (with ``Retry-After``) or 5xx,
  items rejected with 429 ``es_rejected_execution_exception`` a given number of times,
  mapping errors for documents matching a predicate;
* a log of every HTTP request and of every bulk item with its outcome, from which a test
  can show, for example, that no stale change was ever accepted.

The server is here; the documents and versioning are in ``searchindex``, request parsing in
``searchwire``, authentication in ``searchauth`` and scripted faults in ``searchfaults`` (all
in ``fanout.testing``).

Run it in the test's event loop (``await server.start()``) or, for synchronous tests, in a
thread of its own (``with ServerThread(SearchServer()) as server: ...``). Every method is
safe to call from any thread.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
from aiohttp import web

from fanout.testing.searchauth import Authenticator, SigV4Expectation
from fanout.testing.searchfaults import Faults, Predicate, Rejection
from fanout.testing.searchindex import Indexes, StoredDocument
from fanout.testing.searchwire import Reply, index_problem, item_error, parse_bulk


@dataclass(frozen=True)
class Write:
    """One bulk item as the server handled it (``n`` counts items across requests)."""

    n: int
    request: int
    op: str
    index: str
    id: str
    version: int | None
    version_type: str
    routing: str | None
    status: int
    result: str | None
    error: str | None
    source: dict[str, Any] | None
    at: float

    @property
    def accepted(self) -> bool:
        """True when the write changed the index (a not_found delete leaves a tombstone)."""
        return 200 <= self.status < 300 or (self.op == "delete" and self.result == "not_found")


@dataclass(frozen=True)
class Request:
    """One HTTP request as received: the path and query as sent, the headers, the body."""

    n: int
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    status: int


class SearchServer:
    """The stand-in server (see the module docstring).

    Args:
        username, password: require Basic auth with these.
        sigv4: require SigV4 signatures made with these credentials, region and service.
        gc_deletes: seconds tombstones live in indexes that do not set ``index.gc_deletes``.
        auto_create_index: let writes create missing indexes (with default settings).
        max_content_length: larger request bodies get 413, as ``http.max_content_length``.
    """

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        sigv4: SigV4Expectation | None = None,
        gc_deletes: float = 60.0,
        auto_create_index: bool = True,
        max_content_length: int = 100 * 1024 * 1024,
    ) -> None:
        self._auth = Authenticator(username, password, sigv4)
        self.auto_create_index = auto_create_index
        self.max_content_length = max_content_length
        self._lock = threading.RLock()
        self._offset = 0.0
        self._index = Indexes(gc_deletes, self.now)
        self._faults = Faults()
        self._writes: list[Write] = []
        self._requests: list[Request] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def gc_deletes(self) -> float:
        """Seconds tombstones live in indexes that do not set ``index.gc_deletes``."""
        return self._index.gc_deletes

    @gc_deletes.setter
    def gc_deletes(self, seconds: float) -> None:
        self._index.gc_deletes = seconds

    # -- running --------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0: a free port); returns the base URL."""
        app = web.Application(client_max_size=self.max_content_length)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.url = f"http://{host}:{bound[1]}"
        return self.url

    async def stop(self) -> None:
        """Stop listening. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def now(self) -> float:
        """The server's clock (monotonic, moved on by ``advance``)."""
        return time.monotonic() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the server's clock on (tombstones age)."""
        with self._lock:
            self._offset += seconds

    # -- faults ---------------------------------------------------------------------------

    def throttle(
        self, times: int = 1, *, retry_after: float | None = 1.0, status: int = 429
    ) -> None:
        """Answer the next ``times`` bulk requests as a whole with ``status``."""
        with self._lock:
            self._faults.whole.extend([(status, retry_after)] * times)

    def fail(self, times: int = 1, *, status: int = 503) -> None:
        """Answer the next ``times`` bulk requests with a server error."""
        self.throttle(times, retry_after=None, status=status)

    def reject(
        self,
        fraction: float = 1.0,
        *,
        times: int = 1,
        status: int = 429,
        kind: str = "es_rejected_execution_exception",
        seed: int = 0,
        predicate: Predicate | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Reject about ``fraction`` of the bulk items (chosen by a hash of index, id,
        version and operation, so deterministically) ``times`` times each, then accept them;
        ``predicate`` (on the source) narrows the choice. A bulk answer with a rejected item
        carries ``Retry-After: retry_after`` when it is given."""
        with self._lock:
            self._faults.rejections.append(
                Rejection(fraction, times, status, kind, seed, predicate, retry_after)
            )

    def refuse(
        self,
        predicate: Predicate,
        *,
        kind: str = "mapper_parsing_exception",
        reason: str = "failed to parse field",
    ) -> None:
        """Answer index writes of documents matching ``predicate`` with a 400 ``kind``."""
        with self._lock:
            self._faults.refusals.append((predicate, kind, reason))

    def clear_faults(self) -> None:
        """Forget every scripted fault."""
        with self._lock:
            self._faults.clear()

    # -- inspection -----------------------------------------------------------------------

    def create_index(self, name: str, settings: dict[str, Any] | None = None) -> None:
        """Create an index directly (a test's precondition)."""
        with self._lock:
            self._index.create(name, settings or {}, {})

    def indexes(self) -> list[str]:
        with self._lock:
            return sorted(self._index.states)

    def settings(self, index: str) -> dict[str, str]:
        """The index's flat settings."""
        with self._lock:
            return dict(self._index.states[index].settings)

    def documents(self, index: str) -> dict[str, dict[str, Any]]:
        """Copies of the live documents' sources by id (empty if the index is missing)."""
        with self._lock:
            state = self._index.states.get(index)
            if state is None:
                return {}
            return {k: orjson.loads(orjson.dumps(d.source)) for k, d in state.docs.items()}

    def document(self, index: str, doc_id: str) -> StoredDocument | None:
        with self._lock:
            state = self._index.states.get(index)
            return state.docs.get(doc_id) if state else None

    def tombstone(self, index: str, doc_id: str) -> int | None:
        """The version a deleted document's tombstone holds, while it lives."""
        with self._lock:
            state = self._index.states.get(index)
            if state is None:
                return None
            found = self._index.current(state, doc_id)
            return found[0] if found is not None and found[1] else None

    def writes(self) -> list[Write]:
        """Every bulk item handled so far, in order."""
        with self._lock:
            return list(self._writes)

    def requests(self) -> list[Request]:
        """Every HTTP request received so far, in order."""
        with self._lock:
            return list(self._requests)

    def event_ids(self, metadata_field: str = "_fanout") -> set[str]:
        """eventIDs (from the metadata field) of every accepted index write."""
        with self._lock:
            found = set()
            for write in self._writes:
                meta = (write.source or {}).get(metadata_field)
                if write.accepted and isinstance(meta, dict) and meta.get("event_id"):
                    found.add(str(meta["event_id"]))
            return found

    # -- HTTP -----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path
        target, _, query = raw.partition("?")
        headers = dict(request.headers)
        extra: dict[str, str]
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            body = b""
            status, payload, extra = 413, None, {}  # as http.max_content_length answers
        else:
            try:
                self._auth.check(request.method, raw, headers, body)
                status, payload, extra = self._route(request.method, target, query, body)
            except Reply as reply:
                status, payload, extra = reply.status, reply.body, reply.headers
        with self._lock:
            self._requests.append(
                Request(len(self._requests), request.method, target, query, headers, body, status)
            )
        data = b"" if payload is None else orjson.dumps(payload)
        return web.Response(
            status=status, body=data, headers=extra, content_type="application/json"
        )

    def _route(
        self, method: str, target: str, query: str, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        parts = [unquote(p) for p in target.split("/") if p]
        params = dict(parse_qsl(query, keep_blank_values=True))
        with self._lock:
            if not parts:
                return 200, self._info(), {}
            if parts[-1] == "_bulk" and len(parts) <= 2 and method in ("POST", "PUT"):
                return self._bulk(parts[0] if len(parts) == 2 else None, params, body)
            if parts[-1] == "_mget" and len(parts) <= 2 and method in ("POST", "GET"):
                return (
                    200,
                    self._index.mget(parts[0] if len(parts) == 2 else None, params, body),
                    {},
                )
            if len(parts) == 3 and parts[1] == "_doc" and method in ("GET", "HEAD"):
                doc = self._index.get(parts[0], parts[2], params)
                return (200 if doc.get("found") else 404), doc, {}
            if len(parts) == 1 and method == "PUT":
                return 200, self._index.put_index(parts[0], body), {}
            if len(parts) == 1 and method == "HEAD":
                return (200 if parts[0] in self._index.states else 404), None, {}
            if len(parts) >= 2 and parts[1] == "_settings" and method == "GET":
                return 200, self._index.get_settings(parts[0], params), {}
            if len(parts) == 2 and parts[1] == "_settings" and method == "PUT":
                return 200, self._index.put_settings(parts[0], body), {}
        raise Reply(
            405 if parts and parts[-1].startswith("_") else 400,
            "illegal_argument_exception",
            f"no handler found for uri [{target}] and method [{method}]",
        )

    @staticmethod
    def _info() -> dict[str, Any]:
        return {
            "name": "searchserver",
            "cluster_name": "fanout-test",
            "version": {"distribution": "opensearch", "number": "2.17.0"},
            "tagline": "The OpenSearch Project: https://opensearch.org/",
        }

    def _bulk(
        self, path_index: str | None, params: dict[str, str], body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        request = sum(1 for r in self._requests if "_bulk" in r.path)
        if self._faults.whole:
            status, retry_after = self._faults.whole.pop(0)
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            kind = "es_rejected_execution_exception" if status == 429 else "unavailable"
            raise Reply(status, kind, f"scripted answer {status}", headers)
        started = time.perf_counter()
        actions = list(parse_bulk(body, path_index))
        items = []
        delay: float | None = None
        for op, meta, source in actions:
            item, rejection = self._apply(request, op, meta, source)
            items.append({op: item})
            if rejection is not None and rejection.retry_after is not None:
                delay = max(delay or 0.0, rejection.retry_after)
        took = int((time.perf_counter() - started) * 1000)
        errors = any("error" in next(iter(i.values())) for i in items)
        headers = {"Retry-After": f"{delay:g}"} if delay is not None else {}
        return 200, {"took": took, "errors": errors, "items": items}, headers

    def _apply(
        self, request: int, op: str, meta: dict[str, Any], source: dict[str, Any] | None
    ) -> tuple[dict[str, Any], Rejection | None]:
        """Run one bulk item; returns its answer and the scripted rejection it met, if any."""
        index = str(meta["_index"])
        doc_id = str(meta.get("_id") or uuid.uuid4().hex)
        version = meta.get("version")
        version_type = str(meta.get("version_type", "internal"))
        routing = meta.get("routing")
        item: dict[str, Any] = {"_index": index, "_id": doc_id}
        result: str | None = None
        error: dict[str, Any] | None = None
        status = 200
        rejected: Rejection | None = None
        state = self._index.states.get(index)
        problem = index_problem(index)
        if problem:
            status, error = 400, item_error("invalid_index_name_exception", problem, index)
        elif state is None and not self.auto_create_index:
            reason = f"no such index [{index}]"
            status, error = 404, item_error("index_not_found_exception", reason, index)
        elif (refused := self._faults.refused(op, source)) is not None:
            status, error = 400, item_error(refused[0], refused[1], index)
        elif (rejection := self._faults.rejected(index, doc_id, version, op, source)) is not None:
            rejected = rejection
            reason = "rejected execution of coordinating operation"
            status, error = rejection.status, item_error(rejection.type, reason, index)
        else:
            if state is None:
                state = self._index.create(index, {}, {})
            status, result, error, new_version = self._index.versioned(
                state, op, doc_id, version, version_type, routing, source
            )
            if new_version is not None:
                item["_version"] = new_version
        if result is not None:
            self._index.seq_no += 1
            item["result"] = result
            item["_seq_no"] = self._index.seq_no
            item["_primary_term"] = 1
            item["_shards"] = {"total": 2, "successful": 1, "failed": 0}
        item["status"] = status
        if error is not None:
            item["error"] = error
        self._writes.append(
            Write(
                len(self._writes),
                request,
                op,
                index,
                doc_id,
                version,
                version_type,
                routing,
                status,
                result,
                error["type"] if error else None,
                source,
                self.now(),
            )
        )
        return item, rejected


class ServerThread:
    """Runs a ``SearchServer`` on an event loop of its own in a daemon thread, for tests that
    are not async: ``with ServerThread(SearchServer()) as server: ... server.url``."""

    def __init__(self, server: SearchServer) -> None:
        self.server = server
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: Any = None

    def __enter__(self) -> SearchServer:
        import asyncio

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.server.start())
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                self._error = exc
                self._ready.set()
                loop.close()
                return
            self._ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.server.stop())
                loop.close()

        self._thread = threading.Thread(target=run, name="searchserver", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self.server

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._thread is not None and self._loop is not None and self._error is None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
        self._thread = None
