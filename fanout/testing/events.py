"""Stream records and Lambda events for unit tests, shaped as the worker delivers them.

Build the records a handler receives from plain Python values; the AttributeValues are typed
as DynamoDB types them (``"a"`` -> ``{"S": "a"}``, ``3`` -> ``{"N": "3"}``), images follow the
stream's view type, ``SizeBytes`` is computed as DynamoDB computes it, and a TTL deletion
carries the service ``userIdentity``::

    from fanout.testing import events

    orders = events.StreamTable("Orders", keys=["pk"])
    event = events.event(
        orders.insert({"pk": "order-1", "status": "NEW"}),
        orders.modify({"pk": "order-1", "status": "NEW"}, {"pk": "order-1", "status": "PAID"}),
        orders.remove({"pk": "order-1", "status": "PAID"}, ttl=True),
    )
    result = handler(event, events.context())

A ``StreamTable`` numbers its records with increasing sequence numbers and stamps them with
its stream's ARN (``eventSourceARN``), as Lambda does. Records built for a table of DynamoDB
Local (``LocalTable.events``) equal the ones the worker delivers from it for the same changes,
apart from ``eventID``, ``SequenceNumber`` and ``ApproximateCreationDateTime``.
"""

from __future__ import annotations

import base64
import decimal
import itertools
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fanout.records import Record, deserialize_image
from fanout.testing.streamserver.records import size_bytes

__all__ = [
    "StreamTable",
    "attribute",
    "context",
    "event",
    "image",
    "insert",
    "modify",
    "plain",
    "remove",
]

VIEW_TYPES = ("NEW_AND_OLD_IMAGES", "NEW_IMAGE", "OLD_IMAGE", "KEYS_ONLY")
TTL_IDENTITY = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
"""``userIdentity`` of a record deleted by Time to Live, as Lambda events (and the worker)
spell it."""


def attribute(value: Any) -> dict[str, Any]:
    """A plain Python value as a typed DynamoDB AttributeValue.

    str -> S, int/float/Decimal -> N, bool -> BOOL, None -> NULL, bytes -> B (base64),
    dict -> M, list/tuple -> L, a set of str/numbers/bytes -> SS/NS/BS.
    """
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int | float | decimal.Decimal):
        return {"N": _number(value)}
    if isinstance(value, bytes | bytearray):
        return {"B": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, Mapping):
        return {"M": {str(k): attribute(v) for k, v in value.items()}}
    if isinstance(value, set | frozenset):
        items = sorted(value, key=repr)
        if all(isinstance(v, str) for v in items):
            return {"SS": items}
        if all(isinstance(v, bytes) for v in items):
            return {"BS": [base64.b64encode(v).decode() for v in items]}
        if all(isinstance(v, int | float | decimal.Decimal) for v in items):
            return {"NS": [_number(v) for v in items]}
        raise TypeError("a set holds only strings, only numbers or only bytes")
    if isinstance(value, list | tuple):
        return {"L": [attribute(v) for v in value]}
    raise TypeError(f"no DynamoDB type for {type(value).__name__}")


def _number(value: int | float | decimal.Decimal) -> str:
    if isinstance(value, bool):
        raise TypeError("a bool is not a number")
    if isinstance(value, float):
        value = decimal.Decimal(repr(value))
    return str(value) if isinstance(value, int) else format(value.normalize(), "f")


def image(item: Mapping[str, Any]) -> dict[str, Any]:
    """A plain item as a DynamoDB image (attribute name -> AttributeValue)."""
    return {str(name): attribute(value) for name, value in item.items()}


