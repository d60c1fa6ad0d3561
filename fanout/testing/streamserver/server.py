"""StreamServer: a store of streams served over HTTP, with scripted faults and counters."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fanout.testing.streamserver.faults import Call, Fault, FaultScript
from fanout.testing.streamserver.model import Shard, Stream
from fanout.testing.streamserver.operations import (
    MAX_PAGE_BYTES,
    MAX_RECORDS_PER_PAGE,
    Operations,
)
from fanout.testing.streamserver.store import StreamStore
from fanout.testing.streamserver.wire import Wire

DEFAULT_ITERATOR_TTL = 15 * 60.0


class StreamServer(StreamStore):
    """DynamoDB Streams (and DescribeTable) over HTTP on 127.0.0.1, scripted from Python.

    ``async with StreamServer() as server`` serves in the running loop;
    ``with StreamServer().run_in_thread() as server`` serves from a thread with its own loop.
    Every scripting method takes a lock, so a test thread may script a server that serves
    from another thread.

    Parameters: ``page_size`` caps records per GetRecords answer (``Limit`` is honoured
    below it) and ``max_page_bytes`` caps the SizeBytes of its records (1 MB, counted as
    DynamoDB counts item sizes, so 1,000 typical records fit); ``iterator_ttl`` is the age (seconds)
    after which iterators raise ExpiredIteratorException; ``retention`` (seconds or None)
    trims records older than that whenever a shard is read; ``seq_step`` is the gap between
    consecutive sequence numbers; ``clock`` replaces ``time.time`` (:meth:`advance` moves
    the server's time forward either way); ``seed`` drives fault probabilities, event ids and
    shard-id suffixes.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = "us-east-1",
        account: str = "123456789012",
        page_size: int = MAX_RECORDS_PER_PAGE,
        max_page_bytes: int = MAX_PAGE_BYTES,
        iterator_ttl: float = DEFAULT_ITERATOR_TTL,
        retention: float | None = None,
        seq_step: int = 10,
        seed: int = 0,
        clock: Callable[[], float] | None = None,
        require_auth: bool = True,
    ) -> None:
        if not 1 <= page_size <= MAX_RECORDS_PER_PAGE:
            raise ValueError(f"page_size must be 1..{MAX_RECORDS_PER_PAGE}")
        super().__init__(region=region, account=account, seq_step=seq_step, seed=seed, clock=clock)
        self.host = host
        self.port = port
        self.page_size = page_size
        self.max_page_bytes = max_page_bytes
        self.iterator_ttl = iterator_ttl
        self.retention = retention
        self.require_auth = require_auth
        self._faults = FaultScript(seed)
        self.faults: list[Fault] = self._faults.faults  # in the order they were added
        # counters
        self.calls: Counter[str] = Counter()
        self.shard_calls: Counter[tuple[str, str]] = Counter()
        self.errors: Counter[tuple[str, str]] = Counter()
        self.records_served: Counter[str] = Counter()
        operations = Operations(self, self._tables, self._streams)
        self._wire = Wire(self, operations, self._faults, self._lock)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        if not self._wire.listening:
            raise RuntimeError("the server is not running")
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        """Listen (in the running loop) and return the endpoint URL."""
        if not self._wire.listening:
            self.port = await self._wire.listen(self.host, self.port)
        return self.endpoint_url

    async def stop(self) -> None:
        await self._wire.close()

    async def __aenter__(self) -> StreamServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self, timeout: float = 10.0) -> str:
        """Serve from a background thread with its own event loop; return the endpoint URL."""
        if not self._wire.threaded:
            self.port = self._wire.listen_in_thread(self.host, self.port, timeout)
        return self.endpoint_url

    def stop_thread(self, timeout: float = 10.0) -> None:
        self._wire.close_thread(timeout)

    @contextlib.contextmanager
    def run_in_thread(self) -> Iterator[StreamServer]:
        """``with server.run_in_thread():`` serve from a background thread (sync clients)."""
        self.start_in_thread()
        try:
            yield self
        finally:
            self.stop_thread()

    # -- faults ------------------------------------------------------------------------------

    def inject_empty_pages(self, shard: Shard, count: int = 1, *, at: int | None = None) -> None:
        """Make the next ``count`` GetRecords calls that reach record index ``at`` (default:
        the current end of the shard) answer no records with a NextShardIterator pointing at
        the same place; pages that would cross ``at`` stop there. Records put later follow."""
        with self._lock:
            shard.add_empty_pages(count, at)

    def trim(
        self,
        target: Stream | Shard,
        up_to_seq: int | str | None = None,
        *,
        older_than: float | None = None,
    ) -> int:
        """Trim records with sequence number <= ``up_to_seq`` and/or created more than
        ``older_than`` seconds ago. Iterators pointing into trimmed data then raise
        TrimmedDataAccessException. Returns how many records were trimmed."""
        with self._lock:
            shards = [target] if isinstance(target, Shard) else target.shards
            up_to = None if up_to_seq is None else int(up_to_seq)
            before = None if older_than is None else self.now() - older_than
            return sum(s.trim(up_to_sequence=up_to, created_before=before) for s in shards)

    def fail(
        self,
        op: str | None = None,
        error: str | int | None = "InternalServerError",
        *,
        times: int | None = 1,
        probability: float = 1.0,
        after: int = 0,
        shard: Shard | str | None = None,
        page: int | None = None,
        delay: float = 0.0,
        message: str | None = None,
        status: int | None = None,
        body: bytes | None = None,
        where: Callable[[Call], bool] | None = None,
    ) -> Fault:
        """Script a failure; see :class:`Fault` for the fields. Returns the fault, whose
        ``fired`` counts how often it answered."""
        shard_id = shard.shard_id if isinstance(shard, Shard) else shard
        fault = Fault(
            op=op,
            error=error,
            times=times,
            probability=probability,
            after=after,
            shard=shard_id,
            page=page,
            delay=delay,
            message=message,
            status=status,
            body=body,
            where=where,
        )
        with self._lock:
            return self._faults.add(fault)

    def garble(
        self,
        op: str | None = "GetRecords",
        body: bytes = b"<html>Bad Gateway</html>",
        **kwargs: Any,
    ) -> Fault:
        """Answer matching calls with a 200 whose body is ``body`` (by default an HTML page,
        as a proxy might send; ``b"[]"`` for a JSON list) instead of the operation's answer;
        other arguments as :meth:`fail`."""
        return self.fail(op, 200, body=body, **kwargs)

    def throttle(self, op: str | None = "GetRecords", **kwargs: Any) -> Fault:
        """LimitExceededException (HTTP 400) on matching calls; arguments as :meth:`fail`."""
        return self.fail(op, "LimitExceededException", **kwargs)

    def slow(self, op: str | None = None, delay: float = 1.0, **kwargs: Any) -> Fault:
        """Delay matching calls (forever unless ``times`` is given), then answer normally."""
        kwargs.setdefault("times", None)
        return self.fail(op, None, delay=delay, **kwargs)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def expire_iterators(self, target: Stream | Shard | None = None) -> None:
        """Make every iterator issued so far (for ``target``, or everywhere) expired."""
        with self._lock:
            if target is None:
                shards: Iterable[Shard] = self._shards.values()
            else:
                shards = [target] if isinstance(target, Shard) else target.shards
            for shard in shards:
                shard.iterator_generation += 1

    # -- counters ----------------------------------------------------------------------------

    def calls_for(self, op: str, shard: Shard | str | None = None) -> int:
        """Calls received for ``op`` (for one shard if given), failed ones included."""
        if shard is None:
            return self.calls[op]
        shard_id = shard.shard_id if isinstance(shard, Shard) else shard
        return self.shard_calls[(op, shard_id)]

    def reset_counters(self) -> None:
        with self._lock:
            self.calls.clear()
            self.shard_calls.clear()
            self.errors.clear()
            self.records_served.clear()
