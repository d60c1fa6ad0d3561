"""The filter pattern parser and validator: a pattern is checked with event-ruler's rules
(JsonRuleCompiler's), each field's value array gathered into a ``Leaf``, and the whole
expanded into branches, one per combination of ``$or`` alternatives (``expand``); every
error is a ``ConfigError`` that names the offending part."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, Final

from fanout.errors import ConfigError
from fanout.filters.text import (
    Predicate,
    any_of,
    ignore_case_equals,
    ignore_case_prefix,
    ignore_case_suffix,
    parse_wildcard,
    prefix_test,
    suffix_test,
    wildcard_test,
)
from fanout.filters.values import (
    Leaf,
    as_float,
    aws_number,
    describe,
    extension_number,
    extension_test,
    is_number,
    parse_ip,
    parse_range,
    range_test,
)

EXTENSION_OPERATORS: Final = frozenset({"fanout-numeric"})
"""Operators fanout adds to the AWS language; AWS rejects patterns that use them."""

MAX_OR_BRANCHES: Final = 1024
"""At most this many $or combinations per pattern (a fanout limit against blow-ups)."""

MAX_FIELDS_PER_BRANCH: Final = 256
"""event-ruler's limit on the fields of one rule (after $or expansion)."""

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
_INT_RE: Final = re.compile(r"[+-]?[0-9]+")
_PLAIN_KEY_RE: Final = re.compile(r"[^.\[\]\s\"]+")


# ---------------------------------------------------------------------------------------------
# Paths in error messages


def join(path: str, key: str) -> str:
    if _PLAIN_KEY_RE.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


