"""Built-in sinks, and the one place sink types are named.

A sink type is a config model (a subclass of ``fanout.config.SinkConfig`` whose ``type`` is a
``Literal``) and a ``build(name, config, context) -> Sink`` function. Third-party sinks
register the same pair as a ``SinkType`` under the ``fanout.sinks`` entry point group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from fanout.config import SinkConfig
from fanout.sink import Sink, SinkContext


def _no_check(name: str, config: Any, path: str) -> None:
    return None


@dataclass(frozen=True)
class SinkType:
    """How to validate and build one kind of sink.

    Attributes:
        config: the pydantic model of the sink's options.
        build: makes the sink from its name, validated config and context.
        check: extra start-up validation that needs no network (raise ConfigError).
    """

    config: type[SinkConfig]
    build: Callable[[str, Any, SinkContext], Sink]
    check: Callable[[str, Any, str], None] = _no_check


# type name -> "module:attribute" of its SinkType; imported on first use.
_BUILTIN = {
    "file": "sinks.file:FILE",
    "stdout": "sinks.file:STDOUT",
    "handler": "sinks.handler:HANDLER",
}


def builtin_types() -> list[str]:
    """Names of the built-in sink types."""
    return sorted(_BUILTIN)


def sink_type(kind: str) -> SinkType | None:
    """The SinkType for ``kind``: built-in first, then the ``fanout.sinks`` entry points."""
    target = _BUILTIN.get(kind)
    if target is not None:
        module, _, attr = target.partition(":")
        found: SinkType = getattr(import_module(module), attr)
        return found
    for ep in entry_points(group="fanout.sinks"):
        if ep.name == kind:
            loaded = ep.load()
            if isinstance(loaded, SinkType):
                return loaded
    return None


def all_types() -> dict[str, SinkType]:
    """Every known sink type (for the JSON Schema)."""
    result: dict[str, SinkType] = {}
    for kind in builtin_types():
        found = sink_type(kind)
        assert found is not None
        result[kind] = found
    for ep in entry_points(group="fanout.sinks"):
        loaded = ep.load()
        if isinstance(loaded, SinkType):
            result.setdefault(ep.name, loaded)
    return result
