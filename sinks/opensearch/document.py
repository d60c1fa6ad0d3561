"""What the ``opensearch`` sink writes for one stream record: the document (plain JSON from
DynamoDB AttributeValues), its id, index and routing (templates over attributes), and its
external version.

The version argument is in docs/opensearch.md; in short, a change of an item is identified
by its *stamp* ``(created, seq)``: ApproximateCreationDateTime in whole seconds and the full
sequence number. For one item, stamps grow in stream order. OpenSearch compares one signed
64-bit number, so the version packs the stamp lossily:

    version = (created - 2020-01-01) << 30 | (seq mod 2**30)

Changes of an item in different seconds are ordered by the seconds; within one second by
the low 30 bits of the sequence number, unless they wrap. The sink never relies on that tie
break alone: every document carries its full stamp, and a version conflict is settled by
comparing stamps exactly (see ``sinks.opensearch.sink``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

EPOCH = 1_577_836_800  # 2020-01-01T00:00:00Z, before any stream record that can still be read
TIE_BITS = 30
TIE_MASK = (1 << TIE_BITS) - 1
_HALF_TIE = 1 << (TIE_BITS - 1)
MAX_VERSION = (1 << 63) - 1  # OpenSearch versions are signed 64-bit, and external ones >= 0
MAX_ID_BYTES = 512  # OpenSearch refuses longer document ids (the whole bulk request fails)

Numbers = Literal["auto", "number", "string"]
Stamp = tuple[int, int]  # (ApproximateCreationDateTime in whole seconds, sequence number)


class RecordError(ValueError):
    """A record the sink cannot turn into a bulk action; it is refused (dead-lettered)."""


# -- versions --------------------------------------------------------------------------------


def stamp(record: Mapping[str, Any]) -> Stamp:
    """The record's ``(created, seq)``: whole seconds and the full sequence number.

    Raises:
        RecordError: the record has no usable ApproximateCreationDateTime or SequenceNumber.
    """
    ddb = record["dynamodb"]
    created = ddb.get("ApproximateCreationDateTime")
    if isinstance(created, bool) or not isinstance(created, int | float) or created != created:
        raise RecordError("the record has no ApproximateCreationDateTime to version it with")
    try:
        seq = int(ddb["SequenceNumber"])
    except (KeyError, TypeError, ValueError):
        raise RecordError("the record has no numeric SequenceNumber") from None
    return math.floor(created), seq


def version_of(created: int, seq: int) -> int:
    """The external version of a change: seconds since 2020 above 30 bits of the sequence.

    Raises:
        RecordError: the change predates 2020 or lies past the year 2292.
    """
    seconds = created - EPOCH
    version = (seconds << TIE_BITS) | (seq & TIE_MASK)
    if seconds < 0 or version > MAX_VERSION:
        raise RecordError(f"ApproximateCreationDateTime {created} is outside 2020..2292")
    return version


def stamp_of_version(version: int) -> tuple[int, int]:
    """``(created, seq mod 2**30)`` packed into ``version``."""
    return (version >> TIE_BITS) + EPOCH, version & TIE_MASK


def newer_than_version(change: Stamp, version: int) -> bool:
    """Whether ``change`` is newer than the change that wrote ``version``, when only the
    version is known (a deleted document keeps nothing else).

    Different seconds decide by themselves. Within one second only the low 30 bits of the
    other sequence number are known; they are compared as serial numbers (RFC 1982), which
    is exact as long as the two changes are less than 2**29 sequence numbers apart.
    """
    created, seq = change
    other_created, low = stamp_of_version(version)
    if created != other_created:
        return created > other_created
    distance = (seq - low) & TIE_MASK
    return 0 < distance < _HALF_TIE


def is_ttl_delete(record: Mapping[str, Any]) -> bool:
    """True for a REMOVE made by DynamoDB's Time to Live (``userIdentity`` of the service)."""
    identity = record.get("userIdentity")
    if not isinstance(identity, dict):
        return False
    kind = identity.get("type", identity.get("Type"))
    principal = identity.get("principalId", identity.get("PrincipalId"))
    return kind == "Service" and principal == "dynamodb.amazonaws.com"


# -- AttributeValues to plain JSON -----------------------------------------------------------

_SMALL_INT = re.compile(r"-?[0-9]{1,15}\Z")  # below 2**53 in magnitude: exact as a double
_SAFE = 1 << 53
_INT64 = 1 << 63


def _number_auto(text: str) -> Any:
    """A JSON number when it is exact as one (an integer within 2**53, or a decimal whose
    nearest double prints back as the same value), else the number's text."""
    if _SMALL_INT.match(text):
        return int(text)
    try:
        value = Decimal(text)
    except InvalidOperation:
        return text
    if not value.is_finite():
        return text
    if value == value.to_integral_value():
        whole = int(value)
        return whole if -_SAFE <= whole <= _SAFE else text
    double = float(text)
    if math.isfinite(double) and Decimal(repr(double)) == value:
        return double
    return text


