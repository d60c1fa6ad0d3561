"""The ``handler`` sink: calls a Python function exactly as AWS Lambda calls a stream handler.

``handler: "package.module:function"`` is called as ``function(event, context)`` with
``event = {"Records": [...]}``. A returned ``{"batchItemFailures": [{"itemIdentifier":
"<SequenceNumber>"}]}`` is honoured as Lambda does: the records from the lowest failed one
on are retried.

A handler is user code, and whatever it does is at most a failed call of its batch, never
the worker's end (docs/handlers.md):

* ``isolation: thread`` (the default): ``async def`` handlers are awaited on the worker's
  event loop and cancelled at their timeout; plain functions run on this sink's own threads
  (``max_concurrency`` of them, never shared with the worker). A plain function that times
  out cannot be stopped: its batch fails at once, the call keeps its thread until it
  returns, so the threads never outnumber ``max_concurrency``.
* ``isolation: process``: the handler runs in a pool of worker processes
  (``sinks.handlerpool``), killed and replaced on timeout, death or ``SystemExit``, with
  ``memory_limit_in_mb`` as their address-space limit.

Anything the handler raises, ``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``, a
``CancelledError`` of its own and custom ``BaseException`` subclasses included, fails the
batch (``HandlerCrashed`` for those), which is then retried, bisected and dead-lettered as
usual. A response that is not JSON, or a ``batchItemFailures`` naming no record of the
batch, fails the whole batch (``InvalidResponse``), as Lambda treats it.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import anyio
import orjson
from pydantic import Field

from fanout.codepath import add_to_sys_path
from fanout.config import SinkConfig
from fanout.config.types import Duration
from fanout.errors import CallTimeout, ConfigError
from fanout.isolation import Offload, abandoned, own_cancellation, restart_clock
from fanout.records import Record
from fanout.sink import Failure, Failures, Run, SinkContext, SinkType
from sinks.handlerpool import ProcessPool
from sinks.lambdaenv import (
    HandlerCrashed,
    HandlerError,
    HandlerTimeout,
    InvalidResponse,
    LambdaContext,
    LoadError,
    crashed,
    invoke,
    is_async,
    load_function,
    plain_response,
)

__all__ = [
    "HANDLER",
    "HandlerCrashed",
    "HandlerError",
    "HandlerSink",
    "HandlerSinkConfig",
    "HandlerTimeout",
    "InvalidResponse",
    "LambdaContext",
    "batch_item_failures",
    "load_handler",
]

# Threads of a plain handler, and worker processes, when neither max_concurrency nor
# max_in_flight says otherwise.
DEFAULT_THREADS = 32
DEFAULT_PROCESSES = 4


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
        30.0,
        gt=0,
        le=900,
        description="Seconds one call may run (as a Lambda timeout), counted from when it "
        "starts, not while it waits for a thread or a worker process.",
    )
    isolation: Literal["thread", "process"] = Field(
        "thread",
        description="thread: async handlers on the event loop, plain ones on this sink's own "
        "threads. process: every call in a pool of worker processes that are killed and "
        "replaced on timeout or crash, so a handler that blocks, leaks or crashes the "
        "interpreter cannot hurt the worker.",
    )
    max_concurrency: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Calls running at once at most: the threads of a plain handler, or the "
        "worker processes with isolation: process. Default: max_in_flight if set, else "
        f"{DEFAULT_THREADS} threads or {DEFAULT_PROCESSES} processes.",
    )
    function_name: str | None = Field(
        None, description="context.function_name; default: the sink's name."
    )
    memory_limit_in_mb: int = Field(
        128,
        ge=1,
        description="context.memory_limit_in_mb; with isolation: process also each worker "
        "process's address-space limit (a process that runs out is replaced).",
    )
    tumbling_window: Duration | None = Field(
        None,
        ge=1,
        le=900,
        description="Seconds (or a duration such as 5m), 1 to 900: call the handler with "
        "Lambda's tumbling-window event (window, state, shardId, isFinalInvokeForWindow, "
        "isWindowTerminatedEarly) and keep the state it returns per shard and window, "
        "stored with the checkpoint (Lambda's TumblingWindowInSeconds). Windows follow "
        "each record's ApproximateCreationDateTime. Default: no window.",
    )
    copy_event: bool = Field(
        True,
        description="Give the handler records of its own, so a handler that changes its "
        "event cannot change what other sinks, its retries or its dead-letter entries "
        "receive. Records only this sink receives are not copied; off: the handler shares "
        "the records with other sinks and must not change them.",
    )

    @property
    def concurrency(self) -> int:
        """Threads, or worker processes, this sink uses at most."""
        if self.max_concurrency is not None:
            return self.max_concurrency
        if self.max_in_flight is not None:
            return self.max_in_flight
        return DEFAULT_PROCESSES if self.isolation == "process" else DEFAULT_THREADS


def load_handler(
    spec: str, path: str = "handler", code_path: str | None = None
) -> Callable[..., Any]:
    """Import ``package.module:function`` (from ``code_path`` first, as Lambda imports from
    its task root); ConfigError naming ``path`` if that fails."""
    try:
        return load_function(spec, code_path)
    except LoadError as exc:
        raise ConfigError(path, str(exc)) from exc


class HandlerSink:
    """Calls the user's function with Lambda's event and context."""

    ordered = True

    def __init__(
        self, name: str, config: HandlerSinkConfig, logger: logging.Logger | None = None
    ) -> None:
        self.name = name
        self.config = config
        self.log = logger or logging.getLogger(f"fanout.sink.{name}")
        self._fn: Callable[..., Any] | None = None
        self._is_async = False
        self._threads: Offload | None = None
        self._pool: ProcessPool | None = None
        # A handler in this process may change its event: it gets records of its own
        # (``fanout.delivery.private``), unless copy_event is off. One in worker processes
        # gets them serialized, which is a copy.
        self.mutates_records = config.copy_event and config.isolation == "thread"

    @property
    def pool(self) -> ProcessPool | None:
        """The worker processes (``isolation: process``, once started)."""
        return self._pool

    @property
    def threads(self) -> Offload | None:
        """The threads of a plain handler (``isolation: thread``, once started)."""
        return self._threads

    async def start(self) -> None:
        config = self.config
        path = f"sinks.{self.name}.handler"
        if config.isolation == "process":
            if config.code_path is not None:
                # The worker processes get this process's sys.path, code_path first.
                add_to_sys_path(config.code_path)
            pool = ProcessPool(
                self.name,
                config.handler,
                size=config.concurrency,
                memory_limit_in_mb=config.memory_limit_in_mb,
            )
            try:
                await pool.start()
            except LoadError as exc:
                raise ConfigError(path, str(exc)) from None
            self._pool = pool
            return
        self._fn = load_handler(config.handler, path, config.code_path)
        self._is_async = is_async(self._fn)
        if not self._is_async:
            self._threads = Offload(config.concurrency, f"fanout-handler-{self.name}")

    async def send(self, batch: Sequence[Record]) -> Failures:
        # What the answer's itemIdentifiers are matched against is read before the call:
        # the handler may change its records.
        sequence_numbers = _sequence_numbers(batch)
        return failed_from(await self._invoke(batch, None), sequence_numbers)

    @property
    def sends_runs(self) -> bool:
        """True for a plain function on this sink's threads: a lane with several batches
        waiting sends them in one trip to a thread (``send_run``)."""
        return self._threads is not None and self._fn is not None

    async def send_run(
        self, batches: Sequence[Sequence[Record]], may_go_on: Callable[[], bool]
    ) -> Run:
        """Call the handler with each of ``batches`` in turn, on one of this sink's threads,
        until a call fails or ``may_go_on()`` is false (``fanout.sink.RunSink``).

        Each call is the call ``send`` makes: its own event and context, the sequence
        numbers read before it, the whole ``timeout``. Handing a call to a thread and back
        costs two thread switches (about 120 µs of CPU alone, more in a busy worker); a run
        pays them once: 8 % less CPU per record with three handler sinks at their defaults
        (docs/performance.md, §6).
        """
        threads, fn = self._threads, self._fn
        assert threads is not None, "send_run() needs a plain function on threads"
        assert fn is not None, "send_run() before start()"
        timeout = self.config.timeout
        run = Run()

        def calls() -> None:  # on the sink's thread
            for batch in batches:
                if abandoned() or not may_go_on():
                    return
                restart_clock()  # every call has the whole timeout
                started = time.perf_counter()
                try:
                    sequence_numbers = _sequence_numbers(batch)
                    event: dict[str, Any] = {"Records": list(batch)}
                    result = invoke(fn, event, self._context(batch), timeout)
                    failures = failed_from(result, sequence_numbers)
                except Exception as exc:  # noqa: BLE001 - the batch failed (kept in ``run``)
                    run.error, run.stop_seconds = exc, time.perf_counter() - started
                    return
                if failures:
                    run.failures, run.stop_seconds = failures, time.perf_counter() - started
                    return
                run.seconds.append(time.perf_counter() - started)

        try:
            await threads.run(calls, limit=timeout)
        except CallTimeout:
            # What was delivered before the call that timed out; that call goes on in its
            # thread, which then stops, and must not change what is returned here.
            return Run(list(run.seconds), error=self._timed_out(threads), stop_seconds=timeout)
        except Exception as exc:  # noqa: BLE001 - the batch after those delivered failed
            return Run(list(run.seconds), error=exc)
        return run

    async def send_window(
        self, batch: Sequence[Record], window: Mapping[str, Any]
    ) -> tuple[Failures, Any]:
        """One call of a ``tumbling_window`` sink: the event is ``window`` (its ``window``,
        ``state``, ``shardId``, ``eventSourceARN``, ``isFinalInvokeForWindow``,
        ``isWindowTerminatedEarly``) plus ``Records``. Returns the failures the response
        reports and its ``state``.

        Raises:
            InvalidResponse: the response has no ``state`` object (Lambda counts that as a
                failed call).
        """
        sequence_numbers = _sequence_numbers(batch)
        result = await self._invoke(batch, window)
        state = result.get("state") if isinstance(result, dict) else None
        if not isinstance(state, dict):
            raise InvalidResponse(
                f'a tumbling_window handler must return {{"state": {{...}}}}; got {_clip(result)}'
            )
        return failed_from(result, sequence_numbers), state

    async def _invoke(self, batch: Sequence[Record], window: Mapping[str, Any] | None) -> Any:
        if self._pool is not None:
            result = await self._pool.invoke(self._request(batch, window), self.config.timeout)
            return result
        fn = self._fn
        assert fn is not None, "send() before start()"
        # The records are this sink's own when it may change them (``mutates_records``):
        # the handler gets them as they are, in a list of its own.
        event: dict[str, Any] = {"Records": list(batch)}
        if window is not None:  # the handler gets its own copy of the state too
            event.update(orjson.loads(orjson.dumps(window)))
        context = self._context(batch)
        if self._is_async:
            return await self._call_async(fn, event, context)
        return await self._call_sync(fn, event, context)

    async def stop(self) -> None:
        self._fn = None
        if self._pool is not None:
            await self._pool.stop()
            self._pool = None

    # -- isolation: thread ------------------------------------------------------------------

    async def _call_async(
        self, fn: Callable[..., Any], event: dict[str, Any], context: LambdaContext
    ) -> Any:
        timeout = self.config.timeout
        context.start(timeout)
        with anyio.move_on_after(timeout) as scope:
            try:
                result = await fn(event, context)
            except Exception:
                raise
            except BaseException as exc:
                if own_cancellation(exc):  # the timeout, or the worker stopping
                    raise
                raise crashed(exc) from exc
        if scope.cancelled_caught:
            raise HandlerTimeout(f"handler {self.config.handler} timed out after {timeout:g}s")
        return plain_response(result)

    async def _call_sync(
        self, fn: Callable[..., Any], event: dict[str, Any], context: LambdaContext
    ) -> Any:
        threads = self._threads
        assert threads is not None
        timeout = self.config.timeout
        try:
            return await threads.run(invoke, fn, event, context, timeout, limit=timeout)
        except CallTimeout:
            raise self._timed_out(threads) from None

    def _timed_out(self, threads: Offload) -> HandlerTimeout:
        """Log a call that timed out; the error its batch fails with."""
        timeout = self.config.timeout
        held = threads.abandoned
        self.log.warning(
            "handler_timed_out",
            extra={
                "sink": self.name,
                "handler": self.config.handler,
                "timeout_s": timeout,
                "threads_held": held,
                "threads": threads.size,
                "note": "a plain function cannot be stopped: the call goes on in its "
                "thread, which stays taken until it returns (isolation: process kills it)",
            },
        )
        return HandlerTimeout(
            f"handler {self.config.handler} timed out after {timeout:g}s (the call goes "
            f"on in its thread; {held} of {threads.size} threads held by timed-out calls)"
        )

    def _context(self, batch: Sequence[Record]) -> LambdaContext:
        return LambdaContext(
            self.config.function_name or self.name,
            self.config.memory_limit_in_mb,
            _region(batch),
        )

    # -- isolation: process -----------------------------------------------------------------

    def _request(self, batch: Sequence[Record], window: Mapping[str, Any] | None = None) -> bytes:
        return orjson.dumps(
            {
                "event": {"Records": batch, **(window or {})},
                "context": {
                    "function_name": self.config.function_name or self.name,
                    "memory_limit_in_mb": self.config.memory_limit_in_mb,
                    "region": _region(batch),
                    "timeout": self.config.timeout,
                },
            }
        )


def _region(batch: Sequence[Record]) -> str:
    return str(batch[0].get("awsRegion", "us-east-1")) if batch else "us-east-1"


def _sequence_numbers(batch: Sequence[Record]) -> list[str]:
    return [record["dynamodb"]["SequenceNumber"] for record in batch]


def batch_item_failures(result: Any, batch: Sequence[Record]) -> Failures:
    """Lambda's partial batch response for ``batch``: see ``failed_from``."""
    return failed_from(result, _sequence_numbers(batch))


