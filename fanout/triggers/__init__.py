"""Lambda trigger definitions, files unchanged, as fanout configs.

Three kinds of file are read: a ``triggers.json`` (trigger name -> handler and stream
settings), a CloudFormation or SAM template (``AWS::Lambda::EventSourceMapping`` resources,
SAM functions' ``DynamoDB`` events) and a Serverless Framework ``serverless.yml``
(``events: - stream:``). Each trigger becomes a ``handler`` sink; the event source mapping's
parameters are mapped option by option (``mapping``). ``fanout import --from FILE`` prints
the result as YAML; every command that takes ``--config`` also takes such a file directly.

Modules: ``model`` (what a trigger is), ``triggers_json``, ``cloudformation``, ``serverless``
(the readers), ``mapping`` (parameters -> options).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fanout.config.loading import combine
from fanout.errors import ConfigError
from fanout.triggers import cloudformation, serverless, triggers_json
from fanout.triggers.mapping import sink_options, starting_position, stream_of
from fanout.triggers.model import Report, Source, Trigger

__all__ = ["Imported", "import_trigger_file", "parse_file", "to_config"]

KINDS = {
    "triggers.json": triggers_json,
    "CloudFormation/SAM template": cloudformation,
    "serverless.yml": serverless,
}


@dataclass
class Imported:
    """A trigger file as a fanout config.

    Attributes:
        kind: what the file is (a key of ``KINDS``).
        config: the fanout config (as parsed YAML would be).
        notes: settings ignored or meaning something else here, one line each.
    """

    kind: str
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def parse_file(path: str | Path) -> tuple[str, dict[str, Any]] | None:
    """``(kind, data)`` of a trigger file; None for anything else (a fanout config)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return None  # reading it as a config reports that
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = yaml.load(text, Loader=cloudformation.TemplateLoader)  # noqa: S506 - safe loader + intrinsic tags
        except yaml.YAMLError:
            return None
    if not isinstance(data, dict) or "sinks" in data or "streams" in data:
        return None
    if cloudformation.is_template(data):
        return "CloudFormation/SAM template", data
    if serverless.is_serverless(data):
        return "serverless.yml", data
    if triggers_json.is_triggers_json(data):
        return "triggers.json", data
    return None


def import_trigger_file(path: str | Path, *, table: str | None = None) -> Imported | None:
    """The fanout config of a trigger file; None when ``path`` is not one.

    Args:
        path: the file.
        table: the stream's table, for triggers whose file does not name it.

    Raises:
        ConfigError: every setting that cannot be carried over, one per line.
    """
    parsed = parse_file(path)
    if parsed is None:
        return None
    kind, data = parsed
    report = Report()
    triggers = KINDS[kind].read(data, report)
    config = to_config(triggers, report, table=table, kind=kind)
    if report.errors:
        raise combine(report.errors)
    return Imported(kind, config, report.notes)


def to_config(
    triggers: list[Trigger], report: Report, *, table: str | None = None, kind: str = "file"
) -> dict[str, Any]:
    """The fanout config of ``triggers``: one stream per table, one handler sink per trigger."""
    streams: dict[str, dict[str, Any]] = {}
    positions: dict[str, tuple[str, list[str]]] = {}
    sinks: dict[str, dict[str, Any]] = {}
    for trigger in triggers:
        options = sink_options(trigger, report)
        if options is None:
            continue
        source = trigger.source
        if source.table is None and source.stream_arn is None:
            if table is None:
                if source.why_unknown:
                    where, _, reason = source.why_unknown.partition(": ")
                else:
                    where, reason = trigger.where, f"the {kind} names no table"
                report.error(where, f"{reason}: pass --table NAME")
                continue
            source = Source(table=table, region=source.region)
        name, stream = stream_of(source)
        streams.setdefault(name, stream)
        _position(streams[name], name, trigger, positions, report)
        first: dict[str, Any] = {
            k: options.pop(k) for k in ("type", "handler", "code_path") if k in options
        }
        sinks[trigger.name] = {**first, "streams": [name], **options}
    if not sinks and not report.errors:
        report.errors.append(ConfigError("", f"the {kind} has no DynamoDB stream trigger"))
    return {"streams": streams, "sinks": sinks}


def _position(
    stream: dict[str, Any],
    name: str,
    trigger: Trigger,
    positions: dict[str, tuple[str, list[str]]],
    report: Report,
) -> None:
    """One reader per stream means one starting position per stream."""
    position, timestamp = starting_position(trigger)
    if position is None:
        return
    seen = positions.get(name)
    if seen is None:
        positions[name] = (position, [trigger.name])
        stream["starting_position"] = position
        if position == "AT_TIMESTAMP" and timestamp is not None:
            stream["starting_timestamp"] = timestamp
        return
    if seen[0] != position:
        report.error(
            f"{trigger.where}.StartingPosition",
            f"{position}, but {', '.join(seen[1])} read {name} from {seen[0]}: fanout reads "
            "a stream once, from one starting position; make them the same",
        )
    seen[1].append(trigger.name)


def render(imported: Imported, source: str) -> str:
    """The config as YAML, with a header saying where it came from."""
    body = yaml.safe_dump(imported.config, sort_keys=False, width=100, allow_unicode=True)
    header = (
        f"# fanout config imported from {source} ({imported.kind}).\n"
        "# Relative paths (code_path) are relative to that file's directory: keep this file "
        "there.\n"
    )
    return header + body
