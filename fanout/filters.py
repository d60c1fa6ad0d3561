"""Per-sink record filters: Lambda / EventBridge event patterns compiled into fast predicates."""

from __future__ import annotations

import decimal
import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any, Final

from fanout.errors import ConfigError
from fanout.records import Record

__all__ = [
    "EXTENSION_OPERATORS",
    "MAX_FIELDS_PER_BRANCH",
    "MAX_OR_BRANCHES",
    "compile_filters",
    "compile_pattern",
    "matches",
]

# How a pattern is matched
# ------------------------
# A pattern is validated with event-ruler's rules, then expanded into "branches": every
# combination of "$or" alternatives, each a flat set of field paths with a value test
# (event-ruler calls these sub-rules).  A branch is compiled into a tree of closures
# that walks the record once.  Lists met on the way are handled per element, so two
# conditions are only satisfied together by values from the same array element (event-
# ruler's array consistency).
#
# One case is not structural in event-ruler: an {"exists": false} condition below an
# array of objects.  Its answer depends on which other fields of the branch sort before
# it by name.  When a record actually has such an array, the branch falls back to
# `_faithful_search`, a direct transcription of event-ruler's name-ordered, array-consistent
# search.  DynamoDB records only contain arrays inside L / SS / NS / BS values, so
# the fallback is rare.

EXTENSION_OPERATORS: Final = frozenset({"fanout-numeric"})
"""Operators fanout adds to the AWS language; AWS rejects patterns that use them."""

MAX_OR_BRANCHES: Final = 1024
"""At most this many $or combinations per pattern (a fanout limit against blow-ups)."""

MAX_FIELDS_PER_BRANCH: Final = 256
"""event-ruler's limit on the fields of one rule (after $or expansion)."""

Predicate = Callable[[Any], bool]

_OPERATORS: Final = (
    "anything-but",
    "cidr",
    "equals-ignore-case",
    "exactly",
    "exists",
    "fanout-numeric",
    "numeric",
    "prefix",
    "suffix",
    "wildcard",
)

# Field names event-ruler refuses inside a "$or" branch
# (Constants.RESERVED_FIELD_NAMES_IN_OR_RELATIONSHIP).
_RESERVED_IN_OR: Final = frozenset(
    {
        "exactly",
        "equals-ignore-case",
        "prefix",
        "suffix",
        "anything-but",
        "exists",
        "wildcard",
        "numeric",
        "cidr",
        "=",
        "<",
        "<=",
        ">",
        ">=",
        "regex",
        "not-wildcard",
        "not-equals-ignore-case",
        "date-after",
        "date-on-or-after",
        "date-before",
        "date-on-or-before",
        "in-date-range",
        "ip-address-in-range",
        "ip-address-not-in-range",
    }
)

_IPV4_RE: Final = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
_IPV6_RE: Final = re.compile(r"[0-9a-fA-F:]*:[0-9a-fA-F:]*")
_INT_RE: Final = re.compile(r"[+-]?[0-9]+")
_DDB_NUMBER_RE: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PLAIN_KEY_RE: Final = re.compile(r"[^.\[\]\s\"]+")


class _Missing:
    """The value of a field that is not in the record."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()


class _NeedFaithful(Exception):
    """Raised by the fast matcher when only the faithful search can answer."""


# ---------------------------------------------------------------------------------------------
# Paths in error messages


def _join(path: str, key: str) -> str:
    if _PLAIN_KEY_RE.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, str):
        return f"string {json.dumps(value)}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, int | float):
        return f"number {value!r}"
    return f"a {type(value).__name__}"


def _is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


def _quoted_number_hint(value: Any) -> str:
    if isinstance(value, str) and _DDB_NUMBER_RE.fullmatch(value.strip()):
        return " (a quoted number is a string; note that YAML reads 1e3 as a string, write 1.0e+3)"
    return ""


# ---------------------------------------------------------------------------------------------
# Value helpers used on the hot path


def _as_float(value: int | float) -> float | None:
    """A JSON number as a finite double, or None (NaN, infinities, huge integers)."""
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _parse_ip(text: str) -> tuple[int, int] | None:
    """(4 or 16, address) for an IP literal, as event-ruler's CIDR.ipToString reads it."""
    if _IPV4_RE.fullmatch(text):
        try:
            return 4, int(ipaddress.IPv4Address(text))
        except ValueError:
            return None
    if _IPV6_RE.fullmatch(text):
        try:
            address = ipaddress.IPv6Address(text)
        except ValueError:
            return None
        mapped = address.ipv4_mapped  # java.net.InetAddress turns ::ffff:a.b.c.d into IPv4
        if mapped is not None:
            return 4, int(mapped)
        return 16, int(address)
    return None


def _utf16_key(name: str) -> bytes:
    """Sort key equal to Java's String.compareTo order (UTF-16 code units)."""
    return name.encode("utf-16-be", "surrogatepass")


def _always(_: Any) -> bool:
    return True


# ---------------------------------------------------------------------------------------------
# String operators


def _case_alternatives(text: str) -> list[set[str]]:
    """Per character, the spellings equals-ignore-case accepts (event-ruler's per-char rule)."""
    alternatives = []
    for char in text:
        if ord(char) > 0xFFFF:
            alternatives.append({char})
        else:
            alternatives.append({char.lower(), char.upper()})
    return alternatives


def _case_regex(alternatives: list[set[str]]) -> str:
    parts = []
    for options in alternatives:
        ordered = sorted(options, key=lambda s: (-len(s), s))
        parts.append("(?:" + "|".join(re.escape(o) for o in ordered) + ")")
    return "".join(parts)


def _ignore_case_equals(text: str) -> Callable[[str], bool]:
    if text.isascii():
        folded = text.lower()
        return lambda s: s.isascii() and s.lower() == folded
    full = re.compile(_case_regex(_case_alternatives(text)), re.DOTALL)
    return lambda s: full.fullmatch(s) is not None


