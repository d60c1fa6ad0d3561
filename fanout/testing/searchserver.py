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

Run it in the test's event loop (``await server.start()``) or, for synchronous tests, in a
thread of its own (``with ServerThread(SearchServer()) as server: ...``). Every method is
safe to call from any thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
from aiohttp import web

Predicate = Callable[[dict[str, Any]], bool]
_ACTION_PARAMS = frozenset(
    {"_index", "_id", "routing", "version", "version_type", "if_seq_no", "if_primary_term"}
)
_VERSION_TYPES = ("internal", "external", "external_gt", "external_gte")
_TIME = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(d|h|m|s|ms|micros|nanos)?\s*$")
_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "micros": 1e-6}
_BAD_INDEX = re.compile(r'[\\/*?"<>| ,#:A-Z]')
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<day>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<names>[^,]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
MAX_VERSION = (1 << 63) - 1


def time_value(text: str) -> float:
    """An OpenSearch time value in seconds (``60s``, ``1d``; a bare number is ms)."""
    match = _TIME.match(text)
    if not match:
        raise ValueError(f"failed to parse time value [{text}]")
    return float(match.group(1)) * _UNITS.get(match.group(2) or "ms", 1e-9)


@dataclass(frozen=True)
class SigV4Expectation:
    """What a SigV4-signed request must be signed with."""

    access_key: str
    secret_key: str
    region: str
    service: str = "es"
    token: str | None = None


@dataclass
class StoredDocument:
    """A live document."""

    source: dict[str, Any]
    version: int
    seq_no: int
    routing: str | None


@dataclass
class IndexState:
    """One index: flat settings (string values, as OpenSearch returns them), mappings, live
    documents and tombstones (id -> (version, deleted at))."""

    name: str
    settings: dict[str, str]
    mappings: dict[str, Any]
    docs: dict[str, StoredDocument] = field(default_factory=dict)
    tombstones: dict[str, tuple[int, float]] = field(default_factory=dict)


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


@dataclass
class _Rejection:
    fraction: float
    times: int
    status: int
    type: str
    seed: int
    predicate: Predicate | None
    retry_after: float | None
    counts: dict[tuple[str, str, int | None, str], int] = field(default_factory=dict)


