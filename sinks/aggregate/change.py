"""What one stream record means to an aggregate: the item it is about, its stamp, and the
contribution the item makes after it (group row, measure values), in exact decimals.

An item's *contribution* is a function of one image alone: the row it counts in (the
``group_by`` values joined with ``#``, and the window of the change's
ApproximateCreationDateTime) and its value for each count and sum measure. The sink keeps, per
source item, the contribution it last added (``sinks.aggregate.plan``), so a change moves
exactly that out of its row and its own in.
"""

from __future__ import annotations

import decimal
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from fanout.records import Record
from sinks.aggregate.config import ALL_WINDOW, AggregateSinkConfig
from sinks.opensearch.document import RecordError as _StampError
from sinks.opensearch.document import stamp as _stamp

# DynamoDB numbers: 38 significant digits, magnitudes 1E-130 to 1E+125. Any rounding is an
# error: a total is exact or it is not written.
DECIMAL = decimal.Context(
    prec=38,
    Emax=125,
    Emin=-130,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[
        decimal.InvalidOperation,
        decimal.Overflow,
        decimal.Underflow,
        decimal.Inexact,
        decimal.Rounded,
        decimal.DivisionByZero,
    ],
)
ZERO = Decimal(0)
ONE = Decimal(1)
VIEW_TYPE = "NEW_AND_OLD_IMAGES"
MARKER = "fanout:sink"  # on every row the sink writes: its name (loop safety)
MAX_GROUP_BYTES = 2048  # DynamoDB's limit for a partition key value
_MAX_READABLE_ITEM = 1024  # longer item ids are hashed (the state table's key is one string)

Stamp = tuple[int, int]  # (ApproximateCreationDateTime in whole seconds, sequence number)
RowKey = tuple[str, str]  # (group, window)


class RecordError(ValueError):
    """A record the sink cannot apply; it is refused (dead-lettered) with this reason."""


def stamp_text(stamp: Stamp) -> str:
    """The stamp as a fixed-width string: string order is stamp order (sequence numbers
    have at most 40 digits), so a DynamoDB condition or a reader can compare it."""
    return f"{stamp[0]:012d}.{stamp[1]:040d}"


def number(text: str) -> Decimal:
    """A DynamoDB number as an exact Decimal.

    Raises:
        decimal.DecimalException: not a number DynamoDB could hold.
    """
    value = DECIMAL.create_decimal(text)
    if not value.is_finite():
        raise decimal.InvalidOperation(text)
    return value


