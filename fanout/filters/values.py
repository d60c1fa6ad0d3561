"""Value tests of the filter language on one field (the leaf matchers): the hot-path
helpers (numbers as doubles, IP addresses, event-ruler's key order), ``numeric`` ranges,
fanout's ``fanout-numeric`` extension, and ``Leaf``, everything one field's value array
accepts, compiled into one test."""

from __future__ import annotations

import decimal
import ipaddress
import json
import math
import re
from collections.abc import Callable
from typing import Any, Final

from fanout.errors import ConfigError
from fanout.filters.text import Predicate, always, any_of, prefix_test, suffix_test

_IPV4_RE: Final = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
_IPV6_RE: Final = re.compile(r"[0-9a-fA-F:]*:[0-9a-fA-F:]*")
_DDB_NUMBER_RE: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


# ---------------------------------------------------------------------------------------------
# Values in error messages


def describe(value: Any) -> str:
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


def is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


def _quoted_number_hint(value: Any) -> str:
    if isinstance(value, str) and _DDB_NUMBER_RE.fullmatch(value.strip()):
        return " (a quoted number is a string; note that YAML reads 1e3 as a string, write 1.0e+3)"
    return ""


# ---------------------------------------------------------------------------------------------
# Value helpers used on the hot path


def as_float(value: int | float) -> float | None:
    """A JSON number as a finite double, or None (NaN, infinities, huge integers)."""
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def parse_ip(text: str) -> tuple[int, int] | None:
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


def utf16_key(name: str) -> bytes:
    """Sort key equal to Java's String.compareTo order (UTF-16 code units)."""
    return name.encode("utf-16-be", "surrogatepass")


# ---------------------------------------------------------------------------------------------
# Numbers


def range_test(low: Any, low_open: bool, high: Any, high_open: bool) -> Callable[[Any], bool]:
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


