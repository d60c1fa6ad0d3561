"""Handler worker processes (``isolation: process``): a pool per sink whose processes are
killed and replaced on timeout or death, as Lambda discards an execution environment.

Each process (``sinks.handlerchild``) imports the handler once and runs one call at a time.
A call waits for an idle process (or starts one, which its timeout does not count), sends
the event and waits for the answer at most the handler's timeout. A process that times out,
dies (a crash of the interpreter, ``os._exit``, running out of its memory limit) or reports
``SystemExit`` and the like is killed (SIGKILL) and replaced by the next call that needs
one. Whatever a handler does in there, the worker's threads, memory and event loop are not
its to take.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import orjson
from anyio.streams.buffered import BufferedByteReceiveStream

from sinks.handlerchild import EXIT_OUT_OF_MEMORY
from sinks.lambdaenv import HandlerCrashed, HandlerError, HandlerTimeout, InvalidResponse, LoadError

_HEADER = struct.Struct("!I")
# A dead process shows up as one of these when talking to it.
_GONE = (
    anyio.IncompleteRead,
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)
# Seconds a killed process gets to be reaped before it is left to the system.
_REAP_S = 5.0
# Seconds a process that closed its pipes gets to exit on its own.
_EXIT_S = 1.0


class _Child:
    """One worker process and its framed pipes."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        assert process.stdin is not None
        assert process.stdout is not None
        self._stdin = process.stdin
        self._stdout = BufferedByteReceiveStream(process.stdout)
        self.killed = False

    @property
    def pid(self) -> int:
        return self.process.pid

    async def send(self, body: bytes) -> None:
        await self._stdin.send(_HEADER.pack(len(body)))
        await self._stdin.send(body)

    async def receive(self) -> dict[str, Any]:
        (size,) = _HEADER.unpack(await self._stdout.receive_exactly(_HEADER.size))
        reply = orjson.loads(await self._stdout.receive_exactly(size))
        if not isinstance(reply, dict):
            raise HandlerCrashed("the worker process answered garbage")
        return reply

    async def kill(self, *, dying: bool = False) -> int | None:
        """SIGKILL it and reap it (shielded: this also runs on the way out of a cancelled
        call); its exit status, if it was reaped in time.

        ``dying``: it closed its pipes, so it is exiting on its own: give it a moment first,
        since signalling an exited process reaps it behind asyncio's back (which then loses
        its exit status).
        """
        with anyio.CancelScope(shield=True):
            if dying:
                with anyio.move_on_after(_EXIT_S):
                    await self.process.wait()
            if not self.killed and self.process.returncode is None:
                with suppress(ProcessLookupError):
                    self.process.kill()
            self.killed = True
            with anyio.move_on_after(_REAP_S):
                await self.process.aclose()
        return self.process.returncode


