"""The filter compiler: a branch becomes a trie of field paths compiled into closures (the
walkers) that read the record once; an ``{"exists": false}`` below an array of objects
falls back to ``_faithful_search``, a transcription of event-ruler's search."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any, Final

from fanout.filters.patterns import Branch
from fanout.filters.text import Predicate
from fanout.filters.values import Leaf, utf16_key


class _Missing:
    """The value of a field that is not in the record."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()
MISSING: Final = _MISSING  # what a leaf function is given for a field that is not there


class _NeedFaithful(Exception):
    """Raised by the fast matcher when only the faithful search can answer."""


# ---------------------------------------------------------------------------------------------
# Fast structural matcher


class _Trie:
    __slots__ = ("children", "compiled", "leaf")

    def __init__(self) -> None:
        self.leaf: Leaf | None = None
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


def leaf_fn(leaf: Leaf) -> Predicate:
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
    """Test a dict against its children: (key path, end function, step functions, strings).

    Each child follows its chain of single-field objects from the dict and applies its end
    function there; ``steps[i]`` is the node function of the i-th intermediate object and
    takes over when the value there is not a dict (missing, a scalar or an array). When the
    end is a plain string list its membership test is inline (the hot path of most filters).

    The children are written out as one function (``_object_source``), so a record is tested
    in one call instead of one per field and level: ``python -m bench.bench_filters`` went
    from 988k to 1,155k matches/s for eventName and one image attribute (docs/performance.md,
    §6). Field names and functions reach the function as variables of its namespace, never
    as source text.
    """
    namespace: dict[str, Any] = {"_MISSING": _MISSING}
    source = _object_source(children, namespace)
    exec(compile(source, "<fanout filter>", "exec"), namespace)  # noqa: S102 - see above
    fn: Predicate = namespace["object_fn"]
    _TESTS_TYPE.add(fn)
    return fn


# The generated object functions: they answer False for anything but a dict themselves.
_TESTS_TYPE: weakref.WeakSet[Predicate] = weakref.WeakSet()


def tests_type(fn: Predicate) -> bool:
    """True when ``fn`` answers False for a value that is not a dict (no check needed)."""
    return fn in _TESTS_TYPE


def _object_source(children: list[_Child], namespace: dict[str, Any]) -> str:
    """The source of ``object_fn(d)``; puts what it refers to in ``namespace``."""
    lines = ["def object_fn(d):", "    if type(d) is not dict:", "        return False"]
    for i, (keys, end, steps, strings) in enumerate(children):
        namespace[f"end{i}"] = end
        if strings is not None:
            namespace[f"strings{i}"] = strings
        namespace[f"key{i}_0"] = keys[0]
        indent = "    "
        lines.append(f"{indent}v = d.get(key{i}_0, _MISSING)")
        for j, (step, key) in enumerate(zip(steps, keys[1:], strict=True)):
            namespace[f"step{i}_{j}"] = step
            namespace[f"key{i}_{j + 1}"] = key
            lines += [
                f"{indent}if type(v) is not dict:",
                f"{indent}    if not step{i}_{j}(v):",
                f"{indent}        return False",
                f"{indent}else:",
                f"{indent}    v = v.get(key{i}_{j + 1}, _MISSING)",
            ]
            indent += "    "
        if strings is not None:
            lines += [
                f"{indent}if type(v) is str:",
                f"{indent}    if v not in strings{i}:",
                f"{indent}        return False",
                f"{indent}elif not end{i}(v):",
                f"{indent}    return False",
            ]
        else:
            lines += [f"{indent}if not end{i}(v):", f"{indent}    return False"]
    lines.append("    return True")
    return "\n".join(lines) + "\n"


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
        return _Compiled(leaf_fn(leaf), leaf.absent_ok, leaf.absent_ok, None)
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
# Branches


def compile_branch(branch: Branch) -> tuple[Predicate, bool]:
    """The walker of one branch, and whether it needs a field to be absent (``exists:
    false`` somewhere, or a path that is both a value and an object)."""
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
        return fast, False
    fields = tuple(
        (path, leaf.value_test(), leaf.absent_ok)
        for name, (path, leaf) in sorted(branch.items(), key=lambda item: utf16_key(item[0]))
    )

    def with_fallback(e: Any) -> bool:
        try:
            return fast(e)
        except _NeedFaithful:
            return _faithful_search(fields, 0, e, {})

    return with_fallback, True
