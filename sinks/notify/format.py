"""What a notification says about a record: its body (``raw``, ``plain`` or a template),
string templates (``{path}``) for ids, attributes and event types, and the paths they use.

A *path* names a value of a record, starting at one of ``ROOTS``: ``eventName``, ``table``,
``keys.pk``, ``new.address.city``, ``old.items.0``. Under ``keys``, ``new`` and ``old`` the
segments walk the item image (map keys, list positions) and the value is decoded with
``fanout.records.plain_value`` (exact numbers, sets as lists, binary as base64). A path that
leads nowhere (no old image on an INSERT, an absent attribute) has no value.

Every template is parsed when the configuration is validated, so a typo fails at start-up
with the field's path; rendering a record never raises for a missing value.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fanout.records import Record, dumps_plain, plain_image, plain_value

FORMATS = ("raw", "plain", "template")
_MISSING: Any = object()


def table_name(record: Record) -> str | None:
    """The table of a record, from its ``eventSourceARN``
    (``arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL``)."""
    arn = record.get("eventSourceARN")
    if not isinstance(arn, str):
        return None
    _, found, rest = arn.partition(":table/")
    if not found:
        return None
    return rest.split("/", 1)[0] or None


def _image(name: str) -> Callable[[Record], Any]:
    def get(record: Record) -> Any:
        image = record.get("dynamodb", {}).get(name)
        return image if isinstance(image, dict) else _MISSING

    return get


def _field(name: str) -> Callable[[Record], Any]:
    return lambda record: record.get(name, _MISSING)


def _stream_field(name: str) -> Callable[[Record], Any]:
    return lambda record: record.get("dynamodb", {}).get(name, _MISSING)


_IMAGES: dict[str, Callable[[Record], Any]] = {
    "keys": _image("Keys"),
    "new": _image("NewImage"),
    "old": _image("OldImage"),
}
_SCALARS: dict[str, Callable[[Record], Any]] = {
    "eventID": _field("eventID"),
    "eventName": _field("eventName"),
    "eventSource": _field("eventSource"),
    "eventSourceARN": _field("eventSourceARN"),
    "awsRegion": _field("awsRegion"),
    "table": lambda record: table_name(record) or _MISSING,
    "sequenceNumber": _stream_field("SequenceNumber"),
    "approximateCreationDateTime": _stream_field("ApproximateCreationDateTime"),
}
ROOTS = (*_SCALARS, *_IMAGES)
"""The names a path can start with."""


@dataclass(frozen=True, slots=True)
class Path:
    """A parsed path, e.g. ``new.address.city``."""

    text: str
    root: str
    segments: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Path:
        """Raises ValueError for an unknown root, an empty segment, or segments under a
        root that is not an image."""
        parts = text.strip().split(".")
        root, segments = parts[0], tuple(parts[1:])
        if root not in ROOTS:
            raise ValueError(f"unknown field {root!r} in {text!r}; use one of {', '.join(ROOTS)}")
        if any(not s for s in segments):
            raise ValueError(f"empty name in path {text!r}")
        if segments and root not in _IMAGES:
            raise ValueError(f"{root!r} has no fields ({text!r})")
        return cls(text, root, segments)

    def value(self, record: Record) -> Any:
        """The value at this path in ``record``, or ``MISSING``."""
        if self.root in _SCALARS:
            return _SCALARS[self.root](record)
        image = _IMAGES[self.root](record)
        if image is _MISSING:
            return _MISSING
        if not self.segments:
            return plain_image(image)
        typed: Any = image.get(self.segments[0], _MISSING)
        for segment in self.segments[1:]:
            if not isinstance(typed, dict) or len(typed) != 1:
                return _MISSING
            ((tag, inner),) = typed.items()
            if tag == "M" and isinstance(inner, dict):
                typed = inner.get(segment, _MISSING)
            elif tag == "L" and isinstance(inner, list) and segment.isdigit():
                position = int(segment)
                typed = inner[position] if position < len(inner) else _MISSING
            else:
                return _MISSING
        if not isinstance(typed, dict):
            return _MISSING
        return plain_value(typed)


MISSING = _MISSING
"""What ``Path.value`` returns when the path leads nowhere."""

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def as_text(value: Any) -> str:
    """A value as template text: strings as they are, numbers exactly, booleans as
    ``true``/``false``, maps and lists as JSON, nothing (null or missing) as ``""``."""
    if value is _MISSING or value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return dumps_plain(value).decode()
    return str(value)


class TextTemplate:
    """A string with ``{path}`` placeholders, e.g. ``"{table}.{eventName}"``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._parts: list[str | Path] = []
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            self._literal(text[position : match.start()])
            self._parts.append(Path.parse(match.group(1)))
            position = match.end()
        self._literal(text[position:])

    def _literal(self, text: str) -> None:
        if "{" in text or "}" in text:
            raise ValueError(f"unbalanced brace in template {self.text!r}")
        if text:
            self._parts.append(text)

    def render(self, record: Record) -> str:
        """The text for ``record``; a placeholder without a value renders as ``""``."""
        return "".join(
            part if isinstance(part, str) else as_text(part.value(record)) for part in self._parts
        )


