"""What a handler runs in, as on AWS Lambda: the context object, loading the function, and
one guarded call of it.

Used in the worker (``isolation: thread``) and in each handler worker process
(``isolation: process``, ``sinks.handlerchild``), so it imports nothing but the standard
library and orjson: a worker process starts in a fraction of the worker's start-up time.
"""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from fanout.codepath import import_module
from fanout.errors import ConfigError


class LoadError(Exception):
    """The handler cannot be imported, or is not a callable."""


class HandlerTimeout(Exception):
    """The handler did not return within its timeout."""


class HandlerCrashed(Exception):
    """The handler raised ``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``, its own
    ``CancelledError`` or another ``BaseException`` that is not an ``Exception``, or its
    worker process died: the call failed, the worker goes on."""


class HandlerError(Exception):
    """The handler raised an exception in a worker process (``isolation: process``); the
    message starts with its type."""


class InvalidResponse(Exception):
    """The handler's return value is not a response Lambda accepts: not JSON, or a
    ``batchItemFailures`` that names no record of the batch. The whole batch failed."""


def load_function(spec: str, code_path: str | None = None) -> Callable[..., Any]:
    """Import ``package.module:function`` (``function`` may be dotted: ``Class.method``),
    looking in ``code_path`` first as Lambda looks in its task root.

    Raises:
        LoadError: the spec is malformed, the module cannot be imported, or the target is
            missing or not callable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise LoadError(f"{spec!r} is not of the form 'package.module:function'")
    try:
        module = import_module(module_name, code_path)
    except ConfigError as exc:
        raise LoadError(exc.message) from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LoadError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(target):
        raise LoadError(f"{spec!r} is not callable")
    return target  # type: ignore[no-any-return]


def is_async(fn: Callable[..., Any]) -> bool:
    """True for ``async def`` functions and objects whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - the method itself is what matters
    )


class LambdaContext:
    """The context object Lambda passes to a handler (the commonly used attributes).

    ``get_remaining_time_in_millis()`` counts down from ``start(timeout)``, which the
    caller makes when the function is about to run.
    """

    def __init__(self, function_name: str, memory_limit_in_mb: int, region: str) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:000000000000:function:{function_name}"
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"fanout/{self.aws_request_id}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic()

    def start(self, timeout: float) -> None:
        """The call begins now and may take ``timeout`` seconds."""
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def describe(exc: BaseException) -> str:
    """``Type: message``, or ``Type`` when there is no message."""
    name = type(exc).__name__
    text = str(exc)
    return f"{name}: {text}" if text else name


def crashed(exc: BaseException) -> HandlerCrashed:
    """A ``BaseException`` the handler raised, as the failure of its call."""
    error = HandlerCrashed(f"handler raised {describe(exc)}")
    error.__cause__ = exc
    return error


def plain_response(result: Any) -> Any:
    """The handler's return value as JSON data (Lambda serializes it to JSON, and a value
    that cannot be is a failed call there too).

    Raises:
        InvalidResponse: the value cannot be serialized.
    """
    if result is None or isinstance(result, str | int | float | bool):
        return result
    try:
        return orjson.loads(orjson.dumps(result))
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidResponse(f"the handler returned a value that is not JSON: {exc}") from None


def invoke(
    fn: Callable[..., Any], event: dict[str, Any], context: LambdaContext, timeout: float
) -> Any:
    """Call a plain (not async) handler: its response as JSON data.

    Raises:
        HandlerCrashed: it raised a ``BaseException`` that is not an ``Exception``.
        InvalidResponse: it returned something that is not JSON.
        Exception: whatever it raised.
    """
    context.start(timeout)
    try:
        result = fn(event, context)
    except Exception:
        raise
    except BaseException as exc:
        raise crashed(exc) from exc
    return plain_response(result)
