"""The ``opensearch`` sink: replicates items into an index with the _bulk API and external
versions, so that an older change never overwrites a newer one (docs/opensearch.md).

One ``send()`` turns each record into bulk actions (INSERT/MODIFY index the new image,
REMOVE deletes), sends them in requests bounded by count and bytes, and maps every item of
the answers to the record's outcome. A version conflict is settled by comparing the full
stamps of the two changes (the document's metadata field): a stale change counts as
delivered, a newer one whose version lost the tie-break is written again with
``external_gte``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from fanout.errors import SinkUnavailable
from fanout.records import Record, change_time
from fanout.sink import Failure, Failures, SinkContext
from sinks.opensearch.actions import Action, Planner
from sinks.opensearch.client import NDJSON, OpenSearchError, Transport
from sinks.opensearch.config import OpenSearchSinkConfig
from sinks.opensearch.document import RecordError, Stamp, newer_than_version
from sinks.opensearch.indexes import UNAVAILABLE, IndexKeeper, raise_for
from sinks.opensearch.metrics import SinkMetrics

MAX_CONFLICT_ROUNDS = 3  # external_gte re-sends per action and send() before giving up
_REASON_LIMIT = 1000
_CURRENT = re.compile(r"current version \[(\d+)\]")
# Item errors worth retrying besides 429 and 5xx: overload, blocks an operator lifts,
# shards moving, an index not created yet.
_RETRYABLE_TYPES = frozenset(
    {
        "es_rejected_execution_exception",
        "opensearch_rejected_execution_exception",
        "cluster_block_exception",
        "unavailable_shards_exception",
        "index_not_found_exception",
        "no_shard_available_action_exception",
        "node_not_connected_exception",
        "process_cluster_event_timeout_exception",
        "circuit_breaking_exception",
    }
)
_CONFLICT = object()  # _judge's verdict for a version conflict


def _worst(a: Failure | None, b: Failure) -> Failure:
    if a is None or (a.retryable and not b.retryable):
        return b
    return a


def _describe(status: int, error: Any) -> str:
    if isinstance(error, dict):
        text = f"{status} {error.get('type', 'error')}: {error.get('reason', '')}"
        cause = error.get("caused_by")
        if isinstance(cause, dict):
            text += f" (caused by {cause.get('type', '')}: {cause.get('reason', '')})"
    else:
        text = f"{status} {error}" if error else f"status {status}"
    return text[:_REASON_LIMIT]


class OpenSearchSink:
    """Replicates items into OpenSearch (see the module docstring)."""

    ordered = True

    def __init__(self, name: str, config: OpenSearchSinkConfig, context: SinkContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.log = context.logger
        self.transport = Transport(config, context)
        self.metrics = SinkMetrics(context.metrics, name)
        self.planner = Planner(config)
        self.indexes = IndexKeeper(name, config, self.transport, self.metrics, self.log)
        self._warned_past_retention = 0.0
        self._bulk_query = f"refresh={config.refresh}" if config.refresh else ""

    async def start(self) -> None:
        await self.transport.start()
        if self.planner.index.static and self.indexes.needed:
            try:
                await self.indexes.prepare(self.config.index)
            except (aiohttp.ClientError, TimeoutError, SinkUnavailable, OpenSearchError) as exc:
                if isinstance(exc, OpenSearchError) and 0 < exc.status < 500:
                    raise  # refused (credentials, settings): a configuration error
                # A cluster that is down must not keep the worker (and its other sinks) from
                # starting: the index is prepared before the first bulk request instead.
                self.log.warning(
                    "opensearch_unreachable",
                    extra={"sink": self.name, "error": f"{type(exc).__name__}: {exc}"},
                )

    async def stop(self) -> None:
        # The HTTP session and AWS credentials belong to the worker; nothing else is open.
        return None

    def _audit(self, batch: Sequence[Record], actions: Sequence[Action]) -> None:
        """Count stamps that do not grow per item in stream order (an assumption of the
        version design) and changes older than the known tombstone retention."""
        last: dict[tuple[str, str], Stamp] = {}
        anomalies = 0
        for action in actions:
            if not action.primary:
                continue
            where = (action.index, action.id)
            previous = last.get(where)
            if previous is not None and action.stamp <= previous:
                anomalies += 1
            last[where] = action.stamp
        if anomalies:
            self.metrics.order_anomalies.inc(anomalies)
            self.log.warning(
                "opensearch_order_anomaly", extra={"sink": self.name, "changes": anomalies}
            )
        retention = self.indexes.retention
        if retention is not None:
            horizon = time.time() - retention
            # A backfilled record's age runs from its read, not from its version time.
            old = sum(
                1
                for a in actions
                if a.primary and (change_time(batch[a.record]) or a.stamp[0]) < horizon
            )
            if old:
                self.metrics.past_retention.inc(old)
                now = time.monotonic()
                if now - self._warned_past_retention > 60:
                    self._warned_past_retention = now
                    self.log.warning(
                        "opensearch_changes_past_tombstone_retention",
                        extra={"sink": self.name, "changes": old, "gc_deletes_s": retention},
                    )

    # -- sending --------------------------------------------------------------------------

    async def send(self, batch: Sequence[Record]) -> Failures:
        failures: Failures = {}
        actions: list[Action] = []
        for position, record in enumerate(batch):
            try:
                self.planner.plan(position, record, actions)
            except RecordError as exc:
                failures[position] = Failure(False, str(exc))
        if not actions:
            return failures
        if self.indexes.needed:
            for index in self.indexes.missing({a.index for a in actions}):
                await self.indexes.prepare(index)
        self._audit(batch, actions)
        chunks = list(self._chunks(actions))
        for n, chunk in enumerate(chunks):
            try:
                answer = await self._deliver(chunk)
            except Exception as exc:
                if n == 0:
                    raise
                # Earlier requests were delivered: report the rest as failed, not the batch.
                failure = Failure(True, f"{type(exc).__name__}: {exc}", _retry_after(exc))
                for later in chunks[n:]:
                    for action in later:
                        failures[action.record] = _worst(failures.get(action.record), failure)
                break
            for at, failure in answer.items():
                position = chunk[at].record
                failures[position] = _worst(failures.get(position), failure)
            held = next((f for f in answer.values() if f.retryable), None)
            if held is not None and n + 1 < len(chunks):
                # The sink is ordered: records behind a retryable failure wait for it.
                behind = Failure(True, f"behind a failed record: {held.reason}", held.retry_after)
                for later in chunks[n + 1 :]:
                    for action in later:
                        failures.setdefault(action.record, behind)
                break
        return failures

    def _chunks(self, actions: list[Action]) -> Iterator[list[Action]]:
        """Consecutive runs of actions within ``max_bulk_actions`` and ``max_bulk_bytes``;
        a record's actions stay together."""
        limit, budget = self.config.max_bulk_actions, self.config.max_bulk_bytes
        chunk: list[Action] = []
        size = 0
        for action in actions:
            length = len(action.encoded())
            splits_record = bool(chunk) and chunk[-1].record == action.record
            if chunk and not splits_record and (len(chunk) >= limit or size + length > budget):
                yield chunk
                chunk, size = [], 0
            chunk.append(action)
            size += length
        if chunk:
            yield chunk

    async def _deliver(self, chunk: list[Action]) -> dict[int, Failure]:
        """Send one chunk; settle version conflicts; the failures by position in ``chunk``."""
        work = list(chunk)
        failures: dict[int, Failure] = {}
        pending = list(range(len(work)))
        for round_ in range(MAX_CONFLICT_ROUNDS + 1):
            items, retry_after = await self._bulk([work[p] for p in pending])
            conflicts: list[tuple[int, dict[str, Any]]] = []
            for at, item in zip(pending, items, strict=True):
                verdict = self._judge(work[at], item, retry_after)
                if verdict is None:
                    continue
                if isinstance(verdict, Failure):
                    failures[at] = verdict
                else:
                    conflicts.append((at, item))
            if not conflicts:
                break
            if round_ == MAX_CONFLICT_ROUNDS:
                for at, item in conflicts:
                    reason = _describe(409, item.get("error"))
                    failures[at] = Failure(True, f"version conflicts kept coming: {reason}")
                break
            pending = await self._resolve(work, conflicts)
            if not pending:
                break
        return failures

    def _judge(
        self, action: Action, item: Mapping[str, Any], retry_after: float | None
    ) -> Failure | object | None:
        """None: done; ``_CONFLICT``: a version conflict to settle; else the Failure."""
        status = item.get("status", 0)
        if isinstance(status, int) and 200 <= status < 300:
            return None
        error = item.get("error")
        if status == 404 and action.op == "delete" and not error:
            return None  # deleted already (the delete still leaves its version as tombstone)
        kind = str(error.get("type", "")) if isinstance(error, dict) else ""
        if status == 409 and kind == "version_conflict_engine_exception":
            return _CONFLICT
        self.metrics.item_failed(kind or str(status))
        reason = _describe(status, error)
        if status in (401, 403, 408, 429) or status >= 500 or kind in _RETRYABLE_TYPES:
            return Failure(True, reason, retry_after)
        return Failure(False, reason)

    async def _bulk(self, actions: list[Action]) -> tuple[list[dict[str, Any]], float | None]:
        """One _bulk request; the answer's items in order, and its ``Retry-After``."""
        body = b"".join(action.encoded() for action in actions)
        try:
            response = await self.transport.request(
                "POST", "/_bulk", query=self._bulk_query, body=body, content_type=NDJSON
            )
        except (SinkUnavailable, aiohttp.ClientError, TimeoutError):
            self.metrics.bulk["failed"].inc()
            raise
        status = response.status
        if status == 413 and len(actions) > 1:
            self.metrics.bulk["failed"].inc()
            middle = len(actions) // 2
            first, wait = await self._bulk(actions[:middle])
            second, wait2 = await self._bulk(actions[middle:])
            return first + second, wait if wait is not None else wait2
        if status == 413:
            self.metrics.bulk["failed"].inc()
            error = {"type": "request_entity_too_large", "reason": response.error()}
            return [{"status": 413, "error": error}], None
        if status != 200:
            self.metrics.bulk["throttled" if status in UNAVAILABLE else "failed"].inc()
            raise_for("_bulk", response)
        data = response.json()
        raw = data.get("items") if isinstance(data, dict) else None
        if not isinstance(raw, list) or len(raw) != len(actions):
            self.metrics.bulk["failed"].inc()
            raise OpenSearchError(
                f"_bulk answered {len(raw) if isinstance(raw, list) else 'no'} items for "
                f"{len(actions)} actions",
                status=status,
            )
        items = [next(iter(entry.values())) if entry else {} for entry in raw]
        self.metrics.bulk["item_errors" if data.get("errors") else "ok"].inc()
        return items, response.retry_after()

    async def _resolve(self, work: list[Action], conflicts: list[tuple[int, Any]]) -> list[int]:
        """Settle version conflicts by comparing stamps; returns the positions to write again
        (``work`` then holds their ``external_gte`` actions)."""
        docs = await self._mget([work[at] for at, _ in conflicts])
        again: list[int] = []
        field = self.config.metadata_field
        for (at, item), doc in zip(conflicts, docs, strict=True):
            action = work[at]
            if doc is not None and doc.get("found"):
                stored = _stored_stamp(doc.get("_source"), field)
                if stored is None:
                    self.metrics.conflicts["unverifiable"].inc()
                elif action.stamp > stored and isinstance(doc.get("_version"), int):
                    work[at] = action.again(doc["_version"])
                    again.append(at)
                    self._wrapped(action, stored)
                else:
                    self.metrics.conflicts["stale"].inc()
                continue
            # Deleted (a tombstone): only its version is known, from the conflict's reason.
            match = _CURRENT.search(str((item.get("error") or {}).get("reason", "")))
            current = int(match.group(1)) if match else None
            if current is not None and newer_than_version(action.stamp, current):
                if action.op == "index":
                    work[at] = action.again(current)
                    again.append(at)
                    self._wrapped(action, None)
                    continue
            self.metrics.conflicts["stale"].inc()
        return again

    def _wrapped(self, action: Action, stored: Stamp | None) -> None:
        self.metrics.conflicts["newer"].inc()
        self.log.info(
            "opensearch_tie_break_wrapped",
            extra={
                "sink": self.name,
                "op": action.op,
                "change_time": action.stamp[0],
                "seq": str(action.stamp[1]),
                "stored_seq": str(stored[1]) if stored else None,
            },
        )

    async def _mget(self, actions: list[Action]) -> list[dict[str, Any] | None]:
        """The stored documents (their metadata field only) at the actions' places."""
        docs = []
        for action in actions:
            doc: dict[str, Any] = {"_index": action.index, "_id": action.id}
            if action.routing is not None:
                doc["routing"] = action.routing
            docs.append(doc)
        response = await self.transport.request(
            "POST",
            "/_mget",
            query=f"_source_includes={self.config.metadata_field}",
            body=orjson.dumps({"docs": docs}),
        )
        if response.status != 200:
            raise_for("_mget", response)
        data = response.json()
        found = data.get("docs") if isinstance(data, dict) else None
        if not isinstance(found, list) or len(found) != len(actions):
            raise OpenSearchError("_mget answered a different number of documents")
        return [d if isinstance(d, dict) and "error" not in d else None for d in found]


def _stored_stamp(source: Any, field: str) -> Stamp | None:
    meta = source.get(field) if isinstance(source, dict) else None
    if not isinstance(meta, dict):
        return None
    try:
        return int(meta["created"]), int(meta["seq"])
    except (KeyError, TypeError, ValueError):
        return None


def _retry_after(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after", None)
    return float(value) if isinstance(value, int | float) else None


def build(name: str, config: OpenSearchSinkConfig, context: SinkContext) -> OpenSearchSink:
    """The sink type's factory."""
    return OpenSearchSink(name, config, context)
