"""The process's byte budget for buffered records: readers read a page only when it has room.

Every page read from a shard is weighed once, from its HTTP body, by ``parsed_size``: an
estimate of the memory its records take once parsed (a typical 1.3 KB record on the wire is
about 13.5 KB of Python objects; a record made of a few long strings is barely more than its
text). The weight is held from the moment the page is read until every sink settled it
(delivered or dead-lettered), on the page's ticket, and counted per shard (``ShardBytes``)
and for the whole process (``MemoryBudget``, ``max_buffered_bytes``).

Before each GetRecords call a reader reserves room for the page it expects (the size of the
shard's previous page with records; ``FIRST_PAGE_BYTES`` before it has seen one), waiting
while the budget is full; once the page is read, the reservation becomes the page's real
weight. Waiters are served in order. A page larger than the whole budget is admitted alone
(when nothing else is held), so an oversized page slows the worker down instead of
stopping it. Accounting costs a few operations per page, none per record.

When the config sets no ``max_buffered_bytes`` the budget follows the shards being read:
``PER_SHARD_BYTES`` for each (about one full page of typical records and the copies sinks
make of it), at least ``MIN_SCALED_BYTES``, at most ``default_budget()``. The worker is one
CPU-bound process: records parsed long before a sink takes them buy no throughput, and every
object of theirs is cold in the CPU's caches by the time it is delivered and freed. With
three handler sinks on 4 shards a fixed 512 MiB let about 12 pages wait in lanes and cost
43 CPU s per million records; 16 MiB a shard (64 MiB) cost 31 (docs/performance.md, §6).
Shards still read ahead while others' pages are being worked on, and one shard alone gets
two pages' room, so its next page is read while its sinks work on the last one.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import anyio
from prometheus_client import Counter

MIB = 1024 * 1024

DEFAULT_BUDGET_BYTES = 512 * MIB
"""``max_buffered_bytes`` when the container has no memory limit."""
MEMORY_LIMIT_SHARE = 0.5
"""Share of the container's memory limit that buffered records may take by default; the
rest is the interpreter, the shards' readers and lanes, and what sinks hold while sending."""
FIRST_PAGE_BYTES = 8 * MIB
"""Room reserved for a shard's first page with records: a full 1 MB page of typical records
parses into about 13 MB, one of a few long strings into about 1 MB."""
MIN_PAGE_BYTES = 64 * 1024
"""The least room a GetRecords call reserves."""
PER_SHARD_BYTES = 16 * MIB
"""The default budget's room per shard being read (a full 1 MB page of typical records
parses into about 13.5 MB)."""
MIN_SCALED_BYTES = 32 * MIB
"""The default budget's least room, whatever the shards: two full pages."""

# How the parsed size of a page is estimated from its JSON text: every object ("{") becomes a
# dict of about 95 bytes more than its text, every string ('"' counted twice) about 58 bytes
# (fitted within 6 % on pages of typical, wide, long-string and nested items; CPython 3.11).
_PER_BRACE = 95
_PER_QUOTE = 29
# Pages larger than this are sampled in _SAMPLES windows instead of counted whole: a full count
# costs about 1 ms per MB, a tenth of the page's parse.
_SAMPLE_WINDOW = 8 * 1024
_SAMPLES = 8

# cgroup v2, then v1: the container's memory limit.
_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)
# cgroup v1 reports "no limit" as a huge number (page-rounded 2**63 - 1).
_UNLIMITED = 1 << 60


def parsed_size(raw: bytes) -> int:
    """An estimate of the bytes the JSON text ``raw`` takes once parsed (orjson, CPython)."""
    size = len(raw)
    if size <= _SAMPLE_WINDOW * _SAMPLES:
        braces, quotes = raw.count(b"{"), raw.count(b'"')
    else:
        step = size // _SAMPLES
        braces = quotes = 0
        for start in range(0, step * _SAMPLES, step):
            window = raw[start : start + _SAMPLE_WINDOW]
            braces += window.count(b"{")
            quotes += window.count(b'"')
        scale = size / (_SAMPLE_WINDOW * _SAMPLES)
        braces, quotes = int(braces * scale), int(quotes * scale)
    return size + _PER_BRACE * braces + _PER_QUOTE * quotes


def container_memory_limit(paths: tuple[Path, ...] = _CGROUP_LIMITS) -> int | None:
    """The memory limit of the container (cgroup v2 ``memory.max`` or v1
    ``memory.limit_in_bytes``); None when there is none or it cannot be read."""
    for path in paths:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            continue
        return value if 0 < value < _UNLIMITED else None
    return None


def default_budget(memory_limit: int | None = None) -> int:
    """``max_buffered_bytes`` when the config sets none: half the container's memory limit,
    else ``DEFAULT_BUDGET_BYTES``."""
    limit = container_memory_limit() if memory_limit is None else memory_limit
    if limit is None:
        return DEFAULT_BUDGET_BYTES
    return max(MIN_PAGE_BYTES, int(limit * MEMORY_LIMIT_SHARE))


