"""The operations: DescribeStream, GetShardIterator, GetRecords, ListStreams, DescribeTable.

Each takes the parsed request body and returns the answer's JSON, or raises
:class:`~fanout.testing.streamserver.errors.ApiError`; parameters are validated as the
service validates them. The caller holds the server's lock.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from fanout.testing.streamserver.errors import (
    ApiError,
    expired_message,
    limit_error,
    not_found,
    validation,
)

if TYPE_CHECKING:
    from fanout.testing.streamserver.model import Shard, Stream, Table
    from fanout.testing.streamserver.state import ServerState

STREAMS_TARGET = "DynamoDBStreams_20120810."
DYNAMODB_TARGET = "DynamoDB_20120810."

MAX_RECORDS_PER_PAGE = 1000
MAX_PAGE_BYTES = 1024 * 1024
MAX_SHARDS_PER_PAGE = 100
MAX_STREAMS_PER_PAGE = 100

ITERATOR_TYPES = (
    "TRIM_HORIZON",
    "LATEST",
    "AT_SEQUENCE_NUMBER",
    "AFTER_SEQUENCE_NUMBER",
    "AT_TIMESTAMP",
)

Operation = Callable[[dict[str, Any]], bytes]


@dataclass(frozen=True, slots=True)
class ShardIterator:
    """What a ShardIterator string carries: a position in a shard and when it was issued."""

    stream_arn: str
    shard_id: str
    position: int
    issued_ms: int
    shard_generation: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_iterator(text: str) -> ShardIterator:
    """Decode a ShardIterator issued by :meth:`Operations.iterator`."""
    try:
        arn, version, token = text.rsplit("|", 2)
        if version != "1" or not arn.startswith("arn:"):
            raise ValueError(version)
        shard_id, position, issued, shard_gen, _nonce = _unb64(token).decode().split("|")
        return ShardIterator(arn, shard_id, int(position), int(issued), int(shard_gen))
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise validation("Invalid ShardIterator") from exc


def _int_param(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(
            "SerializationException", f"NUMBER_VALUE cannot be converted to Integer: {name}"
        )
    if not low <= value <= high:
        raise limit_error(value, name[0].lower() + name[1:], low, high)
    return value


def _str_param(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            attr = name[0].lower() + name[1:]
            raise validation(
                f"1 validation error detected: Value null at '{attr}' failed to satisfy "
                "constraint: Member must not be null"
            )
        return None
    if not isinstance(value, str):
        raise ApiError("SerializationException", f"STRING_VALUE expected: {name}")
    return value


def _required_str(body: dict[str, Any], name: str) -> str:
    value = _str_param(body, name, required=True)
    assert value is not None
    return value


def _stream_arn_param(body: dict[str, Any], name: str = "StreamArn") -> str | None:
    arn = _str_param(body, name, required=name == "StreamArn")
    if arn is None:
        return None
    if not 37 <= len(arn) <= 1024 or not arn.startswith("arn:") or "/stream/" not in arn:
        raise validation(f"Invalid StreamArn: {arn}")
    return arn


class Operations:
    """The operations over a server's tables and streams (the same dicts the server fills)."""

    def __init__(
        self, server: ServerState, tables: Mapping[str, Table], streams: Mapping[str, Stream]
    ) -> None:
        self._server = server
        self._tables = tables
        self._streams = streams
        self._iterator_nonce = 0

    def handlers(self) -> dict[str, dict[str, Operation]]:
        """Operation name -> handler, by X-Amz-Target prefix (up to and with the dot)."""
        return {
            STREAMS_TARGET: {
                "DescribeStream": self.describe_stream,
                "GetShardIterator": self.get_shard_iterator,
                "GetRecords": self.get_records,
                "ListStreams": self.list_streams,
            },
            DYNAMODB_TARGET: {"DescribeTable": self.describe_table},
        }

    # -- helpers -----------------------------------------------------------------------------

    def iterator(self, shard: Shard, position: int) -> str:
        """A new ShardIterator for ``position`` in ``shard``, issued now."""
        self._iterator_nonce += 1
        raw = (
            f"{shard.shard_id}|{position}|{int(self._server.now() * 1000)}|"
            f"{shard.iterator_generation}|{self._iterator_nonce}"
        )
        return f"{shard.stream.arn}|1|{_b64(raw.encode())}"

    def expired_message(self, issued: float) -> str:
        """ExpiredIteratorException's message for an iterator issued at ``issued``."""
        server = self._server
        return expired_message(issued, server.now(), server.iterator_ttl)

    def describe_stream_page(self, body: dict[str, Any]) -> int:
        """Which page of shards a DescribeStream call asks for (0: the first), leniently."""
        start = body.get("ExclusiveStartShardId")
        if not start:
            return 0
        limit = body.get("Limit", MAX_SHARDS_PER_PAGE)
        limit = limit if isinstance(limit, int) and 1 <= limit <= MAX_SHARDS_PER_PAGE else 100
        stream = self._streams.get(str(body.get("StreamArn")))
        if stream is None:
            return 0
        return bisect_right(stream.shard_ids, str(start)) // limit

    def _live_stream(self, arn: str) -> Stream:
        stream = self._streams.get(arn)
        if stream is None or stream.gone(self._server.now()):
            raise not_found(f"Stream: {arn} not found")
        return stream

    def _listed_shard(self, stream: Stream, shard_id: str) -> Shard:
        shard = stream.find(shard_id)
        if shard is None:
            raise not_found(f"Shard does not exist: {shard_id}")
        return shard

    def _apply_retention(self, shard: Shard) -> None:
        server = self._server
        if server.retention is not None:
            server.trim(shard, older_than=server.retention)

    # -- operations --------------------------------------------------------------------------

    def describe_stream(self, body: dict[str, Any]) -> bytes:
        arn = _stream_arn_param(body)
        assert arn is not None
        limit = _int_param(body, "Limit", 1, MAX_SHARDS_PER_PAGE) or MAX_SHARDS_PER_PAGE
        start = _str_param(body, "ExclusiveStartShardId")
        stream = self._live_stream(arn)
        ids = stream.shard_ids
        shard_filter = body.get("ShardFilter")
        if shard_filter is not None:
            if not isinstance(shard_filter, dict) or shard_filter.get("Type") != "CHILD_SHARDS":
                raise validation("ShardFilter Type must be CHILD_SHARDS")
            parent = shard_filter.get("ShardId")
            if not isinstance(parent, str) or not parent:
                raise validation("ShardFilter of type CHILD_SHARDS requires a ShardId")
            ids = [i for i in ids if stream.shard(i).parent_id == parent]
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
            "Shards": [stream.shard(i).wire() for i in page],
        }
        if first + limit < len(ids):
            desc["LastEvaluatedShardId"] = page[-1]
        return orjson.dumps({"StreamDescription": desc})

    def get_shard_iterator(self, body: dict[str, Any]) -> bytes:
        arn = _stream_arn_param(body)
        assert arn is not None
        shard_id = _required_str(body, "ShardId")
        kind = _required_str(body, "ShardIteratorType")
        seq_text = _str_param(body, "SequenceNumber")
        if kind not in ITERATOR_TYPES:
            raise validation(
                f"1 validation error detected: Value '{kind}' at 'shardIteratorType' failed to "
                f"satisfy constraint: Member must satisfy enum value set: {list(ITERATOR_TYPES)}"
            )
        wants_seq = kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER")
        if wants_seq and seq_text is None:
            raise validation(f"SequenceNumber is required for ShardIteratorType {kind}")
        if not wants_seq and seq_text is not None:
            raise validation(f"SequenceNumber must not be set for ShardIteratorType {kind}")
        if seq_text is not None and not (seq_text.isdecimal() and 21 <= len(seq_text) <= 40):
            raise validation(f"Invalid SequenceNumber: {seq_text}")
        shard = self._listed_shard(self._live_stream(arn), shard_id)
        self._apply_retention(shard)
        if kind == "TRIM_HORIZON":
            position = shard.trimmed
        elif kind == "LATEST":
            position = len(shard)
        elif kind == "AT_TIMESTAMP":
            stamp = body.get("Timestamp")
            if isinstance(stamp, bool) or not isinstance(stamp, int | float):
                raise validation("Timestamp is required for ShardIteratorType AT_TIMESTAMP")
            if stamp > self._server.now():
                raise validation("Timestamp must not be in the future")
            position = max(shard.trimmed, shard.index_at_time(float(stamp)))
        else:
            assert seq_text is not None
            seq = int(seq_text)
            closed_past_end = shard.ending_sequence is not None and seq > shard.ending_sequence
            if seq < shard.starting_sequence or closed_past_end:
                raise validation(
                    f"Invalid SequenceNumber {seq_text} for shard {shard.shard_id}: out of range"
                )
            if kind == "AT_SEQUENCE_NUMBER":
                position = shard.index_of(seq)
            else:
                position = shard.index_after(seq)
            if position < shard.trimmed:
                raise ApiError(
                    "TrimmedDataAccessException",
                    f"The data you are trying to access has been trimmed: {seq_text} is before "
                    f"the trim horizon of {shard.shard_id}",
                )
        return orjson.dumps({"ShardIterator": self.iterator(shard, position)})

    def get_records(self, body: dict[str, Any]) -> bytes:
        text = _required_str(body, "ShardIterator")
        if not 1 <= len(text) <= 2048:
            raise validation("Invalid ShardIterator")
        limit = _int_param(body, "Limit", 1, MAX_RECORDS_PER_PAGE) or MAX_RECORDS_PER_PAGE
        it = parse_iterator(text)
        server = self._server
        shard = self._listed_shard(self._live_stream(it.stream_arn), it.shard_id)
        issued = it.issued_ms / 1000
        if (
            server.now() - issued > server.iterator_ttl
            or it.shard_generation < shard.iterator_generation
        ):
            raise ApiError("ExpiredIteratorException", self.expired_message(issued))
        self._apply_retention(shard)
        if it.position < shard.trimmed:
            raise ApiError(
                "TrimmedDataAccessException",
                "The data you are trying to access has been trimmed",
            )
        position = min(it.position, len(shard))
        end, drained = shard.next_page(
            position, min(limit, server.page_size), server.max_page_bytes
        )
        if end > position:
            server.records_served[shard.shard_id] += end - position
        if drained:
            tail = b"]}"
        else:
            tail = b'],"NextShardIterator":"' + self.iterator(shard, end).encode() + b'"}'
        return shard.page_json(position, end, b'{"Records":[', tail)

    def list_streams(self, body: dict[str, Any]) -> bytes:
        limit = _int_param(body, "Limit", 1, MAX_STREAMS_PER_PAGE) or MAX_STREAMS_PER_PAGE
        table_name = _str_param(body, "TableName")
        start = _stream_arn_param(body, "ExclusiveStartStreamArn")
        now = self._server.now()
        streams = [s for s in self._streams.values() if not s.gone(now)]
        if table_name is not None:
            if table_name not in self._tables:
                raise not_found(f"Table: {table_name} not found")
            streams = [s for s in streams if s.table.name == table_name]
        first = 0
        if start is not None:
            arns = [s.arn for s in streams]
            if start not in arns:
                raise not_found(f"Stream: {start} not found")
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

    def describe_table(self, body: dict[str, Any]) -> bytes:
        name = _required_str(body, "TableName")
        table = self._tables.get(name)
        if table is None:
            raise not_found(f"Table: {name} not found")
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
