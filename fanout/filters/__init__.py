"""Per-sink record filters: Lambda / EventBridge event patterns compiled into fast predicates.

How a pattern is matched: a pattern is validated with event-ruler's rules, then expanded into
"branches": every combination of "$or" alternatives, each a flat set of field paths with a
value test (event-ruler calls these sub-rules). A branch is compiled into a tree of closures
that walks the record once. Lists met on the way are handled per element, so two conditions
are only satisfied together by values from the same array element (event-ruler's array
consistency).

One case is not structural in event-ruler: an {"exists": false} condition below an array of
objects. Its answer depends on which other fields of the branch sort before it by name. When
a record actually has such an array, the branch falls back to ``_faithful_search``
(``fanout.filters.compiler``), a direct transcription of event-ruler's name-ordered,
array-consistent search. DynamoDB records only contain arrays inside L / SS / NS / BS
values, so the fallback is rare.

Modules:

* ``fanout.filters.text``: string value tests (ignore-case, prefix, suffix, wildcard);
* ``fanout.filters.values``: the other value tests (numbers, ranges, IP addresses) and
  ``Leaf``, one field's tests compiled into one;
* ``fanout.filters.patterns``: the pattern parser and validator, and the ``$or`` expansion;
* ``fanout.filters.compiler``: branches compiled into walkers, and the faithful search;
* ``fanout.filters.split``: every sink's patterns written out as one pass over a page;
* this module: the API (``compile_pattern``, ``compile_filters``, ``compile_split``,
  ``matches``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fanout.errors import ConfigError
from fanout.filters.compiler import compile_branch, tests_type
from fanout.filters.patterns import (
    EXTENSION_OPERATORS,
    MAX_FIELDS_PER_BRANCH,
    MAX_OR_BRANCHES,
    Branch,
    expand,
    join,
    parse_object,
)
from fanout.filters.split import compile_split, register
from fanout.filters.text import Predicate
from fanout.filters.values import describe
from fanout.records import Record

__all__ = [
    "EXTENSION_OPERATORS",
    "MAX_FIELDS_PER_BRANCH",
    "MAX_OR_BRANCHES",
    "compile_filters",
    "compile_pattern",
    "compile_split",
    "matches",
]


def _branches(pattern: Any, path: str) -> list[tuple[Branch, Predicate, bool]]:
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
        return _branches(pattern["Pattern"], join(path, "Pattern"))
    if not isinstance(pattern, dict):
        raise ConfigError(path, f"a filter pattern must be an object, got {describe(pattern)}")
    root = parse_object(pattern, path, in_or=False)
    branches = expand(root, ())
    for branch in branches:
        if len(branch) > MAX_FIELDS_PER_BRANCH:
            raise ConfigError(
                path,
                f"a pattern may constrain at most {MAX_FIELDS_PER_BRANCH} fields"
                " per $or combination",
            )
    return [(branch, *compile_branch(branch)) for branch in branches]


def _any(branches: list[tuple[Branch, Predicate, bool]]) -> Callable[[Record], bool]:
    """OR the branch predicates (which expect a dict) into one record predicate, and let
    ``compile_split`` know how to write it out."""
    predicate = _or([fn for _, fn, _ in branches])
    register(predicate, [branch for branch, _, _ in branches], any(a for _, _, a in branches))
    return predicate


def _or(predicates: list[Predicate]) -> Callable[[Record], bool]:
    if len(predicates) == 1:
        (only,) = predicates
        if tests_type(only):
            return only
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
        raise ConfigError(path, f"must be an array of filter patterns, got {describe(patterns)}")
    if not patterns:
        raise ConfigError(
            path, "must hold at least one pattern; leave filters out to pass every record"
        )
    branches: list[tuple[Branch, Predicate, bool]] = []
    for index, pattern in enumerate(patterns):
        branches.extend(_branches(pattern, f"{path}[{index}]"))
    return _any(branches)


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
