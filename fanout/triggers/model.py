"""What a trigger file declares, read into one shape whatever the file: a function (handler,
timeout, ...) and the event source mapping that feeds it a DynamoDB stream, with the mapping's
parameters named as AWS names them (``BatchSize``, ``MaximumRetryAttempts``, ...).

Readers of each file kind (``triggers_json``, ``cloudformation``, ``serverless``) produce
``Trigger`` values and report what they cannot read to a ``Report``; ``mapping`` turns the
triggers into a fanout config.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from fanout.errors import ConfigError


@dataclass
class Source:
    """The stream a trigger reads: a table name, a stream ARN, or nothing known yet (then
    ``--table`` names it)."""

    table: str | None = None
    stream_arn: str | None = None
    region: str | None = None
    why_unknown: str = ""


@dataclass
class Trigger:
    """One function fed by one DynamoDB stream.

    Attributes:
        name: the sink's name (the trigger's key, the function's name or logical id).
        where: where it is declared, for messages (``functions.award.events[0]``).
        handler: Lambda's handler string (``package/module.function`` or ``module.function``).
        code_path: the function's code directory, relative to the file's directory.
        function: the function's own settings, by the names fanout reads (``timeout``,
            ``memory_size``, ``reserved_concurrency``, ``function_name``, ``runtime``,
            ``environment`` (variable names), ``layers``, ``uses_vpc``).
        mapping: the event source mapping's parameters, by their AWS names.
        source: the stream it reads.
    """

    name: str
    where: str
    handler: str | None
    source: Source
    code_path: str | None = None
    function: dict[str, Any] = field(default_factory=dict)
    mapping: dict[str, Any] = field(default_factory=dict)


class Report:
    """What an import could not carry over: errors (it fails, naming each) and notes (each
    setting that is ignored or means something else here, reported once with every trigger
    that has it)."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []
        self._notes: dict[str, list[str]] = defaultdict(list)

    def error(self, where: str, message: str) -> None:
        self.errors.append(ConfigError(where, message))

    def note(self, what: str, trigger: str) -> None:
        """Note ``what`` (e.g. "memory_size is ignored: ...") for ``trigger``."""
        if trigger not in self._notes[what]:
            self._notes[what].append(trigger)

    @property
    def notes(self) -> list[str]:
        return [f"{what} ({', '.join(names)})" for what, names in self._notes.items()]


def lambda_handler(handler: str) -> str:
    """Lambda's Python handler string as fanout's ``module:function``.

    ``app.badges.process`` and ``app/badges.process`` are both ``app.badges:process``: Lambda
    imports the part before the last dot as a module, with ``/`` as package separators.

    Raises:
        ValueError: it has no module or no function part.
    """
    if ":" in handler:
        return handler
    module, _, function = handler.rpartition(".")
    module = module.replace("/", ".").strip(".")
    if not module or not function:
        raise ValueError(f"{handler!r} is not a Lambda handler ('module.function')")
    return f"{module}:{function}"
