"""Event source mapping parameters, as AWS names them, mapped to fanout's options.

Each trigger becomes a ``handler`` sink; the streams they read become ``streams``. What has no
counterpart is an error naming the parameter (the import fails), what means nothing outside
Lambda is a note. Parameters a file does not set keep fanout's defaults, not Lambda's (bounded
retries and bisection are on by default here; docs/migrating-from-lambda.md has the list).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from fanout.shapes import parse_arn
from fanout.triggers.model import Report, Source, Trigger, lambda_handler

_POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
_NOT_DYNAMODB = (
    "Queues",
    "Topics",
    "SourceAccessConfigurations",
    "SelfManagedEventSource",
    "SelfManagedKafkaEventSourceConfig",
    "AmazonManagedKafkaEventSourceConfig",
    "DocumentDBEventSourceConfig",
    "ScalingConfig",
    "ProvisionedPollerConfig",
)
_IGNORED = {
    "MetricsConfig": "fanout has its own metrics (docs/operations.md)",
    "KmsKeyArn": "filter criteria are not encrypted outside Lambda",
    "Tags": "tags belong to the AWS resource",
}
_HANDLED_ELSEWHERE = ("EventSourceArn", "FunctionName", "Enabled", "StartingPositionTimestamp")


def _int(value: Any, where: str, low: int, high: int, report: Report) -> int | None:
    """``value`` as a whole number from ``low`` to ``high`` (-1 too, when ``low`` is -1, which
    AWS uses for "unbounded"); reported and None otherwise."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        report.error(where, f"{value!r} is not a whole number")
        return None
    if not low <= number <= high:
        report.error(where, f"{number} is not between {low} and {high}")
        return None
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def filters(value: Any, where: str, report: Report) -> list[dict[str, Any]] | None:
    """``FilterCriteria`` (``{"Filters": [{"Pattern": "<json>"}]}``), or a plain list of
    patterns (objects or JSON strings), as fanout's ``filters``."""
    if isinstance(value, dict):
        value = value.get("Filters", [])
        value = [f.get("Pattern") if isinstance(f, dict) else f for f in value]
    if not isinstance(value, list):
        report.error(where, "filters are a list of patterns, or {Filters: [{Pattern: ...}]}")
        return None
    patterns: list[dict[str, Any]] = []
    for i, pattern in enumerate(value):
        if isinstance(pattern, str):
            try:
                pattern = json.loads(pattern)
            except json.JSONDecodeError as exc:
                report.error(f"{where}[{i}]", f"the pattern is not JSON: {exc}")
                continue
        if not isinstance(pattern, dict):
            report.error(f"{where}[{i}]", "a filter pattern is a JSON object")
            continue
        patterns.append(pattern)
    return patterns


def sqs_queue_url(arn: str) -> tuple[str, str]:
    """The queue URL and region of an SQS queue ARN (``arn:aws:sqs:REGION:ACCOUNT:NAME``).

    The region and account may be ``${VAR}`` references (resolved when the config is read).
    """
    partition, _, rest = arn.removeprefix("arn:").partition(":sqs:")
    region, account, name = rest.split(":", 2)
    domain = "amazonaws.com.cn" if partition == "aws-cn" else "amazonaws.com"
    return f"https://sqs.{region}.{domain}/{account}/{name}", region


_PLACEHOLDER = re.compile(r"\$\{[A-Z_]+\}")