def wire(value: Decimal) -> dict[str, str]:
    """A Decimal as a DynamoDB ``N`` AttributeValue."""
    return {"N": str(value)}


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one item adds to the aggregate: a row and a value per count/sum measure."""

    row: RowKey
    values: Mapping[str, Decimal]


@dataclass(frozen=True, slots=True)
class Extreme:
    """A min, max or latest candidate of one change for one row."""

    row: RowKey
    measure: str
    kind: str  # "min", "max" or "latest"
    value: dict[str, Any]  # the AttributeValue as it came
    stamp: Stamp


@dataclass(frozen=True, slots=True)
class Change:
    """One record as the aggregate sees it.

    Attributes:
        item: the source item's id in the state table (source table and key).
        stamp: orders the item's changes (docs/aggregate.md, assumptions A1 and A2).
        contribution: the item's contribution after the change; None after a REMOVE, or when
            the image lacks a ``group_by`` attribute.
        hint: the contribution of the old image: where the item most likely counts now
            (the state table says for sure); its row is read ahead.
        has_old: the record carries an old image (a MODIFY or REMOVE).
        extremes: candidates for min, max and latest measures.
        non_numeric: sum attributes of the new image that are not numbers (counted as 0).
        ungrouped: the new image lacks a ``group_by`` attribute (the item counts nowhere).
    """

    item: str
    stamp: Stamp
    event_id: str
    contribution: Contribution | None
    hint: Contribution | None
    has_old: bool
    extremes: tuple[Extreme, ...]
    non_numeric: int
    ungrouped: bool


class Measures:
    """The configured measures, compiled: which attribute feeds which measure."""

    def __init__(self, config: AggregateSinkConfig) -> None:
        self.counts: list[str] = []
        self.sums: list[tuple[str, str]] = []
        self.extremes: list[tuple[str, str, str]] = []  # (measure, kind, attribute)
        for name, spec in config.measures.items():
            if spec == "count":
                self.counts.append(name)
                continue
            kind, attribute = next(iter(spec.model_dump().items()))
            if kind == "sum":
                self.sums.append((name, attribute))
            else:
                self.extremes.append((name, kind, attribute))
        self.additive = [*self.counts, *(name for name, _ in self.sums)]


class Decoder:
    """Turns records into changes for one sink's configuration."""

    def __init__(self, config: AggregateSinkConfig, name: str) -> None:
        self.name = name
        self.group_by = list(config.group_by)
        self.window = config.window_seconds
        self.measures = Measures(config)

    def own_write(self, record: Record) -> bool:
        """True for a change of a row this sink wrote (its marker is in an image)."""
        ddb = record.get("dynamodb")
        if not isinstance(ddb, dict):
            return False
        for image_name in ("NewImage", "OldImage"):
            image = ddb.get(image_name)
            if isinstance(image, dict) and image.get(MARKER) == {"S": self.name}:
                return True
        return False

    def decode(self, record: Record) -> Change:
        """The change a record makes.

        Raises:
            RecordError: the record cannot be applied (the reason says why).
        """
        ddb = record["dynamodb"]
        view = ddb.get("StreamViewType")
        if view is not None and view != VIEW_TYPE:
            raise RecordError(f"the record is of a {view} stream; the aggregate needs {VIEW_TYPE}")
        try:
            stamp = _stamp(record)
        except _StampError as exc:
            raise RecordError(str(exc)) from None
        event = record.get("eventName")
        new = ddb.get("NewImage")
        old = ddb.get("OldImage")
        if event in ("INSERT", "MODIFY"):
            if not isinstance(new, dict):
                raise RecordError(f"an {event} record without NewImage")
        elif event == "REMOVE":
            new = None
        else:
            raise RecordError(f"unknown eventName {event!r}")
        created = stamp[0]
        try:
            contribution, non_numeric = (
                (None, 0) if new is None else self._contribution(new, created)
            )
            hint = self._contribution(old, created)[0] if isinstance(old, dict) else None
            extremes = (
                self._extremes(new, contribution, stamp)
                if new is not None and contribution is not None
                else ()
            )
        except decimal.DecimalException as exc:
            raise RecordError(f"a number DynamoDB cannot hold: {type(exc).__name__}") from None
        return Change(
            item=item_id(record),
            stamp=stamp,
            event_id=str(record.get("eventID", "")),
            contribution=contribution,
            hint=hint,
            has_old=isinstance(old, dict),
            extremes=extremes,
            non_numeric=non_numeric,
            ungrouped=new is not None and contribution is None,
        )

    def _contribution(
        self, image: Mapping[str, Any], created: int
    ) -> tuple[Contribution | None, int]:
        """The contribution of an image at time ``created`` (None: it lacks a group value),
        and how many sum attributes were not numbers (they count as 0)."""
        parts: list[str] = []
        for attribute in self.group_by:
            text = _scalar(image.get(attribute))
            if text is None:
                return None, 0
            parts.append(text)
        group = "#".join(parts)
        if not group:
            return None, 0
        if len(group.encode()) > MAX_GROUP_BYTES:
            raise RecordError(
                f"the group {group[:40]!r}... is longer than DynamoDB's {MAX_GROUP_BYTES}-byte "
                "partition key limit"
            )
        window = ALL_WINDOW if self.window is None else str(created - created % self.window)
        values: dict[str, Decimal] = dict.fromkeys(self.measures.counts, ONE)
        non_numeric = 0
        for measure, attribute in self.measures.sums:
            value = image.get(attribute)
            amount = ZERO
            if isinstance(value, dict) and "N" in value:
                amount = number(value["N"])
            elif value is not None and value != {"NULL": True}:
                non_numeric += 1
            values[measure] = amount
        return Contribution((group, window), values), non_numeric

    def _extremes(
        self, image: Mapping[str, Any], contribution: Contribution, stamp: Stamp
    ) -> tuple[Extreme, ...]:
        found = []
        for measure, kind, attribute in self.measures.extremes:
            value = image.get(attribute)
            if not isinstance(value, dict) or not value:
                continue
            if kind != "latest":
                if "N" not in value:
                    continue
                number(value["N"])  # refuse what DynamoDB could not compare
            found.append(Extreme(contribution.row, measure, kind, value, stamp))
        return tuple(found)


def _scalar(value: Any) -> str | None:
    """The text of a scalar AttributeValue for a group value; None for anything else."""
    if not isinstance(value, dict):
        return None
    for tag, inner in value.items():
        if tag in ("S", "N", "B"):
            return str(inner)
        if tag == "BOOL":
            return "true" if inner else "false"
    return None


def item_id(record: Record) -> str:
    """The source item's id: its table (from eventSourceARN) and its key, as canonical JSON
    (hashed when long, to fit a key of the state table)."""
    arn = str(record.get("eventSourceARN", ""))
    table = arn.split(":table/", 1)[1].split("/", 1)[0] if ":table/" in arn else ""
    keys = orjson.dumps(record["dynamodb"]["Keys"], option=orjson.OPT_SORT_KEYS).decode()
    if len(keys.encode()) > _MAX_READABLE_ITEM:
        keys = "sha256:" + hashlib.sha256(keys.encode()).hexdigest()
    return f"{table}|{keys}"