def _ignore_case_prefix(text: str) -> Callable[[str], bool]:
    size = len(text)
    quirk = '"' in text  # event-ruler matches against the quoted value: s + '"'
    if text.isascii():
        folded = text.lower()
        if quirk:

            def prefix_quirk(s: str) -> bool:
                head = (s + '"')[:size]
                return len(head) == size and head.isascii() and head.lower() == folded

            return prefix_quirk

        def prefix(s: str) -> bool:
            head = s[:size]
            return len(head) == size and head.isascii() and head.lower() == folded

        return prefix
    start = re.compile(_case_regex(_case_alternatives(text)), re.DOTALL)
    if quirk:
        return lambda s: start.match(s + '"') is not None
    return lambda s: start.match(s) is not None


def _ignore_case_suffix(text: str) -> Callable[[str], bool]:
    size = len(text)
    quirk = '"' in text  # event-ruler matches against the quoted value: '"' + s
    if size == 0:
        return _always
    if text.isascii():
        folded = text.lower()

        def suffix(s: str) -> bool:
            if quirk:
                s = '"' + s
            tail = s[-size:]
            return len(tail) == size and tail.isascii() and tail.lower() == folded

        return suffix
    reversed_alternatives = [{o[::-1] for o in options} for options in _case_alternatives(text)]
    backwards = re.compile(_case_regex(reversed_alternatives[::-1]), re.DOTALL)

    def suffix_regex(s: str) -> bool:
        if quirk:
            s = '"' + s
        return backwards.match(s[::-1]) is not None

    return suffix_regex


def _prefix_test(prefixes: list[str]) -> Callable[[str], bool]:
    plain = tuple(p for p in prefixes if '"' not in p)
    quoted = tuple(p for p in prefixes if '"' in p)
    if not quoted:
        if len(plain) == 1:
            (one,) = plain
            return lambda s: s.startswith(one)
        return lambda s: s.startswith(plain)
    return lambda s: s.startswith(plain) or (s + '"').startswith(quoted)


def _suffix_test(suffixes: list[str]) -> Callable[[str], bool]:
    plain = tuple(p for p in suffixes if '"' not in p)
    quoted = tuple(p for p in suffixes if '"' in p)
    if not quoted:
        if len(plain) == 1:
            (one,) = plain
            return lambda s: s.endswith(one)
        return lambda s: s.endswith(plain)
    return lambda s: s.endswith(plain) or ('"' + s).endswith(quoted)


def _parse_wildcard(text: str, path: str) -> list[str]:
    """Literal segments between the '*' of a wildcard, with event-ruler's escape rules."""
    segments: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "*":
            if i + 1 < len(text) and text[i + 1] == "*":
                raise ConfigError(path, f"consecutive wildcard characters at position {i}")
            segments.append("".join(current))
            current = []
        elif char == "\\":
            if i + 1 < len(text) and text[i + 1] in "*\\":
                current.append(text[i + 1])
                i += 1
            else:
                raise ConfigError(
                    path, f"invalid escape at position {i}: only \\* and \\\\ may be escaped"
                )
        else:
            current.append(char)
        i += 1
    segments.append("".join(current))
    return segments


def _wildcard_test(segments: list[str]) -> Callable[[str], bool]:
    if len(segments) == 1:
        literal = segments[0]
        return lambda s: s == literal
    first, last = segments[0], segments[-1]
    middle = tuple(segments[1:-1])
    least = len(first) + len(last)

    def wildcard(s: str) -> bool:
        if len(s) < least or not s.startswith(first) or not s.endswith(last):
            return False
        position, end = len(first), len(s) - len(last)
        for segment in middle:
            found = s.find(segment, position, end)
            if found < 0:
                return False
            position = found + len(segment)
        return True

    return wildcard


def _any_of(tests: list[Callable[[str], bool]]) -> Callable[[str], bool]:
    if len(tests) == 1:
        return tests[0]
    frozen = tuple(tests)

    def any_test(s: str) -> bool:
        for test in frozen:
            if test(s):
                return True
        return False

    return any_test


# ---------------------------------------------------------------------------------------------
# Numbers


def _range_test(low: Any, low_open: bool, high: Any, high_open: bool) -> Callable[[Any], bool]:
    if low is None:
        return (lambda x: x < high) if high_open else (lambda x: x <= high)
    if high is None:
        return (lambda x: x > low) if low_open else (lambda x: x >= low)
    if low_open and high_open:
        return lambda x: low < x < high
    if low_open:
        return lambda x: low < x <= high
    if high_open:
        return lambda x: low <= x < high
    return lambda x: low <= x <= high


def _parse_range(
    arg: Any, path: str, convert: Callable[[Any, str], Any]
) -> tuple[Any, bool, Any, bool] | Any:
    """Parse a numeric operand list; returns a value for "=", else (low, open, high, open)."""
    if not isinstance(arg, list):
        raise ConfigError(path, f'must be an array such as [">", 0, "<=", 5], got {_describe(arg)}')
    if not arg:
        raise ConfigError(path, 'must not be empty; use e.g. ["=", 5] or [">", 0, "<=", 5]')

    def operator(index: int) -> str:
        op = arg[index]
        if not isinstance(op, str):
            raise ConfigError(
                f"{path}[{index}]", f"expected a comparison operator, got {_describe(op)}"
            )
        return op

    def operand(index: int, op: str) -> Any:
        if index >= len(arg):
            raise ConfigError(path, f"{op!r} needs a number after it")
        return convert(arg[index], f"{path}[{index}]")

    def end(index: int) -> None:
        if len(arg) > index:
            raise ConfigError(f"{path}[{index}]", "too many elements in numeric expression")

    first = operator(0)
    if first == "=":
        value = operand(1, first)
        end(2)
        return value
    if first in ("<", "<="):
        high = operand(1, first)
        if len(arg) > 2:
            raise ConfigError(
                f"{path}[2]",
                'too many elements: a range starts with its lower bound, e.g. [">", 0, "<", 5]',
            )
        return None, False, high, first == "<"
    if first in (">", ">="):
        low = operand(1, first)
        if len(arg) == 2:
            return low, first == ">", None, False
        second = operator(2)
        if second not in ("<", "<="):
            raise ConfigError(f"{path}[2]", f'the upper bound needs "<" or "<=", got {second!r}')
        high = operand(3, second)
        end(4)
        if not low < high:
            raise ConfigError(
                path, f"empty range: the lower bound {low} must be below the upper bound {high}"
            )
        return low, first == ">", high, second == "<"
    raise ConfigError(
        f"{path}[0]", f"unknown numeric operator {first!r}; expected =, <, <=, > or >="
    )


