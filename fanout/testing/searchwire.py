"""The wire side of the local OpenSearch stand-in: whole-request errors and the parsing and
validation of ``_bulk`` bodies, as OpenSearch answers them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson

_ACTION_PARAMS = frozenset(
    {"_index", "_id", "routing", "version", "version_type", "if_seq_no", "if_primary_term"}
)
_VERSION_TYPES = ("internal", "external", "external_gt", "external_gte")
_BAD_INDEX = re.compile(r'[\\/*?"<>| ,#:A-Z]')
MAX_VERSION = (1 << 63) - 1


class Reply(Exception):
    """Answer the request with this status and body (an error of the whole request)."""

    def __init__(self, status: int, kind: str, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status = status
        self.body = {"error": {"type": kind, "reason": reason}, "status": status}
        self.headers = headers or {}


def item_error(kind: str, reason: str, index: str, **more: Any) -> dict[str, Any]:
    """The ``error`` object of one bulk item."""
    return {"type": kind, "reason": reason, "index": index, "shard": "0", **more}


def json_body(body: bytes) -> Any:
    """The parsed body; a 400 ``parse_exception`` if it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Reply(400, "parse_exception", f"failed to parse the request body: {exc}") from None


def index_problem(name: str) -> str | None:
    """Why ``name`` is not a valid index name, or None."""
    if not name or name in (".", "..") or name[0] in "-_+" or _BAD_INDEX.search(name):
        return f"Invalid index name [{name}]"
    return None


def parse_bulk(
    body: bytes, path_index: str | None
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """(op, metadata, source) per action; whole-request errors as ``Reply`` (400)."""
    if not body.strip():
        raise Reply(400, "action_request_validation_exception", "no requests added")
    if not body.endswith(b"\n"):
        raise Reply(
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
            raise Reply(
                400, "illegal_argument_exception", f"Malformed action/metadata line [{number}]"
            ) from None
        if not isinstance(action, dict) or len(action) != 1:
            raise Reply(
                400, "illegal_argument_exception", f"Malformed action/metadata line [{number}]"
            )
        ((op, meta),) = action.items()
        if op not in ("index", "create", "delete"):
            raise Reply(
                400,
                "illegal_argument_exception",
                f"Malformed action/metadata line [{number}], expected one of [create, delete, "
                f"index] but found [{op}]",
            )
        if not isinstance(meta, dict):
            raise Reply(
                400, "illegal_argument_exception", f"Malformed action/metadata line [{number}]"
            )
        unknown = sorted(set(meta) - _ACTION_PARAMS)
        if unknown:
            raise Reply(
                400,
                "illegal_argument_exception",
                f"Action/metadata line [{number}] contains an unknown parameter [{unknown[0]}]",
            )
        meta = dict(meta)
        meta.setdefault("_index", path_index)
        if meta["_index"] is None:
            raise Reply(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: index is missing;",
            )
        doc_id = meta.get("_id")
        if op == "delete" and not doc_id:
            raise Reply(
                400, "action_request_validation_exception", "Validation Failed: 1: id is missing;"
            )
        if doc_id is not None and len(str(doc_id).encode()) > 512:
            raise Reply(
                400,
                "action_request_validation_exception",
                f"Validation Failed: 1: id [{doc_id}] is too long, must be no longer than 512 "
                f"bytes but was: {len(str(doc_id).encode())};",
            )
        check_version(meta, op)
        source: dict[str, Any] | None = None
        if op != "delete":
            if i >= len(lines) or not lines[i].strip():
                raise Reply(
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
                raise Reply(400, "mapper_parsing_exception", "failed to parse")
        parsed.append((op, meta, source))
    yield from parsed


def check_version(meta: dict[str, Any], op: str) -> None:
    """Refuse (400) a version or version type OpenSearch refuses for ``op``."""
    version_type = meta.get("version_type", "internal")
    version = meta.get("version")
    if version_type not in _VERSION_TYPES:
        raise Reply(400, "illegal_argument_exception", f"No version type match [{version_type}]")
    if version_type == "internal":
        if version is not None:
            raise Reply(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: internal versioning can not be used for optimistic "
                "concurrency control. Please use `if_seq_no` and `if_primary_term` instead;",
            )
        return
    if op == "create":
        raise Reply(
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: create operations only support internal versioning. use "
            "index instead;",
        )
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= MAX_VERSION:
        raise Reply(
            400,
            "action_request_validation_exception",
            f"Validation Failed: 1: illegal version value [{version}] for version type "
            f"[{version_type}];",
        )