class _Object:
    __slots__ = ("fields", "ors", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.fields: list[tuple[str, Leaf | _Object]] = []
        self.ors: list[tuple[str, list[_Object]]] = []


# ---------------------------------------------------------------------------------------------
# Validation (JsonRuleCompiler's rules)


def parse_object(value: Any, path: str, in_or: bool) -> _Object:
    if not isinstance(value, dict):
        raise ConfigError(path, f"must be an object, got {describe(value)}")
    if not value:
        raise ConfigError(path, "empty objects are not allowed")
    node = _Object(path)
    for key, child in value.items():
        if not isinstance(key, str):
            raise ConfigError(path, _key_error(key))
        child_path = join(path, key)
        if key == "$or":
            node.ors.append((child_path, _parse_or(child, child_path)))
            continue
        if in_or and key in _RESERVED_IN_OR:
            raise ConfigError(
                child_path, f"{key!r} is a reserved word and cannot be a field name inside $or"
            )
        if isinstance(child, dict):
            node.fields.append((key, parse_object(child, child_path, in_or)))
        elif isinstance(child, list):
            node.fields.append((key, _parse_values(child, child_path)))
        else:
            raise ConfigError(
                child_path,
                f"must be an object or an array of values, got {describe(child)};"
                f" put values in brackets, e.g. [{json.dumps(child, default=str)}]",
            )
    return node


def _key_error(key: Any) -> str:
    message = f"field names must be strings, got {describe(key)}"
    if key is None:
        return message + ' (YAML reads an unquoted NULL, null or ~ as null: write "NULL")'
    if isinstance(key, bool):
        return message + " (YAML reads unquoted on/off/yes/no/true/false as booleans: quote it)"
    return message + " (quote the name)"


def _parse_or(value: Any, path: str) -> list[_Object]:
    if not isinstance(value, list):
        raise ConfigError(path, f"$or must be an array of objects, got {describe(value)}")
    if len(value) < 2:
        raise ConfigError(path, "$or needs at least 2 objects")
    branches = []
    for index, branch in enumerate(value):
        branch_path = f"{path}[{index}]"
        if not isinstance(branch, dict):
            raise ConfigError(branch_path, f"$or may only hold objects, got {describe(branch)}")
        branches.append(parse_object(branch, branch_path, in_or=True))
    return branches


def _parse_values(values: list[Any], path: str) -> Leaf:
    if not values:
        raise ConfigError(path, "empty arrays are not allowed")
    leaf = Leaf(path)
    for index, item in enumerate(values):
        item_path = f"{path}[{index}]"
        if item is None or isinstance(item, bool | str):
            leaf.add_literal(item)
        elif is_number(item):
            if type(item) is float and not math.isfinite(item):
                raise ConfigError(item_path, f"number {item!r} is not allowed")
            leaf.add_literal(item)
        elif isinstance(item, dict):
            _parse_operator(item, item_path, leaf)
        else:
            raise ConfigError(
                item_path,
                f"match values must be strings, numbers, true, false, null or an operator object,"
                f" got {describe(item)}",
            )
    return leaf


def _string_operand(value: Any, path: str, what: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"{what} must be a string, got {describe(value)}")
    return value


def _ignore_case_operand(value: dict[Any, Any], path: str, what: str) -> str:
    if len(value) != 1 or "equals-ignore-case" not in value:
        raise ConfigError(
            path,
            f'{what} takes a string or {{"equals-ignore-case": string}},'
            f" got keys {sorted(map(str, value))}",
        )
    return _string_operand(
        value["equals-ignore-case"], join(path, "equals-ignore-case"), "the value"
    )


def _parse_operator(item: dict[Any, Any], path: str, leaf: Leaf) -> None:
    if not item:
        raise ConfigError(path, 'an operator object needs one operator, e.g. {"prefix": "x"}')
    if len(item) != 1:
        raise ConfigError(
            path,
            "an operator object holds exactly one operator,"
            f" got {', '.join(sorted(map(str, item)))}",
        )
    ((name, arg),) = item.items()
    op_path = join(path, str(name))
    if name == "exactly":
        leaf.strings.add(_string_operand(arg, op_path, "exactly"))
    elif name == "prefix":
        if isinstance(arg, dict):
            text = _ignore_case_operand(arg, op_path, "prefix")
            leaf.string_tests.append(ignore_case_prefix(text))
        else:
            leaf.prefixes.append(_string_operand(arg, op_path, "prefix"))
    elif name == "suffix":
        if isinstance(arg, dict):
            text = _ignore_case_operand(arg, op_path, "suffix")
            leaf.string_tests.append(ignore_case_suffix(text))
        else:
            leaf.suffixes.append(_string_operand(arg, op_path, "suffix"))
    elif name == "equals-ignore-case":
        text = _string_operand(arg, op_path, "equals-ignore-case")
        if text.isascii():
            leaf.ignore_case.add(text.lower())
        else:
            leaf.string_tests.append(ignore_case_equals(text))
    elif name == "wildcard":
        text = _string_operand(arg, op_path, "wildcard")
        leaf.string_tests.append(wildcard_test(parse_wildcard(text, op_path)))
    elif name == "anything-but":
        test, excluded = _parse_anything_but(arg, op_path)
        leaf.any_tests.append(test)
        if excluded is not None:
            leaf.excluded.append(excluded)
    elif name == "numeric":
        parsed = parse_range(arg, op_path, aws_number)
        if isinstance(parsed, tuple):
            leaf.number_tests.append(range_test(*parsed))
        else:
            leaf.numbers.add(parsed)
    elif name == "fanout-numeric":
        parsed = parse_range(arg, op_path, extension_number)
        if isinstance(parsed, tuple):
            leaf.any_tests.append(extension_test(*parsed))
        else:
            leaf.any_tests.append(extension_test(parsed, False, parsed, False))
    elif name == "exists":
        if arg is True:
            leaf.exists = True
        elif arg is False:
            leaf.absent_ok = True
        else:
            raise ConfigError(op_path, f"exists takes true or false, got {describe(arg)}")
    elif name == "cidr":
        leaf.string_tests.append(_parse_cidr(arg, op_path))
    else:
        raise ConfigError(
            op_path, f"unknown operator {str(name)!r}; expected one of {', '.join(_OPERATORS)}"
        )


def _not_among(excluded: frozenset[str]) -> Predicate:
    return lambda v: not (type(v) is str and v in excluded)


def _parse_anything_but(arg: Any, path: str) -> tuple[Predicate, frozenset[str] | None]:
    """The test of an anything-but, and its strings when it excludes plain strings."""
    if isinstance(arg, str):
        excluded = frozenset({arg})
        return _not_among(excluded), excluded
    if is_number(arg):
        return _anything_but_numbers([aws_number(arg, path)]), None
    if isinstance(arg, list):
        if not arg:
            raise ConfigError(path, "anything-but needs at least one value")
        if all(isinstance(v, str) for v in arg):
            excluded = frozenset(arg)
            return _not_among(excluded), excluded
        if all(is_number(v) for v in arg):
            numbers = [aws_number(v, f"{path}[{i}]") for i, v in enumerate(arg)]
            return _anything_but_numbers(numbers), None
        for index, value in enumerate(arg):
            if not (isinstance(value, str) or is_number(value)):
                raise ConfigError(
                    f"{path}[{index}]",
                    f"anything-but lists hold strings or numbers, got {describe(value)}",
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
        op_path = join(path, str(name))
        if name not in ("prefix", "suffix", "equals-ignore-case", "wildcard"):
            raise ConfigError(
                op_path,
                f"unsupported anything-but operator {str(name)!r};"
                " expected prefix, suffix, equals-ignore-case or wildcard",
            )
        texts = _anything_but_strings(operand, op_path, str(name))
        tests: list[Callable[[str], bool]]
        if name == "prefix":
            tests = [prefix_test(texts)]
        elif name == "suffix":
            tests = [suffix_test(texts)]
        elif name == "equals-ignore-case":
            tests = [ignore_case_equals(t) for t in texts]
        else:
            tests = [
                wildcard_test(
                    parse_wildcard(t, op_path if isinstance(operand, str) else f"{op_path}[{i}]")
                )
                for i, t in enumerate(texts)
            ]
        excluded_test = any_of(tests)
        return (lambda v: not (type(v) is str and excluded_test(v))), None
    raise ConfigError(
        path, f"anything-but takes a string, a number, an array or an object, got {describe(arg)}"
    )


def _anything_but_numbers(values: list[float]) -> Predicate:
    excluded = frozenset(values)

    def test(v: Any) -> bool:
        kind = type(v)
        if kind is float or kind is int:
            return as_float(v) not in excluded
        return True

    return test


def _anything_but_strings(operand: Any, path: str, name: str) -> list[str]:
    values = [operand] if isinstance(operand, str) else operand
    if not isinstance(values, list):
        raise ConfigError(
            path, f"{name} takes a string or an array of strings, got {describe(operand)}"
        )
    if not values:
        raise ConfigError(path, "anything-but needs at least one value")
    for index, value in enumerate(values):
        item_path = path if isinstance(operand, str) else f"{path}[{index}]"
        if not isinstance(value, str):
            raise ConfigError(item_path, f"{name} values must be strings, got {describe(value)}")
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
    ip = parse_ip(parts[0])
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
        parsed = parse_ip(s)
        return parsed is not None and parsed[0] == size and low <= parsed[1] <= high

    return in_block


# ---------------------------------------------------------------------------------------------
# $or expansion into branches


Branch = dict[str, tuple[tuple[str, ...], Leaf]]  # flat dotted name -> (path, leaf)


def expand(node: _Object, prefix: tuple[str, ...]) -> list[Branch]:
    """The branches of a pattern: one per combination of $or alternatives."""
    branches: list[Branch] = [{}]
    for key, child in node.fields:
        path = (*prefix, key)
        if isinstance(child, Leaf):
            for branch in branches:
                _put(branch, path, child)
        else:
            branches = _product(branches, expand(child, path), child.path)
    for or_path, alternatives in node.ors:
        options = [b for alternative in alternatives for b in expand(alternative, prefix)]
        branches = _product(branches, options, or_path)
    return branches


def _put(branch: Branch, path: tuple[str, ...], leaf: Leaf) -> None:
    name = ".".join(path)
    if name in branch:
        raise ConfigError(
            leaf.path,
            f"field {name!r} is already constrained in this pattern"
            " (through $or or a dotted field name); event-ruler rejects duplicate paths",
        )
    branch[name] = (path, leaf)


def _product(left: list[Branch], right: list[Branch], path: str) -> list[Branch]:
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