def on_failure(destination: Any, where: str, report: Report) -> dict[str, Any] | None:
    """``DestinationConfig.OnFailure.Destination`` as a ``dead_letter``: an SQS queue ARN
    becomes ``{type: sqs, queue_url, region}``; SNS topics and S3 buckets have no counterpart
    yet."""
    if not isinstance(destination, str) or not destination:
        report.error(where, f"cannot tell which queue {destination!r} is")
        return None
    try:
        parts = parse_arn(_PLACEHOLDER.sub("000000000000", destination))
    except ValueError as exc:
        report.error(where, str(exc))
        return None
    service = parts["service"]
    if service != "sqs":
        report.error(
            where,
            f"an on-failure destination of {service} ({destination}) is not supported: fanout "
            "dead-letters into a file, an SQS queue or another sink (docs/delivery.md)",
        )
        return None
    if "${" in destination:
        # The template leaves the account (or region) to CloudFormation: name the queue, and
        # the worker looks its URL up in its own account.
        name = destination.rsplit(":", 1)[1]
        region = parts["region"]
        found: dict[str, Any] = {"type": "sqs", "queue_name": name}
        if "${" not in destination.split(":")[3]:
            found["region"] = region
        return found
    url, region = sqs_queue_url(destination)
    return {"type": "sqs", "queue_url": url, "region": region}


def _destination(value: Any, where: str, report: Report) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        report.error(where, "DestinationConfig is {OnFailure: {Destination: ARN}}")
        return None
    dead_letter = None
    for key, inner in value.items():
        if key == "OnFailure":
            target = inner.get("Destination") if isinstance(inner, dict) else inner
            dead_letter = on_failure(target, f"{where}.OnFailure.Destination", report)
        else:
            report.error(f"{where}.{key}", "only OnFailure applies to stream event source mappings")
    return dead_letter


def _tumbling(seconds: int, where: str, sink: dict[str, Any], report: Report) -> None:
    """TumblingWindowInSeconds: 0 is no window; 1 to 900 is the handler's ``tumbling_window``
    (the handler gets Lambda's window event and keeps its state)."""
    if seconds:
        sink["tumbling_window"] = seconds


def sink_options(trigger: Trigger, report: Report) -> dict[str, Any] | None:
    """The ``handler`` sink options of ``trigger`` (without ``streams``); None when it is
    disabled (noted) or cannot be mapped (reported)."""
    where = trigger.where
    mapping = trigger.mapping
    function = trigger.function
    if "Enabled" in mapping and not _bool(mapping["Enabled"]):
        report.note("disabled triggers are left out", trigger.name)
        return None
    if function.get("reserved_concurrency") == 0:
        report.note("a reserved concurrency of 0 (throttled) leaves the trigger out", trigger.name)
        return None
    if not trigger.handler:
        report.error(f"{where}.handler", "the function has no handler")
        return None
    runtime = function.get("runtime")
    if isinstance(runtime, str) and not runtime.startswith("python"):
        report.error(f"{where}.runtime", f"fanout runs Python handlers; this function is {runtime}")
        return None
    try:
        handler = lambda_handler(trigger.handler)
    except ValueError as exc:
        report.error(f"{where}.handler", str(exc))
        return None
    sink: dict[str, Any] = {"type": "handler", "handler": handler}
    if trigger.code_path not in (None, "", "."):
        sink["code_path"] = trigger.code_path
    _function_options(trigger, sink, report)
    retry: dict[str, Any] = {}
    options: dict[str, Callable[[Any, str], None]] = {
        "BatchSize": lambda v, w: _set(sink, "batch_size", _int(v, w, 1, 10_000, report)),
        "MaximumBatchingWindowInSeconds": lambda v, w: _set(
            sink, "batch_window", _int(v, w, 0, 300, report)
        ),
        "ParallelizationFactor": lambda v, w: _set(
            sink, "parallelization_factor", _int(v, w, 1, 10, report)
        ),
        "MaximumRetryAttempts": lambda v, w: _set(
            retry, "max_attempts", _attempts(_int(v, w, -1, 10_000, report))
        ),
        "MaximumRecordAgeInSeconds": lambda v, w: _set(
            retry, "max_record_age", _record_age(_int(v, w, -1, 604_800, report), w, report)
        ),
        "BisectBatchOnFunctionError": lambda v, w: retry.__setitem__("bisect_on_error", _bool(v)),
        "FilterCriteria": lambda v, w: _set(sink, "filters", filters(v, w, report)),
        "FunctionResponseTypes": lambda v, w: _response_types(v, w, report),
        "DestinationConfig": lambda v, w: _set(sink, "dead_letter", _destination(v, w, report)),
        "TumblingWindowInSeconds": lambda v, w: _tumbling(
            _int(v, w, 0, 900, report) or 0, w, sink, report
        ),
        "StartingPosition": lambda v, w: _position(v, w, report),
    }
    for name, value in mapping.items():
        at = f"{where}.{name}"
        if name in options:
            options[name](value, at)
        elif name in _HANDLED_ELSEWHERE:
            continue
        elif name in _IGNORED:
            report.note(f"{name} is ignored: {_IGNORED[name]}", trigger.name)
        elif name in _NOT_DYNAMODB:
            report.error(at, "is not a parameter of DynamoDB stream event source mappings")
        else:
            report.error(at, "unknown event source mapping parameter")
    if retry:
        sink["retry"] = retry
    return sink


