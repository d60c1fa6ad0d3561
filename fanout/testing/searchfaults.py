"""Scripted faults of the local OpenSearch stand-in: whole ``_bulk`` requests answered with an
error, bulk items rejected a number of times, documents refused. Callers hold the server's
lock."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]


@dataclass
class Rejection:
    """Bulk items rejected ``times`` times each (about ``fraction`` of them, or those matching
    ``predicate``), with ``status`` and error ``type``."""

    fraction: float
    times: int
    status: int
    type: str
    seed: int
    predicate: Predicate | None
    retry_after: float | None
    counts: dict[tuple[str, str, int | None, str], int] = field(default_factory=dict)


class Faults:
    """The faults scripted so far (``SearchServer.throttle``, ``reject``, ``refuse``)."""

    def __init__(self) -> None:
        self.whole: list[tuple[int, float | None]] = []  # (status, Retry-After) per bulk call
        self.rejections: list[Rejection] = []
        self.refusals: list[tuple[Predicate, str, str]] = []

    def clear(self) -> None:
        """Forget every scripted fault."""
        self.whole.clear()
        self.rejections.clear()
        self.refusals.clear()

    def refused(self, op: str, source: dict[str, Any] | None) -> tuple[str, str] | None:
        """(error type, reason) refusing an index write of ``source``, or None."""
        if source is None or op == "delete":
            return None
        for predicate, kind, reason in self.refusals:
            if predicate(source):
                return kind, reason
        return None

    def rejected(
        self, index: str, doc_id: str, version: int | None, op: str, source: dict[str, Any] | None
    ) -> Rejection | None:
        """The rejection this bulk item meets now (counted), or None."""
        for rejection in self.rejections:
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