def parse_range(
    arg: Any, path: str, convert: Callable[[Any, str], Any]
) -> tuple[Any, bool, Any, bool] | Any:
    """Parse a numeric operand list; returns a value for "=", else (low, open, high, open)."""
    if not isinstance(arg, list):
        raise ConfigError(path, f'must be an array such as [">", 0, "<=", 5], got {describe(arg)}')
    if not arg:
        raise ConfigError(path, 'must not be empty; use e.g. ["=", 5] or [">", 0, "<=", 5]')

    def operator(index: int) -> str:
        op = arg[index]
        if not isinstance(op, str):
            raise ConfigError(
                f"{path}[{index}]", f"expected a comparison operator, got {describe(op)}"
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


def aws_number(value: Any, path: str) -> float:
    if not is_number(value):
        raise ConfigError(
            path, f"must be a number, got {describe(value)}{_quoted_number_hint(value)}"
        )
    number = as_float(value)
    if number is None:
        raise ConfigError(path, f"number {value!r} is not a finite double")
    return number


def _decimal(text: str) -> decimal.Decimal | None:
    try:
        number = decimal.Decimal(text)
    except (decimal.InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def extension_number(value: Any, path: str) -> decimal.Decimal:
    if type(value) is int:
        return decimal.Decimal(value)
    if type(value) is float and math.isfinite(value):
        return decimal.Decimal(repr(value))
    if isinstance(value, str) and _DDB_NUMBER_RE.fullmatch(value):
        number = _decimal(value)
        if number is not None:
            return number
    raise ConfigError(
        path, f"must be a number or a string holding a decimal number, got {describe(value)}"
    )


def extension_test(
    low: decimal.Decimal | None,
    low_open: bool,
    high: decimal.Decimal | None,
    high_open: bool,
) -> Predicate:
    """fanout-numeric: compare a DynamoDB "N" string (or a JSON number) exactly, as a decimal.

    Rounding to a double is monotonic, so when the double of the value differs from the
    double of a bound the comparison is already decided; only ties are settled with Decimal.
    """
    exact = range_test(low, low_open, high, high_open)
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
# One field's value tests together


# The fields of a Leaf that hold its tests; a value passes when any of them accepts it.
_TESTS: Final = (
    "exists",
    "absent_ok",
    "strings",
    "ips",
    "numbers",
    "big_ints",
    "true_ok",
    "false_ok",
    "null_ok",
    "prefixes",
    "suffixes",
    "ignore_case",
    "string_tests",
    "number_tests",
    "any_tests",
)
# Those that accept strings only.
_STRING_TESTS: Final = ("strings", "ips", "prefixes", "suffixes", "ignore_case", "string_tests")


class Leaf:
    """Everything one field's value array accepts, gathered during validation."""

    __slots__ = (
        "absent_ok",
        "any_tests",
        "big_ints",
        "excluded",
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
        # the strings of each anything-but of plain strings among any_tests
        self.excluded: list[frozenset[str]] = []

    def add_literal(self, value: Any) -> None:
        if value is None:
            self.null_ok = True
        elif value is True:
            self.true_ok = True
        elif value is False:
            self.false_ok = True
        elif isinstance(value, str):
            ip = parse_ip(value)  # event-ruler matches IP literals as addresses, not text
            if ip is None:
                self.strings.add(value)
            else:
                self.ips.add(ip)
        else:
            number = as_float(value)
            if number is None:
                if type(value) is int:
                    self.big_ints.add(value)
            else:
                self.numbers.add(number)

    def _has_only(self, *allowed: str) -> bool:
        """True when the field has no test but the ``allowed`` ones (``_TESTS`` names)."""
        return not any(getattr(self, name) for name in _TESTS if name not in allowed)

    def string_set(self) -> frozenset[str] | None:
        """The accepted strings when the field accepts nothing but plain strings."""
        if not self._has_only("strings"):
            return None
        return frozenset(self.strings)

    def excluded_set(self) -> frozenset[str] | None:
        """The excluded strings when the field's one test is anything-but plain strings: a
        string passes unless it is one of them (other values: see ``value_test``)."""
        if len(self.any_tests) != 1 or len(self.excluded) != 1 or not self._has_only("any_tests"):
            return None
        return self.excluded[0]

    def string_test(self) -> Callable[[str], bool] | None:
        """The test of a string value when the field accepts strings only (and needs one)."""
        if not self._has_only(*_STRING_TESTS):
            return None
        tests = self._string_tests()
        if not self.strings and len(tests) == 1:
            return tests[0]
        return self.value_test()

    def _string_tests(self) -> list[Callable[[str], bool]]:
        string_tests = list(self.string_tests)
        if self.prefixes:
            string_tests.append(prefix_test(self.prefixes))
        if self.suffixes:
            string_tests.append(suffix_test(self.suffixes))
        if self.ignore_case:
            folded = frozenset(self.ignore_case)
            string_tests.append(lambda s: s.isascii() and s.lower() in folded)
        ips = frozenset(self.ips)
        if ips:
            string_tests.append(lambda s: parse_ip(s) in ips)
        return string_tests

    def value_test(self) -> Predicate:
        """One predicate for a present (non-object, non-array) value."""
        if self.exists:
            return always
        string_tests = self._string_tests()
        strings = frozenset(self.strings)
        numbers = frozenset(self.numbers)
        big_ints = frozenset(self.big_ints)
        number_tests = tuple(self.number_tests)
        any_tests = tuple(self.any_tests)
        true_ok, false_ok, null_ok = self.true_ok, self.false_ok, self.null_ok
        string_test = any_of(string_tests) if string_tests else None
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
                    return as_float(v) in numbers
                return False

            return numbers_only

        def test(v: Any) -> bool:
            kind = type(v)
            if kind is str:
                if v in strings or (string_test is not None and string_test(v)):
                    return True
            elif kind is int or kind is float:
                number = v if kind is float and math.isfinite(v) else as_float(v)
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