class _Waiter:
    __slots__ = ("event", "granted", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.event = anyio.Event()
        self.granted = False


class MemoryBudget:
    """Bytes of buffered records the process may hold; ``acquire`` waits for room, in order.

    Args:
        limit: the budget in bytes; None: unlimited (only counted). With ``per_shard``, the
            most the budget grows to.
        per_shard: the budget follows the shards being read (``join``, ``leave``):
            ``per_shard`` bytes each, at least ``MIN_SCALED_BYTES``, at most ``limit``.
    """

    def __init__(self, limit: int | None, per_shard: int | None = None) -> None:
        self.ceiling = limit
        self.per_shard = per_shard
        self.shards = 0
        self.limit = limit
        self.used = 0
        self.waited_s = 0.0  # total seconds acquirers waited
        self._waiters: deque[_Waiter] = deque()
        self._scale()

    def join(self) -> None:
        """A shard began to be read (the budget may grow)."""
        self.shards += 1
        self._scale()

    def leave(self) -> None:
        """A shard stopped being read (the budget may shrink; what is held stays held)."""
        self.shards = max(0, self.shards - 1)
        self._scale()

    def _scale(self) -> None:
        if self.per_shard is None:
            return
        limit = max(MIN_SCALED_BYTES, self.per_shard * self.shards)
        if self.ceiling is not None:
            limit = min(limit, self.ceiling)
        grew = self.limit is None or limit > self.limit
        self.limit = limit
        if grew:
            self._wake()

    def _fits(self, size: int) -> bool:
        # Nothing held: even a page larger than the whole budget goes, or nothing would move.
        return self.limit is None or self.used + size <= self.limit or self.used == 0

    async def acquire(self, size: int, waited: Counter | None = None) -> None:
        """Hold ``size`` bytes, waiting while they do not fit (after earlier waiters).

        Args:
            size: bytes to hold.
            waited: counts the seconds waited (``fanout_budget_wait_seconds_total``).
        """
        if not self._waiters and self._fits(size):
            self.used += size
            return
        waiter = _Waiter(size)
        self._waiters.append(waiter)
        started = time.monotonic()
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self.release(size)
            else:
                self._waiters.remove(waiter)
                self._wake()  # the head may have left: those behind it may fit now
            raise
        finally:
            seconds = time.monotonic() - started
            self.waited_s += seconds
            if waited is not None:
                waited.inc(seconds)

    def take(self, size: int) -> None:
        """Hold ``size`` bytes at once, whether they fit or not (a page already read)."""
        self.used += size

    def release(self, size: int) -> None:
        """Give back ``size`` bytes held."""
        self.used = max(0, self.used - size)
        self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters and self._fits(waiters[0].size):
            waiter = waiters.popleft()
            self.used += waiter.size
            waiter.granted = True
            waiter.event.set()

    @property
    def waiting(self) -> int:
        """Acquirers waiting for room."""
        return len(self._waiters)


class ShardBytes:
    """What one shard holds of the budget: the reservation of the page being read and the
    weights of its pages not settled yet. ``release_all`` gives everything back when the
    shard stops being read (a lost lease, a hand-over), whatever its lanes still hold.

    Args:
        budget: the process's budget (None: nothing is counted).
        waited: counts the seconds the shard's reader waited for room.
    """

    __slots__ = ("budget", "expected", "held", "reading", "waited")

    def __init__(self, budget: MemoryBudget | None, waited: Counter | None = None) -> None:
        self.budget = budget
        self.waited = waited
        self.held = 0
        self.expected = FIRST_PAGE_BYTES  # the next page's reservation
        self.reading = budget is not None  # counted in the budget's shards
        if budget is not None:
            budget.join()

    async def reserve(self) -> int:
        """Wait for room for the next page and hold it; returns the bytes reserved."""
        budget = self.budget
        if budget is None:
            return 0
        size = self.expected
        await budget.acquire(size, self.waited)
        self.held += size
        return size

    def settle_page(self, reserved: int, weight: int) -> None:
        """The page was read: hold its ``weight`` instead of the ``reserved`` bytes."""
        budget = self.budget
        if budget is None:
            return
        if weight:
            self.expected = max(MIN_PAGE_BYTES, weight)
        reserved = min(reserved, self.held)
        self.held += weight - reserved
        budget.take(weight)
        budget.release(reserved)

    def release(self, size: int) -> None:
        """A page of ``size`` bytes was settled by every sink (or given up)."""
        budget = self.budget
        if budget is None or not size:
            return
        size = min(size, self.held)  # never twice, after release_all
        self.held -= size
        budget.release(size)

    def release_all(self) -> None:
        """Give back everything the shard holds (it stopped being read)."""
        held, self.held = self.held, 0
        budget = self.budget
        if budget is None:
            return
        if self.reading:
            self.reading = False
            budget.leave()
        if held:
            budget.release(held)