def plain(typed: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB image as plain values (N -> int or Decimal, B -> bytes, sets -> set)."""
    return deserialize_image(dict(typed))


class StreamTable:
    """A table's stream, to build its records.

    Args:
        name: the table's name (it appears in ``eventSourceARN``).
        keys: its key attribute names (hash key first).
        view: the stream's view type: which images records carry.
        region: ``awsRegion`` and the ARN's region.
        account: the ARN's account.
        stream_arn: the stream's ARN (default: built from the name, region and account).
        first_sequence: the first record's sequence number.
    """

    def __init__(
        self,
        name: str = "Table",
        *,
        keys: Sequence[str] = ("pk",),
        view: str = "NEW_AND_OLD_IMAGES",
        region: str = "us-east-1",
        account: str = "123456789012",
        stream_arn: str | None = None,
        first_sequence: int = 1,
    ) -> None:
        if view not in VIEW_TYPES:
            raise ValueError(f"view must be one of {', '.join(VIEW_TYPES)}")
        if not keys:
            raise ValueError("a table has at least a hash key")
        self.name = name
        self.keys = tuple(keys)
        self.view = view
        self.region = region
        self.stream_arn = stream_arn or (
            f"arn:aws:dynamodb:{region}:{account}:table/{name}/stream/2024-01-01T00:00:00.000"
        )
        self._sequence = itertools.count(first_sequence)

    def insert(self, item: Mapping[str, Any], *, when: float | None = None) -> Record:
        """The record of ``item`` being created."""
        return self._record("INSERT", item, None, item, when)

    def modify(
        self, old: Mapping[str, Any], new: Mapping[str, Any], *, when: float | None = None
    ) -> Record:
        """The record of an item changing from ``old`` to ``new`` (same key)."""
        if self._key(old) != self._key(new):
            raise ValueError("old and new images of a MODIFY have the same key")
        return self._record("MODIFY", new, old, new, when)

    def remove(
        self, old: Mapping[str, Any], *, ttl: bool = False, when: float | None = None
    ) -> Record:
        """The record of ``old`` being deleted; ``ttl`` marks a deletion by Time to Live."""
        record = self._record("REMOVE", old, old, None, when)
        if ttl:
            record["userIdentity"] = dict(TTL_IDENTITY)
        return record

    def event(self, *records: Record) -> dict[str, Any]:
        """``{"Records": [...]}`` of ``records``."""
        return event(*records)

    def _key(self, item: Mapping[str, Any]) -> dict[str, Any]:
        missing = [k for k in self.keys if k not in item]
        if missing:
            raise ValueError(f"the item has no key attribute {', '.join(missing)}")
        return {k: attribute(item[k]) for k in self.keys}

    def _record(
        self,
        name: str,
        item: Mapping[str, Any],
        old: Mapping[str, Any] | None,
        new: Mapping[str, Any] | None,
        when: float | None,
    ) -> Record:
        data: dict[str, Any] = {
            "ApproximateCreationDateTime": float(int(time.time() if when is None else when)),
            "Keys": self._key(item),
        }
        if new is not None and self.view in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"):
            data["NewImage"] = image(new)
        if old is not None and self.view in ("OLD_IMAGE", "NEW_AND_OLD_IMAGES"):
            data["OldImage"] = image(old)
        data["SequenceNumber"] = f"{next(self._sequence):021d}"
        data["SizeBytes"] = size_bytes(data)
        data["StreamViewType"] = self.view
        return {
            "eventID": uuid.uuid4().hex,
            "eventName": name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": self.region,
            "dynamodb": data,
            "eventSourceARN": self.stream_arn,
        }


_DEFAULT = StreamTable()


def insert(item: Mapping[str, Any], *, table: StreamTable | None = None) -> Record:
    """An INSERT record of ``item`` (on ``table``; default: ``Table`` with key ``pk``)."""
    return (table or _DEFAULT).insert(item)


def modify(
    old: Mapping[str, Any], new: Mapping[str, Any], *, table: StreamTable | None = None
) -> Record:
    """A MODIFY record from ``old`` to ``new``."""
    return (table or _DEFAULT).modify(old, new)


def remove(
    old: Mapping[str, Any], *, ttl: bool = False, table: StreamTable | None = None
) -> Record:
    """A REMOVE record of ``old``; ``ttl`` for a deletion by Time to Live."""
    return (table or _DEFAULT).remove(old, ttl=ttl)


def event(*records: Record | Iterable[Record]) -> dict[str, Any]:
    """The Lambda event ``{"Records": [...]}`` of ``records`` (records or lists of them)."""
    flat: list[Record] = []
    for item in records:
        if isinstance(item, Mapping):
            flat.append(dict(item))
        else:
            flat.extend(item)
    return {"Records": flat}


def context(
    function_name: str = "handler",
    *,
    timeout: float = 30.0,
    memory_limit_in_mb: int = 128,
    region: str = "us-east-1",
) -> Any:
    """A Lambda context object like the one the ``handler`` sink passes."""
    from sinks.lambdaenv import LambdaContext

    made = LambdaContext(function_name, memory_limit_in_mb, region)
    made.start(timeout)
    return made
