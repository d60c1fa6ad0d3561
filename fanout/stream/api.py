"""The seam between the stream reader and DynamoDB Streams: ``StreamsAPI``, its values, and
``retry_call``, how callers retry its errors.

The reader, discovery and lineage code talk to the service only through ``StreamsAPI``;
``fanout.stream.client.StreamsClient`` implements it over HTTP, tests implement it in memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from fanout.errors import SourceError, StreamNotFound
from fanout.records import Record
from fanout.retry import RetryPolicy

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard as DescribeStream lists it."""

    shard_id: str
    parent_id: str | None
    starting_sequence: str
    ending_sequence: str | None  # set once the shard is closed

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> Shard:
        seq = raw.get("SequenceNumberRange", {})
        return cls(
            shard_id=raw["ShardId"],
            parent_id=raw.get("ParentShardId"),
            starting_sequence=seq.get("StartingSequenceNumber", "0"),
            ending_sequence=seq.get("EndingSequenceNumber"),
        )


@dataclass(frozen=True, slots=True)
class TableStream:
    """What DescribeTable says about a table's stream."""

    table_arn: str
    stream_arn: str | None  # the latest stream, None when no stream is enabled

    @property
    def stream_prefix(self) -> str:
        """Every stream ARN of this table starts with this."""
        return f"{self.table_arn}/stream/"


@dataclass(frozen=True, slots=True)
class Page:
    """One GetRecords answer.

    ``nbytes`` estimates the memory its records take once parsed (what the process's byte
    budget counts, ``fanout.stream.budget``); 0 when unknown (fakes). ``raw`` is the answer
    as it came (empty when unknown): what a sink that changed its records is given again
    when they are retried (``fanout.delivery.private``).
    """

    records: list[Record]
    next_iterator: str | None  # None: the shard is closed and fully read
    nbytes: int = 0
    raw: bytes = b""


class StreamsAPI(Protocol):
    """The calls the stream reader makes. Errors are raised as ``fanout.errors.SourceError``
    subclasses: ``StreamNotFound``, ``IteratorExpired``, ``TrimmedData``, ``Throttled``,
    ``ServiceError`` (retryable) and plain ``SourceError`` for anything unexpected.
    """

    async def table_stream(self, table: str) -> TableStream:
        """The table's ARN and its enabled stream (DescribeTable).

        Raises:
            StreamNotFound: the table does not exist.
        """
        ...

    async def describe_stream(
        self,
        stream_arn: str,
        *,
        exclusive_start_shard_id: str | None = None,
        child_shards_of: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """One DescribeStream page: the ``StreamDescription`` object of the answer.

        ``child_shards_of`` asks only for the children of that shard (ShardFilter
        CHILD_SHARDS).
        """
        ...

    async def get_shard_iterator(
        self, stream_arn: str, shard_id: str, iterator_type: str, sequence: str | None = None
    ) -> str:
        """A shard iterator (TRIM_HORIZON, LATEST, AT/AFTER_SEQUENCE_NUMBER)."""
        ...

    async def get_records(self, iterator: str, limit: int | None = None) -> Page:
        """One GetRecords page, records in the Lambda event record shape."""
        ...


class _Final(Exception):
    """Carries a ``SourceError`` that must not be retried through ``RetryPolicy.call``."""

    def __init__(self, error: SourceError) -> None:
        super().__init__(str(error))
        self.error = error


async def retry_call(
    policy: RetryPolicy,
    fn: Callable[[], Awaitable[T]],
    *,
    final: tuple[type[SourceError], ...] = (StreamNotFound,),
    on_failure: Callable[[BaseException, int], None] | None = None,
    attempts: int | None = None,
) -> T:
    """Await ``fn()`` (a ``StreamsAPI`` call) with ``policy``, retrying every ``SourceError``
    but those in ``final``, which are raised at once.

    Args:
        policy: the waits between failures.
        fn: the call (a fresh awaitable each time).
        final: error types that are not retried (the caller handles them).
        on_failure: told each retried failure and its attempt number, before the wait.
        attempts: give up after this many calls, raising the last failure; None: never.
    """

    async def once() -> T:
        try:
            return await fn()
        except final as exc:
            raise _Final(exc) from exc

    try:
        return await policy.call(
            once, retry_on=(SourceError,), on_failure=on_failure, attempts=attempts
        )
    except _Final as stop:
        raise stop.error from None
