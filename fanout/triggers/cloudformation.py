"""CloudFormation and SAM templates: ``AWS::Lambda::EventSourceMapping`` resources and SAM
functions' ``DynamoDB`` events, with their functions (``AWS::Lambda::Function``,
``AWS::Serverless::Function`` and SAM's ``Globals``).

Intrinsic functions are read as far as a template alone allows: ``!GetAtt Table.StreamArn``
of a table with a ``TableName``, ``!Ref`` of a parameter with a ``Default``, ``!Sub`` with
``AWS::Region``/``AWS::AccountId``. What only CloudFormation knows (the account, the region)
is left out: a queue is then named by its ``QueueName`` (the worker looks up its URL), a
table by its ``TableName``. A stream that cannot be resolved is named with ``--table``.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from fanout.shapes import parse_arn
from fanout.triggers.model import Report, Source, Trigger

_PSEUDO = {
    "AWS::Region": "${AWS_DEFAULT_REGION}",
    "AWS::AccountId": "${AWS_ACCOUNT_ID}",
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
}
_SUB_VAR = re.compile(r"\$\{([^}!]+)\}")
_FUNCTIONS = ("AWS::Lambda::Function", "AWS::Serverless::Function")
_NAME_PROPERTY = {
    "AWS::DynamoDB::Table": "TableName",
    "AWS::DynamoDB::GlobalTable": "TableName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::SNS::Topic": "TopicName",
    **dict.fromkeys(_FUNCTIONS, "FunctionName"),
}


class TemplateLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form intrinsic tags (``!Ref``, ``!GetAtt``, ...)."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    if suffix == "Condition":
        return {"Condition": value}
    return {f"Fn::{suffix}": value}


TemplateLoader.add_multi_constructor("!", _intrinsic)


def is_template(data: Any) -> bool:
    """True for a CloudFormation or SAM template."""
    if not isinstance(data, dict):
        return False
    transform = data.get("Transform")
    transforms = transform if isinstance(transform, list) else [transform]
    return (
        "AWSTemplateFormatVersion" in data
        or any(isinstance(t, str) and t.startswith("AWS::Serverless") for t in transforms)
        or (
            isinstance(data.get("Resources"), dict)
            and any(
                isinstance(r, dict) and str(r.get("Type", "")).startswith("AWS::")
                for r in data["Resources"].values()
            )
        )
    )


class Template:
    """Resolves values of one template as far as the template allows."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.resources: dict[str, Any] = data.get("Resources") or {}
        self.parameters: dict[str, Any] = data.get("Parameters") or {}
        self.globals: dict[str, Any] = (data.get("Globals") or {}).get("Function") or {}

    def resolve(self, value: Any) -> Any:
        """A literal for ``value``, or None when the template alone cannot tell."""
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            return None
        ((kind, arg),) = value.items()
        if kind == "Ref":
            if arg in _PSEUDO:
                return _PSEUDO[arg]
            parameter = self.parameters.get(arg)
            if isinstance(parameter, dict) and "Default" in parameter:
                return parameter["Default"]
            resource = self.resources.get(arg)
            if isinstance(resource, dict):
                return self.resource_name(arg)
            return None
        if kind == "Fn::Sub":
            return self._sub(arg)
        if kind == "Fn::GetAtt" and isinstance(arg, list) and len(arg) == 2:
            return self._get_att(str(arg[0]), str(arg[1]))
        if kind == "Fn::Join" and isinstance(arg, list) and len(arg) == 2:
            parts = [self.resolve(p) for p in arg[1]] if isinstance(arg[1], list) else [None]
            if any(p is None for p in parts):
                return None
            return str(arg[0]).join(str(p) for p in parts)
        return None

    def _sub(self, arg: Any) -> str | None:
        text, names = (arg[0], arg[1]) if isinstance(arg, list) else (arg, {})
        if not isinstance(text, str):
            return None
        unknown = False

        def repl(match: re.Match[str]) -> str:
            nonlocal unknown
            name = match.group(1)
            if name in names:
                found = self.resolve(names[name])
            elif "." in name:
                found = self._get_att(*name.split(".", 1))
            else:
                found = self.resolve({"Ref": name})
            if found is None:
                unknown = True
                return ""
            return str(found)

        result = _SUB_VAR.sub(repl, text)
        return None if unknown else result

    def resource_name(self, logical_id: str) -> str | None:
        """The physical name a table, queue, topic or function declares."""
        resource = self.resources.get(logical_id) or {}
        key = _NAME_PROPERTY.get(str(resource.get("Type")))
        props = resource.get("Properties") or {}
        if key is None or key not in props:
            return None
        found = self.resolve(props[key])
        return None if found is None else str(found)

    def _get_att(self, logical_id: str, attribute: str) -> str | None:
        resource = self.resources.get(logical_id)
        if not isinstance(resource, dict):
            return None
        kind = resource.get("Type")
        name = self.resource_name(logical_id)
        if name is None:
            return None
        if kind == "AWS::SQS::Queue" and attribute == "Arn":
            return f"arn:aws:sqs:${{AWS_DEFAULT_REGION}}:${{AWS_ACCOUNT_ID}}:{name}"
        if kind in ("AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable") and attribute in (
            "StreamArn",
            "Arn",
        ):
            return f"table:{name}"  # a table, read by name (see source())
        return None

    def source(self, value: Any, where: str) -> Source | None:
        """The stream an EventSourceArn names; None when it is not a DynamoDB stream."""
        resolved = self.resolve(value)
        if resolved is None:
            if isinstance(value, dict) and "Fn::GetAtt" in value:
                target = self.resources.get(str(value["Fn::GetAtt"][0])) or {}
                if target.get("Type") not in (
                    None,
                    "AWS::DynamoDB::Table",
                    "AWS::DynamoDB::GlobalTable",
                ):
                    return None
            return Source(why_unknown=f"{where}: the template does not name the table")
        text = str(resolved)
        if text.startswith("table:"):
            return Source(table=text.removeprefix("table:"))
        try:
            parts = parse_arn(text)
        except ValueError:
            return Source(why_unknown=f"{where}: {text!r} is not a stream ARN")
        if parts["service"] != "dynamodb":
            return None
        if "${" in text:
            return Source(table=parts["resource"].split("/")[1])
        return Source(stream_arn=text, region=parts["region"] or None)


