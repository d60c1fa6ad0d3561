"""Property tests: the compiled filters agree with a plain model of event-ruler."""

from __future__ import annotations

import decimal
import ipaddress
import math
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.errors import ConfigError
from fanout.filters import compile_filters, compile_pattern

# ---------------------------------------------------------------------------------------------
# Reference model.
#
# Written to mirror event-ruler's own steps, not fanout's code: the event is flattened into
# (dotted name, value, array membership) fields like Event.java; the rule is expanded into
# sub-rules like JsonRuleCompiler; a sub-rule's fields are tried in name order with the
# array-consistency check of ACFinder / StructuredFinder; values are compared the way the
# ByteMachine sees them (strings wrapped in quotes).

RESERVED = {
    "exactly", "equals-ignore-case", "prefix", "suffix", "anything-but", "exists", "wildcard",
    "numeric", "cidr", "=", "<", "<=", ">", ">=", "regex", "not-wildcard",
    "not-equals-ignore-case", "date-after", "date-on-or-after", "date-before",
    "date-on-or-before", "in-date-range", "ip-address-in-range", "ip-address-not-in-range",
}  # fmt: skip


class Invalid(Exception):
    """The reference refuses the rule."""


def ref_ip(text: str) -> tuple[int, int] | None:
    if re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+", text):
        try:
            return 4, int(ipaddress.IPv4Address(text))
        except ValueError:
            return None
    if re.fullmatch(r"[0-9a-fA-F:]*:[0-9a-fA-F:]*", text):
        try:
            address = ipaddress.IPv6Address(text)
        except ValueError:
            return None
        if address.ipv4_mapped is not None:
            return 4, int(address.ipv4_mapped)
        return 16, int(address)
    return None


def flatten(event: dict[str, Any]) -> list[tuple[str, Any, dict[int, int]]]:
    """Event.java: leaves with their dotted name and {array id: element index}."""
    fields: list[tuple[str, Any, dict[int, int]]] = []
    counter = [0]

    def visit(value: Any, name: str, membership: dict[int, int]) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                visit(child, f"{name}.{key}" if name else key, membership)
        elif isinstance(value, list):
            array_id = counter[0]
            counter[0] += 1
            for index, element in enumerate(value):
                if isinstance(element, dict | list):
                    visit(element, name, {**membership, array_id: index})
                else:
                    fields.append((name, element, membership))
        else:
            fields.append((name, value, membership))

    visit(event, "", {})
    return fields


def is_num(value: Any) -> bool:
    return type(value) in (int, float)


def as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def case_alts(text: str) -> list[set[str]]:
    return [{c} if ord(c) > 0xFFFF else {c.lower(), c.upper()} for c in text]


def alts_match(alts: list[set[str]], s: str, i: int, j: int, to_end: bool) -> bool:
    if i == len(alts):
        return j == len(s) or not to_end
    return any(
        s.startswith(option, j) and alts_match(alts, s, i + 1, j + len(option), to_end)
        for option in alts[i]
    )


def glob(tokens: list[Any], s: str) -> bool:
    """tokens: characters and None for '*'; classic recursive glob."""
    if not tokens:
        return not s
    if tokens[0] is None:
        return any(glob(tokens[1:], s[k:]) for k in range(len(s) + 1))
    return bool(s) and s[0] == tokens[0] and glob(tokens[1:], s[1:])


def wildcard_tokens(text: str) -> list[Any]:
    tokens: list[Any] = []
    i = 0
    while i < len(text):
        if text[i] == "*":
            if text[i + 1 : i + 2] == "*":
                raise Invalid("consecutive")
            tokens.append(None)
        elif text[i] == "\\":
            if text[i + 1 : i + 2] not in ("*", "\\"):
                raise Invalid("escape")
            tokens.append(text[i + 1])
            i += 1
        else:
            tokens.append(text[i])
        i += 1
    return tokens


def ddb_decimal(value: Any) -> decimal.Decimal | None:
    if type(value) is int:
        return decimal.Decimal(value)
    if type(value) is float:
        return decimal.Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, str) and re.fullmatch(
        r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", value
    ):
        return decimal.Decimal(value)
    return None


def in_range(x: Any, spec: list[Any]) -> bool:
    ops = {"=": x.__eq__, "<": x.__lt__, "<=": x.__le__, ">": x.__gt__, ">=": x.__ge__}
    return all(ops[spec[k]](spec[k + 1]) for k in range(0, len(spec), 2))