def _aws_number(value: Any, path: str) -> float:
    if not _is_number(value):
        raise ConfigError(
            path, f"must be a number, got {_describe(value)}{_quoted_number_hint(value)}"
        )
    number = _as_float(value)
    if number is None:
        raise ConfigError(path, f"number {value!r} is not a finite double")
    return number


def _decimal(text: str) -> decimal.Decimal | None:
    try:
        number = decimal.Decimal(text)
    except (decimal.InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _extension_number(value: Any, path: str) -> decimal.Decimal:
    if type(value) is int:
        return decimal.Decimal(value)
    if type(value) is float and math.isfinite(value):
        return decimal.Decimal(repr(value))
    if isinstance(value, str) and _DDB_NUMBER_RE.fullmatch(value):
        number = _decimal(value)
        if number is not None:
            return number
    raise ConfigError(
        path, f"must be a number or a string holding a decimal number, got {_describe(value)}"
    )


def _extension_test(
    low: decimal.Decimal | None,
    low_open: bool,
    high: decimal.Decimal | None,
    high_open: bool,
) -> Predicate:
    """fanout-numeric: compare a DynamoDB "N" string (or a JSON number) exactly, as a decimal.

    Rounding to a double is monotonic, so when the double of the value differs from the
    double of a bound the comparison is already decided; only ties are settled with Decimal.
    """
    exact = _range_test(low, low_open, high, high_open)
    low_f = None if low is None else float(low)
    high_f = None if high is None else float(high)

    def decide(x: float) -> bool | None:
        if low_f is not None:
            if x < low_f:
                return False
            if x == low_f:
                return None
        if high_f is not None:
            if x > high_f:
                return False
            if x == high_f:
                return None
        return True

    def test(value: Any) -> bool:
        kind = type(value)
        if kind is str:
            if _DDB_NUMBER_RE.fullmatch(value) is None:
                return False
            x = float(value)
            if math.isfinite(x):
                verdict = decide(x)
                if verdict is not None:
                    return verdict
            number = _decimal(value)
        elif kind is int:
            number = decimal.Decimal(value)
        elif kind is float:
            number = _decimal(repr(value))
        else:
            return False
        return number is not None and exact(number)

    return test


# ---------------------------------------------------------------------------------------------
# Pattern structure


class _Leaf:
    """Everything one field's value array accepts, gathered during validation."""

    __slots__ = (
        "absent_ok",
        "any_tests",
        "big_ints",
        "exists",
        "false_ok",
        "ignore_case",
        "ips",
        "null_ok",
        "number_tests",
        "numbers",
        "path",
        "prefixes",
        "string_tests",
        "strings",
        "suffixes",
        "true_ok",
    )

    def __init__(self, path: str) -> None:
        self.path = path
        self.strings: set[str] = set()
        self.ips: set[tuple[int, int]] = set()
        self.numbers: set[float] = set()
        self.big_ints: set[int] = set()
        self.true_ok = False
        self.false_ok = False
        self.null_ok = False
        self.exists = False
        self.absent_ok = False
        self.prefixes: list[str] = []
        self.suffixes: list[str] = []
        self.ignore_case: set[str] = set()
        self.string_tests: list[Callable[[str], bool]] = []
        self.number_tests: list[Callable[[float], bool]] = []
        self.any_tests: list[Predicate] = []

    def add_literal(self, value: Any) -> None:
        if value is None:
            self.null_ok = True
        elif value is True:
            self.true_ok = True
        elif value is False:
            self.false_ok = True
        elif isinstance(value, str):
            ip = _parse_ip(value)  # event-ruler matches IP literals as addresses, not text
            if ip is None:
                self.strings.add(value)
            else:
                self.ips.add(ip)
        else:
            number = _as_float(value)
            if number is None:
                if type(value) is int:
                    self.big_ints.add(value)
            else:
                self.numbers.add(number)

    def string_set(self) -> frozenset[str] | None:
        """The accepted strings when the field accepts nothing but plain strings."""
        if (
            self.exists
            or self.absent_ok
            or self.ips
            or self.numbers
            or self.big_ints
            or self.true_ok
            or self.false_ok
            or self.null_ok
            or self.prefixes
            or self.suffixes
            or self.ignore_case
            or self.string_tests
            or self.number_tests
            or self.any_tests
        ):
            return None
        return frozenset(self.strings)

    def string_test(self) -> Callable[[str], bool] | None:
        """The test of a string value when the field accepts strings only (and needs one)."""
        if (
            self.exists
            or self.absent_ok
            or self.numbers
            or self.big_ints
            or self.true_ok
            or self.false_ok
            or self.null_ok
            or self.number_tests
            or self.any_tests
        ):
            return None
        tests = self._string_tests()
        if not self.strings and len(tests) == 1:
            return tests[0]
        return self.value_test()

    def _string_tests(self) -> list[Callable[[str], bool]]:
        string_tests = list(self.string_tests)
        if self.prefixes:
            string_tests.append(_prefix_test(self.prefixes))
        if self.suffixes:
            string_tests.append(_suffix_test(self.suffixes))
        if self.ignore_case:
            folded = frozenset(self.ignore_case)
            string_tests.append(lambda s: s.isascii() and s.lower() in folded)
        ips = frozenset(self.ips)
        if ips:
            string_tests.append(lambda s: _parse_ip(s) in ips)
        return string_tests

    def value_test(self) -> Predicate:
        """One predicate for a present (non-object, non-array) value."""
        if self.exists:
            return _always
        string_tests = self._string_tests()
        strings = frozenset(self.strings)
        numbers = frozenset(self.numbers)
        big_ints = frozenset(self.big_ints)
        number_tests = tuple(self.number_tests)
        any_tests = tuple(self.any_tests)
        true_ok, false_ok, null_ok = self.true_ok, self.false_ok, self.null_ok
        string_test = _any_of(string_tests) if string_tests else None
        has_literals = true_ok or false_ok or null_ok

        if not (string_test or numbers or big_ints or number_tests or any_tests or has_literals):
            return lambda v: type(v) is str and v in strings
        if not (strings or numbers or big_ints or number_tests or any_tests or has_literals):
            assert string_test is not None
            only = string_test
            return lambda v: type(v) is str and only(v)
        if not (strings or string_test or big_ints or number_tests or any_tests or has_literals):

            def numbers_only(v: Any) -> bool:
                kind = type(v)
                if kind is float:
                    return v in numbers
                if kind is int:
                    return _as_float(v) in numbers
                return False

            return numbers_only

        def test(v: Any) -> bool:
            kind = type(v)
            if kind is str:
                if v in strings or (string_test is not None and string_test(v)):
                    return True
            elif kind is int or kind is float:
                number = v if kind is float and math.isfinite(v) else _as_float(v)
                if number is not None:
                    if number in numbers:
                        return True
                    for number_test in number_tests:
                        if number_test(number):
                            return True
                elif kind is int and v in big_ints:
                    return True
            elif kind is bool:
                if true_ok if v else false_ok:
                    return True
            elif v is None:
                if null_ok:
                    return True
            for any_test in any_tests:
                if any_test(v):
                    return True
            return False

        return test


class _Object:
    __slots__ = ("fields", "ors", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.fields: list[tuple[str, _Leaf | _Object]] = []
        self.ors: list[tuple[str, list[_Object]]] = []


# ---------------------------------------------------------------------------------------------
# Validation (JsonRuleCompiler's rules)


def _parse_object(value: Any, path: str, in_or: bool) -> _Object:
    if not isinstance(value, dict):
        raise ConfigError(path, f"must be an object, got {_describe(value)}")
    if not value:
        raise ConfigError(path, "empty objects are not allowed")
    node = _Object(path)
    for key, child in value.items():
        if not isinstance(key, str):
            raise ConfigError(path, _key_error(key))
        child_path = _join(path, key)
        if key == "$or":
            node.ors.append((child_path, _parse_or(child, child_path)))
            continue
        if in_or and key in _RESERVED_IN_OR:
            raise ConfigError(
                child_path, f"{key!r} is a reserved word and cannot be a field name inside $or"
            )
        if isinstance(child, dict):
            node.fields.append((key, _parse_object(child, child_path, in_or)))
        elif isinstance(child, list):
            node.fields.append((key, _parse_values(child, child_path)))
        else:
            raise ConfigError(
                child_path,
                f"must be an object or an array of values, got {_describe(child)};"
                f" put values in brackets, e.g. [{json.dumps(child, default=str)}]",
            )
    return node


def _key_error(key: Any) -> str:
    message = f"field names must be strings, got {_describe(key)}"
    if key is None:
        return message + ' (YAML reads an unquoted NULL, null or ~ as null: write "NULL")'
    if isinstance(key, bool):
        return message + " (YAML reads unquoted on/off/yes/no/true/false as booleans: quote it)"
    return message + " (quote the name)"


def _parse_or(value: Any, path: str) -> list[_Object]:
    if not isinstance(value, list):
        raise ConfigError(path, f"$or must be an array of objects, got {_describe(value)}")
    if len(value) < 2:
        raise ConfigError(path, "$or needs at least 2 objects")
    branches = []
    for index, branch in enumerate(value):
        branch_path = f"{path}[{index}]"
        if not isinstance(branch, dict):
            raise ConfigError(branch_path, f"$or may only hold objects, got {_describe(branch)}")
        branches.append(_parse_object(branch, branch_path, in_or=True))
    return branches


def _parse_values(values: list[Any], path: str) -> _Leaf:
    if not values:
        raise ConfigError(path, "empty arrays are not allowed")
    leaf = _Leaf(path)
    for index, item in enumerate(values):
        item_path = f"{path}[{index}]"
        if item is None or isinstance(item, bool | str):
            leaf.add_literal(item)
        elif _is_number(item):
            if type(item) is float and not math.isfinite(item):
                raise ConfigError(item_path, f"number {item!r} is not allowed")
            leaf.add_literal(item)
        elif isinstance(item, dict):
            _parse_operator(item, item_path, leaf)
        else:
            raise ConfigError(
                item_path,
                f"match values must be strings, numbers, true, false, null or an operator object,"
                f" got {_describe(item)}",
            )
    return leaf


def _string_operand(value: Any, path: str, what: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"{what} must be a string, got {_describe(value)}")
    return value


def _ignore_case_operand(value: dict[Any, Any], path: str, what: str) -> str:
    if len(value) != 1 or "equals-ignore-case" not in value:
        raise ConfigError(
            path,
            f'{what} takes a string or {{"equals-ignore-case": string}},'
            f" got keys {sorted(map(str, value))}",
        )
    return _string_operand(
        value["equals-ignore-case"], _join(path, "equals-ignore-case"), "the value"
    )


def _parse_operator(item: dict[Any, Any], path: str, leaf: _Leaf) -> None:
    if not item:
        raise ConfigError(path, 'an operator object needs one operator, e.g. {"prefix": "x"}')
    if len(item) != 1:
        raise ConfigError(
            path,
            "an operator object holds exactly one operator,"
            f" got {', '.join(sorted(map(str, item)))}",
        )
    ((name, arg),) = item.items()
    op_path = _join(path, str(name))
    if name == "exactly":
        leaf.strings.add(_string_operand(arg, op_path, "exactly"))
    elif name == "prefix":
        if isinstance(arg, dict):
            text = _ignore_case_operand(arg, op_path, "prefix")
            leaf.string_tests.append(_ignore_case_prefix(text))
        else:
            leaf.prefixes.append(_string_operand(arg, op_path, "prefix"))
    elif name == "suffix":
        if isinstance(arg, dict):
            text = _ignore_case_operand(arg, op_path, "suffix")
            leaf.string_tests.append(_ignore_case_suffix(text))
        else:
            leaf.suffixes.append(_string_operand(arg, op_path, "suffix"))
    elif name == "equals-ignore-case":
        text = _string_operand(arg, op_path, "equals-ignore-case")
        if text.isascii():
            leaf.ignore_case.add(text.lower())
        else:
            leaf.string_tests.append(_ignore_case_equals(text))
    elif name == "wildcard":
        text = _string_operand(arg, op_path, "wildcard")
        leaf.string_tests.append(_wildcard_test(_parse_wildcard(text, op_path)))
    elif name == "anything-but":
        leaf.any_tests.append(_parse_anything_but(arg, op_path))
    elif name == "numeric":
        parsed = _parse_range(arg, op_path, _aws_number)
        if isinstance(parsed, tuple):
            leaf.number_tests.append(_range_test(*parsed))
        else:
            leaf.numbers.add(parsed)
    elif name == "fanout-numeric":
        parsed = _parse_range(arg, op_path, _extension_number)
        if isinstance(parsed, tuple):
            leaf.any_tests.append(_extension_test(*parsed))
        else:
            leaf.any_tests.append(_extension_test(parsed, False, parsed, False))
    elif name == "exists":
        if arg is True:
            leaf.exists = True
        elif arg is False:
            leaf.absent_ok = True
        else:
            raise ConfigError(op_path, f"exists takes true or false, got {_describe(arg)}")
    elif name == "cidr":
        leaf.string_tests.append(_parse_cidr(arg, op_path))
    else:
        raise ConfigError(
            op_path, f"unknown operator {str(name)!r}; expected one of {', '.join(_OPERATORS)}"
        )


def _parse_anything_but(arg: Any, path: str) -> Predicate:
    if isinstance(arg, str):
        excluded_strings = frozenset({arg})
        return lambda v: not (type(v) is str and v in excluded_strings)
    if _is_number(arg):
        return _anything_but_numbers([_aws_number(arg, path)])
    if isinstance(arg, list):
        if not arg:
            raise ConfigError(path, "anything-but needs at least one value")
        if all(isinstance(v, str) for v in arg):
            excluded = frozenset(arg)
            return lambda v: not (type(v) is str and v in excluded)
        if all(_is_number(v) for v in arg):
            return _anything_but_numbers(
                [_aws_number(v, f"{path}[{i}]") for i, v in enumerate(arg)]
            )
        for index, value in enumerate(arg):
            if not (isinstance(value, str) or _is_number(value)):
                raise ConfigError(
                    f"{path}[{index}]",
                    f"anything-but lists hold strings or numbers, got {_describe(value)}",
                )
        raise ConfigError(path, "anything-but lists must be all strings or all numbers, not a mix")
    if isinstance(arg, dict):
        if len(arg) != 1:
            raise ConfigError(
                path,
                "anything-but takes one of prefix, suffix, equals-ignore-case or wildcard,"
                f" got {len(arg)} keys",
            )
        ((name, operand),) = arg.items()
        op_path = _join(path, str(name))
        if name not in ("prefix", "suffix", "equals-ignore-case", "wildcard"):
            raise ConfigError(
                op_path,
                f"unsupported anything-but operator {str(name)!r};"
                " expected prefix, suffix, equals-ignore-case or wildcard",
            )
        texts = _anything_but_strings(operand, op_path, str(name))
        tests: list[Callable[[str], bool]]
        if name == "prefix":
            tests = [_prefix_test(texts)]
        elif name == "suffix":
            tests = [_suffix_test(texts)]
        elif name == "equals-ignore-case":
            tests = [_ignore_case_equals(t) for t in texts]
        else:
            tests = [
                _wildcard_test(
                    _parse_wildcard(t, op_path if isinstance(operand, str) else f"{op_path}[{i}]")
                )
                for i, t in enumerate(texts)
            ]
        excluded_test = _any_of(tests)
        return lambda v: not (type(v) is str and excluded_test(v))
    raise ConfigError(
        path, f"anything-but takes a string, a number, an array or an object, got {_describe(arg)}"
    )


def _anything_but_numbers(values: list[float]) -> Predicate:
    excluded = frozenset(values)

    def test(v: Any) -> bool:
        kind = type(v)
        if kind is float or kind is int:
            return _as_float(v) not in excluded
        return True

    return test


def _anything_but_strings(operand: Any, path: str, name: str) -> list[str]:
    values = [operand] if isinstance(operand, str) else operand
    if not isinstance(values, list):
        raise ConfigError(
            path, f"{name} takes a string or an array of strings, got {_describe(operand)}"
        )
    if not values:
        raise ConfigError(path, "anything-but needs at least one value")
    for index, value in enumerate(values):
        item_path = path if isinstance(operand, str) else f"{path}[{index}]"
        if not isinstance(value, str):
            raise ConfigError(item_path, f"{name} values must be strings, got {_describe(value)}")
        if name in ("prefix", "suffix") and not value:
            raise ConfigError(item_path, f"an empty {name} is not allowed in anything-but")
    return list(values)


def _parse_cidr(arg: Any, path: str) -> Callable[[str], bool]:
    text = _string_operand(arg, path, "cidr")
    parts = text.split("/")
    while len(parts) > 1 and parts[-1] == "":  # java.lang.String.split drops trailing empties
        parts.pop()
    if len(parts) != 2:
        raise ConfigError(path, f"malformed CIDR {text!r}: one '/' required, e.g. 10.0.0.0/24")
    if not _INT_RE.fullmatch(parts[1]):
        raise ConfigError(path, f"malformed CIDR {text!r}: mask bits must be an integer")
    bits = int(parts[1])
    if bits < 0:
        raise ConfigError(path, f"malformed CIDR {text!r}: mask bits must not be negative")
    ip = _parse_ip(parts[0])
    if ip is None:
        raise ConfigError(
            path, f"malformed CIDR {text!r}: {parts[0]!r} is not an IPv4 or IPv6 address"
        )
    size, address = ip
    width = 32 if size == 4 else 128
    if bits >= width:
        raise ConfigError(
            path,
            f"malformed CIDR {text!r}: IPv{6 if size == 16 else 4} mask bits must be < {width}",
        )
    host = (1 << (width - bits)) - 1
    low, high = address & ~host, address | host

    def in_block(s: str) -> bool:
        parsed = _parse_ip(s)
        return parsed is not None and parsed[0] == size and low <= parsed[1] <= high

    return in_block


# ---------------------------------------------------------------------------------------------
# $or expansion into branches


_Branch = dict[str, tuple[tuple[str, ...], _Leaf]]  # flat dotted name -> (path, leaf)


def _expand(node: _Object, prefix: tuple[str, ...]) -> list[_Branch]:
    """The branches of a pattern: one per combination of $or alternatives."""
    branches: list[_Branch] = [{}]
    for key, child in node.fields:
        path = (*prefix, key)
        if isinstance(child, _Leaf):
            for branch in branches:
                _put(branch, path, child)
        else:
            branches = _product(branches, _expand(child, path), child.path)
    for or_path, alternatives in node.ors:
        options = [b for alternative in alternatives for b in _expand(alternative, prefix)]
        branches = _product(branches, options, or_path)
    return branches


def _put(branch: _Branch, path: tuple[str, ...], leaf: _Leaf) -> None:
    name = ".".join(path)
    if name in branch:
        raise ConfigError(
            leaf.path,
            f"field {name!r} is already constrained in this pattern"
            " (through $or or a dotted field name); event-ruler rejects duplicate paths",
        )
    branch[name] = (path, leaf)


def _product(left: list[_Branch], right: list[_Branch], path: str) -> list[_Branch]:
    if len(left) * len(right) > MAX_OR_BRANCHES:
        raise ConfigError(
            path,
            f"this pattern expands to more than {MAX_OR_BRANCHES} $or combinations; simplify it",
        )
    result = []
    for a in left:
        for b in right:
            merged = dict(a)
            for _, (field_path, leaf) in b.items():
                _put(merged, field_path, leaf)
            result.append(merged)
    return result


# ---------------------------------------------------------------------------------------------
# Fast structural matcher


class _Trie:
    __slots__ = ("children", "compiled", "leaf")

    def __init__(self) -> None:
        self.leaf: _Leaf | None = None
        self.children: dict[str, _Trie] = {}
        self.compiled: _Compiled | None = None


class _Compiled:
    """A compiled trie node: `fn` takes the value found at the node's path (or _MISSING)."""

    __slots__ = ("absence", "empty_ok", "fn", "obj")

    def __init__(self, fn: Predicate, empty_ok: bool, absence: bool, obj: Predicate | None) -> None:
        self.fn = fn
        self.empty_ok = empty_ok  # matches when nothing is at this path
        self.absence = absence  # an exists:false lies at or below this node
        self.obj = obj  # for pure object nodes: the test of a dict value


def _leaf_fn(leaf: _Leaf) -> Predicate:
    """The node function of a leaf: takes the value at the leaf's path (or _MISSING)."""
    test = leaf.value_test()
    absent_ok = leaf.absent_ok

    def in_list(values: list[Any]) -> bool:
        found = False
        stack = [values]
        while stack:
            for item in stack.pop():
                kind = type(item)
                if kind is list:
                    stack.append(item)
                elif kind is not dict:
                    if test(item):
                        return True
                    found = True
        return absent_ok and not found

    strings = leaf.string_set()
    if strings is not None:
        # The most common leaf: a list of plain strings, e.g. "eventName": ["INSERT"].
        def leaf_strings(v: Any) -> bool:
            if type(v) is str:
                return v in strings
            if type(v) is list:
                return in_list(v)
            return False

        return leaf_strings

    string_test = leaf.string_test()
    if string_test is not None:

        def leaf_string_test(v: Any) -> bool:
            if type(v) is str:
                return string_test(v)
            if type(v) is list:
                return in_list(v)
            return False

        return leaf_string_test

    def leaf_any(v: Any) -> bool:
        kind = type(v)
        if kind is list:
            return in_list(v)
        if kind is dict or v is _MISSING:
            return absent_ok
        return test(v)

    return leaf_any


_Child = tuple[tuple[str, ...], Predicate, tuple[Predicate, ...], "frozenset[str] | None"]


def _object_fn(children: list[_Child]) -> Predicate:
    """Test a dict against its children: (key path, end function, step functions, strings)."""
    walkers = tuple(_walker(*child) for child in children)
    if len(walkers) == 1:
        return walkers[0]
    if len(walkers) == 2:
        first, second = walkers
        return lambda d: first(d) and second(d)
    if len(walkers) == 3:
        one, two, three = walkers
        return lambda d: one(d) and two(d) and three(d)

    def all_children(d: Any) -> bool:
        for walker in walkers:
            if not walker(d):
                return False
        return True

    return all_children


def _walker(
    keys: tuple[str, ...],
    end: Predicate,
    steps: tuple[Predicate, ...],
    strings: frozenset[str] | None,
) -> Predicate:
    """Follow a chain of single-field objects from a dict, then apply `end`.

    `steps[i]` is the node function of the i-th intermediate object; it takes over when the
    value there is not a dict (missing, a scalar, or an array).  When the end is a plain
    string list, its membership test is done inline (the hot path of most filters).
    """
    if strings is not None:
        return _string_walker(keys, end, steps, strings)
    k0 = keys[0]
    if len(keys) == 1:
        return lambda d: end(d.get(k0, _MISSING))
    if len(keys) == 2:
        (s0,), k1 = steps, keys[1]

        def walk2(d: Any) -> bool:
            v = d.get(k0, _MISSING)
            if type(v) is not dict:
                return s0(v)
            return end(v.get(k1, _MISSING))

        return walk2
    if len(keys) == 3:
        (s0, s1), (k1, k2) = steps, keys[1:]

        def walk3(d: Any) -> bool:
            v = d.get(k0, _MISSING)
            if type(v) is not dict:
                return s0(v)
            v = v.get(k1, _MISSING)
            if type(v) is not dict:
                return s1(v)
            return end(v.get(k2, _MISSING))

        return walk3
    if len(keys) == 4:
        (s0, s1, s2), (k1, k2, k3) = steps, keys[1:]

        def walk4(d: Any) -> bool:
            v = d.get(k0, _MISSING)
            if type(v) is not dict:
                return s0(v)
            v = v.get(k1, _MISSING)
            if type(v) is not dict:
                return s1(v)
            v = v.get(k2, _MISSING)
            if type(v) is not dict:
                return s2(v)
            return end(v.get(k3, _MISSING))

        return walk4
    rest = tuple(zip(steps, keys[1:], strict=True))

    def walk(d: Any) -> bool:
        v = d.get(k0, _MISSING)
        for node_fn, key in rest:
            if type(v) is not dict:
                return node_fn(v)
            v = v.get(key, _MISSING)
        return end(v)

    return walk


def _string_walker(
    keys: tuple[str, ...], end: Predicate, steps: tuple[Predicate, ...], strings: frozenset[str]
) -> Predicate:
    k0 = keys[0]
    if len(keys) == 1:

        def walk1(d: Any) -> bool:
            v = d.get(k0, _MISSING)
            if type(v) is str:
                return v in strings
            return end(v)

        return walk1
    if len(keys) == 2:
        (s0,), k1 = steps, keys[1]

        def walk2(d: Any) -> bool:
            v = d.get(k0, _MISSING)
            if type(v) is not dict:
                return s0(v)
            v = v.get(k1, _MISSING)
            if type(v) is str:
                return v in strings
            return end(v)

        return walk2
    if len(keys) == 3:
        (s0, s1), (k1, k2) = steps, keys[1:]

        def walk3(d: Any) -> bool:
            v = d.get(k0, _MISSING)
            if type(v) is not dict:
                return s0(v)
            v = v.get(k1, _MISSING)
            if type(v) is not dict:
                return s1(v)
            v = v.get(k2, _MISSING)
            if type(v) is str:
                return v in strings
            return end(v)

        return walk3
    if len(keys) == 4:
        (s0, s1, s2), (k1, k2, k3) = steps, keys[1:]

        def walk4(d: Any) -> bool:
            v = d.get(k0, _MISSING)
            if type(v) is not dict:
                return s0(v)
            v = v.get(k1, _MISSING)
            if type(v) is not dict:
                return s1(v)
            v = v.get(k2, _MISSING)
            if type(v) is not dict:
                return s2(v)
            v = v.get(k3, _MISSING)
            if type(v) is str:
                return v in strings
            return end(v)

        return walk4
    rest = tuple(zip(steps, keys[1:], strict=True))

    def walk(d: Any) -> bool:
        v = d.get(k0, _MISSING)
        for node_fn, key in rest:
            if type(v) is not dict:
                return node_fn(v)
            v = v.get(key, _MISSING)
        if type(v) is str:
            return v in strings
        return end(v)

    return walk


def _compile_trie(node: _Trie) -> _Compiled:
    if node.compiled is None:
        node.compiled = _compile_node(node)
    return node.compiled


def _compile_node(node: _Trie) -> _Compiled:
    children: list[_Child] = []
    empty_ok = True
    absence = False
    # Leaves first (cheap, usually selective), then deeper objects; keys break ties.
    for key in sorted(node.children, key=lambda k: (node.children[k].leaf is None, k)):
        child = node.children[key]
        compiled = _compile_trie(child)
        empty_ok = empty_ok and compiled.empty_ok
        absence = absence or compiled.absence
        keys = [key]
        steps: list[Predicate] = []
        # Collapse chains of objects with a single field into one walk.
        while compiled.obj is not None and len(child.children) == 1:
            ((next_key, next_child),) = child.children.items()
            steps.append(compiled.fn)
            keys.append(next_key)
            child = next_child
            compiled = _compile_trie(child)
        strings = child.leaf.string_set() if child.leaf and not child.children else None
        children.append((tuple(keys), compiled.fn, tuple(steps), strings))
    leaf = node.leaf
    if not children:
        assert leaf is not None
        return _Compiled(_leaf_fn(leaf), leaf.absent_ok, leaf.absent_ok, None)
    obj = _object_fn(children)
    if leaf is None:
        return _Compiled(_object_node(obj, empty_ok, absence), empty_ok, absence, obj)
    # A path that is both a value and an object (only possible by merging $or branches):
    # arrays there are left to the faithful search.
    test = leaf.value_test()
    leaf_absent, objects_empty = leaf.absent_ok, empty_ok

    def mixed(v: Any) -> bool:
        kind = type(v)
        if kind is list:
            if v:
                raise _NeedFaithful
            return leaf_absent and objects_empty
        if kind is dict:
            return leaf_absent and obj(v)
        if v is _MISSING:
            return leaf_absent and objects_empty
        return test(v) and objects_empty

    return _Compiled(mixed, leaf_absent and objects_empty, True, None)


def _object_node(obj: Predicate, empty_ok: bool, absence: bool) -> Predicate:
    def in_list(values: list[Any]) -> bool:
        stack = [values]  # nested arrays are flattened without recursion
        while stack:
            for item in stack.pop():
                kind = type(item)
                if kind is dict:
                    if obj(item):
                        return True
                elif kind is list:
                    stack.append(item)
        return False

    if absence:

        def in_list_with_absence(values: list[Any]) -> bool:
            for item in values:
                if type(item) is dict or type(item) is list:
                    raise _NeedFaithful
            return empty_ok

        def object_node_absence(v: Any) -> bool:
            if type(v) is dict:
                return obj(v)
            if type(v) is list:
                return in_list_with_absence(v)
            return empty_ok

        return object_node_absence

    def object_node(v: Any) -> bool:
        if type(v) is dict:
            return obj(v)
        if type(v) is list:
            return in_list(v)
        return empty_ok

    return object_node


# ---------------------------------------------------------------------------------------------
# Faithful matcher (event-ruler's search, for exists:false under arrays of objects)

_Field = tuple[tuple[str, ...], Predicate, bool]  # path, value test, exists:false allowed


def _occurrences(
    event: dict[str, Any], path: tuple[str, ...], bound: dict[tuple[Any, ...], int]
) -> Iterator[tuple[Any, dict[tuple[Any, ...], int]]]:
    """Leaf values at `path` with the array elements they come from, consistent with `bound`.

    An array is identified by where it sits in the record (keys and indexes from the root);
    `bound` and the yielded memberships map such a location to an element index.
    """
    depth_end = len(path)
    Item = tuple[Any, int, tuple[Any, ...], dict[tuple[Any, ...], int]]
    stack: list[Item] = [(event, 0, (), {})]
    while stack:
        value, depth, where, membership = stack.pop()
        kind = type(value)
        if kind is dict:
            if depth < depth_end and path[depth] in value:
                key = path[depth]
                stack.append((value[key], depth + 1, (*where, key), membership))
        elif kind is list:
            pinned = bound.get(where)
            if pinned is not None and depth < depth_end:
                # Inside the path only objects and arrays lead on: go straight to the element.
                if pinned < len(value) and type(value[pinned]) in (dict, list):
                    item_where = (*where, pinned)
                    stack.append((value[pinned], depth, item_where, {**membership, where: pinned}))
                continue
            for index, item in enumerate(value):
                item_kind = type(item)
                if item_kind is list or (item_kind is dict and depth < depth_end):
                    if pinned is None or pinned == index:
                        stack.append((item, depth, (*where, index), {**membership, where: index}))
                elif item_kind is not dict and depth == depth_end:
                    yield item, membership  # scalars in an array carry no membership
        elif depth == depth_end:
            yield value, membership


def _faithful_search(
    fields: tuple[_Field, ...], index: int, event: Any, bound: dict[Any, int]
) -> bool:
    if index == len(fields):
        return True
    path, test, absent_ok = fields[index]
    found = False
    for value, membership in _occurrences(event, path, bound):
        found = True
        if test(value) and _faithful_search(fields, index + 1, event, {**bound, **membership}):
            return True
    return not found and absent_ok and _faithful_search(fields, index + 1, event, bound)


# ---------------------------------------------------------------------------------------------
# Public API


def _compile_branch(branch: _Branch) -> Predicate:
    trie = _Trie()
    for path, leaf in branch.values():
        node = trie
        for key in path:
            node = node.children.setdefault(key, _Trie())
        node.leaf = leaf
    root = _compile_trie(trie)
    assert root.obj is not None
    fast = root.obj
    if not root.absence:
        return fast
    fields = tuple(
        (path, leaf.value_test(), leaf.absent_ok)
        for name, (path, leaf) in sorted(branch.items(), key=lambda item: _utf16_key(item[0]))
    )

    def with_fallback(e: Any) -> bool:
        try:
            return fast(e)
        except _NeedFaithful:
            return _faithful_search(fields, 0, e, {})

    return with_fallback


def _branches(pattern: Any, path: str) -> list[Predicate]:
    if isinstance(pattern, str):
        try:
            pattern = json.loads(pattern)
        except ValueError as exc:
            raise ConfigError(
                path, f"a filter pattern must be an object or its JSON text; not valid JSON: {exc}"
            ) from None
    elif (
        isinstance(pattern, dict) and len(pattern) == 1 and isinstance(pattern.get("Pattern"), str)
    ):
        # A Lambda FilterCriteria entry pasted whole: {"Pattern": "<json>"}.
        return _branches(pattern["Pattern"], _join(path, "Pattern"))
    if not isinstance(pattern, dict):
        raise ConfigError(path, f"a filter pattern must be an object, got {_describe(pattern)}")
    root = _parse_object(pattern, path, in_or=False)
    branches = _expand(root, ())
    for branch in branches:
        if len(branch) > MAX_FIELDS_PER_BRANCH:
            raise ConfigError(
                path,
                f"a pattern may constrain at most {MAX_FIELDS_PER_BRANCH} fields"
                " per $or combination",
            )
    return [_compile_branch(branch) for branch in branches]


def _any(predicates: list[Predicate]) -> Callable[[Record], bool]:
    """OR the branch predicates (which expect a dict) into one record predicate."""
    if len(predicates) == 1:
        (only,) = predicates
        return lambda e: type(e) is dict and only(e)
    if len(predicates) == 2:
        first, second = predicates
        return lambda e: type(e) is dict and (first(e) or second(e))
    frozen = tuple(predicates)

    def any_predicate(e: Record) -> bool:
        if type(e) is not dict:
            return False
        for predicate in frozen:
            if predicate(e):
                return True
        return False

    return any_predicate


def compile_pattern(pattern: Any, *, path: str = "filters[0]") -> Callable[[Record], bool]:
    """Validate one filter pattern and compile it into a record predicate.

    Args:
        pattern: An event pattern as a dict, e.g. ``{"eventName": ["INSERT"]}``.  The JSON text
            of a pattern and a pasted Lambda ``{"Pattern": "<json>"}`` entry are accepted too.
        path: Where the pattern sits in the configuration, used in error messages.

    Returns:
        A function that tells whether a record (a Lambda DynamoDB event record) matches.

    Raises:
        ConfigError: The pattern is not valid; ``path`` names the offending part.
    """
    return _any(_branches(pattern, path))


def compile_filters(
    patterns: list[Any] | None, *, path: str = "filters"
) -> Callable[[Record], bool] | None:
    """Compile a sink's ``filters:`` list; a record passes when any pattern matches it.

    Args:
        patterns: The filter patterns, or None when the sink has no ``filters:`` key.
        path: Where the list sits in the configuration, used in error messages.

    Returns:
        None when ``patterns`` is None (every record passes), else the OR of the patterns.

    Raises:
        ConfigError: ``patterns`` is empty (Lambda's FilterCriteria needs at least one
            filter) or a pattern is invalid.
    """
    if patterns is None:
        return None
    if not isinstance(patterns, list):
        raise ConfigError(path, f"must be an array of filter patterns, got {_describe(patterns)}")
    if not patterns:
        raise ConfigError(
            path, "must hold at least one pattern; leave filters out to pass every record"
        )
    predicates: list[Predicate] = []
    for index, pattern in enumerate(patterns):
        predicates.extend(_branches(pattern, f"{path}[{index}]"))
    return _any(predicates)


def matches(pattern: Any, event: Any) -> bool:
    """Tell whether ``event`` matches ``pattern``, compiling the pattern on the fly.

    Args:
        pattern: An event pattern (see `compile_pattern`).
        event: A record or any JSON-like value; anything but an object never matches.

    Returns:
        True when the event matches.

    Raises:
        ConfigError: The pattern is not valid.
    """
    return compile_pattern(pattern, path="pattern")(event)