class _Reply(Exception):
    """Answer the request with this status and body (an error of the whole request)."""

    def __init__(self, status: int, kind: str, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status = status
        self.body = {"error": {"type": kind, "reason": reason}, "status": status}
        self.headers = headers or {}


def _item_error(kind: str, reason: str, index: str, **more: Any) -> dict[str, Any]:
    return {"type": kind, "reason": reason, "index": index, "shard": "0", **more}


def _nested(flat: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name if name.startswith("index.") else f"index.{name}"] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
    return out


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
        self._basic = (
            "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
            if username is not None
            else None
        )
        self._sigv4 = sigv4
        self.gc_deletes = gc_deletes
        self.auto_create_index = auto_create_index
        self.max_content_length = max_content_length
        self._lock = threading.RLock()
        self._indexes: dict[str, IndexState] = {}
        self._writes: list[Write] = []
        self._requests: list[Request] = []
        self._seq_no = 0
        self._offset = 0.0
        self._whole: list[tuple[int, float | None]] = []  # (status, Retry-After) per bulk call
        self._rejections: list[_Rejection] = []
        self._refusals: list[tuple[Predicate, str, str]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

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
            self._whole.extend([(status, retry_after)] * times)

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
            self._rejections.append(
                _Rejection(fraction, times, status, kind, seed, predicate, retry_after)
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
            self._refusals.append((predicate, kind, reason))

    def clear_faults(self) -> None:
        """Forget every scripted fault."""
        with self._lock:
            self._whole.clear()
            self._rejections.clear()
            self._refusals.clear()

    # -- inspection -----------------------------------------------------------------------

    def create_index(self, name: str, settings: dict[str, Any] | None = None) -> None:
        """Create an index directly (a test's precondition)."""
        with self._lock:
            self._create(name, settings or {}, {})

    def indexes(self) -> list[str]:
        with self._lock:
            return sorted(self._indexes)

    def settings(self, index: str) -> dict[str, str]:
        """The index's flat settings."""
        with self._lock:
            return dict(self._indexes[index].settings)

    def documents(self, index: str) -> dict[str, dict[str, Any]]:
        """Copies of the live documents' sources by id (empty if the index is missing)."""
        with self._lock:
            state = self._indexes.get(index)
            if state is None:
                return {}
            return {k: orjson.loads(orjson.dumps(d.source)) for k, d in state.docs.items()}

    def document(self, index: str, doc_id: str) -> StoredDocument | None:
        with self._lock:
            state = self._indexes.get(index)
            return state.docs.get(doc_id) if state else None

    def tombstone(self, index: str, doc_id: str) -> int | None:
        """The version a deleted document's tombstone holds, while it lives."""
        with self._lock:
            state = self._indexes.get(index)
            if state is None:
                return None
            found = self._current(state, doc_id)
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
                self._authenticate(request.method, raw, headers, body)
                status, payload, extra = self._route(request.method, target, query, body)
            except _Reply as reply:
                status, payload, extra = reply.status, reply.body, reply.headers
        with self._lock:
            self._requests.append(
                Request(len(self._requests), request.method, target, query, headers, body, status)
            )
        data = b"" if payload is None else orjson.dumps(payload)
        return web.Response(
            status=status, body=data, headers=extra, content_type="application/json"
        )

    def _authenticate(self, method: str, raw: str, headers: dict[str, str], body: bytes) -> None:
        given = headers.get("Authorization", "")
        if self._basic is not None and not hmac.compare_digest(given, self._basic):
            raise _Reply(
                401,
                "security_exception",
                "missing or wrong authentication credentials for REST request",
                {"WWW-Authenticate": 'Basic realm="OpenSearch Security"'},
            )
        if self._sigv4 is not None:
            problem = self._check_sigv4(method, raw, headers, body, given)
            if problem:
                raise _Reply(403, "security_exception", problem)

    def _check_sigv4(
        self, method: str, raw: str, headers: dict[str, str], body: bytes, given: str
    ) -> str | None:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        want = self._sigv4
        assert want is not None
        match = _AUTH.match(given)
        if not match:
            return "missing or malformed SigV4 Authorization header"
        if (match["key"], match["region"], match["service"]) != (
            want.access_key,
            want.region,
            want.service,
        ):
            return f"credential scope {match['key']}/{match['region']}/{match['service']} refused"
        lower = {k.lower(): v for k, v in headers.items()}
        stamp = lower.get("x-amz-date", "")
        if stamp[:8] != match["day"]:
            return "X-Amz-Date does not match the credential scope"
        if want.token is not None and lower.get("x-amz-security-token") != want.token:
            return "the security token is missing or wrong"
        digest = lower.get("x-amz-content-sha256")
        if want.service == "aoss" and digest is None:
            return "OpenSearch Serverless requires X-Amz-Content-SHA256"
        if digest is not None and digest != hashlib.sha256(body).hexdigest():
            return "X-Amz-Content-SHA256 does not match the body"
        names = match["names"].split(";")
        if "host" not in names:
            return "the Host header is not signed"
        missing = [n for n in names if n not in lower]
        if missing:
            return f"signed headers are missing: {missing}"
        signed = AWSRequest(
            method=method,
            url=f"http://{lower['host']}{raw}",
            data=body,
            headers={n: lower[n] for n in names},
        )
        signed.context["timestamp"] = stamp
        credentials = Credentials(want.access_key, want.secret_key, want.token)
        auth = SigV4Auth(credentials.get_frozen_credentials(), want.service, want.region)
        canonical = auth.canonical_request(signed)
        expected = auth.signature(auth.string_to_sign(signed, canonical), signed)
        if not hmac.compare_digest(expected, match["signature"]):
            return "The request signature we calculated does not match the signature you provided."
        return None

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
                return 200, self._mget(parts[0] if len(parts) == 2 else None, params, body), {}
            if len(parts) == 3 and parts[1] == "_doc" and method in ("GET", "HEAD"):
                doc = self._get(parts[0], parts[2], params)
                return (200 if doc.get("found") else 404), doc, {}
            if len(parts) == 1 and method == "PUT":
                return 200, self._put_index(parts[0], body), {}
            if len(parts) == 1 and method == "HEAD":
                return (200 if parts[0] in self._indexes else 404), None, {}
            if len(parts) >= 2 and parts[1] == "_settings" and method == "GET":
                return 200, self._get_settings(parts[0], params), {}
            if len(parts) == 2 and parts[1] == "_settings" and method == "PUT":
                return 200, self._put_settings(parts[0], body), {}
        raise _Reply(
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

    # -- indexes --------------------------------------------------------------------------

    def _create(self, name: str, settings: dict[str, Any], mappings: dict[str, Any]) -> IndexState:
        problem = _index_problem(name)
        if problem:
            raise _Reply(400, "invalid_index_name_exception", problem)
        if name in self._indexes:
            raise _Reply(
                400, "resource_already_exists_exception", f"index [{name}/uuid] already exists"
            )
        flat = _flatten(settings)
        if "index.gc_deletes" in flat:
            try:
                time_value(flat["index.gc_deletes"])
            except ValueError as exc:
                raise _Reply(400, "illegal_argument_exception", str(exc)) from None
        for setting in ("index.number_of_shards", "index.number_of_replicas"):
            if setting in flat and not flat[setting].isdigit():
                raise _Reply(
                    400,
                    "illegal_argument_exception",
                    f"Failed to parse value [{flat[setting]}] for setting [{setting}]",
                )
        flat.setdefault("index.number_of_shards", "1")
        flat.setdefault("index.number_of_replicas", "1")
        flat["index.provided_name"] = name
        flat["index.uuid"] = uuid.uuid4().hex[:22]
        state = IndexState(name, flat, mappings)
        self._indexes[name] = state
        return state

    def _put_index(self, name: str, body: bytes) -> dict[str, Any]:
        data = _json(body) if body else {}
        if not isinstance(data, dict):
            raise _Reply(400, "parse_exception", "request body must be an object")
        self._create(name, data.get("settings") or {}, data.get("mappings") or {})
        return {"acknowledged": True, "shards_acknowledged": True, "index": name}

    def _known(self, name: str) -> IndexState:
        state = self._indexes.get(name)
        if state is None:
            raise _Reply(404, "index_not_found_exception", f"no such index [{name}]")
        return state

    def _get_settings(self, name: str, params: dict[str, str]) -> dict[str, Any]:
        state = self._known(name)
        flat = params.get("flat_settings") == "true"
        out: dict[str, Any] = {"settings": state.settings if flat else _nested(state.settings)}
        if params.get("include_defaults") == "true":
            defaults = {"index.gc_deletes": f"{self.gc_deletes:g}s", "index.refresh_interval": "1s"}
            defaults = {k: v for k, v in defaults.items() if k not in state.settings}
            out["defaults"] = defaults if flat else _nested(defaults)
        return {name: out}

    def _put_settings(self, name: str, body: bytes) -> dict[str, Any]:
        state = self._known(name)
        data = _json(body)
        if not isinstance(data, dict):
            raise _Reply(400, "parse_exception", "request body must be an object")
        update = _flatten(data.get("settings", data))
        if "index.gc_deletes" in update:
            try:
                time_value(update["index.gc_deletes"])
            except ValueError as exc:
                raise _Reply(400, "illegal_argument_exception", str(exc)) from None
        state.settings.update(update)
        return {"acknowledged": True}

    def _retention(self, state: IndexState) -> float:
        value = state.settings.get("index.gc_deletes")
        return time_value(value) if value is not None else self.gc_deletes

    def _current(self, state: IndexState, doc_id: str) -> tuple[int, bool] | None:
        """(version, deleted) of what the index holds for ``doc_id``, or None."""
        doc = state.docs.get(doc_id)
        if doc is not None:
            return doc.version, False
        tomb = state.tombstones.get(doc_id)
        if tomb is None:
            return None
        if self.now() - tomb[1] > self._retention(state):
            del state.tombstones[doc_id]
            return None
        return tomb[0], True

    # -- documents ------------------------------------------------------------------------

    def _get(self, index: str, doc_id: str, params: dict[str, str]) -> dict[str, Any]:
        state = self._indexes.get(index)
        if state is None:
            return {
                "_index": index,
                "_id": doc_id,
                "error": _item_error(
                    "index_not_found_exception", f"no such index [{index}]", index
                ),
            }
        doc = state.docs.get(doc_id)
        if doc is None:
            return {"_index": index, "_id": doc_id, "found": False}
        out: dict[str, Any] = {
            "_index": index,
            "_id": doc_id,
            "_version": doc.version,
            "_seq_no": doc.seq_no,
            "_primary_term": 1,
            "found": True,
        }
        if doc.routing is not None:
            out["_routing"] = doc.routing
        if params.get("_source") != "false":
            include = params.get("_source_includes") or params.get("_source")
            source = doc.source
            if include and include != "true":
                names = set(include.split(","))
                source = {k: v for k, v in source.items() if k in names}
            out["_source"] = orjson.loads(orjson.dumps(source))
        return out

    def _mget(self, index: str | None, params: dict[str, str], body: bytes) -> dict[str, Any]:
        data = _json(body)
        if not isinstance(data, dict):
            raise _Reply(400, "parse_exception", "request body must be an object")
        wanted: list[tuple[str | None, str]] = []
        if "docs" in data:
            for entry in data["docs"]:
                wanted.append((entry.get("_index", index), str(entry.get("_id"))))
        else:
            wanted = [(index, str(i)) for i in data.get("ids", [])]
        docs = []
        for name, doc_id in wanted:
            if name is None:
                raise _Reply(400, "action_request_validation_exception", "index is missing")
            docs.append(self._get(name, doc_id, params))
        return {"docs": docs}

    def _bulk(
        self, path_index: str | None, params: dict[str, str], body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        request = sum(1 for r in self._requests if "_bulk" in r.path)
        if self._whole:
            status, retry_after = self._whole.pop(0)
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            kind = "es_rejected_execution_exception" if status == 429 else "unavailable"
            raise _Reply(status, kind, f"scripted answer {status}", headers)
        started = time.perf_counter()
        actions = list(_parse_bulk(body, path_index))
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
    ) -> tuple[dict[str, Any], _Rejection | None]:
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
        rejected: _Rejection | None = None
        state = self._indexes.get(index)
        problem = _index_problem(index)
        if problem:
            status, error = 400, _item_error("invalid_index_name_exception", problem, index)
        elif state is None and not self.auto_create_index:
            reason = f"no such index [{index}]"
            status, error = 404, _item_error("index_not_found_exception", reason, index)
        elif (refused := self._refused(op, source)) is not None:
            status, error = 400, _item_error(refused[0], refused[1], index)
        elif (rejection := self._rejected(index, doc_id, version, op, source)) is not None:
            rejected = rejection
            reason = "rejected execution of coordinating operation"
            status, error = rejection.status, _item_error(rejection.type, reason, index)
        else:
            if state is None:
                state = self._create(index, {}, {})
            status, result, error, new_version = self._versioned(
                state, op, doc_id, version, version_type, routing, source
            )
            if new_version is not None:
                item["_version"] = new_version
        if result is not None:
            self._seq_no += 1
            item["result"] = result
            item["_seq_no"] = self._seq_no
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

    def _versioned(
        self,
        state: IndexState,
        op: str,
        doc_id: str,
        version: int | None,
        version_type: str,
        routing: str | None,
        source: dict[str, Any] | None,
    ) -> tuple[int, str | None, dict[str, Any] | None, int | None]:
        """(status, result, error, version) of one write under OpenSearch's versioning."""
        current = self._current(state, doc_id)
        live = doc_id in state.docs
        stored = current[0] if current is not None else None
        if op == "create" and live:
            reason = (
                f"[{doc_id}]: version conflict, document already exists "
                f"(current version [{stored}])"
            )
            return (
                409,
                None,
                _item_error("version_conflict_engine_exception", reason, state.name),
                None,
            )
        if version_type == "internal":
            if op == "delete" and not live:
                return 404, "not_found", None, 1
            new = (stored or 0) + 1
        else:
            assert version is not None
            gte = version_type == "external_gte"
            if stored is not None and (stored > version if gte else stored >= version):
                relation = "higher than" if gte else "higher or equal to"
                reason = (
                    f"[{doc_id}]: version conflict, current version [{stored}] is {relation} "
                    f"the one provided [{version}]"
                )
                error = _item_error("version_conflict_engine_exception", reason, state.name)
                return 409, None, error, None
            new = version
        if op == "delete":
            state.docs.pop(doc_id, None)
            state.tombstones[doc_id] = (new, self.now())
            return (200, "deleted", None, new) if live else (404, "not_found", None, new)
        assert source is not None
        state.docs[doc_id] = StoredDocument(source, new, self._seq_no + 1, routing)
        state.tombstones.pop(doc_id, None)
        return (200, "updated", None, new) if live else (201, "created", None, new)

    def _refused(self, op: str, source: dict[str, Any] | None) -> tuple[str, str] | None:
        if source is None or op == "delete":
            return None
        for predicate, kind, reason in self._refusals:
            if predicate(source):
                return kind, reason
        return None

    def _rejected(
        self, index: str, doc_id: str, version: int | None, op: str, source: dict[str, Any] | None
    ) -> _Rejection | None:
        for rejection in self._rejections:
            if rejection.predicate is not None and (
                source is None or not rejection.predicate(source)
            ):
                continue
            key = (index, doc_id, version, op)
            digest = zlib.crc32(repr((rejection.seed, *key)).encode())
            if digest % 10_000 >= rejection.fraction * 10_000:
                continue
            count = rejection.counts.get(key, 0)
            if count < rejection.times:
                rejection.counts[key] = count + 1
                return rejection
        return None


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _Reply(400, "parse_exception", f"failed to parse the request body: {exc}") from None


def _index_problem(name: str) -> str | None:
    if not name or name in (".", "..") or name[0] in "-_+" or _BAD_INDEX.search(name):
        return f"Invalid index name [{name}]"
    return None


def _parse_bulk(
    body: bytes, path_index: str | None
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """(op, metadata, source) per action; whole-request errors as ``_Reply`` (400)."""
    if not body.strip():
        raise _Reply(400, "action_request_validation_exception", "no requests added")
    if not body.endswith(b"\n"):
        raise _Reply(
            400,
            "illegal_argument_exception",
            "The bulk request must be terminated by a newline [\\n]",
        )
    lines = body.split(b"\n")
    parsed: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
    i = 0
    while i < len(lines):
        line, number = lines[i], i + 1
        i += 1
        if not line.strip():
            continue
        try:
            action = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise _Reply(
                400, "illegal_argument_exception", f"Malformed action/metadata line [{number}]"
            ) from None
        if not isinstance(action, dict) or len(action) != 1:
            raise _Reply(
                400, "illegal_argument_exception", f"Malformed action/metadata line [{number}]"
            )
        ((op, meta),) = action.items()
        if op not in ("index", "create", "delete"):
            raise _Reply(
                400,
                "illegal_argument_exception",
                f"Malformed action/metadata line [{number}], expected one of [create, delete, "
                f"index] but found [{op}]",
            )
        if not isinstance(meta, dict):
            raise _Reply(
                400, "illegal_argument_exception", f"Malformed action/metadata line [{number}]"
            )
        unknown = sorted(set(meta) - _ACTION_PARAMS)
        if unknown:
            raise _Reply(
                400,
                "illegal_argument_exception",
                f"Action/metadata line [{number}] contains an unknown parameter [{unknown[0]}]",
            )
        meta = dict(meta)
        meta.setdefault("_index", path_index)
        if meta["_index"] is None:
            raise _Reply(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: index is missing;",
            )
        doc_id = meta.get("_id")
        if op == "delete" and not doc_id:
            raise _Reply(
                400, "action_request_validation_exception", "Validation Failed: 1: id is missing;"
            )
        if doc_id is not None and len(str(doc_id).encode()) > 512:
            raise _Reply(
                400,
                "action_request_validation_exception",
                f"Validation Failed: 1: id [{doc_id}] is too long, must be no longer than 512 "
                f"bytes but was: {len(str(doc_id).encode())};",
            )
        _check_version(meta, op)
        source: dict[str, Any] | None = None
        if op != "delete":
            if i >= len(lines) or not lines[i].strip():
                raise _Reply(
                    400,
                    "illegal_argument_exception",
                    f"the source of action line [{number}] is missing",
                )
            try:
                source = orjson.loads(lines[i])
            except orjson.JSONDecodeError:
                source = None
            i += 1
            if not isinstance(source, dict):
                raise _Reply(400, "mapper_parsing_exception", "failed to parse")
        parsed.append((op, meta, source))
    yield from parsed


def _check_version(meta: dict[str, Any], op: str) -> None:
    version_type = meta.get("version_type", "internal")
    version = meta.get("version")
    if version_type not in _VERSION_TYPES:
        raise _Reply(400, "illegal_argument_exception", f"No version type match [{version_type}]")
    if version_type == "internal":
        if version is not None:
            raise _Reply(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: internal versioning can not be used for optimistic "
                "concurrency control. Please use `if_seq_no` and `if_primary_term` instead;",
            )
        return
    if op == "create":
        raise _Reply(
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: create operations only support internal versioning. use "
            "index instead;",
        )
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= MAX_VERSION:
        raise _Reply(
            400,
            "action_request_validation_exception",
            f"Validation Failed: 1: illegal version value [{version}] for version type "
            f"[{version_type}];",
        )


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
