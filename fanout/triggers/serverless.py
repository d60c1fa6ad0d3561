"""Serverless Framework ``serverless.yml``: functions with ``events: - stream:`` of type
``dynamodb``.

The stream's ARN is resolved as far as the file allows: a literal ARN, ``Fn::GetAtt`` of a
table in ``resources.Resources`` with a ``TableName``, and ``${self:...}`` references to the
file's own values. Other variables (``${opt:...}``, ``${env:...}``, ``${ssm:...}``) cannot be
known here; a stream named through them is given with ``--table``.
"""

from __future__ import annotations

import re
from typing import Any

from fanout.triggers.cloudformation import Template
from fanout.triggers.model import Report, Source, Trigger

_VARIABLE = re.compile(r"\$\{([^}]+)\}")
# serverless.yml stream options -> event source mapping parameter names.
_MAPPING = {
    "batchSize": "BatchSize",
    "batchWindow": "MaximumBatchingWindowInSeconds",
    "startingPosition": "StartingPosition",
    "startingPositionTimestamp": "StartingPositionTimestamp",
    "maximumRetryAttempts": "MaximumRetryAttempts",
    "maximumRecordAgeInSeconds": "MaximumRecordAgeInSeconds",
    "bisectBatchOnFunctionError": "BisectBatchOnFunctionError",
    "functionResponseType": "FunctionResponseTypes",
    "parallelizationFactor": "ParallelizationFactor",
    "tumblingWindowInSeconds": "TumblingWindowInSeconds",
    "enabled": "Enabled",
    "filterPatterns": "FilterCriteria",
    "destinations": "DestinationConfig",
}


def is_serverless(data: Any) -> bool:
    """True for a Serverless Framework service file."""
    return isinstance(data, dict) and "service" in data and isinstance(data.get("functions"), dict)


class _Variables:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def resolve(self, value: Any) -> Any:
        """``value`` with ``${self:a.b}`` replaced; None when another variable is left."""
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = _VARIABLE.fullmatch(value.strip())
        if whole is not None:
            found = self._lookup(whole.group(1))
            return found if found is not None else None
        unknown = False

        def repl(match: re.Match[str]) -> str:
            nonlocal unknown
            found = self._lookup(match.group(1))
            if found is None:
                unknown = True
                return ""
            return str(found)

        text = _VARIABLE.sub(repl, value)
        return None if unknown else text

    def _lookup(self, expression: str) -> Any:
        expression = expression.split(",")[0].strip()
        if not expression.startswith("self:"):
            return None
        node: Any = self.data
        for part in expression.removeprefix("self:").split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return self.resolve(node)


def read(data: dict[str, Any], report: Report) -> list[Trigger]:
    """The DynamoDB stream triggers of a parsed serverless.yml."""
    variables = _Variables(data)
    resources = data.get("resources")
    template = Template(_resolve_tree(resources, variables) if isinstance(resources, dict) else {})
    provider = data.get("provider") or {}
    triggers: list[Trigger] = []
    for fn_name, fn in (data.get("functions") or {}).items():
        if not isinstance(fn, dict):
            continue
        streams = [
            (i, e["stream"])
            for i, e in enumerate(fn.get("events") or [])
            if isinstance(e, dict) and "stream" in e
        ]
        for i, stream in streams:
            where = f"functions.{fn_name}.events[{i}].stream"
            spec = stream if isinstance(stream, dict) else {"arn": stream}
            if spec.get("type", "dynamodb") != "dynamodb" or _is_kinesis(spec.get("arn")):
                report.note("Kinesis streams are left out", str(fn_name))
                continue
            source = _source(spec.get("arn"), variables, template, provider, where)
            name = str(fn_name) if len(streams) == 1 else f"{fn_name}-{i}"
            trigger = Trigger(name=name, where=where, handler=None, source=source)
            trigger.handler = variables.resolve(fn.get("handler"))
            trigger.function = _function(fn, provider, variables)
            for key, value in spec.items():
                if key in ("arn", "type"):
                    continue
                if key not in _MAPPING:
                    report.error(f"{where}.{key}", "unknown stream event option")
                    continue
                trigger.mapping[_MAPPING[key]] = _value(key, value, variables, template)
            triggers.append(trigger)
    return triggers


def _resolve_tree(value: Any, variables: _Variables) -> Any:
    """``value`` with every ``${self:...}`` the file can resolve replaced."""
    if isinstance(value, dict):
        return {k: _resolve_tree(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_tree(v, variables) for v in value]
    resolved = variables.resolve(value)
    return value if resolved is None else resolved


def _is_kinesis(arn: Any) -> bool:
    return isinstance(arn, str) and ":kinesis:" in arn


def _value(key: str, value: Any, variables: _Variables, template: Template) -> Any:
    if key == "functionResponseType":
        return [value]
    if key == "filterPatterns":
        return {"Filters": [{"Pattern": p} for p in value]} if isinstance(value, list) else value
    if key == "destinations":
        target = value.get("onFailure") if isinstance(value, dict) else None
        if isinstance(target, dict):
            target = target.get("arn")
        resolved = template.resolve(
            variables.resolve(target) if isinstance(target, str) else target
        )
        return {"OnFailure": {"Destination": resolved}}
    return variables.resolve(value)


def _function(
    fn: dict[str, Any], provider: dict[str, Any], variables: _Variables
) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for key, setting in (
        ("timeout", "timeout"),
        ("memorySize", "memory_size"),
        ("reservedConcurrency", "reserved_concurrency"),
        ("runtime", "runtime"),
        ("name", "function_name"),
    ):
        value = fn.get(
            key, provider.get(key) if key in ("timeout", "memorySize", "runtime") else None
        )
        if value is not None:
            resolved = variables.resolve(value)
            if resolved is not None:
                settings[setting] = resolved
    if fn.get("vpc") or provider.get("vpc"):
        settings["uses_vpc"] = True
    if fn.get("layers") or provider.get("layers"):
        settings["layers"] = fn.get("layers") or provider.get("layers")
    environment = {**(provider.get("environment") or {}), **(fn.get("environment") or {})}
    if environment:
        settings["environment"] = list(environment)
    return settings


def _source(
    arn: Any, variables: _Variables, template: Template, provider: dict[str, Any], where: str
) -> Source:
    value = variables.resolve(arn) if isinstance(arn, str) else arn
    if value is None:
        return Source(why_unknown=f"{where}.arn: {arn!r} uses variables the file cannot resolve")
    found = template.source(value, f"{where}.arn")
    if found is None:
        return Source(why_unknown=f"{where}.arn: not a DynamoDB stream")
    if (
        found.region is None
        and found.stream_arn is None
        and isinstance(provider.get("region"), str)
    ):
        region = variables.resolve(provider["region"])
        found.region = region if isinstance(region, str) else None
    return found
