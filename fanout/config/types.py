"""Primitive config types: durations (``"30s"``), byte sizes (``"512MiB"``), file modes
(``"0600"``), their parsers, and ``Model``, the base of every config model.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> Any:
    """Seconds from a number or a string such as ``250ms``, ``30s``, ``5m``, ``6h``, ``1d``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(
                f"invalid duration {value!r}: use seconds or a number with ms, s, m, h or d"
            )
        return float(match.group(1)) * _UNITS[match.group(2)]
    return value


# Float seconds; -1 means "unbounded" where a field says so.
Duration = Annotated[float, BeforeValidator(parse_duration)]

_OCTAL = re.compile(r"^\s*(?:0o|0)?([0-7]{1,4})\s*$", re.IGNORECASE)


def parse_file_mode(value: Any) -> Any:
    """Permission bits from an octal string (``"0600"``, ``"0o640"``, ``"600"``) or an int.

    YAML reads ``0600`` as the int 384 (octal); a bare ``600`` is the int 600, above
    ``0o777``, so such ints are refused rather than guessed at.
    """
    if isinstance(value, bool):
        raise ValueError("a file mode is an octal string like '0600'")
    if isinstance(value, int):
        if not 0 <= value <= 0o777:
            raise ValueError(
                f"{value} is not a file mode: write it as an octal string, e.g. '0600'"
            )
        return value
    if isinstance(value, str):
        match = _OCTAL.match(value)
        mode = int(match.group(1), 8) if match else -1
        if not 0 <= mode <= 0o777:
            raise ValueError(f"invalid file mode {value!r}: use octal, e.g. '0600' or '0640'")
        return mode
    return value


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "ki": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "ti": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}


def parse_size(value: Any) -> Any:
    """Bytes from a number or a string such as ``512MiB``, ``64MB``, ``1Gi`` (binary units
    for ``KiB``/``Ki``/``K``, decimal for ``KB``)."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string like '512MiB'")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        match = _SIZE.match(value)
        unit = (match.group(2) or "").lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise ValueError(
                f"invalid size {value!r}: use bytes or a number with KiB, MiB, GiB (or KB, MB, GB)"
            )
        return int(float(match.group(1)) * _SIZE_UNITS[unit])
    return value


_SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([kKmMgGtT]i?[bB]?|[bB])?\s*$"

# A size in bytes; "512MiB" in the config.
ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    Field(gt=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": _SIZE_PATTERN},
            ],
            "examples": ["512MiB"],
        }
    ),
]

# Permission bits of a file fanout creates; octal in the config ("0600").
FileMode = Annotated[
    int,
    BeforeValidator(parse_file_mode),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": "^(0o|0)?[0-7]{3}$"},
                {"type": "integer", "minimum": 0, "maximum": 0o777},
            ],
            "examples": ["0600"],
        }
    ),
]


class Model(BaseModel):
    """Base for every config model: unknown keys are errors (typos fail at start-up)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
