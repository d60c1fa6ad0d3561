"""One pass over a page for every sink's filter: the records each sink receives.

Each sink's compiled pattern (``fanout.filters.compiler``) walks a record by itself, so with
three filtered sinks a record's ``eventName``, its ``dynamodb`` object and its images are
looked up three times, each time in a separate pass over the page. A page parses into about
13.5 MB of objects, more than a core's cache: each pass meets the records cold.

``compile_split`` writes the sinks' patterns out as one loop over the page instead. A field
read by more than one condition (``eventName``, ``dynamodb``, ``dynamodb.NewImage``, ...)
is read once per record, then every sink's conditions are tested while the record is in
the cache, with no Python call per record and sink. Three sinks filtering on ``eventName``
and one image attribute each: about half the CPU of three passes (docs/performance.md,
section 7).

The loop keeps the compiled patterns' answers exactly:

* only patterns whose every condition needs its field present are written out (no
  ``{"exists": false}``, no path that is both a value and an object): then a field that is
  missing, or an object met as a scalar, fails the condition, as it does in the walker;
* a value is tested by the walker's own leaf function (strings in a plain string list
  inline), so every operator means what it means there;
* an array met on the way to a field needs event-ruler's array consistency: that record is
  decided by every sink's own compiled pattern instead (``_Fallback``);
* any other sink (no plan, e.g. a predicate built by hand) gets its own pass.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Final

from fanout.filters.compiler import MISSING, leaf_fn
from fanout.filters.patterns import Branch
from fanout.records import Record

RecordTest = Callable[[Record], bool]
Split = Callable[[list[Record]], tuple[list[list[Record]], list[Record]]]

# A sink's plan: its branches (any one matching lets a record through), each the fields it
# tests as (path, leaf function, strings, excluded): a string value passes when it is one of
# ``strings`` (a plain string list) or none of ``excluded`` (anything-but plain strings);
# with neither, and for any other value, the leaf function decides.
_Field = tuple[
    tuple[str, ...], Callable[[Any], bool], "frozenset[str] | None", "frozenset[str] | None"
]
_Plan = tuple[tuple[_Field, ...], ...]

_PLANS: weakref.WeakKeyDictionary[RecordTest, _Plan] = weakref.WeakKeyDictionary()


class _Fallback(Exception):
    """Raised by the written-out loop when a record needs the compiled patterns."""


_EMPTY: Final[dict[str, Any]] = {}  # stands for an object that is missing or not an object

# A sink whose patterns test more fields than this (counting every $or combination) gets a
# pass of its own: written out, its conditions would make the loop's source too big.
MAX_PLANNED_FIELDS: Final = 64


def register(predicate: RecordTest, branches: Sequence[Branch], absence: bool) -> None:
    """Remember how ``predicate`` (the OR of ``branches``) can be written out, unless a
    branch needs an absent field (``absence``), which the loop does not model, or it has
    more than ``MAX_PLANNED_FIELDS`` conditions."""
    if absence or sum(len(branch) for branch in branches) > MAX_PLANNED_FIELDS:
        return
    plan = tuple(
        tuple(
            sorted(
                (
                    (path, leaf_fn(leaf), leaf.string_set(), leaf.excluded_set())
                    for path, leaf in branch.values()
                ),
                key=lambda field: (len(field[0]), field[0]),  # shallow fields first: cheap
            )
        )
        for branch in branches
    )
    _PLANS[predicate] = plan


@functools.lru_cache(maxsize=256)
def compile_split(predicates: tuple[RecordTest | None, ...]) -> Split:
    """The function that splits a page into the records each predicate lets through.

    Args:
        predicates: one per sink, in order; None lets every record through.

    Returns:
        ``split(records)``: one list per predicate, in order, each in the page's order (for
        a None predicate it is ``records`` itself); and the records no predicate lets
        through when every predicate is written out (else an empty list).
    """
    planned: list[tuple[int, RecordTest]] = []
    others: list[tuple[int, RecordTest]] = []
    for i, predicate in enumerate(predicates):
        if predicate is not None:
            (planned if predicate in _PLANS else others).append((i, predicate))
    # Every sink written out: the loop also gathers the records no sink takes.
    unrouted = bool(planned) and len(planned) == len(predicates)
    loop = _written_out([p for _, p in planned], unrouted) if planned else None

    def split(records: list[Record]) -> tuple[list[list[Record]], list[Record]]:
        parts: list[list[Record]] = [records] * len(predicates)
        rest: list[Record] = []
        if loop is not None:
            found = loop(records)
            if unrouted:
                rest = found.pop()
            for (i, _), part in zip(planned, found, strict=True):
                parts[i] = part
        for i, predicate in others:
            parts[i] = list(filter(predicate, records))
        return parts, rest

    return split


class _Node:
    """A field path read by the loop: how many conditions read it or below it."""

    __slots__ = ("children", "depth", "leaf_uses", "name", "string_uses", "uses")

    def __init__(self, name: str, depth: int) -> None:
        self.name = name  # the variable holding its value
        self.depth = depth
        self.uses = 0
        self.leaf_uses = 0
        self.string_uses = 0  # conditions with a string set: ``<n>s`` tells if it is a str
        self.children: dict[str, _Node] = {}


def _written_out(
    predicates: list[RecordTest], unrouted: bool
) -> Callable[[list[Record]], list[list[Record]]]:
    """The loop: one list per predicate, then (``unrouted``) the records none lets through."""
    plans = [_PLANS[p] for p in predicates]
    root = _Node("r", 0)
    count = 0
    for plan in plans:
        for branch in plan:
            for path, _, strings, excluded in branch:
                node = root
                node.uses += 1
                for key in path:
                    child = node.children.get(key)
                    if child is None:
                        count += 1
                        child = node.children[key] = _Node(f"n{count}", node.depth + 1)
                    node = child
                    node.uses += 1
                node.leaf_uses += 1
                if strings is not None or excluded is not None:
                    node.string_uses += 1

    namespace: dict[str, Any] = {"_MISSING": MISSING, "_EMPTY": _EMPTY, "_Fallback": _Fallback}
    body: list[str] = []
    keys: dict[tuple[str, ...], str] = {}

    def key_name(path: tuple[str, ...]) -> str:
        name = keys.get(path)
        if name is None:
            name = keys[path] = f"k{len(keys)}"
            namespace[name] = path[-1]
        return name

    # Fields read by more than one condition: once per record, parents first. ``<n>`` holds
    # the value, ``<n>d`` the object (``_EMPTY`` when missing or a scalar).
    def shared(node: _Node, path: tuple[str, ...]) -> None:
        for key, child in node.children.items():
            if child.uses < 2:
                continue
            child_path = (*path, key)
            parent = "r" if node is root else f"{node.name}d"
            body.append(f"{child.name} = {parent}.get({key_name(child_path)}, _MISSING)")
            if child.string_uses:
                body.append(f"{child.name}s = type({child.name}) is str")
            if any(grandchild.uses for grandchild in child.children.values()):
                body.extend(
                    [
                        f"if type({child.name}) is dict:",
                        f"    {child.name}d = {child.name}",
                        f"elif type({child.name}) is list:",
                        "    raise _Fallback",
                        "else:",
                        f"    {child.name}d = _EMPTY",
                    ]
                )
            shared(child, child_path)

    shared(root, ())

    fields = 0
    for s, plan in enumerate(plans):
        for b, branch in enumerate(plan):
            block: list[str] = []
            for path, end, strings, excluded in branch:
                fields += 1
                node, depth = root, 0
                while depth < len(path) and node.children[path[depth]].uses >= 2:
                    node = node.children[path[depth]]
                    depth += 1
                if depth == len(path):
                    value = node.name  # the value itself was read once for all
                    is_str = f"{value}s"
                else:
                    walk_from = "r" if node is root else f"{node.name}d"
                    for step in range(depth, len(path) - 1):
                        block += [
                            f"v = {walk_from}.get({key_name(path[: step + 1])}, _MISSING)",
                            "if type(v) is not dict:",
                            "    if type(v) is list:",
                            "        raise _Fallback",
                            "    break",
                        ]
                        walk_from = "v"
                    block.append(f"v = {walk_from}.get({key_name(path)}, _MISSING)")
                    value, is_str = "v", "type(v) is str"
                namespace[f"end{fields}"] = end
                if strings is not None or excluded is not None:
                    namespace[f"strings{fields}"] = strings if strings is not None else excluded
                    fails = "not in" if strings is not None else "in"
                    block += [
                        f"if {is_str}:",
                        f"    if {value} {fails} strings{fields}:",
                        "        break",
                        f"elif not end{fields}({value}):",
                        "    break",
                    ]
                else:
                    block += [f"if not end{fields}({value}):", "    break"]
            block += [f"h{s} = True", "break"]
            indent = "" if b == 0 else "    "
            if b:
                body.append(f"if not h{s}:")
            body.append(f"{indent}while True:")
            body += [f"{indent}    {line}" for line in block]

    sinks = range(len(plans))
    for s in sinks:
        namespace[f"p{s}"] = predicates[s]
    lines = ["def split(records):"]
    lines += [f"    out{s} = []; add{s} = out{s}.append" for s in sinks]
    outs = [f"out{s}" for s in sinks]
    if unrouted:
        lines.append("    rest = []; keep = rest.append")
        outs.append("rest")
    lines += ["    for r in records:", "        try:"]
    lines += ["            if type(r) is not dict:", "                raise _Fallback"]
    lines += [f"            h{s} = False" for s in sinks]
    lines += [f"            {line}" for line in body]
    lines += ["        except _Fallback:"]
    lines += [f"            h{s} = p{s}(r)" for s in sinks]
    lines += [f"        if h{s}:\n            add{s}(r)" for s in sinks]
    if unrouted:
        lines.append(
            f"        if not ({' or '.join(f'h{s}' for s in sinks)}):\n            keep(r)"
        )
    lines.append(f"    return [{', '.join(outs)}]")
    source = "\n".join(lines) + "\n"
    # Field names, value sets and functions reach the loop as variables of its namespace,
    # never as source text.
    exec(compile(source, "<fanout split>", "exec"), namespace)  # noqa: S102 - see above
    split: Callable[[list[Record]], list[list[Record]]] = namespace["split"]
    return split
