"""``triggers.json``: trigger name -> the function's handler and its stream settings.

```json
{
  "award-badges": {
    "handler": "handlers.badges.award",
    "batch_size": 10,
    "enabled": true,
    "filters": [{"eventName": ["MODIFY"]}],
    "timeout": 30,
    "reserved_concurrency": 2,
    "memory_size": 256,
    "uses_vpc": false
  }
}
```

Besides these, a trigger may give any event source mapping parameter, by its AWS name
(``MaximumRetryAttempts``) or in snake case (``maximum_retry_attempts``), and ``table`` or
``stream_arn`` for its stream. Handlers are dotted Python paths, imported from the file's
directory (the default ``code_path``) unless a trigger sets its own ``code_path``.
"""

from __future__ import annotations

from typing import Any

from fanout.shapes import parse_arn
from fanout.triggers.model import Report, Source, Trigger

# Function settings, by the names this file uses.
_FUNCTION = ("timeout", "memory_size", "reserved_concurrency", "uses_vpc", "function_name")
_FUNCTION_ALIASES = {
    "reserved_concurrent_executions": "reserved_concurrency",
    "memory": "memory_size",
}
_LISTS = ("layers", "environment")
# Event source mapping parameters: snake case -> AWS name.
_MAPPING = {
    "batch_size": "BatchSize",
    "batch_window": "MaximumBatchingWindowInSeconds",
    "maximum_batching_window_in_seconds": "MaximumBatchingWindowInSeconds",
    "starting_position": "StartingPosition",
    "starting_position_timestamp": "StartingPositionTimestamp",
    "filters": "FilterCriteria",
    "filter_criteria": "FilterCriteria",
    "maximum_retry_attempts": "MaximumRetryAttempts",
    "maximum_record_age_in_seconds": "MaximumRecordAgeInSeconds",
    "bisect_batch_on_function_error": "BisectBatchOnFunctionError",
    "function_response_types": "FunctionResponseTypes",
    "parallelization_factor": "ParallelizationFactor",
    "tumbling_window_in_seconds": "TumblingWindowInSeconds",
    "destination_config": "DestinationConfig",
    "enabled": "Enabled",
    "metrics_config": "MetricsConfig",
}
_AWS_NAMES = frozenset(_MAPPING.values()) | {"KmsKeyArn", "Tags"}
_SOURCE = ("table", "stream_arn", "event_source_arn", "EventSourceArn")


def is_triggers_json(data: Any) -> bool:
    """True for a mapping of names to objects that each have a ``handler``."""
    return (
        isinstance(data, dict)
        and bool(data)
        and all(isinstance(v, dict) and "handler" in v for v in data.values())
    )


def read(data: dict[str, Any], report: Report) -> list[Trigger]:
    """The triggers of a parsed triggers.json."""
    triggers = []
    for name, spec in data.items():
        where = str(name)
        trigger = Trigger(name=str(name), where=where, handler=None, source=Source())
        for key, value in spec.items():
            key = str(key)
            if key == "handler":
                trigger.handler = str(value)
            elif key == "code_path":
                trigger.code_path = str(value)
            elif key in _FUNCTION or key in _FUNCTION_ALIASES:
                trigger.function[_FUNCTION_ALIASES.get(key, key)] = value
            elif key in _LISTS:
                trigger.function[key] = list(value) if isinstance(value, list | dict) else value
            elif key == "on_failure":
                trigger.mapping["DestinationConfig"] = {"OnFailure": {"Destination": value}}
            elif key in _MAPPING:
                trigger.mapping[_MAPPING[key]] = value
            elif key in _AWS_NAMES:
                trigger.mapping[key] = value
            elif key[:1].isupper():  # another parameter by its AWS name: mapped or refused
                trigger.mapping[key] = value
            elif key in _SOURCE:
                trigger.source = _source(key, value, f"{where}.{key}", report)
            else:
                report.error(
                    f"{where}.{key}",
                    "unknown trigger setting (known: handler, code_path, table, stream_arn, "
                    + ", ".join(sorted({*_FUNCTION, *_LISTS, "on_failure", *_MAPPING}))
                    + ", and event source mapping parameters by their AWS names)",
                )
        triggers.append(trigger)
    return triggers


def _source(key: str, value: Any, where: str, report: Report) -> Source:
    if key == "table":
        return Source(table=str(value))
    try:
        parts = parse_arn(str(value), "dynamodb")
    except ValueError as exc:
        report.error(where, str(exc))
        return Source()
    return Source(stream_arn=str(value), region=parts["region"] or None)
