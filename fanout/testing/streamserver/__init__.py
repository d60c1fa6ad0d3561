"""An in-memory DynamoDB Streams server that speaks the real wire protocol, with faults on demand.

DynamoDB Local serves one shard per stream and never rolls shards over, throttles, expires
iterators or trims data. This server answers the same JSON 1.0 requests as the AWS endpoint
(``X-Amz-Target: DynamoDBStreams_20120810.<Op>`` for DescribeStream, GetShardIterator,
GetRecords and ListStreams, plus ``DynamoDB_20120810.DescribeTable`` on the same port), so
botocore, aiobotocore and the fanout worker talk to it unchanged, while tests script shards,
records and failures from Python::

    async with StreamServer() as server:
        stream = server.add_stream("Orders")
        shard = stream.shards[0]
        server.put(shard, [Change("INSERT", {"pk": {"S": "a"}}, {"pk": {"S": "a"}})])
        server.throttle("GetRecords", times=2)
        child = server.rollover(shard)
        ...  # point a client at server.endpoint_url

For synchronous clients use ``with StreamServer().run_in_thread() as server:``; for
benchmarks run it as a process::

    python -m fanout.testing.streamserver --port 0 --shards 4 --records-per-shard 100000 \
        --page-size 1000

which prints the endpoint URL on its first stdout line (and the stream ARN on the second)
once every record is built.

Records are serialized once, when they are put, into one byte buffer per shard; a GetRecords
page is a slice of that buffer, so serving a full 1,000-record page costs a memory copy.

Error ``__type`` values follow the namespaces of the service model: ExpiredIterator and
TrimmedDataAccess live in ``com.amazonaws.dynamodb.streams.v20120810``, the errors shared
with DynamoDB (LimitExceeded, ResourceNotFound, InternalServerError) in
``com.amazonaws.dynamodb.v20120810`` and validation errors in ``com.amazon.coral.validate``.
Clients use only the part after ``#``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import random
import signal
import sys
import threading
import time
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from aiohttp import web

__all__ = [
    "Call",
    "Change",
    "Fault",
    "Shard",
    "Stream",
    "StreamServer",
    "Table",
    "marshal",
    "marshal_item",
    "realistic_changes",
]

STREAMS_TARGET = "DynamoDBStreams_20120810."
DYNAMODB_TARGET = "DynamoDB_20120810."
JSON_CONTENT_TYPE = "application/x-amz-json-1.0"

VIEW_TYPES = ("KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES")
ITERATOR_TYPES = (
    "TRIM_HORIZON",
    "LATEST",
    "AT_SEQUENCE_NUMBER",
    "AFTER_SEQUENCE_NUMBER",
    "AT_TIMESTAMP",
)
EVENT_NAMES = ("INSERT", "MODIFY", "REMOVE")

MAX_RECORDS_PER_PAGE = 1000
MAX_PAGE_BYTES = 1024 * 1024
MAX_SHARDS_PER_PAGE = 100
MAX_STREAMS_PER_PAGE = 100
DEFAULT_ITERATOR_TTL = 15 * 60.0
DEFAULT_GONE_AFTER = 24 * 3600.0

# Sequence numbers are decimal strings of 21 to 40 digits (the SequenceNumber shape).
SEQUENCE_BASE = 10**20

_STREAMS_NS = "com.amazonaws.dynamodb.streams.v20120810#"
_DYNAMODB_NS = "com.amazonaws.dynamodb.v20120810#"
_CORAL_SERVICE_NS = "com.amazon.coral.service#"

# error code -> (wire __type, HTTP status)
ERROR_TYPES: dict[str, tuple[str, int]] = {
    "ExpiredIteratorException": (_STREAMS_NS + "ExpiredIteratorException", 400),
    "TrimmedDataAccessException": (_STREAMS_NS + "TrimmedDataAccessException", 400),
    "LimitExceededException": (_DYNAMODB_NS + "LimitExceededException", 400),
    "ResourceNotFoundException": (_DYNAMODB_NS + "ResourceNotFoundException", 400),
    "InternalServerError": (_DYNAMODB_NS + "InternalServerError", 500),
    "ProvisionedThroughputExceededException": (
        _DYNAMODB_NS + "ProvisionedThroughputExceededException",
        400,
    ),
    "RequestLimitExceeded": (_DYNAMODB_NS + "RequestLimitExceeded", 400),
    "ValidationException": ("com.amazon.coral.validate#ValidationException", 400),
    "ThrottlingException": ("com.amazon.coral.availability#ThrottlingException", 400),
    "ServiceUnavailable": (_DYNAMODB_NS + "ServiceUnavailable", 503),
    "MissingAuthenticationTokenException": (
        _CORAL_SERVICE_NS + "MissingAuthenticationTokenException",
        400,
    ),
    "IncompleteSignatureException": (_CORAL_SERVICE_NS + "IncompleteSignatureException", 400),
    "UnrecognizedClientException": (_CORAL_SERVICE_NS + "UnrecognizedClientException", 400),
    "UnknownOperationException": (_CORAL_SERVICE_NS + "UnknownOperationException", 400),
    "SerializationException": (_CORAL_SERVICE_NS + "SerializationException", 400),
}

_DEFAULT_MESSAGES: dict[str, str] = {
    "ExpiredIteratorException": "Iterator expired",
    "TrimmedDataAccessException": "The data you are trying to access has been trimmed",
    "LimitExceededException": "Rate exceeded for shard",
    "ResourceNotFoundException": "Requested resource not found",
    "InternalServerError": "Internal server error",
    "ProvisionedThroughputExceededException": "The level of configured provisioned "
    "throughput for the table was exceeded. Consider increasing your provisioning level "
    "with the UpdateTable API.",
    "ThrottlingException": "Rate of requests exceeds the allowed throughput.",
    "ServiceUnavailable": "The service is currently unavailable or busy.",
}

_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class ApiError(Exception):
    """An error answer: the code (the part of ``__type`` after ``#``), message and status."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        wire, default_status = ERROR_TYPES.get(code, (_DYNAMODB_NS + code, 400))
        self.wire_type = wire
        self.status = default_status if status is None else status


def _validation(message: str) -> ApiError:
    return ApiError("ValidationException", message)


def _limit_error(value: int, name: str, low: int, high: int) -> ApiError:
    bound = f"greater than or equal to {low}" if value < low else f"less than or equal to {high}"
    return _validation(
        f"1 validation error detected: Value '{value}' at '{name}' failed to satisfy "
        f"constraint: Member must have value {bound}"
    )


def _java_time(epoch: float) -> str:
    return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(epoch))


