"""The indexes the ``opensearch`` sink writes to: created with the settings the version
design needs (``index.gc_deletes``, the metadata field left unindexed), and checked for how
long they keep the versions of deleted documents."""

from __future__ import annotations

import logging
import re
from typing import Any

import anyio
import orjson

from fanout.errors import SinkUnavailable
from sinks.opensearch.client import OpenSearchError, Response, Transport, path
from sinks.opensearch.config import OpenSearchSinkConfig
from sinks.opensearch.metrics import SinkMetrics

UNAVAILABLE = frozenset({429, 502, 503, 504})
_TIME_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "micros": 1e-6}
_TIME_VALUE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(d|h|m|s|ms|micros|nanos)?\s*$")
DEFAULT_GC_DELETES = "60s"


def seconds_of(value: Any) -> float | None:
    """An OpenSearch time value (``60s``, ``1d``, ``500ms``) in seconds, or None."""
    match = _TIME_VALUE.match(str(value))
    if not match:
        return None
    unit = match.group(2) or "ms"  # a bare number is milliseconds in OpenSearch
    return float(match.group(1)) * _TIME_UNITS.get(unit, 1e-9)


def raise_for(doing: str, response: Response) -> None:
    """Raise the exception an error answer stands for: SinkUnavailable (with Retry-After)
    for 429 and 502-504, else OpenSearchError."""
    if response.status in UNAVAILABLE:
        raise SinkUnavailable(f"{doing}: {response.error()}", retry_after=response.retry_after())
    raise OpenSearchError(f"{doing}: {response.error()}", status=response.status)


class IndexKeeper:
    """Prepares each index once per process, before the first write to it.

    ``retention`` is the smallest ``index.gc_deletes`` seen (None while unknown, and always
    on OpenSearch Serverless, which manages index settings itself).
    """

    def __init__(
        self,
        name: str,
        config: OpenSearchSinkConfig,
        transport: Transport,
        metrics: SinkMetrics,
        log: logging.Logger,
    ) -> None:
        self.name = name
        self.config = config
        self.transport = transport
        self.metrics = metrics
        self.log = log
        self.manage_gc = config.gc_deletes is not None and transport.service != "aoss"
        self.retention: float | None = None
        self._ready: set[str] = set()
        self._lock = anyio.Lock()

    @property
    def needed(self) -> bool:
        """Whether indexes need preparing at all."""
        return self.config.create_index or self.manage_gc

    def missing(self, indexes: set[str]) -> list[str]:
        """The indexes of ``indexes`` not prepared yet."""
        return sorted(indexes - self._ready)

    async def prepare(self, index: str) -> None:
        """Create ``index`` if it is missing (and allowed), check its tombstone retention.

        Raises:
            SinkUnavailable, OpenSearchError, aiohttp.ClientError: it could not be done; the
                next write to the index tries again.
        """
        if index in self._ready:
            return
        async with self._lock:
            if index in self._ready:
                return
            if self.config.create_index:
                response = await self.transport.request(
                    "PUT", path(index), body=orjson.dumps(self.body())
                )
                if response.status == 200:
                    self.log.info(
                        "opensearch_index_created", extra={"sink": self.name, "index": index}
                    )
                    if self.manage_gc:
                        self._note(float(self.config.gc_deletes or 0))
                elif response.error_type() != "resource_already_exists_exception":
                    raise_for(f"creating index {index}", response)
                elif self.manage_gc:
                    await self._check(index)
            elif self.manage_gc:
                await self._check(index)
            self._ready.add(index)

    def body(self) -> dict[str, Any]:
        """Settings and mappings of an index the sink creates."""
        settings = dict(self.config.index_settings)
        if self.manage_gc:
            settings["index.gc_deletes"] = f"{int(self.config.gc_deletes or 0)}s"
        mappings = dict(self.config.mappings or {})
        properties = dict(mappings.get("properties") or {})
        # Stored with the document (the sink reads it back), never searched or mapped.
        properties.setdefault(self.config.metadata_field, {"type": "object", "enabled": False})
        mappings["properties"] = properties
        return {"settings": settings, "mappings": mappings}

    async def _check(self, index: str) -> None:
        response = await self.transport.request(
            "GET", path(index, "_settings"), query="flat_settings=true&include_defaults=true"
        )
        if response.status == 404:
            self.log.warning(
                "opensearch_index_missing",
                extra={"sink": self.name, "index": index, "create_index": False},
            )
            return
        if response.status != 200:
            raise_for(f"reading the settings of index {index}", response)
        wanted = float(self.config.gc_deletes or 0)
        data = response.json()
        for concrete, body in (data if isinstance(data, dict) else {}).items():
            value = (body.get("settings") or {}).get("index.gc_deletes")
            if value is None:
                value = (body.get("defaults") or {}).get("index.gc_deletes", DEFAULT_GC_DELETES)
            seconds = seconds_of(value)
            if seconds is None or seconds >= wanted:
                self._note(seconds if seconds is not None else wanted)
            elif self.config.update_gc_deletes:
                update = orjson.dumps({"index": {"gc_deletes": f"{int(wanted)}s"}})
                answer = await self.transport.request(
                    "PUT", path(concrete, "_settings"), body=update
                )
                if answer.status != 200:
                    raise_for(f"raising index.gc_deletes of {concrete}", answer)
                self.log.info(
                    "opensearch_gc_deletes_raised",
                    extra={"sink": self.name, "index": concrete, "from_s": seconds, "to_s": wanted},
                )
                self._note(wanted)
            else:
                self.log.warning(
                    "opensearch_tombstones_short",
                    extra={
                        "sink": self.name,
                        "index": concrete,
                        "gc_deletes_s": seconds,
                        "wanted_s": wanted,
                    },
                )
                self._note(seconds)

    def _note(self, seconds: float) -> None:
        if self.retention is None or seconds < self.retention:
            self.retention = seconds
            self.metrics.retention.set(seconds)
