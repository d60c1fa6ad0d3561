"""Code the worker calls but does not trust: blocking calls on threads of their own, and
exceptions that must not end the worker.

``Offload(size, name)`` runs blocking functions on at most ``size`` daemon threads that
belong to it alone. anyio's default thread limiter is shared by everything in the process,
so a slow handler there makes checkpoint writes, dead-letter writes and the readiness probe
queue behind it; an ``Offload`` per user (a sink, the SQLite store, a dead-letter file)
keeps them apart. A call can be given a timeout that runs from when the function starts,
never while it waits for a thread. A call that times out cannot be stopped (Python cannot
kill a thread): its caller gets ``CallTimeout`` at once, but the call keeps its thread and
its slot until it returns, so however many calls hang there are never more than ``size``
threads. The threads are daemon threads: a call that never returns does not keep the
process from exiting.

``own_cancellation(exc)`` tells the worker's own cancellation (a cancel scope around the
task was cancelled: re-raise it) from a ``CancelledError`` that called code raised by
itself (an ordinary failure). ``contained(exc)`` turns any other ``BaseException``
(``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``, custom ones) into a
``CallCrashed`` the worker can handle like any error.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import anyio

from fanout.errors import CallCrashed, CallTimeout

T = TypeVar("T")


def own_cancellation(exc: BaseException) -> bool:
    """True when ``exc`` is the worker cancelling the current task, not user code raising.

    A cancel scope around the current task was cancelled (its effective deadline is in the
    past), or the task has a cancellation request pending. A ``CancelledError`` raised by
    code the worker called, with no such request, is that code's failure.
    """
    if not isinstance(exc, anyio.get_cancelled_exc_class()):
        return False
    if anyio.current_effective_deadline() == -math.inf:
        return True
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def contained(exc: BaseException, who: str) -> Exception:
    """``exc`` as an ordinary exception: itself when it is one, else a ``CallCrashed``
    naming ``who`` raised what (``exc`` is its ``__cause__``)."""
    if isinstance(exc, Exception):
        return exc
    crashed = CallCrashed(f"{who} raised {describe(exc)}")
    crashed.__cause__ = exc
    return crashed


def describe(exc: BaseException) -> str:
    """``Type: message``, or ``Type`` when there is no message."""
    name = type(exc).__name__
    text = str(exc)
    return f"{name}: {text}" if text else name


# The call running on the current thread, if an Offload runs it (``restart_clock``,
# ``abandoned``).
_running = threading.local()


def restart_clock() -> None:
    """In a function an ``Offload`` runs: its ``limit`` counts again from now.

    For a function that makes several calls in a row (``HandlerSink.send_run``), each of
    which has the whole limit.
    """
    call: _Call[Any] | None = getattr(_running, "call", None)
    if call is not None:
        call.started = time.monotonic()


def abandoned() -> bool:
    """In a function an ``Offload`` runs: True once its caller stopped waiting for it (it
    timed out or was cancelled), so the function should stop as soon as it can."""
    call: _Call[Any] | None = getattr(_running, "call", None)
    return call is not None and call.abandoned


class _Call(Generic[T]):
    """One function call handed to a thread, and what became of it."""

    __slots__ = ("abandoned", "args", "done", "error", "fn", "loop", "started", "value")

    def __init__(
        self, fn: Callable[..., T], args: tuple[Any, ...], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.fn = fn
        self.args = args
        self.loop = loop
        self.done = anyio.Event()  # set on the event loop once the function returned
        self.started: float | None = None  # monotonic time the function was called
        self.value: T | None = None
        self.error: BaseException | None = None
        self.abandoned = False  # the caller stopped waiting (timeout or cancellation)

    def run(self) -> None:
        """Call the function (in a thread), keeping its result or whatever it raised."""
        self.started = time.monotonic()
        _running.call = self
        try:
            self.value = self.fn(*self.args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, never lost
            self.error = exc
        finally:
            _running.call = None
        # What it was called with (a whole batch, say) is not kept alive by a call whose
        # caller may be gone.
        self.args = ()


class Offload:
    """Blocking calls on at most ``size`` daemon threads of its own.

    ``await offload.run(fn, *args, limit=...)`` waits for a free slot (a thread), runs
    ``fn(*args)`` there and returns its result or raises what it raised (a
    ``BaseException`` that is not an ``Exception`` arrives as ``CallCrashed``). With
    ``limit`` (seconds), ``CallTimeout`` is raised once the function has run that long; if the
    caller is cancelled, the cancellation goes through at once. Either way the function
    keeps its thread and slot until it returns (``abandoned`` counts those calls).

    Args:
        size: threads (and calls running at once) at most.
        name: names the threads (``<name>-<n>``), so stacks and logs say whose they are.
    """

    def __init__(self, size: int, name: str) -> None:
        if size < 1:
            raise ValueError("an Offload needs at least one thread")
        self.size = size
        self.name = name
        self._slots = anyio.Semaphore(size)
        self._lock = threading.Lock()
        self._calls: queue.SimpleQueue[_Call[Any]] = queue.SimpleQueue()
        self._idle = 0  # threads waiting for a call (counted before their slot is freed)
        self._threads = 0
        self.running = 0  # calls holding a slot, abandoned ones included
        self.abandoned = 0  # calls whose caller gave up and that have not returned yet

    @property
    def threads(self) -> int:
        """Threads started so far (they stay, idle, for later calls; never above ``size``)."""
        return self._threads

    async def run(self, fn: Callable[..., T], *args: Any, limit: float | None = None) -> T:
        """``fn(*args)`` on one of this offload's threads.

        Raises:
            CallTimeout: ``fn`` ran for ``limit`` seconds and has not returned.
            CallCrashed: ``fn`` raised a ``BaseException`` that is not an ``Exception``.
            Exception: whatever ``fn`` raised.
        """
        await self._slots.acquire()
        call: _Call[T] = _Call(fn, args, asyncio.get_running_loop())
        try:
            self._hand_off(call)
        except BaseException:
            self._slots.release()
            raise
        self.running += 1
        try:
            await self._wait(call, limit, _name(fn))
        except BaseException:
            if not call.done.is_set():
                call.abandoned = True
                self.abandoned += 1
            raise
        if call.error is not None:
            raise contained(call.error, f"{self.name} call {_name(fn)}")
        return call.value  # type: ignore[return-value]

    async def _wait(self, call: _Call[T], limit: float | None, name: str) -> None:
        if limit is None:
            await call.done.wait()
            return
        # The clock starts when the function does: a call that waited for a thread (the
        # previous one returning) gets its whole timeout.
        while not call.done.is_set():
            started = call.started
            remaining = limit if started is None else started + limit - time.monotonic()
            if remaining <= 0:
                raise CallTimeout(f"{name} did not return within {limit:g}s")
            with anyio.move_on_after(remaining):
                await call.done.wait()

    def _hand_off(self, call: _Call[Any]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._calls.put(call)
                return
            self._threads += 1
            number = self._threads
        thread = threading.Thread(
            target=self._work, args=(call,), name=f"{self.name}-{number}", daemon=True
        )
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._threads -= 1
            raise

    def _work(self, call: _Call[Any]) -> None:
        while True:
            call.run()
            # Idle before the slot is freed: the next call finds this thread waiting, so
            # there are never more threads than slots.
            with self._lock:
                self._idle += 1
            try:
                call.loop.call_soon_threadsafe(self._returned, call)
            except RuntimeError:  # the event loop is closed: the process is ending
                return
            del call  # an idle thread keeps no call (and no result) alive
            call = self._calls.get()

    def _returned(self, call: _Call[Any]) -> None:
        self.running -= 1
        if call.abandoned:
            self.abandoned -= 1
        call.done.set()
        self._slots.release()


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