def _function(template: Template, logical_id: str, report: Report) -> dict[str, Any]:
    resource = template.resources.get(logical_id) or {}
    props = dict(resource.get("Properties") or {})
    if resource.get("Type") == "AWS::Serverless::Function":
        merged = dict(template.globals)
        merged.update(props)
        env = dict((template.globals.get("Environment") or {}).get("Variables") or {})
        env.update((props.get("Environment") or {}).get("Variables") or {})
        if env:
            merged["Environment"] = {"Variables": env}
        props = merged
    return props


def _function_settings(
    props: dict[str, Any], template: Template, name: str, where: str, report: Report
) -> tuple[str | None, str | None, dict[str, Any]]:
    """(handler, code_path, function settings) of a function's properties."""
    function: dict[str, Any] = {}
    for key, setting in (
        ("Timeout", "timeout"),
        ("MemorySize", "memory_size"),
        ("ReservedConcurrentExecutions", "reserved_concurrency"),
        ("Runtime", "runtime"),
        ("FunctionName", "function_name"),
    ):
        if key in props:
            value = template.resolve(props[key])
            if value is None:
                report.error(f"{where}.{key}", "cannot be resolved from the template alone")
            else:
                function[setting] = value
    if props.get("VpcConfig"):
        function["uses_vpc"] = True
    if props.get("Layers"):
        function["layers"] = props["Layers"]
    variables = (props.get("Environment") or {}).get("Variables") or {}
    if variables:
        function["environment"] = list(variables)
    code_path = None
    code_uri = props.get("CodeUri")
    if isinstance(code_uri, str) and "://" not in code_uri:
        code_path = code_uri
    elif isinstance(props.get("Code"), dict) and "ZipFile" in props["Code"]:
        report.error(f"{where}.Code.ZipFile", "inline code cannot be imported: move it to a file")
    elif code_uri is not None or props.get("Code") is not None:
        report.note(
            "the code is in S3: put the handler's package in the config's directory or set "
            "code_path",
            name,
        )
    handler = template.resolve(props.get("Handler"))
    return (str(handler) if handler else None), code_path, function