def value_matches(op: tuple[Any, ...], v: Any) -> bool:
    """Does one pattern element accept the present leaf value v?"""
    kind = op[0]
    quoted = '"' + v + '"' if isinstance(v, str) else None
    if kind == "string":
        ip = ref_ip(op[1])
        if ip is not None:
            return isinstance(v, str) and ref_ip(v) == ip
        return bool(quoted == '"' + op[1] + '"')
    if kind == "exactly":
        return bool(quoted == '"' + op[1] + '"')
    if kind == "number":
        if not is_num(v):
            return False
        a, b = as_float(op[1]), as_float(v)
        return (a is not None and a == b) or (a is None and v == op[1])
    if kind == "literal":
        return type(v) is type(op[1]) and bool(v == op[1])
    if kind == "exists":
        return bool(op[1])
    if kind == "prefix":
        return quoted is not None and quoted.startswith('"' + op[1])
    if kind == "suffix":
        return quoted is not None and quoted.endswith(op[1] + '"')
    if kind == "eic":
        return quoted is not None and alts_match(case_alts('"' + op[1] + '"'), quoted, 0, 0, True)
    if kind == "prefix-eic":
        return quoted is not None and alts_match(case_alts('"' + op[1]), quoted, 0, 0, False)
    if kind == "suffix-eic":
        alts = case_alts(op[1] + '"')
        return quoted is not None and any(
            alts_match(alts, quoted, 0, k, True) for k in range(len(quoted) + 1)
        )
    if kind == "wildcard":
        return isinstance(v, str) and glob(wildcard_tokens(op[1]), v)
    if kind == "numeric":
        x = as_float(v) if is_num(v) else None
        return x is not None and in_range(x, op[1])
    if kind == "fanout-numeric":
        d = ddb_decimal(v)
        bounds = [ddb_decimal(b) if k % 2 else b for k, b in enumerate(op[1])]
        return d is not None and in_range(d, bounds)
    if kind == "cidr":
        ip = ref_ip(v) if isinstance(v, str) else None
        return ip is not None and ip[0] == op[1] and op[2] <= ip[1] <= op[3]
    if kind == "anything-but":
        inner = op[1]
        if isinstance(inner, list) and inner and is_num(inner[0]):
            return not (is_num(v) and as_float(v) in {as_float(n) for n in inner})
        if isinstance(inner, list):
            return not (isinstance(v, str) and v in inner)
        ((sub, values),) = inner.items()
        values = [values] if isinstance(values, str) else values
        names = {"equals-ignore-case": "eic"}
        return not any(value_matches((names.get(sub, sub), t), v) for t in values)
    raise AssertionError(op)


def parse_element(item: Any) -> tuple[Any, ...]:
    if isinstance(item, str):
        return ("string", item)
    if item is None or isinstance(item, bool):
        return ("literal", item)
    if is_num(item):
        return ("number", item)
    ((name, arg),) = item.items()
    if name in ("prefix", "suffix") and isinstance(arg, dict):
        return (f"{name}-eic", arg["equals-ignore-case"])
    if name == "equals-ignore-case":
        return ("eic", arg)
    if name == "wildcard":
        wildcard_tokens(arg)
        return ("wildcard", arg)
    if name in ("numeric", "fanout-numeric"):
        return (name, arg)
    if name == "cidr":
        net = ipaddress.ip_network(arg, strict=False)
        size = 4 if net.version == 4 else 16
        return ("cidr", size, int(net.network_address), int(net.broadcast_address))
    if name == "anything-but":
        if isinstance(arg, dict):
            return ("anything-but", arg)
        return ("anything-but", arg if isinstance(arg, list) else [arg])
    return (name, arg)


def expand(rule: dict[str, Any], prefix: str) -> list[dict[str, list[Any]]]:
    """JsonRuleCompiler: a rule becomes sub-rules, one per choice of $or branches."""
    subs: list[dict[str, list[Any]]] = [{}]
    for key, value in rule.items():
        if key == "$or":
            options = [s for branch in value for s in expand(branch, prefix)]
        elif isinstance(value, dict):
            options = expand(value, f"{prefix}{key}.")
        else:
            options = [{f"{prefix}{key}": [parse_element(v) for v in value]}]
        merged = []
        for a in subs:
            for b in options:
                if set(a) & set(b):
                    raise Invalid("duplicate path")
                merged.append({**a, **b})
        subs = merged
    return subs


