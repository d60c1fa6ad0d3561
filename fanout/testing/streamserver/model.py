"""Tables, their streams and the streams' shards, whose records are kept as serialized bytes.

A shard holds its records in one byte buffer, serialized once when they are put, so a
GetRecords page is one slice of it. Positions are record indexes: position ``i`` is the
record with the ``i``-th sequence number of the shard, ``len(shard)`` is the end.
"""

from __future__ import annotations

import contextlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Any

import orjson

VIEW_TYPES = ("KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES")

# Sequence numbers are decimal strings of 21 to 40 digits (the SequenceNumber shape).
SEQUENCE_BASE = 10**20


class Shard:
    """One shard: its records, serialized once, in a single byte buffer.

    Record ``i`` occupies ``_data[_offsets[i]:_offsets[i + 1] - 1]`` (each record is followed
    by a comma), so a page of records is one slice. ``trimmed`` records at the front are gone.
    """

    def __init__(self, stream: Stream, shard_id: str, parent_id: str | None, start: int) -> None:
        self.stream = stream
        self.shard_id = shard_id
        self.parent_id = parent_id
        self.starting_sequence = start
        self.ending_sequence: int | None = None
        self.removed = False
        self.trimmed = 0
        self.iterator_generation = 0
        self._data = bytearray()
        self._offsets = array("q", [0])
        self._sizes = array("q", [0])  # running total of SizeBytes
        self._seqs: list[int] = []
        self._times = array("d")
        self._empty_pages: dict[int, int] = {}

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Shard {self.shard_id} {state} records={len(self)} trimmed={self.trimmed}>"

    def __len__(self) -> int:
        return len(self._seqs)

    @property
    def closed(self) -> bool:
        return self.ending_sequence is not None

    @property
    def sequence_numbers(self) -> list[str]:
        """The sequence numbers of the records still readable (not trimmed)."""
        return [str(s) for s in self._seqs[self.trimmed :]]

    @property
    def byte_size(self) -> int:
        return len(self._data)

    def records(self, *, include_trimmed: bool = False) -> list[dict[str, Any]]:
        """The stored records, decoded (for assertions)."""
        start = 0 if include_trimmed else self.trimmed
        if start >= len(self):
            return []
        raw = bytes(self._data[self._offsets[start] : self._offsets[len(self)] - 1])
        result: list[dict[str, Any]] = orjson.loads(b"[" + raw + b"]")
        return result

    # -- positions ---------------------------------------------------------------------------

    def index_of(self, sequence: int | str) -> int:
        """The position of the first record whose sequence number is >= ``sequence``."""
        return bisect_left(self._seqs, int(sequence))

    def index_after(self, sequence: int | str) -> int:
        """The position of the first record whose sequence number is > ``sequence``."""
        return bisect_right(self._seqs, int(sequence))

    def index_at_time(self, when: float) -> int:
        """The position of the first record created at ``when`` or later."""
        return bisect_left(self._times, when)

    # -- writing -----------------------------------------------------------------------------

    def append(self, record: bytes, sequence: int, when: float, size: int) -> None:
        """Store one serialized record with its sequence number, creation time and SizeBytes.

        The caller keeps sequence numbers increasing and does not write to a closed shard.
        """
        self._data += record
        self._data += b","
        self._offsets.append(len(self._data))
        self._sizes.append(self._sizes[-1] + size)
        self._seqs.append(sequence)
        self._times.append(when)

    def close(self) -> None:
        """Set the EndingSequenceNumber (the last record's, or the start of an empty shard)."""
        if self.ending_sequence is None:
            self.ending_sequence = self._seqs[-1] if self._seqs else self.starting_sequence

    def add_empty_pages(self, count: int, at: int | None = None) -> None:
        """Make the next ``count`` reads that reach position ``at`` (default: the end) empty."""
        position = len(self) if at is None else at
        self._empty_pages[position] = self._empty_pages.get(position, 0) + count

    def trim(
        self, *, up_to_sequence: int | None = None, created_before: float | None = None
    ) -> int:
        """Trim records with sequence number <= ``up_to_sequence`` and/or created before
        ``created_before``; return how many records this trimmed."""
        limit = self.trimmed
        if up_to_sequence is not None:
            limit = max(limit, bisect_right(self._seqs, up_to_sequence))
        if created_before is not None:
            limit = max(limit, bisect_left(self._times, created_before))
        count = limit - self.trimmed
        self.trimmed = limit
        return count

    # -- reading -----------------------------------------------------------------------------

    def next_page(self, position: int, limit: int, max_bytes: int) -> tuple[int, bool]:
        """Where a page read from ``position`` ends, and whether the shard is then drained
        (closed, nothing after the page); see :meth:`page_json` for the page itself.

        A page holds at most ``limit`` records and ``max_bytes`` of SizeBytes (at least one
        record), and stops at a position scheduled to answer an empty page; reaching such a
        position uses up one of its empty pages.
        """
        position = min(position, len(self))
        pending = self._empty_pages.get(position, 0)
        if pending:
            if pending == 1:
                del self._empty_pages[position]
            else:
                self._empty_pages[position] = pending - 1
            end = position
        else:
            end = self._page_end(position, limit, max_bytes)
        drained = self.closed and end >= len(self) and not self._empty_pages.get(end)
        return end, drained

    def page_json(self, start: int, end: int, head: bytes, tail: bytes) -> bytes:
        """``head``, the records ``start..end`` as JSON separated by commas, then ``tail``.

        The page is copied once, straight from the shard's buffer into the answer.
        """
        if end <= start:
            return head + tail
        with memoryview(self._data) as data:
            return b"".join((head, data[self._offsets[start] : self._offsets[end] - 1], tail))

    def _page_end(self, start: int, limit: int, max_bytes: int) -> int:
        end = min(len(self), start + limit)
        for barrier in self._empty_pages:
            if start < barrier < end:
                end = barrier
        if end > start + 1:
            # The size cap counts SizeBytes, as DynamoDB counts item sizes, not JSON text;
            # whole records only, at least one.
            cap = bisect_right(self._sizes, self._sizes[start] + max_bytes) - 1
            end = max(start + 1, min(end, cap))
        return end

    def wire(self) -> dict[str, Any]:
        """The shard as DescribeStream lists it."""
        seq_range: dict[str, str] = {"StartingSequenceNumber": str(self.starting_sequence)}
        if self.ending_sequence is not None:
            seq_range["EndingSequenceNumber"] = str(self.ending_sequence)
        shard: dict[str, Any] = {"ShardId": self.shard_id, "SequenceNumberRange": seq_range}
        if self.parent_id is not None:
            shard["ParentShardId"] = self.parent_id
        return shard