# -- records ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One item change, before it becomes a stream record.

    ``keys`` and the images are DynamoDB JSON (``{"pk": {"S": "a"}}``; see :func:`marshal_item`).
    Images the stream's view type does not carry are dropped when the change is put.
    ``ttl=True`` marks a REMOVE done by Time to Live (the record gets ``userIdentity``).
    """

    event_name: str
    keys: Mapping[str, Any]
    new_image: Mapping[str, Any] | None = None
    old_image: Mapping[str, Any] | None = None
    ttl: bool = False


ChangeLike = Change | tuple[Any, ...] | Mapping[str, Any]


def marshal(value: Any) -> dict[str, Any]:
    """A Python value as a DynamoDB AttributeValue (``"a"`` -> ``{"S": "a"}``)."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int | float):
        return {"N": str(value)}
    if isinstance(value, bytes | bytearray):
        return {"B": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, Mapping):
        return {"M": {str(k): marshal(v) for k, v in value.items()}}
    if isinstance(value, set | frozenset):
        items = sorted(value, key=repr)
        if all(isinstance(v, str) for v in items):
            return {"SS": items}
        if all(isinstance(v, bytes) for v in items):
            return {"BS": [base64.b64encode(v).decode() for v in items]}
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
            return {"NS": [str(v) for v in items]}
        raise TypeError("a set must hold only strings, only numbers or only bytes")
    if isinstance(value, list | tuple):
        return {"L": [marshal(v) for v in value]}
    raise TypeError(f"cannot marshal {type(value).__name__}")