def consistent(a: dict[int, int], b: dict[int, int]) -> bool:
    return all(a.get(k, v) == v for k, v in b.items())


def sub_rule_matches(sub: dict[str, list[Any]], fields: list[Any]) -> bool:
    names = sorted(sub, key=lambda n: n.encode("utf-16-be", "surrogatepass"))

    def search(i: int, bound: dict[int, int]) -> bool:
        if i == len(names):
            return True
        ops = sub[names[i]]
        candidates = [f for f in fields if f[0] == names[i] and consistent(bound, f[2])]
        for _, value, membership in candidates:
            for op in ops:
                if op[0] != "exists" or op[1]:
                    if value_matches(op, value) and search(i + 1, {**bound, **membership}):
                        return True
        if not candidates and ("exists", False) in ops:
            return search(i + 1, bound)
        return False

    return search(0, {})


def reference(rule: dict[str, Any], event: Any) -> bool:
    if not isinstance(event, dict):
        return False
    fields = flatten(event)
    return any(sub_rule_matches(sub, fields) for sub in expand(rule, ""))


# ---------------------------------------------------------------------------------------------
# Strategies

KEYS = st.sampled_from(["a", "b", "c", "S", "N"])
STRINGS = st.sampled_from(
    ["", "x", "X", "xy", "xY", "yx", "a*b", 'q"', "ß", "SS", "5", "1.5", "10.0.0.7", "::1", "İ"]
)
NUMBERS = st.sampled_from([0, 1, -1, 5, 2.5, 5.0, 1e20, -0.0, 10**30])
SCALARS = st.one_of(STRINGS, NUMBERS, st.sampled_from([True, False, None]))

NUMERIC_SPECS = st.sampled_from(
    [["=", 5], [">", 0], [">=", 5], ["<", 1], ["<=", 0], [">", 0, "<=", 5], [">=", -1, "<", 2.5]]
)
OPERATORS = st.one_of(
    st.builds(lambda s: {"prefix": s}, STRINGS),
    st.builds(lambda s: {"suffix": s}, STRINGS),
    st.builds(lambda s: {"prefix": {"equals-ignore-case": s}}, STRINGS),
    st.builds(lambda s: {"suffix": {"equals-ignore-case": s}}, STRINGS),
    st.builds(lambda s: {"equals-ignore-case": s}, STRINGS),
    st.builds(lambda s: {"exactly": s}, STRINGS),
    st.builds(lambda s: {"wildcard": s}, st.sampled_from(["*", "x*", "*y", "x*y", "a\\*b", "*S*"])),
    st.builds(lambda s: {"numeric": s}, NUMERIC_SPECS),
    st.builds(lambda s: {"fanout-numeric": s}, NUMERIC_SPECS),
    st.builds(lambda b: {"exists": b}, st.booleans()),
    st.builds(lambda s: {"cidr": s}, st.sampled_from(["10.0.0.0/24", "::/1", "10.0.0.9/30"])),
    st.builds(
        lambda v: {"anything-but": v},
        st.one_of(
            STRINGS,
            st.lists(STRINGS, min_size=1, max_size=2),
            st.lists(NUMBERS, min_size=1, max_size=2),
            st.builds(lambda s: {"prefix": s}, STRINGS.filter(bool)),
            st.builds(lambda s: {"suffix": s}, STRINGS.filter(bool)),
            st.builds(lambda s: {"equals-ignore-case": [s]}, STRINGS),
            st.builds(lambda s: {"wildcard": s}, st.sampled_from(["x*", "*S"])),
        ),
    ),
)
VALUE_LISTS = st.lists(st.one_of(SCALARS, OPERATORS), min_size=1, max_size=3)


def objects(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    children: st.SearchStrategy[Any] = VALUE_LISTS
    if depth > 0:
        children = st.one_of(VALUE_LISTS, objects(depth - 1))
    fields = st.dictionaries(KEYS, children, min_size=1, max_size=3)
    if depth == 0:
        return fields
    return st.one_of(
        fields,
        st.builds(
            lambda f, ors: {**f, "$or": ors},
            st.dictionaries(KEYS, children, max_size=2),
            st.lists(objects(depth - 1), min_size=2, max_size=2),
        ),
    )


PATTERNS = objects(2)
EVENTS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=10,
).map(lambda v: v if isinstance(v, dict) else {"a": v})