class Stream:
    """One table stream: an ARN, a status and its shards (listed in shard-id order)."""

    def __init__(self, table: Table, arn: str, label: str, view_type: str, created: float) -> None:
        self.table = table
        self.arn = arn
        self.label = label
        self.view_type = view_type
        self.created = created
        self.status = "ENABLED"
        self.gone_at: float | None = None
        self._shards: dict[str, Shard] = {}
        self._ids: list[str] = []

    def __repr__(self) -> str:
        return f"<Stream {self.arn} {self.status} shards={len(self._ids)}>"

    @property
    def shards(self) -> list[Shard]:
        """Every listed shard, open and closed, in the order DescribeStream returns them."""
        return [self._shards[i] for i in self._ids]

    @property
    def open_shards(self) -> list[Shard]:
        return [s for s in self.shards if not s.closed]

    @property
    def shard_ids(self) -> Sequence[str]:
        """The ids of every listed shard, sorted (the order of DescribeStream)."""
        return self._ids

    def shard(self, shard_id: str) -> Shard:
        return self._shards[shard_id]

    def find(self, shard_id: str) -> Shard | None:
        """The listed shard ``shard_id``, or None."""
        return self._shards.get(shard_id)

    def gone(self, now: float) -> bool:
        """Whether the stream no longer exists at ``now`` (ResourceNotFoundException)."""
        return self.gone_at is not None and now >= self.gone_at

    def add(self, shard: Shard) -> None:
        """List ``shard`` in shard-id order."""
        self._shards[shard.shard_id] = shard
        pos = bisect_left(self._ids, shard.shard_id)
        self._ids.insert(pos, shard.shard_id)

    def remove(self, shard: Shard) -> None:
        """Stop listing ``shard`` and mark it removed."""
        shard.removed = True
        self._shards.pop(shard.shard_id, None)
        with contextlib.suppress(ValueError):
            self._ids.remove(shard.shard_id)


class Table:
    """A table as DescribeTable shows it, with its streams (latest last)."""

    def __init__(self, name: str, arn: str, key_names: Sequence[str], created: float) -> None:
        if not 1 <= len(key_names) <= 2:
            raise ValueError("a table has a hash key and at most one range key")
        self.name = name
        self.arn = arn
        self.key_names = tuple(key_names)
        self.created = created
        self.streams: list[Stream] = []
        self.stream_enabled = False

    def __repr__(self) -> str:
        return f"<Table {self.name} streams={len(self.streams)}>"

    @property
    def latest_stream(self) -> Stream | None:
        return self.streams[-1] if self.streams else None

    def key_schema(self) -> list[dict[str, str]]:
        kinds = ("HASH", "RANGE")
        return [
            {"AttributeName": name, "KeyType": kinds[i]} for i, name in enumerate(self.key_names)
        ]