def check_template(text: str) -> str:
    """Validate a text template (for pydantic validators); returns it unchanged."""
    TextTemplate(text)
    return text


def check_fields(fields: Mapping[str, str]) -> Mapping[str, str]:
    """Validate a body template (output name -> path)."""
    if not fields:
        raise ValueError("a template needs at least one field")
    for name, path in fields.items():
        if not name:
            raise ValueError("a template field needs a name")
        try:
            Path.parse(path)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return fields


class BodyFormat:
    """Makes the JSON object a notification carries for one record.

    * ``raw``: the Lambda event record itself;
    * ``plain``: ``{"eventName", "table", "keys", "new", "old"}`` with plain JSON values
      (``new``/``old`` absent when the record has no such image);
    * ``template``: ``{name: value at path}`` for each field, fields without a value left out.
    """

    def __init__(self, kind: str, fields: Mapping[str, str] | None = None) -> None:
        if kind not in FORMATS:
            raise ValueError(f"unknown format {kind!r}")
        if kind == "template" and not fields:
            raise ValueError("format template needs fields")
        self.kind = kind
        self._fields = [(name, Path.parse(path)) for name, path in (fields or {}).items()]

    def render(self, record: Record) -> Any:
        """The object for ``record`` (shared parts of the record are not copied: never
        change it)."""
        if self.kind == "raw":
            return record
        if self.kind == "plain":
            return plain_body(record)
        body: dict[str, Any] = {}
        for name, path in self._fields:
            value = path.value(record)
            if value is not _MISSING:
                body[name] = value
        return body

    def dumps(self, record: Record) -> bytes:
        """``render(record)`` as JSON (UTF-8), numbers exact."""
        return dumps_plain(self.render(record))


def plain_body(record: Record) -> dict[str, Any]:
    """The ``plain`` view of a record."""
    ddb = record.get("dynamodb", {})
    body: dict[str, Any] = {
        "eventName": record.get("eventName"),
        "table": table_name(record),
        "keys": plain_image(ddb.get("Keys") or {}),
    }
    for name, field in (("new", "NewImage"), ("old", "OldImage")):
        image = ddb.get(field)
        if isinstance(image, dict):
            body[name] = plain_image(image)
    return body


# -- FIFO ids ------------------------------------------------------------------------------

# MessageGroupId and MessageDeduplicationId (SQS and SNS): 1 to 128 characters, letters,
# digits and ASCII punctuation.
_ID_CHARS = re.compile(r"^[!-~]{1,128}$")


def fifo_id(text: str) -> str:
    """``text`` if SQS/SNS take it as a group or deduplication id, else its SHA-256 (hex):
    the same text always gives the same id."""
    if _ID_CHARS.match(text):
        return text
    return hashlib.sha256(text.encode()).hexdigest()


def key_text(record: Record) -> str:
    """The item key as text: the key attributes' values, ordered by name, joined by ``#``
    (the default group id of FIFO topics and queues)."""
    keys = record.get("dynamodb", {}).get("Keys") or {}
    return "#".join(as_text(plain_value(keys[name])) for name in sorted(keys))


def batch_id(event_ids: Sequence[str]) -> str:
    """A stable id for a batch of records: the same records always give the same id."""
    digest = hashlib.sha256("\n".join(event_ids).encode()).hexdigest()
    return f"batch_{digest[:32]}"