def _literals(values: list[Any]) -> list[Any]:
    """Scalars a value list mentions, to build events that come close to matching."""
    found: list[Any] = []
    for item in values:
        if isinstance(item, dict):
            for arg in item.values():
                stack = [arg]
                while stack:
                    x = stack.pop()
                    if isinstance(x, dict):
                        stack.extend(x.values())
                    elif isinstance(x, list):
                        stack.extend(x)
                    elif not isinstance(x, bool) and x is not None:
                        found.append(x)
        else:
            found.append(item)
    return found


@st.composite
def near_events(draw: st.DrawFn, pattern: dict[str, Any]) -> dict[str, Any]:
    """An event shaped like the pattern, with values taken from it, arrays here and there."""

    def value_for(node: Any, repeat: bool = True) -> Any:
        if isinstance(node, dict):
            event: dict[str, Any] = {}
            for key, child in node.items():
                if key == "$or":
                    for branch in child:
                        if draw(st.booleans()):
                            event.update(value_for(branch, repeat=False))
                elif draw(st.integers(0, 5)) != 5:
                    event[key] = value_for(child)
            if repeat and draw(st.integers(0, 3)) == 3:
                return [event, value_for(node, repeat=False)]
            return event
        pool = _literals(node)
        scalar = st.one_of(st.sampled_from(pool), SCALARS) if pool else SCALARS
        if draw(st.integers(0, 4)) == 4:
            return draw(st.lists(scalar, max_size=3))
        return draw(scalar)

    event = value_for(pattern)
    return event if isinstance(event, dict) else {"a": event}


# ---------------------------------------------------------------------------------------------
# Properties


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PATTERNS, st.lists(EVENTS, min_size=1, max_size=4))
def test_compiled_matcher_agrees_with_reference(pattern, events):
    try:
        predicate = compile_pattern(pattern)
    except ConfigError:
        with pytest.raises(Invalid):
            expand(pattern, "")
        return
    for event in events:
        assert predicate(event) is reference(pattern, event), (pattern, event)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_compiled_matcher_agrees_with_reference_on_near_events(data):
    pattern = data.draw(PATTERNS)
    try:
        predicate = compile_pattern(pattern)
    except ConfigError:
        return
    for _ in range(4):
        event = data.draw(near_events(pattern))
        assert predicate(event) is reference(pattern, event), (pattern, event)


@settings(max_examples=100, deadline=None)
@given(st.lists(PATTERNS, min_size=1, max_size=3), EVENTS)
def test_filter_list_is_the_or_of_its_patterns(patterns, event):
    try:
        predicate = compile_filters(patterns)
    except ConfigError:
        return
    assert predicate is not None
    assert predicate(event) is any(reference(p, event) for p in patterns)


JSONISH = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=5),
        st.sampled_from(["prefix", "numeric", "exists", "anything-but", "$or", "<", "="]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(
                st.text(max_size=3),
                st.sampled_from(
                    ["prefix", "suffix", "numeric", "exists", "anything-but", "$or", "cidr",
                     "wildcard", "equals-ignore-case", "fanout-numeric", "exactly"]
                ),
            ),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(JSONISH, st.lists(JSONISH, max_size=3))
def test_no_input_crashes_compiler_or_matcher(pattern, events):
    try:
        predicate = compile_pattern(pattern, path="p")
    except ConfigError as exc:
        error: ConfigError | None = exc
    else:
        error = None
    if error is not None:
        assert error.path.startswith("p")
        return
    for event in events:
        assert predicate(event) in (True, False)
        assert predicate({"a": event, "b": [event]}) in (True, False)


@settings(max_examples=100, deadline=None)
@given(PATTERNS, EVENTS)
def test_matching_does_not_depend_on_key_order(pattern, event):
    def reverse(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: reverse(v) for k, v in reversed(list(value.items()))}
        if isinstance(value, list):
            return [reverse(v) for v in value]
        return value

    try:
        predicate = compile_pattern(pattern)
    except ConfigError:
        return
    assert predicate(event) is compile_pattern(reverse(pattern))(reverse(event))
