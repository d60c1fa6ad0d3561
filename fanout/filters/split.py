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
    """A field path the loop reads: how many conditions read it or a field below it."""

    __slots__ = ("children", "name", "string_uses", "uses")

    def __init__(self, name: str) -> None:
        self.name = name  # the variable holding its value (``r``: the record)
        self.uses = 0
        self.string_uses = 0  # conditions with a string set: ``<n>s`` tells if it is a str
        self.children: dict[str, _Node] = {}


def _written_out(
    predicates: list[RecordTest], unrouted: bool
) -> Callable[[list[Record]], list[list[Record]]]:
    """The loop: one list per predicate, then (``unrouted``) the records none lets through."""
    writer = _Writer([_PLANS[p] for p in predicates])
    for s, predicate in enumerate(predicates):
        writer.namespace[f"p{s}"] = predicate
    # Field names, value sets and functions reach the loop as variables of its namespace,
    # never as source text.
    code = compile(writer.source(unrouted), "<fanout split>", "exec")
    exec(code, writer.namespace)  # noqa: S102 - see above
    split: Callable[[list[Record]], list[list[Record]]] = writer.namespace["split"]
    return split


class _Writer:
    """Writes the loop's source for the sinks' plans, and the namespace it runs in."""

    def __init__(self, plans: list[_Plan]) -> None:
        self.plans = plans
        self.namespace: dict[str, Any] = {
            "_MISSING": MISSING,
            "_EMPTY": _EMPTY,
            "_Fallback": _Fallback,
        }
        self.keys: dict[tuple[str, ...], str] = {}
        self.fields = 0
        self.root = _Node("r")
        count = 0
        for plan in plans:
            for branch in plan:
                for path, _, strings, excluded in branch:
                    node = self.root
                    node.uses += 1
                    for key in path:
                        child = node.children.get(key)
                        if child is None:
                            count += 1
                            child = node.children[key] = _Node(f"n{count}")
                        node = child
                        node.uses += 1
                    if strings is not None or excluded is not None:
                        node.string_uses += 1

    def source(self, unrouted: bool) -> str:
        body = self.shared(self.root, ())
        for s, plan in enumerate(self.plans):
            for b, branch in enumerate(plan):
                block = [*self.branch(branch), f"h{s} = True", "break"]
                if b == 0:
                    body += ["while True:", *(f"    {line}" for line in block)]
                else:  # tried only if no branch before it matched
                    body += [f"if not h{s}:", "    while True:"]
                    body += [f"        {line}" for line in block]
        sinks = range(len(self.plans))
        outs = [f"out{s}" for s in sinks] + (["rest"] if unrouted else [])
        lines = ["def split(records):"]
        lines += [f"    {out} = []; add_{out} = {out}.append" for out in outs]
        lines += ["    for r in records:", "        try:"]
        lines += ["            if type(r) is not dict:", "                raise _Fallback"]
        lines += [f"            h{s} = False" for s in sinks]
        lines += [f"            {line}" for line in body]
        lines += ["        except _Fallback:"]
        lines += [f"            h{s} = p{s}(r)" for s in sinks]
        lines += [f"        if h{s}:\n            add_out{s}(r)" for s in sinks]
        if unrouted:
            taken = " or ".join(f"h{s}" for s in sinks)
            lines.append(f"        if not ({taken}):\n            add_rest(r)")
        lines.append(f"    return [{', '.join(outs)}]")
        return "\n".join(lines) + "\n"

    def key(self, path: tuple[str, ...]) -> str:
        """The variable holding the last key of ``path``."""
        name = self.keys.get(path)
        if name is None:
            name = self.keys[path] = f"k{len(self.keys)}"
            self.namespace[name] = path[-1]
        return name

    def shared(self, node: _Node, path: tuple[str, ...]) -> list[str]:
        """Fields below ``node`` read by more than one condition: read once per record,
        parents first. ``<n>`` holds the value, ``<n>d`` the object (``_EMPTY`` when it is
        missing or a scalar), ``<n>s`` whether it is a string."""
        lines: list[str] = []
        for key, child in node.children.items():
            if child.uses < 2:
                continue
            child_path = (*path, key)
            parent = "r" if node is self.root else f"{node.name}d"
            name = child.name
            lines.append(f"{name} = {parent}.get({self.key(child_path)}, _MISSING)")
            if child.string_uses:
                lines.append(f"{name}s = type({name}) is str")
            if any(grandchild.uses for grandchild in child.children.values()):
                lines += [
                    f"if type({name}) is dict:",
                    f"    {name}d = {name}",
                    f"elif type({name}) is list:",
                    "    raise _Fallback",
                    "else:",
                    f"    {name}d = _EMPTY",
                ]
            lines += self.shared(child, child_path)
        return lines

    def branch(self, branch: tuple[_Field, ...]) -> list[str]:
        """One branch's conditions, each ending the enclosing ``while True`` (``break``)
        when it fails."""
        lines: list[str] = []
        for path, end, strings, excluded in branch:
            self.fields += 1
            node, depth = self.root, 0
            while depth < len(path) and node.children[path[depth]].uses >= 2:
                node = node.children[path[depth]]
                depth += 1
            if depth == len(path):  # the value itself was read once for all
                value, is_str = node.name, f"{node.name}s"
            else:  # walk from the nearest shared object
                walk_from = "r" if node is self.root else f"{node.name}d"
                for step in range(depth, len(path) - 1):
                    lines += [
                        f"v = {walk_from}.get({self.key(path[: step + 1])}, _MISSING)",
                        "if type(v) is not dict:",
                        "    if type(v) is list:",
                        "        raise _Fallback",
                        "    break",
                    ]
                    walk_from = "v"
                lines.append(f"v = {walk_from}.get({self.key(path)}, _MISSING)")
                value, is_str = "v", "type(v) is str"
            end_name = f"end{self.fields}"
            self.namespace[end_name] = end
            if strings is None and excluded is None:
                lines += [f"if not {end_name}({value}):", "    break"]
                continue
            set_name = f"strings{self.fields}"
            self.namespace[set_name] = strings if strings is not None else excluded
            fails = "not in" if strings is not None else "in"
            lines += [
                f"if {is_str}:",
                f"    if {value} {fails} {set_name}:",
                "        break",
                f"elif not {end_name}({value}):",
                "    break",
            ]
        return lines
