"""The document side of the local OpenSearch stand-in: indexes, their settings, documents,
tombstones and OpenSearch's versioning rules. Callers hold the server's lock."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from fanout.testing.searchwire import Reply, index_problem, item_error, json_body

_TIME = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(d|h|m|s|ms|micros|nanos)?\s*$")
_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "micros": 1e-6}


def time_value(text: str) -> float:
    """An OpenSearch time value in seconds (``60s``, ``1d``; a bare number is ms)."""
    match = _TIME.match(text)
    if not match:
        raise ValueError(f"failed to parse time value [{text}]")
    return float(match.group(1)) * _UNITS.get(match.group(2) or "ms", 1e-9)


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


class Indexes:
    """Every index of the server, and the sequence number of its last write.

    Args:
        gc_deletes: seconds tombstones live in indexes that do not set ``index.gc_deletes``.
        now: the server's clock.
    """

    def __init__(self, gc_deletes: float, now: Callable[[], float]) -> None:
        self.gc_deletes = gc_deletes
        self.now = now
        self.states: dict[str, IndexState] = {}
        self.seq_no = 0

    def create(self, name: str, settings: dict[str, Any], mappings: dict[str, Any]) -> IndexState:
        """Create index ``name`` (400 if the name or a setting is invalid, or it exists)."""
        problem = index_problem(name)
        if problem:
            raise Reply(400, "invalid_index_name_exception", problem)
        if name in self.states:
            raise Reply(
                400, "resource_already_exists_exception", f"index [{name}/uuid] already exists"
            )
        flat = _flatten(settings)
        if "index.gc_deletes" in flat:
            try:
                time_value(flat["index.gc_deletes"])
            except ValueError as exc:
                raise Reply(400, "illegal_argument_exception", str(exc)) from None
        for setting in ("index.number_of_shards", "index.number_of_replicas"):
            if setting in flat and not flat[setting].isdigit():
                raise Reply(
                    400,
                    "illegal_argument_exception",
                    f"Failed to parse value [{flat[setting]}] for setting [{setting}]",
                )
        flat.setdefault("index.number_of_shards", "1")
        flat.setdefault("index.number_of_replicas", "1")
        flat["index.provided_name"] = name
        flat["index.uuid"] = uuid.uuid4().hex[:22]
        state = IndexState(name, flat, mappings)
        self.states[name] = state
        return state

    def put_index(self, name: str, body: bytes) -> dict[str, Any]:
        """``PUT /{index}``."""
        data = json_body(body) if body else {}
        if not isinstance(data, dict):
            raise Reply(400, "parse_exception", "request body must be an object")
        self.create(name, data.get("settings") or {}, data.get("mappings") or {})
        return {"acknowledged": True, "shards_acknowledged": True, "index": name}

    def known(self, name: str) -> IndexState:
        """The index ``name``; 404 ``index_not_found_exception`` if it is missing."""
        state = self.states.get(name)
        if state is None:
            raise Reply(404, "index_not_found_exception", f"no such index [{name}]")
        return state

    def get_settings(self, name: str, params: dict[str, str]) -> dict[str, Any]:
        """``GET /{index}/_settings`` (``flat_settings``, ``include_defaults``)."""
        state = self.known(name)
        flat = params.get("flat_settings") == "true"
        out: dict[str, Any] = {"settings": state.settings if flat else _nested(state.settings)}
        if params.get("include_defaults") == "true":
            defaults = {"index.gc_deletes": f"{self.gc_deletes:g}s", "index.refresh_interval": "1s"}
            defaults = {k: v for k, v in defaults.items() if k not in state.settings}
            out["defaults"] = defaults if flat else _nested(defaults)
        return {name: out}

    def put_settings(self, name: str, body: bytes) -> dict[str, Any]:
        """``PUT /{index}/_settings``."""
        state = self.known(name)
        data = json_body(body)
        if not isinstance(data, dict):
            raise Reply(400, "parse_exception", "request body must be an object")
        update = _flatten(data.get("settings", data))
        if "index.gc_deletes" in update:
            try:
                time_value(update["index.gc_deletes"])
            except ValueError as exc:
                raise Reply(400, "illegal_argument_exception", str(exc)) from None
        state.settings.update(update)
        return {"acknowledged": True}

    def retention(self, state: IndexState) -> float:
        """Seconds the index keeps tombstones (``index.gc_deletes``)."""
        value = state.settings.get("index.gc_deletes")
        return time_value(value) if value is not None else self.gc_deletes

    def current(self, state: IndexState, doc_id: str) -> tuple[int, bool] | None:
        """(version, deleted) of what the index holds for ``doc_id``, or None."""
        doc = state.docs.get(doc_id)
        if doc is not None:
            return doc.version, False
        tomb = state.tombstones.get(doc_id)
        if tomb is None:
            return None
        if self.now() - tomb[1] > self.retention(state):
            del state.tombstones[doc_id]
            return None
        return tomb[0], True

    def get(self, index: str, doc_id: str, params: dict[str, str]) -> dict[str, Any]:
        """``GET /{index}/_doc/{id}`` (``_source``, ``_source_includes``)."""
        state = self.states.get(index)
        if state is None:
            return {
                "_index": index,
                "_id": doc_id,
                "error": item_error("index_not_found_exception", f"no such index [{index}]", index),
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

    def mget(self, index: str | None, params: dict[str, str], body: bytes) -> dict[str, Any]:
        """``POST /_mget`` (``docs`` or ``ids``)."""
        data = json_body(body)
        if not isinstance(data, dict):
            raise Reply(400, "parse_exception", "request body must be an object")
        wanted: list[tuple[str | None, str]] = []
        if "docs" in data:
            for entry in data["docs"]:
                wanted.append((entry.get("_index", index), str(entry.get("_id"))))
        else:
            wanted = [(index, str(i)) for i in data.get("ids", [])]
        docs = []
        for name, doc_id in wanted:
            if name is None:
                raise Reply(400, "action_request_validation_exception", "index is missing")
            docs.append(self.get(name, doc_id, params))
        return {"docs": docs}

    def versioned(
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
        current = self.current(state, doc_id)
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
                item_error("version_conflict_engine_exception", reason, state.name),
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
                error = item_error("version_conflict_engine_exception", reason, state.name)
                return 409, None, error, None
            new = version
        if op == "delete":
            state.docs.pop(doc_id, None)
            state.tombstones[doc_id] = (new, self.now())
            return (200, "deleted", None, new) if live else (404, "not_found", None, new)
        assert source is not None
        state.docs[doc_id] = StoredDocument(source, new, self.seq_no + 1, routing)
        state.tombstones.pop(doc_id, None)
        return (200, "updated", None, new) if live else (201, "created", None, new)