class ProcessPool:
    """Up to ``size`` worker processes running one handler.

    Args:
        sink: the sink's name (for messages).
        handler: the function, as ``package.module:function``.
        size: processes (and calls at once) at most.
        memory_limit_in_mb: each process's address-space limit (``RLIMIT_AS``).
        init_timeout: seconds a new process may take to import the handler.
    """

    def __init__(
        self,
        sink: str,
        handler: str,
        *,
        size: int,
        memory_limit_in_mb: int,
        init_timeout: float = 10.0,
    ) -> None:
        self.sink = sink
        self.handler = handler
        self.size = size
        self.memory_limit_in_mb = memory_limit_in_mb
        self.init_timeout = init_timeout
        self._slots = anyio.Semaphore(size)
        self._idle: list[_Child] = []
        self._children: set[_Child] = set()
        self._closed = False
        self._init = orjson.dumps(
            {"handler": handler, "path": sys.path, "memory_limit_in_mb": memory_limit_in_mb}
        )
        # The worker process finds ``sinks.handlerchild`` where this module was found.
        root = str(Path(__file__).resolve().parents[1])
        path = os.environ.get("PYTHONPATH")
        self._env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, path])))

    @property
    def pids(self) -> list[int]:
        """Process ids of the worker processes alive now."""
        return sorted(child.pid for child in self._children if not child.killed)

    async def start(self) -> None:
        """Start one worker process, so a handler that cannot be imported fails start-up.

        Raises:
            LoadError: the handler cannot be imported (the process says why).
            HandlerCrashed: the process did not start.
        """
        self._idle.append(await self._spawn())

    async def invoke(self, request: bytes, limit: float) -> Any:
        """Run one call (``request`` as ``sinks.handlerchild`` reads it): the response.

        Raises:
            HandlerTimeout: no answer within ``limit`` seconds (the process is killed).
            HandlerCrashed: the process died, or the handler raised ``SystemExit`` or the
                like (the process is replaced).
            HandlerError: the handler raised an exception.
            InvalidResponse: the handler returned something that is not JSON.
        """
        async with self._slots:
            if self._closed:
                raise HandlerCrashed(f"the worker processes of sink {self.sink} are stopped")
            child = self._idle.pop() if self._idle else await self._spawn()
            keep = False
            try:
                with anyio.move_on_after(limit) as scope:
                    await child.send(request)
                    reply = await child.receive()
                if scope.cancelled_caught:
                    raise HandlerTimeout(
                        f"handler {self.handler} timed out after {limit:g}s; its worker "
                        f"process (pid {child.pid}) was killed"
                    )
                keep = "crash" not in reply and "out_of_memory" not in reply
            except _GONE:
                status = await child.kill(dying=True)
                raise HandlerCrashed(self._death(child, status)) from None
            finally:
                if keep and not self._closed:
                    self._idle.append(child)
                else:
                    await self._discard(child)
        return self._answer(reply, child)

    async def stop(self) -> None:
        """Kill every worker process. Idempotent."""
        self._closed = True
        self._idle.clear()
        for child in list(self._children):
            await self._discard(child)

    async def _discard(self, child: _Child) -> None:
        await child.kill()
        self._children.discard(child)

    async def _spawn(self) -> _Child:
        process = await anyio.open_process(
            [sys.executable, "-m", "sinks.handlerchild", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the handler's output joins the worker's log stream
            start_new_session=True,  # a terminal's signals are for the worker only
            env=self._env,
        )
        child = _Child(process)
        self._children.add(child)
        try:
            with anyio.fail_after(self.init_timeout):
                await child.send(self._init)
                reply = await child.receive()
        except TimeoutError:
            await self._discard(child)
            raise HandlerCrashed(
                f"a worker process for {self.handler} did not start within {self.init_timeout:g}s"
            ) from None
        except _GONE:
            status = await child.kill(dying=True)
            self._children.discard(child)
            raise HandlerCrashed(self._death(child, status)) from None
        except BaseException:
            await self._discard(child)
            raise
        if "error" in reply:
            await self._discard(child)
            raise LoadError(str(reply["error"]))
        return child

    def _answer(self, reply: dict[str, Any], child: _Child) -> Any:
        if "result" in reply:
            return reply["result"]
        if "out_of_memory" in reply:
            raise HandlerCrashed(self._death(child, EXIT_OUT_OF_MEMORY) + "; it was replaced")
        if "error" in reply:
            error = reply["error"]
            raise HandlerError(
                f"{error.get('type')}: {error.get('message')} ({error.get('where')})"
            )
        if "invalid" in reply:
            raise InvalidResponse(str(reply["invalid"]))
        if "crash" in reply:
            raise HandlerCrashed(
                f"handler raised {reply['crash']}; its worker process was replaced"
            )
        raise HandlerCrashed(f"the worker process answered {reply!r}")

    def _death(self, child: _Child, status: int | None) -> str:
        what = f"the worker process of handler {self.handler} (pid {child.pid})"
        if status == EXIT_OUT_OF_MEMORY:
            return f"{what} ran out of memory (memory_limit_in_mb: {self.memory_limit_in_mb})"
        if status is not None and status < 0:
            try:
                name = signal.Signals(-status).name
            except ValueError:
                name = f"signal {-status}"
            return f"{what} was killed by {name}"
        return f"{what} exited with code {status}"
