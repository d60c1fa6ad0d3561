"""The ``handler`` sink: calls a Python function exactly as AWS Lambda calls a stream handler.

``handler: "package.module:function"`` is called as ``function(event, context)`` with
``event = {"Records": [...]}``. Async functions are awaited; plain functions run in a
worker thread. A returned ``{"batchItemFailures": [{"itemIdentifier": "<SequenceNumber>"}]}``
is honoured as Lambda does: the records from the lowest failed one on are retried.
"""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal

import anyio
import anyio.to_thread
import orjson
from pydantic import Field

from fanout.codepath import import_module
from fanout.config import Duration, SinkConfig
from fanout.errors import ConfigError
from fanout.records import Record
from fanout.sink import Failure, Failures, SinkContext, SinkType


class HandlerSinkConfig(SinkConfig):
    """Options of the ``handler`` sink."""

    type: Literal["handler"] = "handler"
    handler: str = Field(description="The function, as 'package.module:function'.")
    code_path: str | None = Field(
        None,
        description="Directory put first on sys.path to import the handler from (Lambda's "
        "task root); relative to the config file's directory. Default: the top-level "
        "code_path, i.e. the config file's directory.",
    )
    timeout: Duration = Field(
        30.0, gt=0, le=900, description="Seconds one call may take (as a Lambda timeout)."
    )
    function_name: str | None = Field(
        None, description="context.function_name; default: the sink's name."
    )
    memory_limit_in_mb: int = Field(128, ge=1, description="context.memory_limit_in_mb.")
    copy_event: bool = Field(
        True,
        description="Give the handler its own copy of the records, so a handler that "
        "changes its event cannot change what other sinks receive.",
    )


def load_handler(
    spec: str, path: str = "handler", code_path: str | None = None
) -> Callable[..., Any]:
    """Import ``package.module:function`` (from ``code_path`` first, as Lambda imports from
    its task root); ConfigError naming ``path`` if that fails."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(path, f"{spec!r} is not of the form 'package.module:function'")
    module = import_module(module_name, code_path, path)
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(path, f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(target):
        raise ConfigError(path, f"{spec!r} is not callable")
    return target  # type: ignore[no-any-return]


class LambdaContext:
    """The context object Lambda passes to a handler (the commonly used attributes)."""

    def __init__(
        self, function_name: str, memory_limit_in_mb: int, region: str, deadline: float
    ) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:000000000000:function:{function_name}"
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"fanout/{self.aws_request_id}"
        self.identity = None
        self.client_context = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class HandlerTimeout(Exception):
    """The handler did not return within its timeout."""


class HandlerSink:
    """Calls the user's function with Lambda's event and context."""

    ordered = True

    def __init__(self, name: str, config: HandlerSinkConfig) -> None:
        self.name = name
        self.config = config
        self._fn: Callable[..., Any] | None = None
        self._is_async = False

    async def start(self) -> None:
        self._fn = load_handler(
            self.config.handler, f"sinks.{self.name}.handler", self.config.code_path
        )
        self._is_async = inspect.iscoroutinefunction(self._fn)

    async def send(self, batch: Sequence[Record]) -> Failures:
        fn = self._fn
        assert fn is not None, "send() before start()"
        # An orjson round trip is a deep copy at a fraction of copy.deepcopy's cost.
        records = orjson.loads(orjson.dumps(batch)) if self.config.copy_event else list(batch)
        event = {"Records": records}
        timeout = self.config.timeout
        region = str(batch[0].get("awsRegion", "us-east-1")) if batch else "us-east-1"
        context = LambdaContext(
            self.config.function_name or self.name,
            self.config.memory_limit_in_mb,
            region,
            time.monotonic() + timeout,
        )
        with anyio.move_on_after(timeout) as scope:
            if self._is_async:
                result = await fn(event, context)
            else:
                result = await anyio.to_thread.run_sync(
                    partial(fn, event, context), abandon_on_cancel=True
                )
        if scope.cancelled_caught:
            raise HandlerTimeout(f"handler {self.config.handler} timed out after {timeout}s")
        return batch_item_failures(result, batch)

    async def stop(self) -> None:
        self._fn = None


def batch_item_failures(result: Any, batch: Sequence[Record]) -> Failures:
    """Lambda's partial batch response: records from the lowest failed one on are retried.

    An item identifier that is missing, empty or not in the batch fails the whole batch,
    as it does on Lambda.
    """
    if not isinstance(result, dict) or not result.get("batchItemFailures"):
        return {}
    index = {r["dynamodb"]["SequenceNumber"]: i for i, r in enumerate(batch)}
    lowest = len(batch)
    for item in result["batchItemFailures"]:
        ident = item.get("itemIdentifier") if isinstance(item, dict) else None
        position = index.get(ident) if isinstance(ident, str) else None
        if position is None:
            reason = f"batchItemFailures names an unknown itemIdentifier {ident!r}"
            return {i: Failure(True, reason) for i in range(len(batch))}
        lowest = min(lowest, position)
    failed = batch[lowest]["dynamodb"]["SequenceNumber"]
    reason = f"handler reported batchItemFailures from {failed}"
    return {i: Failure(True, reason) for i in range(lowest, len(batch))}


def _check(name: str, config: HandlerSinkConfig, path: str) -> None:
    load_handler(config.handler, f"{path}.handler", config.code_path)


def _build(name: str, config: HandlerSinkConfig, ctx: SinkContext) -> HandlerSink:
    return HandlerSink(name, config)


HANDLER: SinkType[HandlerSinkConfig] = SinkType(HandlerSinkConfig, _build, _check)
