"""A handler worker process (``isolation: process``): ``python -m sinks.handlerchild PARENT_PID``.

Like a Lambda execution environment, it imports the handler once (the init phase), then
runs one call at a time until its parent closes its input or kills it. It talks to the
worker over its standard input and output in frames (a 4-byte big-endian length, then
JSON):

* worker: ``{"handler": spec, "path": sys.path, "memory_limit_in_mb": n}``; process:
  ``{"ready": true}``, or ``{"error": why}`` and it exits;
* worker, per call: ``{"event": {"Records": [...]}, "context": {"function_name",
  "memory_limit_in_mb", "region", "timeout"}}``; process: ``{"result": response}``,
  ``{"error": {"type", "message", "where"}}`` (the handler raised), ``{"invalid": why}``
  (the response is not JSON), ``{"crash": what}`` (``SystemExit`` and the like) or
  ``{"out_of_memory": true}``; after the last two it exits.

Anything the handler prints goes to standard error (the worker's log stream), never into
the protocol. ``memory_limit_in_mb`` caps the process's address space; running out is
answered (with a reply made in advance) and ends the process with ``EXIT_OUT_OF_MEMORY``.
On Linux the process is killed when its parent dies.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import struct
import sys
import traceback
from collections.abc import Callable
from typing import Any

import orjson

from sinks.lambdaenv import InvalidResponse, LambdaContext, load_function, plain_response

EXIT_OUT_OF_MEMORY = 86
"""The exit code of a worker process that ran out of its ``memory_limit_in_mb``."""

_HEADER = struct.Struct("!I")


def main(argv: list[str]) -> int:
    parent = int(argv[1]) if len(argv) > 1 else None
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the worker
    _die_with_parent(parent)
    # The protocol keeps private copies of stdin and stdout; the handler's prints go to
    # stderr and its reads of stdin find nothing.
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    out_of_memory = _frame({"out_of_memory": True})  # made now: later there may be no room
    try:
        return _serve(proto_in, proto_out)
    except MemoryError:
        try:
            os.write(proto_out, out_of_memory)
        finally:
            os._exit(EXIT_OUT_OF_MEMORY)


def _serve(proto_in: int, proto_out: int) -> int:
    init = _read(proto_in)
    if init is None:
        return 0
    sys.path[:] = init["path"]
    limit = init.get("memory_limit_in_mb")
    if limit:
        _limit_memory(int(limit))
    try:
        fn = load_function(init["handler"])
    except MemoryError:
        raise
    except BaseException as exc:  # noqa: BLE001 - reported to the worker, which fails start-up
        _write(proto_out, {"error": _text(exc) or _describe(exc)})
        return 1
    _write(proto_out, {"ready": True})
    loop: asyncio.AbstractEventLoop | None = None
    while True:
        request = _read(proto_in)
        if request is None:
            return 0
        reply, loop = _call(fn, request, loop)
        _write(proto_out, reply)
        if "crash" in reply:
            return 1


def _call(
    fn: Callable[..., Any], request: dict[str, Any], loop: asyncio.AbstractEventLoop | None
) -> tuple[dict[str, Any], asyncio.AbstractEventLoop | None]:
    fields = request["context"]
    context = LambdaContext(fields["function_name"], fields["memory_limit_in_mb"], fields["region"])
    context.start(fields["timeout"])
    try:
        result = fn(request["event"], context)
        if inspect.isawaitable(result):
            # One loop for the process's lifetime, so clients a handler keeps between calls
            # stay usable.
            loop = loop or asyncio.new_event_loop()
            result = loop.run_until_complete(result)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - the handler's failure, reported
        error = {"type": type(exc).__name__, "message": _text(exc), "where": _where(exc)}
        return {"error": error}, loop
    except BaseException as exc:  # noqa: BLE001 - SystemExit and the like: report, then exit
        return {"crash": f"{_describe(exc)} ({_where(exc)})"}, loop
    try:
        return {"result": plain_response(result)}, loop
    except InvalidResponse as exc:
        return {"invalid": str(exc)}, loop


def _describe(exc: BaseException) -> str:
    text = _text(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break the reply
        return repr(type(exc))


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{last.filename}:{last.lineno} in {last.name}"


def _limit_memory(megabytes: int) -> None:
    import resource

    limit = megabytes << 20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _die_with_parent(parent: int | None) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if parent is not None and os.getppid() != parent:
        os._exit(0)  # the parent died before the request above was made


def _read(fd: int) -> Any:
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    body = _read_exactly(fd, size)
    if body is None:
        return None
    return orjson.loads(body)


def _read_exactly(fd: int, size: int) -> bytes | None:
    parts: list[bytes] = []
    left = size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _frame(message: dict[str, Any]) -> bytes:
    body = orjson.dumps(message)
    return _HEADER.pack(len(body)) + body


def _write(fd: int, message: dict[str, Any]) -> None:
    view = memoryview(_frame(message))
    while view:
        view = view[os.write(fd, view) :]


if __name__ == "__main__":
    sys.exit(main(sys.argv))
