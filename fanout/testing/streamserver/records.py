"""Stream records: item changes, DynamoDB JSON marshalling, realistic changes, wire records.

A :class:`Change` becomes a record in the shape GetRecords returns (the Lambda event record
without ``eventSourceARN``); ``SizeBytes`` is computed as DynamoDB sizes items, from
attribute names and values rather than from the JSON text.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

EVENT_NAMES = ("INSERT", "MODIFY", "REMOVE")


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


def coerce_change(value: ChangeLike) -> Change | Mapping[str, Any]:
    """A :class:`Change` from a change or a tuple of its fields; a record dict as it is."""
    if isinstance(value, Change):
        return value
    if isinstance(value, tuple):
        return Change(*value)
    if isinstance(value, Mapping):
        return value
    raise TypeError(f"not a change or a record: {value!r}")


# -- marshalling -----------------------------------------------------------------------------


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


# -- realistic changes -----------------------------------------------------------------------

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


def realistic_change(rng: random.Random, keys: Mapping[str, Any], i: int) -> Change:
    """The ``i``-th change of an order: INSERT for 2 in 10, REMOVE for 1 in 10, else MODIFY."""
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
        realistic_change(rng, _order_keys(key_names, n), n) for n in range(start, start + count)
    ]


# -- item sizes ------------------------------------------------------------------------------


def _number_size(text: str) -> int:
    """Bytes a number takes: its digits in base-100 pairs aligned on the decimal point,
    without leading or trailing zero pairs, plus one, plus one more when negative (zero is
    one byte). This is what DynamoDB Local reports; AWS documents it as "1 byte per two
    significant digits, plus 1"."""
    negative = text.startswith("-")
    whole, _, fraction = text.lstrip("+-").lower().partition("e")[0].partition(".")
    whole = whole.lstrip("0")
    fraction = fraction.rstrip("0")
    if not whole and not fraction:
        return 1
    digits = whole.zfill(len(whole) + len(whole) % 2) + fraction.ljust(
        len(fraction) + len(fraction) % 2, "0"
    )
    pairs = [digits[i : i + 2] for i in range(0, len(digits), 2)]
    while pairs and pairs[0] == "00":
        pairs.pop(0)
    while pairs and pairs[-1] == "00":
        pairs.pop()
    return len(pairs) + 1 + negative


def _binary_size(text: str) -> int:
    return len(base64.b64decode(text))


def _value_size(value: Mapping[str, Any]) -> int:
    """The approximate stored size of one AttributeValue (DynamoDB's item-size rules)."""
    ((tag, inner),) = value.items()
    if tag == "S":
        return len(str(inner).encode())
    if tag == "N":
        return _number_size(str(inner))
    if tag == "B":
        return _binary_size(inner)
    if tag in ("BOOL", "NULL"):
        return 1
    if tag == "SS":
        return sum(len(str(v).encode()) for v in inner)
    if tag == "NS":
        return sum(_number_size(str(v)) for v in inner)
    if tag == "BS":
        return sum(_binary_size(v) for v in inner)
    if tag == "M":
        return 3 + sum(len(k.encode()) + 1 + _value_size(v) for k, v in inner.items())
    if tag == "L":
        return 3 + sum(1 + _value_size(v) for v in inner)
    return len(orjson.dumps(inner))


def size_bytes(data: Mapping[str, Any]) -> int:
    """SizeBytes as DynamoDB sizes items: names plus values, not the JSON text."""
    total = 0
    for part in ("Keys", "NewImage", "OldImage"):
        image = data.get(part)
        if image:
            total += sum(len(name.encode()) + _value_size(v) for name, v in image.items())
    return max(total, 1)


# -- wire records ----------------------------------------------------------------------------


def change_record(
    change: Change,
    *,
    view_type: str,
    sequence: int,
    when: float,
    region: str,
    event_id: Callable[[], str],
) -> dict[str, Any]:
    """The record GetRecords returns for ``change`` on a stream of ``view_type``.

    ``event_id`` is called once, for the eventID, after the change is validated.
    """
    if change.event_name not in EVENT_NAMES:
        raise ValueError(f"event_name must be one of {EVENT_NAMES}")
    data: dict[str, Any] = {"ApproximateCreationDateTime": when, "Keys": dict(change.keys)}
    if change.new_image is not None and view_type in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"):
        data["NewImage"] = dict(change.new_image)
    if change.old_image is not None and view_type in ("OLD_IMAGE", "NEW_AND_OLD_IMAGES"):
        data["OldImage"] = dict(change.old_image)
    data["SequenceNumber"] = str(sequence)
    data["SizeBytes"] = size_bytes(data)
    data["StreamViewType"] = view_type
    record: dict[str, Any] = {
        "eventID": event_id(),
        "eventName": change.event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": data,
    }
    if change.ttl:
        # GetRecords spells the Identity members as the API model does; Lambda events
        # spell them "type" and "principalId".
        record["userIdentity"] = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
    return record


def complete_record(
    given: Mapping[str, Any],
    *,
    view_type: str,
    sequence: int,
    when: float,
    region: str,
    event_id: str,
) -> dict[str, Any]:
    """A record dict in the wire shape with its missing fields filled in.

    SequenceNumber is always ``sequence``; ``event_id`` is used only if eventID is missing.
    """
    record = dict(given)
    data = dict(record["dynamodb"])
    record.setdefault("eventID", event_id)
    record.setdefault("eventName", "MODIFY")
    record.setdefault("eventVersion", "1.1")
    record.setdefault("eventSource", "aws:dynamodb")
    record.setdefault("awsRegion", region)
    data.setdefault("ApproximateCreationDateTime", when)
    data["SequenceNumber"] = str(sequence)
    data.setdefault("SizeBytes", size_bytes(data))
    data.setdefault("StreamViewType", view_type)
    record["dynamodb"] = data
    return record


def record_templates(
    *,
    view_type: str,
    key_names: Sequence[str],
    region: str,
    rng: random.Random,
    variants: int,
    event_id: Callable[[], str],
) -> list[tuple[bytes, int]]:
    """Serialized records to fill shards fast, each with its SizeBytes.

    Each template has ``%(e)s`` (event id), ``%(k)s`` (hash key), ``%(s)s`` (sequence number)
    and ``%(t)s`` (creation time) slots for ``bytes.__mod__``; the key slot takes 16 bytes
    (``ORDER#`` and 10 digits). ``event_id`` is called once per template, as for a put.
    """
    templates: list[tuple[bytes, int]] = []
    for v in range(variants):
        keys: dict[str, Any] = {key_names[0]: {"S": "@@K@@"}}
        if len(key_names) > 1:
            keys[key_names[1]] = {"S": "META"}
        change = realistic_change(rng, keys, v)
        record = change_record(
            change, view_type=view_type, sequence=0, when=0.0, region=region, event_id=event_id
        )
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