def read(data: dict[str, Any], report: Report) -> list[Trigger]:
    """The DynamoDB stream triggers of a template."""
    template = Template(data)
    triggers: list[Trigger] = []
    for logical_id, resource in template.resources.items():
        if not isinstance(resource, dict):
            continue
        kind = resource.get("Type")
        props = resource.get("Properties") or {}
        where = f"Resources.{logical_id}"
        if kind == "AWS::Serverless::Function":
            events = props.get("Events") or {}
            streams = {
                n: e
                for n, e in events.items()
                if isinstance(e, dict) and e.get("Type") == "DynamoDB"
            }
            for event_name, event in streams.items():
                name = logical_id if len(streams) == 1 else f"{logical_id}-{event_name}"
                at = f"{where}.Properties.Events.{event_name}.Properties"
                mapping = dict(event.get("Properties") or {})
                source = template.source(mapping.pop("Stream", None), f"{at}.Stream")
                if source is None:
                    continue
                _add(triggers, template, logical_id, name, at, mapping, source, report)
        elif kind == "AWS::Lambda::EventSourceMapping":
            mapping = dict(props)
            source = template.source(
                mapping.pop("EventSourceArn", None), f"{where}.Properties.EventSourceArn"
            )
            if source is None:
                report.note("event source mappings of other services are left out", logical_id)
                continue
            target = mapping.pop("FunctionName", None)
            function_id = _function_id(template, target)
            if function_id is None:
                report.error(
                    f"{where}.Properties.FunctionName",
                    f"{target!r} is not a function of this template: its handler is unknown",
                )
                continue
            _add(
                triggers,
                template,
                function_id,
                function_id,
                f"{where}.Properties",
                mapping,
                source,
                report,
            )
    return _unique(triggers)


def _function_id(template: Template, target: Any) -> str | None:
    """The logical id of the template's function that ``target`` (a FunctionName) names."""
    functions = {
        logical_id
        for logical_id, resource in template.resources.items()
        if isinstance(resource, dict) and resource.get("Type") in _FUNCTIONS
    }
    if isinstance(target, dict):
        ref = target.get("Ref") or (target.get("Fn::GetAtt") or [None])[0]
        return str(ref) if ref in functions else None
    for logical_id in functions:
        name = template.resource_name(logical_id)
        if target == logical_id or (name is not None and target in (name, name.split(":")[-1])):
            return logical_id
    return None


def _add(
    triggers: list[Trigger],
    template: Template,
    function_id: str,
    name: str,
    where: str,
    mapping: dict[str, Any],
    source: Source,
    report: Report,
) -> None:
    props = _function(template, function_id, report)
    handler, code_path, function = _function_settings(
        props, template, name, f"Resources.{function_id}.Properties", report
    )
    resolved: dict[str, Any] = {}
    for key, value in mapping.items():
        if _is_intrinsic(value):
            literal = template.resolve(value)
            if literal is None:
                report.error(f"{where}.{key}", "cannot be resolved from the template alone")
                continue
            resolved[key] = literal
        else:
            resolved[key] = _resolve_deep(template, value)
    triggers.append(
        Trigger(
            name=name,
            where=where,
            handler=handler,
            source=source,
            code_path=code_path,
            function=function,
            mapping=resolved,
        )
    )


def _is_intrinsic(value: Any) -> bool:
    return (
        isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("Ref", "Condition")
    ) or (isinstance(value, dict) and len(value) == 1 and str(next(iter(value))).startswith("Fn::"))


def _resolve_deep(template: Template, value: Any) -> Any:
    if isinstance(value, dict):
        literal = template.resolve(value) if len(value) == 1 else None
        if literal is not None and any(k.startswith(("Fn::", "Ref")) for k in value):
            return literal
        return {k: _resolve_deep(template, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_deep(template, v) for v in value]
    return value


def _unique(triggers: list[Trigger]) -> list[Trigger]:
    """Functions with several mappings get one sink each: ``<function>-2``, ..."""
    seen: dict[str, int] = {}
    for trigger in triggers:
        count = seen.get(trigger.name, 0) + 1
        seen[trigger.name] = count
        if count > 1:
            trigger.name = f"{trigger.name}-{count}"
    return triggers
