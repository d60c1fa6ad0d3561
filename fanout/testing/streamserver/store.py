"""The server's data: tables, streams and shards, the records put into them, time and ids."""

from __future__ import annotations

import random
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import orjson

from fanout.testing.streamserver.model import SEQUENCE_BASE, VIEW_TYPES, Shard, Stream, Table
from fanout.testing.streamserver.records import (
    Change,
    ChangeLike,
    change_record,
    coerce_change,
    complete_record,
    record_templates,
    size_bytes,
)

DEFAULT_GONE_AFTER = 24 * 3600.0


class StreamStore:
    """Every table, stream and shard of a server, and the methods that script them.

    Sequence numbers grow by ``seq_step`` across the whole store; ``seed`` drives event ids
    and shard-id suffixes; ``clock`` replaces ``time.time``. Every method takes the store's
    lock, so one thread may script the store while another serves it.
    """

    def __init__(
        self,
        *,
        region: str,
        account: str,
        seq_step: int,
        seed: int,
        clock: Callable[[], float] | None,
    ) -> None:
        self.region = region
        self.account = account
        self.seq_step = seq_step
        self._clock = clock or time.time
        self._offset = 0.0
        self._lock = threading.RLock()
        self._id_rng = random.Random(seed ^ 0x5EED)
        self._seq = SEQUENCE_BASE
        self._last_shard_ms = 0
        self._item_counter = 0
        self._tables: dict[str, Table] = {}
        self._streams: dict[str, Stream] = {}
        self._shards: dict[str, Shard] = {}

    # -- time --------------------------------------------------------------------------------

    def now(self) -> float:
        """The server's time: the clock plus every :meth:`advance`."""
        return self._clock() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the server's time forward (iterator ages, retention, stream removal)."""
        with self._lock:
            self._offset += seconds

    # -- tables and streams ------------------------------------------------------------------

    def add_table(self, name: str, *, keys: Sequence[str] = ("pk", "sk")) -> Table:
        """A table without a stream (DescribeTable shows no LatestStreamArn)."""
        with self._lock:
            if name in self._tables:
                raise ValueError(f"table {name!r} exists")
            arn = f"arn:aws:dynamodb:{self.region}:{self.account}:table/{name}"
            table = Table(name, arn, keys, self.now())
            self._tables[name] = table
            return table

    def add_stream(
        self,
        table: str | Table = "Orders",
        view_type: str = "NEW_AND_OLD_IMAGES",
        *,
        shards: int = 1,
        keys: Sequence[str] = ("pk", "sk"),
    ) -> Stream:
        """Enable a stream on ``table`` (created if missing) with ``shards`` open shards.

        A table whose stream was disabled gets a new stream under a new ARN and label;
        DescribeTable then returns it as LatestStreamArn.
        """
        if view_type not in VIEW_TYPES:
            raise ValueError(f"view_type must be one of {VIEW_TYPES}")
        with self._lock:
            name = table.name if isinstance(table, Table) else table
            tab = self._tables.get(name) or self.add_table(name, keys=keys)
            if tab.stream_enabled:
                raise ValueError(f"table {name!r} already has an enabled stream")
            now = self.now()
            label = _label(now)
            while any(s.label == label for s in tab.streams):
                now += 0.001
                label = _label(now)
            stream = Stream(tab, f"{tab.arn}/stream/{label}", label, view_type, now)
            tab.streams.append(stream)
            tab.stream_enabled = True
            self._streams[stream.arn] = stream
            for _ in range(shards):
                self.add_shard(stream)
            return stream

    enable_stream = add_stream

    def disable_stream(
        self, target: str | Table | Stream, *, gone_after: float | None = DEFAULT_GONE_AFTER
    ) -> Stream:
        """Disable a table's stream: status DISABLED, every open shard closed.

        The stream stays readable for ``gone_after`` seconds of server time (None: forever),
        then answers ResourceNotFoundException. DescribeTable keeps LatestStreamArn but drops
        StreamSpecification, as DynamoDB does.
        """
        with self._lock:
            stream = self._resolve_stream(target)
            stream.status = "DISABLED"
            for shard in stream.open_shards:
                self.close_shard(shard)
            if stream.table.latest_stream is stream:
                stream.table.stream_enabled = False
            stream.gone_at = None if gone_after is None else self.now() + gone_after
            return stream

    def delete_stream(self, target: str | Table | Stream) -> None:
        """Make a stream gone at once (ResourceNotFoundException from now on)."""
        with self._lock:
            stream = self._resolve_stream(target)
            if stream.status != "DISABLED":
                self.disable_stream(stream, gone_after=0.0)
            stream.gone_at = self.now()

    def table(self, name: str) -> Table:
        return self._tables[name]

    def stream(self, arn_or_table: str) -> Stream:
        """A stream by ARN, or a table's latest stream by table name."""
        return self._resolve_stream(arn_or_table)

    def shard(self, shard_id: str) -> Shard:
        return self._shards[shard_id]

    # -- shards ------------------------------------------------------------------------------

    def add_shard(self, stream: Stream, *, parent: Shard | None = None) -> Shard:
        """Open a new shard (a child of ``parent`` if given)."""
        with self._lock:
            if stream.status == "DISABLED":
                raise ValueError("the stream is disabled")
            ms = max(int(self.now() * 1000), self._last_shard_ms + 1)
            self._last_shard_ms = ms
            shard_id = f"shardId-{ms:020d}-{self._id_rng.getrandbits(32):08x}"
            shard = Shard(
                stream, shard_id, parent.shard_id if parent is not None else None, self._next_seq()
            )
            stream.add(shard)
            self._shards[shard_id] = shard
            return shard

    def close_shard(self, shard: Shard) -> None:
        """Close a shard: it gets an EndingSequenceNumber and takes no more records."""
        with self._lock:
            shard.close()

    def rollover(self, shard: Shard) -> Shard:
        """Close ``shard`` and open one child (what DynamoDB does every few hours)."""
        with self._lock:
            self.close_shard(shard)
            return self.add_shard(shard.stream, parent=shard)

    def split(self, shard: Shard) -> tuple[Shard, Shard]:
        """Close ``shard`` and open two children."""
        with self._lock:
            self.close_shard(shard)
            return (
                self.add_shard(shard.stream, parent=shard),
                self.add_shard(shard.stream, parent=shard),
            )

    def remove_shard(self, shard: Shard) -> None:
        """Drop a shard from the stream (as when a closed shard ages out): ResourceNotFound."""
        with self._lock:
            shard.stream.remove(shard)
            self._shards.pop(shard.shard_id, None)

    # -- records -----------------------------------------------------------------------------

    def put(
        self,
        target: Stream | Shard,
        records: ChangeLike | Iterable[ChangeLike],
        *,
        at: float | None = None,
    ) -> list[str]:
        """Append records; return their sequence numbers.

        Each record is a :class:`Change`, an ``(event_name, keys, new_image, old_image)``
        tuple, or a record dict in the wire shape whose missing fields (eventID, SizeBytes...)
        are filled in; SequenceNumber is always assigned here. A stream target spreads records
        over its open shards by a hash of the keys. ``at`` sets ApproximateCreationDateTime
        (default: now).
        """
        items: list[Change | Mapping[str, Any]]
        if isinstance(records, Change | Mapping):
            items = [coerce_change(records)]
        elif isinstance(records, tuple) and records and isinstance(records[0], str):
            items = [coerce_change(records)]
        else:
            items = [coerce_change(r) for r in cast("Iterable[ChangeLike]", records)]
        with self._lock:
            when = float(int(self.now() if at is None else at))
            result: list[str] = []
            for item in items:
                keys = item.keys if isinstance(item, Change) else item["dynamodb"]["Keys"]
                shard = self._writable_shard(target, keys)
                seq = self._next_seq()
                view_type = shard.stream.view_type
                if isinstance(item, Change):
                    record = change_record(
                        item,
                        view_type=view_type,
                        sequence=seq,
                        when=when,
                        region=self.region,
                        event_id=self._event_id,
                    )
                else:
                    record = complete_record(
                        item,
                        view_type=view_type,
                        sequence=seq,
                        when=when,
                        region=self.region,
                        event_id=self._event_id(),
                    )
                size = record["dynamodb"].get("SizeBytes")
                size = size if isinstance(size, int) else size_bytes(record["dynamodb"])
                shard.append(orjson.dumps(record), seq, when, size)
                result.append(str(seq))
            return result

    def put_raw(self, shard: Shard, raw: bytes, *, at: float | None = None, size: int = 100) -> str:
        """Append ``raw`` (JSON text, served as it is) as the shard's next record: ``b"null"``,
        ``b'"text"'``, ``b"[1, 2]"``, an object without ``dynamodb``, for malformed-record
        tests. It takes a sequence number (iterators move past it) but carries none unless
        ``raw`` does. ``size`` counts against the page's byte cap. Returns the sequence number.
        """
        orjson.loads(raw)  # JSON, or the page would not be
        with self._lock:
            if shard.closed or shard.removed:
                raise ValueError(f"{shard.shard_id} is closed")
            seq = self._next_seq()
            when = float(int(self.now() if at is None else at))
            shard.append(bytes(raw), seq, when, size)
            return str(seq)

    def insert(self, target: Stream | Shard, keys: Mapping[str, Any], new_image: Any) -> str:
        return self.put(target, Change("INSERT", keys, new_image, None))[0]

    def modify(
        self, target: Stream | Shard, keys: Mapping[str, Any], new_image: Any, old_image: Any
    ) -> str:
        return self.put(target, Change("MODIFY", keys, new_image, old_image))[0]

    def remove(self, target: Stream | Shard, keys: Mapping[str, Any], old_image: Any) -> str:
        return self.put(target, Change("REMOVE", keys, None, old_image))[0]

    def fill(
        self,
        target: Stream | Shard,
        count: int,
        *,
        seed: int | None = None,
        variants: int = 64,
        span: float = 0.0,
    ) -> int:
        """Append ``count`` realistic records fast (a few microseconds each).

        Records are built from ``variants`` pre-serialized templates (INSERT/MODIFY/REMOVE
        order items with ~12 attributes) with unique keys, event ids and sequence numbers.
        A stream target deals them round-robin to its open shards. Creation times spread
        evenly over the last ``span`` seconds. Returns ``count``.
        """
        with self._lock:
            if isinstance(target, Shard):
                shards = [target]
                stream = target.stream
            else:
                shards = target.open_shards
                stream = target
            if not shards:
                raise ValueError("no open shard to write to")
            for shard in shards:
                if shard.closed or shard.removed:
                    raise ValueError(f"{shard.shard_id} is closed")
            rng = random.Random(self._id_rng.getrandbits(64) if seed is None else seed)
            templates = record_templates(
                view_type=stream.view_type,
                key_names=stream.table.key_names,
                region=self.region,
                rng=rng,
                variants=variants,
                event_id=self._event_id,
            )
            now = self.now()
            key_prefix = b"ORDER#"
            getrandbits = rng.getrandbits
            for i in range(count):
                shard = shards[i % len(shards)]
                when = float(int(now - span + span * (i + 1) / count)) if span else float(int(now))
                seq = self._next_seq()
                self._item_counter += 1
                tpl, size = templates[i % len(templates)]
                record = tpl % {
                    b"e": b"%032x" % getrandbits(128),
                    b"k": key_prefix + b"%010d" % self._item_counter,
                    b"s": b"%d" % seq,
                    b"t": b"%d.0" % when,
                }
                shard.append(record, seq, when, size)
            return count

    # -- internals ---------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += self.seq_step
        return self._seq

    def _event_id(self) -> str:
        return f"{self._id_rng.getrandbits(128):032x}"

    def _resolve_stream(self, target: str | Table | Stream) -> Stream:
        if isinstance(target, Stream):
            return target
        if isinstance(target, Table):
            latest = target.latest_stream
            if latest is None:
                raise KeyError(f"table {target.name!r} has no stream")
            return latest
        if target in self._streams:
            return self._streams[target]
        return self._resolve_stream(self._tables[target])

    def _writable_shard(self, target: Stream | Shard, keys: Mapping[str, Any]) -> Shard:
        if isinstance(target, Shard):
            if target.closed or target.removed:
                raise ValueError(f"{target.shard_id} is closed")
            return target
        shards = target.open_shards
        if not shards:
            raise ValueError(f"{target.arn} has no open shard")
        digest = zlib.crc32(orjson.dumps(keys, option=orjson.OPT_SORT_KEYS))
        return shards[digest % len(shards)]


def _label(when: float) -> str:
    """A StreamLabel: the stream's creation time, to the millisecond."""
    stamp = datetime.fromtimestamp(when, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}"