def failed_from(result: Any, sequence_numbers: Sequence[str]) -> Failures:
    """Lambda's partial batch response: records from the lowest failed one on are retried.

    ``sequence_numbers`` are those of the batch's records, in order (read before the call:
    the handler may have changed its records).

    A response that is not a mapping, or has no (or an empty) ``batchItemFailures``, means
    every record was delivered.

    Raises:
        InvalidResponse: ``batchItemFailures`` is not a list, or an item identifier is
            missing, empty or not in the batch: the whole batch failed, as on Lambda.
    """
    if not isinstance(result, dict):
        return {}
    items = result.get("batchItemFailures")
    if not items:
        return {}
    if not isinstance(items, list):
        raise InvalidResponse(
            f"batchItemFailures is a {type(items).__name__}, not a list: {_clip(items)}"
        )
    index = {seq: i for i, seq in enumerate(sequence_numbers)}
    lowest = len(sequence_numbers)
    for item in items:
        ident = item.get("itemIdentifier") if isinstance(item, dict) else None
        position = index.get(ident) if isinstance(ident, str) else None
        if position is None:
            raise InvalidResponse(
                f"batchItemFailures names an unknown itemIdentifier: {_clip(item)}"
            )
        lowest = min(lowest, position)
    reason = f"handler reported batchItemFailures from {sequence_numbers[lowest]}"
    return {i: Failure(True, reason) for i in range(lowest, len(sequence_numbers))}


def _clip(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check(name: str, config: HandlerSinkConfig, path: str) -> None:
    if config.tumbling_window is not None and config.parallelization_factor != 1:
        raise ConfigError(
            f"{path}.tumbling_window",
            "a tumbling window keeps one state per shard: it needs parallelization_factor 1",
        )
    if config.isolation == "process":
        # Imported in the worker processes only: here, only check that the module exists.
        module = config.handler.partition(":")[0]
        if ":" not in config.handler or not module or not config.handler.partition(":")[2]:
            raise ConfigError(
                f"{path}.handler",
                f"{config.handler!r} is not of the form 'package.module:function'",
            )
        if config.code_path is not None:
            add_to_sys_path(config.code_path)
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"{path}.handler", f"cannot find module {module!r}: {exc}") from exc
        if found is None:
            raise ConfigError(f"{path}.handler", f"cannot find module {module!r}")
        return
    load_handler(config.handler, f"{path}.handler", config.code_path)


def _build(name: str, config: HandlerSinkConfig, ctx: SinkContext) -> HandlerSink:
    return HandlerSink(name, config, ctx.logger)


HANDLER: SinkType[HandlerSinkConfig] = SinkType(HandlerSinkConfig, _build, _check)