def marshal_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict as a DynamoDB item image (attribute name -> AttributeValue)."""
    return {str(name): marshal(value) for name, value in item.items()}


_STATUSES = ("PENDING", "PAID", "PACKED", "SHIPPED", "DELIVERED", "CANCELLED")
_NAMES = ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov")
_CITIES = (("London", "N1 9GU"), ("Berlin", "10115"), ("Lisbon", "1100-148"), ("Oslo", "0150"))
_TIERS = ("bronze", "silver", "gold", "platinum")
_TAGS = ("gift", "priority", "web", "mobile", "b2b", "returning", "promo")


def _realistic_image(rng: random.Random, keys: Mapping[str, Any], version: int) -> dict[str, Any]:
    """An order item with ~12 attributes: numbers, nested maps, a list of maps, sets, binary."""
    city, postcode = _CITIES[rng.randrange(len(_CITIES))]
    image: dict[str, Any] = dict(keys)
    image.update(
        {
            "status": {"S": _STATUSES[rng.randrange(len(_STATUSES))]},
            "total": {"N": f"{rng.uniform(1, 2000):.2f}"},
            "customer": {
                "M": {
                    "id": {"S": f"CUST#{rng.randint(1, 99999):05d}"},
                    "name": {"S": _NAMES[rng.randrange(len(_NAMES))]},
                    "tier": {"S": _TIERS[rng.randrange(len(_TIERS))]},
                    "address": {"M": {"city": {"S": city}, "postcode": {"S": postcode}}},
                }
            },
            "lines": {
                "L": [
                    {
                        "M": {
                            "sku": {"S": f"SKU-{rng.randint(1, 9999):04d}"},
                            "qty": {"N": str(rng.randint(1, 5))},
                            "price": {"N": f"{rng.uniform(1, 300):.2f}"},
                        }
                    }
                    for _ in range(rng.randint(1, 2))
                ]
            },
            "tags": {"SS": sorted(rng.sample(_TAGS, rng.randint(1, 3)))},
            "ratings": {"NS": sorted({str(rng.randint(1, 5)) for _ in range(2)})},
            "gift": {"BOOL": rng.random() < 0.2},
            "note": {"NULL": True} if rng.random() < 0.5 else {"S": "leave at the door"},
            "checksum": {"B": base64.b64encode(rng.randbytes(6)).decode()},
            "version": {"N": str(version)},
        }
    )
    return image


def _realistic_change(rng: random.Random, keys: Mapping[str, Any], i: int) -> Change:
    kind = i % 10
    if kind < 2:
        return Change("INSERT", keys, _realistic_image(rng, keys, 1), None)
    old = _realistic_image(rng, keys, 1 + i % 7)
    if kind == 9:
        return Change("REMOVE", keys, None, old, ttl=rng.random() < 0.3)
    new = dict(old)
    new["status"] = {"S": _STATUSES[(i // 10) % len(_STATUSES)]}
    new["total"] = {"N": f"{rng.uniform(1, 2000):.2f}"}
    new["version"] = {"N": str(2 + i % 7)}
    return Change("MODIFY", keys, new, old)


def _order_keys(key_names: Sequence[str], n: int) -> dict[str, Any]:
    keys: dict[str, Any] = {key_names[0]: {"S": f"ORDER#{n:010d}"}}
    if len(key_names) > 1:
        keys[key_names[1]] = {"S": "META"}
    return keys


def realistic_changes(
    count: int, *, seed: int = 0, start: int = 0, key_names: Sequence[str] = ("pk", "sk")
) -> list[Change]:
    """Order-table changes (20% INSERT, 70% MODIFY, 10% REMOVE) with realistic images."""
    rng = random.Random(seed)
    return [
        _realistic_change(rng, _order_keys(key_names, n), n) for n in range(start, start + count)
    ]


def _number_size(text: str) -> int:
    digits = text.lstrip("-").replace(".", "").strip("0") or "0"
    return (len(digits) + 1) // 2 + 1


def _value_size(value: Mapping[str, Any]) -> int:
    """The approximate stored size of one AttributeValue (DynamoDB's item-size rules)."""
    ((tag, inner),) = value.items()
    if tag == "S":
        return len(str(inner).encode())
    if tag == "N":
        return _number_size(str(inner))
    if tag == "B":
        return len(inner) * 3 // 4
    if tag in ("BOOL", "NULL"):
        return 1
    if tag == "SS":
        return sum(len(str(v).encode()) for v in inner)
    if tag == "NS":
        return sum(_number_size(str(v)) for v in inner)
    if tag == "BS":
        return sum(len(v) * 3 // 4 for v in inner)
    if tag == "M":
        return 3 + sum(len(k.encode()) + 1 + _value_size(v) for k, v in inner.items())
    if tag == "L":
        return 3 + sum(1 + _value_size(v) for v in inner)
    return len(orjson.dumps(inner))


def _coerce_change(value: ChangeLike) -> Change | Mapping[str, Any]:
    if isinstance(value, Change):
        return value
    if isinstance(value, tuple):
        return Change(*value)
    if isinstance(value, Mapping):
        return value
    raise TypeError(f"not a change or a record: {value!r}")


# -- model -----------------------------------------------------------------------------------


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

    def index_of(self, sequence: int | str) -> int:
        """The position of the first record whose sequence number is >= ``sequence``."""
        return bisect_left(self._seqs, int(sequence))

    def _append(self, record: bytes, seq: int, when: float, size: int) -> None:
        self._data += record
        self._data += b","
        self._offsets.append(len(self._data))
        self._sizes.append(self._sizes[-1] + size)
        self._seqs.append(seq)
        self._times.append(when)

    def _slice(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        return bytes(self._data[self._offsets[start] : self._offsets[end] - 1])

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

    def shard(self, shard_id: str) -> Shard:
        return self._shards[shard_id]

    def _add(self, shard: Shard) -> None:
        self._shards[shard.shard_id] = shard
        pos = bisect_left(self._ids, shard.shard_id)
        self._ids.insert(pos, shard.shard_id)

    def _remove(self, shard: Shard) -> None:
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


# -- faults ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Call:
    """What a fault predicate sees about one request."""

    op: str
    body: dict[str, Any]
    stream_arn: str | None = None
    shard_id: str | None = None
    page: int | None = None  # DescribeStream: 0 for the first page, 1 for the next...


@dataclass(eq=False)
class Fault:
    """A scripted failure or delay; see :meth:`StreamServer.fail`.

    A fault matches a call by ``op``, ``shard``, ``page`` and ``where`` (None matches all).
    The first ``after`` matching calls pass untouched; then each matching call fires with
    ``probability`` (drawn from the server's seeded RNG) until it has fired ``times`` times
    (None: forever). A firing fault sleeps ``delay`` seconds, then answers with ``error``:
    an error code (``"LimitExceededException"``, ``"InternalServerError"``...), an HTTP
    status for a plain-text answer (``503``), ``"reset"`` to drop the connection without an
    answer, or None for a delay only. ``status``, ``message`` and ``body`` override parts of
    the answer.
    """

    op: str | None = None
    error: str | int | None = "InternalServerError"
    times: int | None = 1
    probability: float = 1.0
    after: int = 0
    shard: str | None = None
    page: int | None = None
    delay: float = 0.0
    message: str | None = None
    status: int | None = None
    body: bytes | None = None
    where: Callable[[Call], bool] | None = None
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def matches(self, call: Call) -> bool:
        if self.op is not None and self.op != call.op:
            return False
        if self.shard is not None and self.shard != call.shard_id:
            return False
        if self.page is not None and self.page != call.page:
            return False
        return self.where is None or self.where(call)


# -- iterators -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Iterator:
    stream_arn: str
    shard_id: str
    position: int
    issued_ms: int
    shard_generation: int
    generation: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- the server ------------------------------------------------------------------------------


class StreamServer:
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
        self.host = host
        self.port = port
        self.region = region
        self.account = account
        self.page_size = page_size
        self.max_page_bytes = max_page_bytes
        self.iterator_ttl = iterator_ttl
        self.retention = retention
        self.seq_step = seq_step
        self.require_auth = require_auth
        self.faults: list[Fault] = []
        # counters
        self.calls: Counter[str] = Counter()
        self.shard_calls: Counter[tuple[str, str]] = Counter()
        self.errors: Counter[tuple[str, str]] = Counter()
        self.records_served: Counter[str] = Counter()

        self._clock = clock or time.time
        self._offset = 0.0
        self._lock = threading.RLock()
        self._fault_rng = random.Random(seed)
        self._id_rng = random.Random(seed ^ 0x5EED)
        self._seq = SEQUENCE_BASE
        self._last_shard_ms = 0
        self._item_counter = 0
        self._iterator_nonce = 0
        self._generation = 0
        self._request_counter = 0
        self._tables: dict[str, Table] = {}
        self._streams: dict[str, Stream] = {}
        self._shards: dict[str, Shard] = {}
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop: asyncio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        if self._runner is None:
            raise RuntimeError("the server is not running")
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        """Listen (in the running loop) and return the endpoint URL."""
        if self._runner is not None:
            return self.endpoint_url
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])
        return self.endpoint_url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> StreamServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self, timeout: float = 10.0) -> str:
        """Serve from a background thread with its own event loop; return the endpoint URL."""
        if self._thread is not None:
            return self.endpoint_url
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            stop = asyncio.Event()
            try:
                await self.start()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller thread
                failure.append(exc)
                ready.set()
                return
            self._thread_loop = asyncio.get_running_loop()
            self._thread_stop = stop
            ready.set()
            try:
                await stop.wait()
            finally:
                await self.stop()

        thread = threading.Thread(
            target=lambda: asyncio.run(serve()), name="streamserver", daemon=True
        )
        thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("the stream server did not start in time")
        if failure:
            thread.join(timeout)
            raise failure[0]
        self._thread = thread
        return self.endpoint_url

    def stop_thread(self, timeout: float = 10.0) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stop = self._thread_loop, self._thread_stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        self._thread_loop = None
        self._thread_stop = None

    @contextlib.contextmanager
    def run_in_thread(self) -> Iterator[StreamServer]:
        """``with server.run_in_thread():`` serve from a background thread (sync clients)."""
        self.start_in_thread()
        try:
            yield self
        finally:
            self.stop_thread()

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
            label = self._label(now)
            while any(s.label == label for s in tab.streams):
                now += 0.001
                label = self._label(now)
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
            stream._add(shard)
            self._shards[shard_id] = shard
            return shard

    def close_shard(self, shard: Shard) -> None:
        """Close a shard: it gets an EndingSequenceNumber and takes no more records."""
        with self._lock:
            if shard.closed:
                return
            shard.ending_sequence = shard._seqs[-1] if shard._seqs else shard.starting_sequence

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
            shard.stream._remove(shard)
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
            items = [_coerce_change(records)]
        elif isinstance(records, tuple) and records and isinstance(records[0], str):
            items = [_coerce_change(records)]
        else:
            items = [_coerce_change(r) for r in cast("Iterable[ChangeLike]", records)]
        with self._lock:
            when = float(int(self.now() if at is None else at))
            result: list[str] = []
            for item in items:
                keys = item.keys if isinstance(item, Change) else item["dynamodb"]["Keys"]
                shard = self._writable_shard(target, keys)
                seq = self._next_seq()
                if isinstance(item, Change):
                    record = self._change_record(shard.stream, item, seq, when)
                else:
                    record = self._complete_record(shard.stream, item, seq, when)
                size = record["dynamodb"].get("SizeBytes")
                size = size if isinstance(size, int) else self._size_bytes(record["dynamodb"])
                shard._append(orjson.dumps(record), seq, when, size)
                result.append(str(seq))
            return result

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
            templates = self._templates(stream, rng, variants)
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
                shard._append(record, seq, when, size)
            return count

    def inject_empty_pages(self, shard: Shard, count: int = 1, *, at: int | None = None) -> None:
        """Make the next ``count`` GetRecords calls that reach record index ``at`` (default:
        the current end of the shard) answer no records with a NextShardIterator pointing at
        the same place; pages that would cross ``at`` stop there. Records put later follow."""
        with self._lock:
            position = len(shard) if at is None else at
            shard._empty_pages[position] = shard._empty_pages.get(position, 0) + count

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
            total = 0
            for shard in shards:
                limit = shard.trimmed
                if up_to_seq is not None:
                    limit = max(limit, bisect_right(shard._seqs, int(up_to_seq)))
                if older_than is not None:
                    limit = max(limit, bisect_left(shard._times, self.now() - older_than))
                total += limit - shard.trimmed
                shard.trimmed = limit
            return total

    # -- faults ------------------------------------------------------------------------------

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
            self.faults.append(fault)
        return fault

    def throttle(self, op: str | None = "GetRecords", **kwargs: Any) -> Fault:
        """LimitExceededException (HTTP 400) on matching calls; arguments as :meth:`fail`."""
        return self.fail(op, "LimitExceededException", **kwargs)

    def slow(self, op: str | None = None, delay: float = 1.0, **kwargs: Any) -> Fault:
        """Delay matching calls (forever unless ``times`` is given), then answer normally."""
        kwargs.setdefault("times", None)
        return self.fail(op, None, delay=delay, **kwargs)

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def expire_iterators(self, target: Stream | Shard | None = None) -> None:
        """Make every iterator issued so far (for ``target``, or everywhere) expired."""
        with self._lock:
            if target is None:
                self._generation += 1
            else:
                for shard in [target] if isinstance(target, Shard) else target.shards:
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

    # -- internals: model --------------------------------------------------------------------

    def _label(self, when: float) -> str:
        stamp = datetime.fromtimestamp(when, UTC)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}"

    def _next_seq(self) -> int:
        self._seq += self.seq_step
        return self._seq

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

    def _event_id(self) -> str:
        return f"{self._id_rng.getrandbits(128):032x}"

    def _change_record(
        self, stream: Stream, change: Change, seq: int, when: float
    ) -> dict[str, Any]:
        if change.event_name not in EVENT_NAMES:
            raise ValueError(f"event_name must be one of {EVENT_NAMES}")
        data: dict[str, Any] = {"ApproximateCreationDateTime": when, "Keys": dict(change.keys)}
        view = stream.view_type
        if change.new_image is not None and view in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"):
            data["NewImage"] = dict(change.new_image)
        if change.old_image is not None and view in ("OLD_IMAGE", "NEW_AND_OLD_IMAGES"):
            data["OldImage"] = dict(change.old_image)
        data["SequenceNumber"] = str(seq)
        data["SizeBytes"] = self._size_bytes(data)
        data["StreamViewType"] = view
        record: dict[str, Any] = {
            "eventID": self._event_id(),
            "eventName": change.event_name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": self.region,
            "dynamodb": data,
        }
        if change.ttl:
            # GetRecords spells the Identity members as the API model does; Lambda events
            # spell them "type" and "principalId".
            record["userIdentity"] = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
        return record

    def _complete_record(
        self, stream: Stream, given: Mapping[str, Any], seq: int, when: float
    ) -> dict[str, Any]:
        record = dict(given)
        data = dict(record["dynamodb"])
        record.setdefault("eventID", self._event_id())
        record.setdefault("eventName", "MODIFY")
        record.setdefault("eventVersion", "1.1")
        record.setdefault("eventSource", "aws:dynamodb")
        record.setdefault("awsRegion", self.region)
        data.setdefault("ApproximateCreationDateTime", when)
        data["SequenceNumber"] = str(seq)
        data.setdefault("SizeBytes", self._size_bytes(data))
        data.setdefault("StreamViewType", stream.view_type)
        record["dynamodb"] = data
        return record

    @staticmethod
    def _size_bytes(data: Mapping[str, Any]) -> int:
        """SizeBytes as DynamoDB sizes items: names plus values, not the JSON text."""
        total = 0
        for part in ("Keys", "NewImage", "OldImage"):
            image = data.get(part)
            if image:
                total += sum(len(name.encode()) + _value_size(v) for name, v in image.items())
        return max(total, 1)

    def _templates(
        self, stream: Stream, rng: random.Random, variants: int
    ) -> list[tuple[bytes, int]]:
        """Record templates with ``%(e)s`` event id, ``%(k)s`` key, ``%(s)s`` sequence number
        and ``%(t)s`` creation time slots, each with its SizeBytes."""
        key_names = stream.table.key_names
        templates: list[tuple[bytes, int]] = []
        for v in range(variants):
            keys: dict[str, Any] = {key_names[0]: {"S": "@@K@@"}}
            if len(key_names) > 1:
                keys[key_names[1]] = {"S": "META"}
            change = _realistic_change(rng, keys, v)
            record = self._change_record(stream, change, 0, 0.0)
            record["eventID"] = "@@E@@"
            record["dynamodb"]["SequenceNumber"] = "@@S@@"
            record["dynamodb"]["ApproximateCreationDateTime"] = "@@T@@"
            # the key slot holds 16 bytes ("ORDER#" + 10 digits) where "@@K@@" holds 5
            data = record["dynamodb"]
            slots = sum(1 for part in ("Keys", "NewImage", "OldImage") if part in data)
            data["SizeBytes"] += 11 * slots
            raw = orjson.dumps(record).replace(b"%", b"%%")
            raw = raw.replace(b'"@@T@@"', b"%(t)s").replace(b"@@E@@", b"%(e)s")
            raw = raw.replace(b"@@K@@", b"%(k)s").replace(b"@@S@@", b"%(s)s")
            templates.append((raw, int(data["SizeBytes"])))
        return templates

    def _live_stream(self, arn: str) -> Stream:
        stream = self._streams.get(arn)
        if stream is None or (stream.gone_at is not None and self.now() >= stream.gone_at):
            raise ApiError(
                "ResourceNotFoundException",
                f"Requested resource not found: Stream: {arn} not found",
            )
        return stream

    def _apply_retention(self, shard: Shard) -> None:
        if self.retention is not None:
            self.trim(shard, older_than=self.retention)

    def _iterator(self, shard: Shard, position: int) -> str:
        self._iterator_nonce += 1
        raw = (
            f"{shard.shard_id}|{position}|{int(self.now() * 1000)}|"
            f"{shard.iterator_generation}|{self._generation}|{self._iterator_nonce}"
        )
        return f"{shard.stream.arn}|1|{_b64(raw.encode())}"

    @staticmethod
    def _parse_iterator(text: str) -> _Iterator:
        try:
            arn, version, token = text.rsplit("|", 2)
            if version != "1" or not arn.startswith("arn:"):
                raise ValueError(version)
            fields = _unb64(token).decode().split("|")
            shard_id, position, issued, shard_gen, gen, _nonce = fields
            return _Iterator(arn, shard_id, int(position), int(issued), int(shard_gen), int(gen))
        except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
            raise _validation("Invalid ShardIterator") from exc

    # -- internals: HTTP ---------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        target = request.headers.get("X-Amz-Target", "")
        op = target.rpartition(".")[2] or "Unknown"
        raw = await request.read()
        try:
            if request.method != "POST":
                raise ApiError("UnknownOperationException", "", status=404)
            self._check_auth(request)
            handler = self._operation(target)
            body = self._parse_body(raw)
            with self._lock:
                call = self._call(op, body)
                fault, delay = self._pick_fault(call)
            if delay > 0:
                await asyncio.sleep(delay)
            if fault is not None and fault.error is not None:
                return self._fault_response(request, op, fault, call)
            with self._lock:
                payload = handler(body)
            headers = {"Content-Type": JSON_CONTENT_TYPE, "x-amzn-RequestId": self._request_id()}
            if target.startswith(DYNAMODB_TARGET):
                headers["x-amz-crc32"] = str(zlib.crc32(payload))
            return web.Response(body=payload, status=200, headers=headers)
        except ApiError as err:
            with self._lock:
                self.errors[(op, err.code)] += 1
            return self._error_response(err)

    def _check_auth(self, request: web.Request) -> None:
        if not self.require_auth:
            return
        auth = request.headers.get("Authorization")
        if not auth:
            raise ApiError(
                "MissingAuthenticationTokenException", "Request is missing Authentication Token"
            )
        if not auth.startswith("AWS4-HMAC-SHA256 ") or not all(
            part in auth for part in ("Credential=", "SignedHeaders=", "Signature=")
        ):
            raise ApiError(
                "IncompleteSignatureException",
                "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
                f"parameters. Authorization={auth[:40]}",
            )

    def _operation(self, target: str) -> Callable[[dict[str, Any]], bytes]:
        prefix, _, op = target.rpartition(".")
        handlers: dict[str, Callable[[dict[str, Any]], bytes]]
        if prefix + "." == STREAMS_TARGET:
            handlers = {
                "DescribeStream": self._describe_stream,
                "GetShardIterator": self._get_shard_iterator,
                "GetRecords": self._get_records,
                "ListStreams": self._list_streams,
            }
        elif prefix + "." == DYNAMODB_TARGET:
            handlers = {"DescribeTable": self._describe_table}
        else:
            handlers = {}
        handler = handlers.get(op)
        if handler is None:
            raise ApiError("UnknownOperationException", "")
        return handler

    @staticmethod
    def _parse_body(raw: bytes) -> dict[str, Any]:
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError as exc:
            raise ApiError(
                "SerializationException", "Start of structure or map found where not expected."
            ) from exc
        if not isinstance(body, dict):
            raise ApiError("SerializationException", "Expected a JSON object")
        return body

    def _call(self, op: str, body: dict[str, Any]) -> Call:
        """Count the call and find the stream, shard and page it is about."""
        call = Call(op, body)
        self.calls[op] += 1
        if op == "GetRecords":
            try:
                it = self._parse_iterator(str(body.get("ShardIterator", "")))
                call.stream_arn, call.shard_id = it.stream_arn, it.shard_id
            except ApiError:
                pass
        elif op in ("GetShardIterator", "DescribeStream"):
            call.stream_arn = body.get("StreamArn")
            if op == "GetShardIterator":
                call.shard_id = body.get("ShardId")
            else:
                call.page = self._page_of(body)
        if call.shard_id is not None:
            self.shard_calls[(op, call.shard_id)] += 1
        return call

    def _page_of(self, body: dict[str, Any]) -> int:
        start = body.get("ExclusiveStartShardId")
        if not start:
            return 0
        limit = body.get("Limit", MAX_SHARDS_PER_PAGE)
        limit = limit if isinstance(limit, int) and 1 <= limit <= MAX_SHARDS_PER_PAGE else 100
        stream = self._streams.get(str(body.get("StreamArn")))
        if stream is None:
            return 0
        return bisect_right(stream._ids, str(start)) // limit

    def _pick_fault(self, call: Call) -> tuple[Fault | None, float]:
        delay = 0.0
        for fault in self.faults:
            if fault.exhausted or not fault.matches(call):
                continue
            fault.seen += 1
            if fault.seen <= fault.after:
                continue
            if fault.probability < 1.0 and self._fault_rng.random() >= fault.probability:
                continue
            fault.fired += 1
            delay += fault.delay
            if fault.error is not None:
                return fault, delay
        return None, delay

    def _fault_response(
        self, request: web.Request, op: str, fault: Fault, call: Call
    ) -> web.StreamResponse:
        error = fault.error
        if error == "reset":
            with self._lock:
                self.errors[(op, "reset")] += 1
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if isinstance(error, int):
            with self._lock:
                self.errors[(op, str(error))] += 1
            status = fault.status or error
            text = fault.body
            if text is None:
                text = (fault.message or f"{status} {_REASONS.get(status, 'Error')}").encode()
            return web.Response(body=text, status=status, headers={"Content-Type": "text/plain"})
        assert error is not None
        message = fault.message or self._fault_message(error, call)
        err = ApiError(error, message, status=fault.status)
        with self._lock:
            self.errors[(op, err.code)] += 1
        if fault.body is not None:
            return web.Response(
                body=fault.body,
                status=err.status,
                headers={"Content-Type": JSON_CONTENT_TYPE, "x-amzn-RequestId": self._request_id()},
            )
        return self._error_response(err)

    def _fault_message(self, code: str, call: Call) -> str:
        if code == "LimitExceededException" and call.shard_id is not None:
            return (
                f"Rate exceeded for shard {call.shard_id} in stream {call.stream_arn} "
                f"under account {self.account}."
            )
        if code == "ExpiredIteratorException":
            return self._expired_message(self.now() - self.iterator_ttl - 1)
        return _DEFAULT_MESSAGES.get(code, code)

    def _expired_message(self, issued: float) -> str:
        return (
            f"Iterator expired. The iterator was created at time {_java_time(issued)} while "
            f"right now it is {_java_time(self.now())} which is further in the future than the "
            f"tolerated delay of {int(self.iterator_ttl * 1000)} milliseconds."
        )

    def _error_response(self, err: ApiError) -> web.Response:
        payload = orjson.dumps({"__type": err.wire_type, "message": err.message})
        headers = {"Content-Type": JSON_CONTENT_TYPE, "x-amzn-RequestId": self._request_id()}
        return web.Response(body=payload, status=err.status, headers=headers)

    def _request_id(self) -> str:
        with self._lock:
            self._request_counter += 1
            n = self._request_counter
        return f"{n:010d}{zlib.crc32(n.to_bytes(8, 'big')):08X}".ljust(52, "A")

    # -- internals: operations ---------------------------------------------------------------

    @staticmethod
    def _int_param(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
        value = body.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ApiError(
                "SerializationException", f"NUMBER_VALUE cannot be converted to Integer: {name}"
            )
        if not low <= value <= high:
            raise _limit_error(value, name[0].lower() + name[1:], low, high)
        return value

    @staticmethod
    def _str_param(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
        value = body.get(name)
        if value is None:
            if required:
                attr = name[0].lower() + name[1:]
                raise _validation(
                    f"1 validation error detected: Value null at '{attr}' failed to satisfy "
                    "constraint: Member must not be null"
                )
            return None
        if not isinstance(value, str):
            raise ApiError("SerializationException", f"STRING_VALUE expected: {name}")
        return value

    def _stream_arn_param(self, body: dict[str, Any], name: str = "StreamArn") -> str | None:
        arn = self._str_param(body, name, required=name == "StreamArn")
        if arn is None:
            return None
        if not 37 <= len(arn) <= 1024 or not arn.startswith("arn:") or "/stream/" not in arn:
            raise _validation(f"Invalid StreamArn: {arn}")
        return arn

    def _describe_stream(self, body: dict[str, Any]) -> bytes:
        arn = self._stream_arn_param(body)
        assert arn is not None
        limit = self._int_param(body, "Limit", 1, MAX_SHARDS_PER_PAGE) or MAX_SHARDS_PER_PAGE
        start = self._str_param(body, "ExclusiveStartShardId")
        stream = self._live_stream(arn)
        ids = stream._ids
        shard_filter = body.get("ShardFilter")
        if shard_filter is not None:
            if not isinstance(shard_filter, dict) or shard_filter.get("Type") != "CHILD_SHARDS":
                raise _validation("ShardFilter Type must be CHILD_SHARDS")
            parent = shard_filter.get("ShardId")
            if not isinstance(parent, str) or not parent:
                raise _validation("ShardFilter of type CHILD_SHARDS requires a ShardId")
            ids = [i for i in ids if stream._shards[i].parent_id == parent]
        first = bisect_right(ids, start) if start else 0
        page = ids[first : first + limit]
        desc: dict[str, Any] = {
            "StreamArn": stream.arn,
            "StreamLabel": stream.label,
            "StreamStatus": stream.status,
            "StreamViewType": stream.view_type,
            "CreationRequestDateTime": stream.created,
            "TableName": stream.table.name,
            "KeySchema": stream.table.key_schema(),
            "Shards": [stream._shards[i].wire() for i in page],
        }
        if first + limit < len(ids):
            desc["LastEvaluatedShardId"] = page[-1]
        return orjson.dumps({"StreamDescription": desc})

    def _get_shard_iterator(self, body: dict[str, Any]) -> bytes:
        arn = self._stream_arn_param(body)
        assert arn is not None
        shard_id = self._str_param(body, "ShardId", required=True)
        kind = self._str_param(body, "ShardIteratorType", required=True)
        seq_text = self._str_param(body, "SequenceNumber")
        if kind not in ITERATOR_TYPES:
            raise _validation(
                f"1 validation error detected: Value '{kind}' at 'shardIteratorType' failed to "
                f"satisfy constraint: Member must satisfy enum value set: {list(ITERATOR_TYPES)}"
            )
        wants_seq = kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER")
        if wants_seq and seq_text is None:
            raise _validation(f"SequenceNumber is required for ShardIteratorType {kind}")
        if not wants_seq and seq_text is not None:
            raise _validation(f"SequenceNumber must not be set for ShardIteratorType {kind}")
        if seq_text is not None and not (seq_text.isdecimal() and 21 <= len(seq_text) <= 40):
            raise _validation(f"Invalid SequenceNumber: {seq_text}")
        stream = self._live_stream(arn)
        shard = stream._shards.get(str(shard_id))
        if shard is None:
            raise ApiError(
                "ResourceNotFoundException",
                f"Requested resource not found: Shard does not exist: {shard_id}",
            )
        self._apply_retention(shard)
        if kind == "TRIM_HORIZON":
            position = shard.trimmed
        elif kind == "LATEST":
            position = len(shard)
        elif kind == "AT_TIMESTAMP":
            stamp = body.get("Timestamp")
            if isinstance(stamp, bool) or not isinstance(stamp, int | float):
                raise _validation("Timestamp is required for ShardIteratorType AT_TIMESTAMP")
            if stamp > self.now():
                raise _validation("Timestamp must not be in the future")
            position = max(shard.trimmed, bisect_left(shard._times, float(stamp)))
        else:
            assert seq_text is not None
            seq = int(seq_text)
            closed_past_end = shard.ending_sequence is not None and seq > shard.ending_sequence
            if seq < shard.starting_sequence or closed_past_end:
                raise _validation(
                    f"Invalid SequenceNumber {seq_text} for shard {shard.shard_id}: out of range"
                )
            finder = bisect_left if kind == "AT_SEQUENCE_NUMBER" else bisect_right
            position = finder(shard._seqs, seq)
            if position < shard.trimmed:
                raise ApiError(
                    "TrimmedDataAccessException",
                    f"The data you are trying to access has been trimmed: {seq_text} is before "
                    f"the trim horizon of {shard.shard_id}",
                )
        return orjson.dumps({"ShardIterator": self._iterator(shard, position)})

    def _get_records(self, body: dict[str, Any]) -> bytes:
        text = self._str_param(body, "ShardIterator", required=True)
        assert text is not None
        if not 1 <= len(text) <= 2048:
            raise _validation("Invalid ShardIterator")
        limit = self._int_param(body, "Limit", 1, MAX_RECORDS_PER_PAGE) or MAX_RECORDS_PER_PAGE
        it = self._parse_iterator(text)
        stream = self._live_stream(it.stream_arn)
        shard = stream._shards.get(it.shard_id)
        if shard is None:
            raise ApiError(
                "ResourceNotFoundException",
                f"Requested resource not found: Shard does not exist: {it.shard_id}",
            )
        issued = it.issued_ms / 1000
        if (
            self.now() - issued > self.iterator_ttl
            or it.generation < self._generation
            or it.shard_generation < shard.iterator_generation
        ):
            raise ApiError("ExpiredIteratorException", self._expired_message(issued))
        self._apply_retention(shard)
        position = it.position
        if position < shard.trimmed:
            raise ApiError(
                "TrimmedDataAccessException",
                "The data you are trying to access has been trimmed",
            )
        position = min(position, len(shard))
        pending = shard._empty_pages.get(position, 0)
        if pending:
            if pending == 1:
                del shard._empty_pages[position]
            else:
                shard._empty_pages[position] = pending - 1
            end = position
        else:
            end = shard._page_end(position, min(limit, self.page_size), self.max_page_bytes)
        served = end - position
        if served:
            self.records_served[shard.shard_id] += served
        records = shard._slice(position, end)
        drained = shard.closed and end >= len(shard) and not shard._empty_pages.get(end)
        if drained:
            return b'{"Records":[' + records + b"]}"
        next_iterator = self._iterator(shard, end).encode()
        return b'{"Records":[' + records + b'],"NextShardIterator":"' + next_iterator + b'"}'

    def _list_streams(self, body: dict[str, Any]) -> bytes:
        limit = self._int_param(body, "Limit", 1, MAX_STREAMS_PER_PAGE) or MAX_STREAMS_PER_PAGE
        table_name = self._str_param(body, "TableName")
        start = self._stream_arn_param(body, "ExclusiveStartStreamArn")
        now = self.now()
        streams = [s for s in self._streams.values() if s.gone_at is None or now < s.gone_at]
        if table_name is not None:
            if table_name not in self._tables:
                raise ApiError(
                    "ResourceNotFoundException",
                    f"Requested resource not found: Table: {table_name} not found",
                )
            streams = [s for s in streams if s.table.name == table_name]
        first = 0
        if start is not None:
            arns = [s.arn for s in streams]
            if start not in arns:
                raise ApiError(
                    "ResourceNotFoundException",
                    f"Requested resource not found: Stream: {start} not found",
                )
            first = arns.index(start) + 1
        page = streams[first : first + limit]
        answer: dict[str, Any] = {
            "Streams": [
                {"StreamArn": s.arn, "TableName": s.table.name, "StreamLabel": s.label}
                for s in page
            ]
        }
        if first + limit < len(streams):
            answer["LastEvaluatedStreamArn"] = page[-1].arn
        return orjson.dumps(answer)

    def _describe_table(self, body: dict[str, Any]) -> bytes:
        name = self._str_param(body, "TableName", required=True)
        table = self._tables.get(str(name))
        if table is None:
            raise ApiError(
                "ResourceNotFoundException",
                f"Requested resource not found: Table: {name} not found",
            )
        desc: dict[str, Any] = {
            "AttributeDefinitions": [
                {"AttributeName": key, "AttributeType": "S"} for key in table.key_names
            ],
            "TableName": table.name,
            "KeySchema": table.key_schema(),
            "TableStatus": "ACTIVE",
            "CreationDateTime": table.created,
            "ProvisionedThroughput": {
                "NumberOfDecreasesToday": 0,
                "ReadCapacityUnits": 0,
                "WriteCapacityUnits": 0,
            },
            "TableSizeBytes": 0,
            "ItemCount": 0,
            "TableArn": table.arn,
            "TableId": f"{zlib.crc32(table.arn.encode()):08x}-0000-4000-8000-000000000000",
            "BillingModeSummary": {
                "BillingMode": "PAY_PER_REQUEST",
                "LastUpdateToPayPerRequestDateTime": table.created,
            },
            "DeletionProtectionEnabled": False,
        }
        latest = table.latest_stream
        if latest is not None:
            if table.stream_enabled:
                desc["StreamSpecification"] = {
                    "StreamEnabled": True,
                    "StreamViewType": latest.view_type,
                }
            desc["LatestStreamLabel"] = latest.label
            desc["LatestStreamArn"] = latest.arn
        return orjson.dumps({"Table": desc})


# -- standalone process ----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fanout.testing.streamserver",
        description="Serve an in-memory DynamoDB stream over the real wire protocol. "
        "Prints the endpoint URL, then the stream ARN, once every record is built.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--table", default="Orders")
    parser.add_argument("--view-type", default="NEW_AND_OLD_IMAGES", choices=VIEW_TYPES)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--records-per-shard", type=int, default=0)
    parser.add_argument("--page-size", type=int, default=MAX_RECORDS_PER_PAGE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--closed", action="store_true", help="close the shards once filled (readers finish)"
    )
    parser.add_argument("--iterator-ttl", type=float, default=DEFAULT_ITERATOR_TTL)
    parser.add_argument(
        "--throttle-probability",
        type=float,
        default=0.0,
        help="answer this share of GetRecords calls with LimitExceededException",
    )
    parser.add_argument(
        "--error-probability",
        type=float,
        default=0.0,
        help="answer this share of all calls with InternalServerError",
    )
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added to every call")
    parser.add_argument(
        "--no-auth", action="store_true", help="accept requests without an Authorization header"
    )
    return parser


async def _serve(args: argparse.Namespace) -> None:
    server = StreamServer(
        host=args.host,
        port=args.port,
        page_size=args.page_size,
        iterator_ttl=args.iterator_ttl,
        seed=args.seed,
        require_auth=not args.no_auth,
    )
    built = time.perf_counter()
    stream = server.add_stream(args.table, args.view_type, shards=args.shards)
    for i, shard in enumerate(stream.shards):
        server.fill(shard, args.records_per_shard, seed=args.seed * 1000 + i)
        if args.closed:
            server.close_shard(shard)
    if args.throttle_probability > 0:
        server.throttle("GetRecords", times=None, probability=args.throttle_probability)
    if args.error_probability > 0:
        server.fail(None, "InternalServerError", times=None, probability=args.error_probability)
    if args.delay > 0:
        server.slow(None, args.delay)
    total = sum(len(s) for s in stream.shards)
    size = sum(s.byte_size for s in stream.shards)
    url = await server.start()
    print(url, flush=True)
    print(stream.arn, flush=True)
    print(
        f"streamserver: {total} records ({size / 1e6:.1f} MB) in {len(stream.shards)} shards "
        f"built in {time.perf_counter() - built:.2f}s; serving {url}",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