def _number_always(text: str) -> Any:
    """A JSON number, rounded to a double when it is not a 64-bit integer."""
    if _SMALL_INT.match(text):
        return int(text)
    try:
        value = Decimal(text)
    except InvalidOperation:
        return text
    if value.is_finite() and value == value.to_integral_value():
        whole = int(value)
        if -_INT64 <= whole < _INT64:
            return whole
    return float(text)


def _number_text(text: str) -> Any:
    return text


_NUMBER: dict[str, Callable[[str], Any]] = {
    "auto": _number_auto,
    "number": _number_always,
    "string": _number_text,
}


def plain_converter(numbers: Numbers = "auto") -> Callable[[Mapping[str, Any]], Any]:
    """A function from one typed AttributeValue to plain JSON-ready Python.

    S and B (base64, as on the wire) are strings, BOOL a bool, NULL None, M an object, L and
    every set (SS, NS, BS) a list; N as ``numbers`` says: ``auto`` a JSON number when exact,
    else a string; ``number`` always a number (rounded to a double if need be); ``string``
    always the number's text.
    """
    number = _NUMBER[numbers]

    def plain(value: Mapping[str, Any]) -> Any:
        for tag, inner in value.items():
            if tag == "S" or tag == "B" or tag == "BOOL":
                return inner
            if tag == "N":
                return number(inner)
            if tag == "M":
                return {k: plain(v) for k, v in inner.items()}
            if tag == "L":
                return [plain(v) for v in inner]
            if tag == "NULL":
                return None
            if tag == "SS" or tag == "BS":
                return list(inner)
            if tag == "NS":
                return [number(n) for n in inner]
            raise RecordError(f"unknown AttributeValue type {tag!r}")
        raise RecordError("empty AttributeValue")

    return plain


# -- templates -------------------------------------------------------------------------------

_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class Template:
    """A string with ``{attribute}`` fields filled from an item's top-level attributes;
    ``{{`` and ``}}`` are literal braces.

    Only scalar attributes can fill a field: S as is, N as its text, B as its base64 text,
    BOOL as ``true``/``false``.

    Raises:
        ValueError: the template is malformed (the message says where).
    """

    def __init__(self, text: str) -> None:
        self.text = text
        parts: list[tuple[bool, str]] = []  # (is a field, literal text or attribute name)
        literal: list[str] = []
        position = 0
        for match in _FIELD.finditer(text):
            literal.append(text[position : match.start()])
            position = match.end()
            token = match.group(0)
            if token in ("{{", "}}"):
                literal.append(token[0])
                continue
            name = match.group(1)
            if name is None:
                raise ValueError(f"unbalanced {token!r} at position {match.start()} in {text!r}")
            name = name.strip()
            if not name:
                raise ValueError(f"empty field at position {match.start()} in {text!r}")
            if literal:
                parts.append((False, "".join(literal)))
                literal = []
            parts.append((True, name))
        literal.append(text[position:])
        if any(literal):
            parts.append((False, "".join(literal)))
        self.parts = tuple(parts)
        self.names = frozenset(name for is_field, name in parts if is_field)
        self.static = not self.names

    def render(self, *images: Mapping[str, Any] | None) -> str:
        """Fill the fields from the first of ``images`` that has each attribute.

        Raises:
            RecordError: an attribute is missing or not a scalar.
        """
        if self.static:
            return self.text
        out: list[str] = []
        for is_field, part in self.parts:
            if not is_field:
                out.append(part)
                continue
            for image in images:
                if image is not None and part in image:
                    out.append(_scalar(part, image[part]))
                    break
            else:
                raise RecordError(f"the record has no attribute {part!r} for {self.text!r}")
        return "".join(out)

    def __repr__(self) -> str:
        return f"Template({self.text!r})"


def _scalar(name: str, value: Mapping[str, Any]) -> str:
    for tag, inner in value.items():
        if tag in ("S", "N", "B"):
            return str(inner)
        if tag == "BOOL":
            return "true" if inner else "false"
        raise RecordError(f"attribute {name!r} is of type {tag}, which cannot fill a template")
    raise RecordError(f"attribute {name!r} is empty")


def key_template(keys: Mapping[str, Any]) -> Template:
    """The default document id: the key attributes, sorted by name, joined with ``#``."""
    return Template("#".join("{" + name + "}" for name in sorted(keys)))


_INDEX_FORBIDDEN = re.compile(r'[\\/*?"<>| ,#:A-Z]')


def index_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an OpenSearch index name, or None."""
    if not name:
        return "an index name cannot be empty"
    if name in (".", ".."):
        return f"{name!r} cannot be an index name"
    if name[0] in "-_+":
        return f"index name {name!r} must not start with '-', '_' or '+'"
    bad = _INDEX_FORBIDDEN.search(name)
    if bad:
        return f"index name {name!r} must not contain {bad.group(0)!r} (or upper case letters)"
    if len(name.encode()) > 255:
        return f"index name {name[:40]!r}... is longer than 255 bytes"
    return None