def _set(target: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        target[key] = value


def _record_age(seconds: int | None, where: str, report: Report) -> int | None:
    if seconds is not None and 0 <= seconds < 60:
        report.error(where, f"{seconds} is not -1 or between 60 and 604800")
        return None
    return seconds


def _attempts(retries: int | None) -> int | None:
    """Lambda counts retries after the first attempt; fanout counts attempts."""
    if retries is None:
        return None
    return -1 if retries == -1 else retries + 1


def _response_types(value: Any, where: str, report: Report) -> None:
    values = value if isinstance(value, list) else [value]
    for item in values:
        if item != "ReportBatchItemFailures":
            report.error(where, f"unknown function response type {item!r}")
    # fanout always honours batchItemFailures: nothing to set.


def _position(value: Any, where: str, report: Report) -> None:
    if value not in _POSITIONS:
        report.error(where, f"{value!r} is not one of {', '.join(_POSITIONS)}")


def _function_options(trigger: Trigger, sink: dict[str, Any], report: Report) -> None:
    function = trigger.function
    where = trigger.where
    if function.get("function_name"):
        sink["function_name"] = str(function["function_name"])
    if "timeout" in function:
        _set(sink, "timeout", _int(function["timeout"], f"{where}.timeout", 1, 900, report))
    if "reserved_concurrency" in function:
        limit = _int(
            function["reserved_concurrency"], f"{where}.reserved_concurrency", 1, 10**6, report
        )
        _set(sink, "max_in_flight", limit)
    if "memory_size" in function:
        memory = _int(function["memory_size"], f"{where}.memory_size", 128, 10_240, report)
        _set(sink, "memory_limit_in_mb", memory)
        report.note(
            "memory_size only sets context.memory_limit_in_mb: fanout does not limit a "
            "handler's memory",
            trigger.name,
        )
    if _bool(function.get("uses_vpc")):
        report.note(
            "uses_vpc is ignored: the worker reaches what its own network reaches", trigger.name
        )
    if function.get("layers"):
        report.note(
            "layers are not loaded: install their Python packages into the code_path "
            "(pip install --target) or the image",
            trigger.name,
        )
    variables = function.get("environment")
    if variables:
        report.note(
            "the function's environment variables must be set in the worker's environment: "
            + ", ".join(sorted(variables)),
            trigger.name,
        )


def starting_position(trigger: Trigger) -> tuple[str | None, Any]:
    """The trigger's StartingPosition and StartingPositionTimestamp, if set."""
    return trigger.mapping.get("StartingPosition"), trigger.mapping.get("StartingPositionTimestamp")


def stream_of(source: Source) -> tuple[str, dict[str, Any]]:
    """A stream's name and options for a trigger's source (a table or a stream ARN)."""
    if source.stream_arn is not None:
        resource = source.stream_arn.split(":", 5)[5]
        name = resource.split("/")[1] if resource.startswith("table/") else "stream"
        options: dict[str, Any] = {"stream_arn": source.stream_arn}
    else:
        assert source.table is not None
        name = source.table
        options = {"table": source.table}
    if source.region:
        options["region"] = source.region
    return name, options
