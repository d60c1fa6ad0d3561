"""Value tests of the filter language on strings: ``equals-ignore-case`` and prefix and
suffix tests (with their ignore-case forms), and ``wildcard``. Each is compiled once into a
closure (a set lookup, a ``str.startswith``/``endswith`` or a regular expression)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fanout.errors import ConfigError

Predicate = Callable[[Any], bool]


def always(_: Any) -> bool:
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


def ignore_case_equals(text: str) -> Callable[[str], bool]:
    if text.isascii():
        folded = text.lower()
        return lambda s: s.isascii() and s.lower() == folded
    full = re.compile(_case_regex(_case_alternatives(text)), re.DOTALL)
    return lambda s: full.fullmatch(s) is not None


def ignore_case_prefix(text: str) -> Callable[[str], bool]:
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


def ignore_case_suffix(text: str) -> Callable[[str], bool]:
    size = len(text)
    quirk = '"' in text  # event-ruler matches against the quoted value: '"' + s
    if size == 0:
        return always
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


def prefix_test(prefixes: list[str]) -> Callable[[str], bool]:
    plain = tuple(p for p in prefixes if '"' not in p)
    quoted = tuple(p for p in prefixes if '"' in p)
    if not quoted:
        if len(plain) == 1:
            (one,) = plain
            return lambda s: s.startswith(one)
        return lambda s: s.startswith(plain)
    return lambda s: s.startswith(plain) or (s + '"').startswith(quoted)


def suffix_test(suffixes: list[str]) -> Callable[[str], bool]:
    plain = tuple(p for p in suffixes if '"' not in p)
    quoted = tuple(p for p in suffixes if '"' in p)
    if not quoted:
        if len(plain) == 1:
            (one,) = plain
            return lambda s: s.endswith(one)
        return lambda s: s.endswith(plain)
    return lambda s: s.endswith(plain) or ('"' + s).endswith(quoted)


def parse_wildcard(text: str, path: str) -> list[str]:
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


def wildcard_test(segments: list[str]) -> Callable[[str], bool]:
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


def any_of(tests: list[Callable[[str], bool]]) -> Callable[[str], bool]:
    if len(tests) == 1:
        return tests[0]
    frozen = tuple(tests)

    def any_test(s: str) -> bool:
        for test in frozen:
            if test(s):
                return True
        return False

    return any_test
