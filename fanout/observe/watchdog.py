"""A blocked event loop made visible, and a process that always ends after a stop signal.

``LoopWatchdog``: a task on the event loop beats every ``interval`` seconds; a daemon
thread watches the beat. When the loop has not run for longer than ``threshold`` (an
``async def`` handler calling ``time.sleep``, a CPU-bound loop with no ``await``), the
thread logs ``event_loop_blocked`` with what the loop's thread is running (its innermost
frames and the current task), while it is still blocked; once the loop runs again, the beat
logs ``event_loop_unblocked`` with how long it was, counted in
``fanout_event_loop_blocked_seconds_total``. Every beat's lateness goes into the
``fanout_event_loop_lag_seconds`` histogram.

``ExitDeadline``: once SIGTERM or SIGINT arrived, the process ends within
``shutdown_grace`` plus ``EXIT_MARGIN_S`` whatever is stuck (a handler that never returns,
an event loop that never runs again, a thread the interpreter would wait for at exit): a
timer thread ends it with ``os._exit`` then, after a last log line. ``exit_now_if_stuck``
does the same at once when the worker has returned (checkpoints written) but threads that
the interpreter would wait for at exit are still running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

import anyio

from fanout.observe.metrics import Metrics

log = logging.getLogger("fanout.watchdog")

EXIT_MARGIN_S = 5.0
"""Seconds after ``shutdown_grace`` for the last checkpoint write and the sinks' stop."""

EXIT_FORCED = 1
"""The exit code of a process that had to be ended by ``ExitDeadline``."""

_STACK_FRAMES = 8


class LoopWatchdog:
    """Reports an event loop that did not run for longer than ``threshold`` seconds.

    Run ``await watchdog.run()`` as a task of the loop to watch (it starts and stops the
    watching thread).

    Args:
        metrics: where the lag and blocked time are counted.
        threshold: seconds without running that count as blocked.
        interval: seconds between beats.
    """

    def __init__(self, metrics: Metrics, threshold: float = 1.0, interval: float = 0.25) -> None:
        self.metrics = metrics
        self.threshold = threshold
        self.interval = interval
        self._beat = time.monotonic()
        self._loop_thread: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self.reports = 0  # event_loop_blocked lines logged

    async def run(self) -> None:
        """Beat until cancelled, with the watching thread running meanwhile."""
        self._loop_thread = threading.get_ident()
        self._loop = asyncio.get_running_loop()
        self._beat = time.monotonic()
        self._stop.clear()
        watcher = threading.Thread(target=self._watch, name="fanout-watchdog", daemon=True)
        watcher.start()
        lag = self.metrics.loop_lag
        blocked = self.metrics.loop_blocked
        try:
            while True:
                await anyio.sleep(self.interval)
                now = time.monotonic()
                late = max(0.0, now - self._beat - self.interval)
                self._beat = now
                lag.observe(late)
                if late > self.threshold:
                    blocked.inc(late)
                    log.warning(
                        "event_loop_unblocked",
                        extra={"blocked_s": round(late, 3), "threshold_s": self.threshold},
                    )
        finally:
            self._stop.set()

    def _watch(self) -> None:
        reported_beat: float | None = None
        while not self._stop.wait(min(self.interval, self.threshold) / 2):
            beat = self._beat
            stale = time.monotonic() - beat - self.interval
            if stale > self.threshold and reported_beat != beat:
                reported_beat = beat  # once per blocked stretch
                self.reports += 1
                log.error(
                    "event_loop_blocked",
                    extra={
                        "blocked_s": round(stale, 3),
                        "threshold_s": self.threshold,
                        "task": self._task_name(),
                        "stack": self._stack(),
                        "note": "nothing on the event loop runs meanwhile: no sink, no "
                        "shard, no /healthz; blocking calls belong in a thread "
                        "(a handler's: isolation: process)",
                    },
                )

    def _stack(self) -> list[str]:
        frame: FrameType | None = sys._current_frames().get(self._loop_thread or -1)
        if frame is None:
            return []
        frames = traceback.extract_stack(frame)[-_STACK_FRAMES:]
        return [f"{f.filename}:{f.lineno} in {f.name}" for f in reversed(frames)]

    def _task_name(self) -> str | None:
        try:
            task = asyncio.current_task(self._loop)
        except RuntimeError:
            return None
        return task.get_name() if task is not None else None


class ExitDeadline:
    """Ends the process ``seconds`` after the first stop signal if it is still there.

    ``install(signals)`` chains a handler in front of the ones installed (the event loop's):
    Python runs it in the main thread even while the event loop is blocked, and it only
    starts the timer. ``start()`` starts it directly.

    Args:
        seconds: how long the process may take to end after the signal.
        exit: ends the process (``os._exit``; tests pass a fake).
    """

    def __init__(self, seconds: float, exit: Callable[[int], Any] = os._exit) -> None:
        self.seconds = seconds
        self._exit = exit
        self._timer: threading.Timer | None = None
        self.started_at: float | None = None

    def install(self, signals: Iterable[signal.Signals]) -> None:
        """Start the timer on any of ``signals``, then run the handler installed before."""
        for signum in signals:
            previous = signal.getsignal(signum)

            def handler(number: int, frame: FrameType | None, previous: Any = previous) -> None:
                self.start()
                if callable(previous):
                    previous(number, frame)

            signal.signal(signum, handler)
            signal.siginterrupt(signum, False)  # as the event loop set it

    def start(self) -> None:
        """Start the timer (once)."""
        if self._timer is not None:
            return
        self.started_at = time.monotonic()
        timer = threading.Timer(self.seconds, self._expire)
        timer.daemon = True
        timer.name = "fanout-exit-deadline"
        self._timer = timer
        timer.start()

    def cancel(self) -> None:
        """The process is ending on its own: no need to force it."""
        if self._timer is not None:
            self._timer.cancel()

    def _expire(self) -> None:
        # The log line may block (a full stderr pipe, a lock the stuck thread holds): the
        # exit comes two seconds later whatever happens to it.
        backstop = threading.Timer(2.0, self._exit, (EXIT_FORCED,))
        backstop.daemon = True
        backstop.start()
        log.error(
            "shutdown_forced",
            extra={
                "after_s": self.seconds,
                "threads": _thread_names(),
                "note": "still running this long after the stop signal; checkpoints written "
                "so far hold, records after them are read again on restart",
            },
        )
        _flush_logs()
        self._exit(EXIT_FORCED)


def exit_now_if_stuck(code: int, exit: Callable[[int], Any] = os._exit, wait: float = 1.0) -> int:
    """``code``, or the process ends now with it if threads that the interpreter would
    wait for at exit (non-daemon ones: a stuck disk write on anyio's threads) are still
    running after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    stuck = []
    for thread in threading.enumerate():
        if thread.daemon or thread is threading.main_thread():
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            stuck.append(thread.name)
    if stuck:
        log.warning(
            "exiting_with_threads_running",
            extra={"threads": stuck, "exit_code": code, "note": "checkpoints are written"},
        )
        _flush_logs()
        exit(code)
    return code


def _thread_names() -> list[str]:
    return sorted(t.name for t in threading.enumerate())


def _flush_logs() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - exiting anyway
            pass
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001, S110 - exiting anyway
            pass
