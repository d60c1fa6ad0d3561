"""The event-loop watchdog, and the deadline that ends the process after a stop signal."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import anyio
import pytest

from fanout.observe.metrics import Metrics
from fanout.observe.watchdog import (
    EXIT_FORCED,
    ExitDeadline,
    LoopWatchdog,
    exit_now_if_stuck,
)


def blocking_call_under_test() -> None:
    time.sleep(1.2)


async def test_a_blocked_loop_is_reported_while_blocked_with_what_it_runs(caplog):
    caplog.set_level(logging.INFO, "fanout.watchdog")
    metrics = Metrics()
    watchdog = LoopWatchdog(metrics, threshold=0.3, interval=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(watchdog.run)
        await anyio.sleep(0.2)
        blocking_call_under_test()
        await anyio.sleep(0.2)
        tg.cancel_scope.cancel()
    (blocked,) = [r for r in caplog.records if r.getMessage() == "event_loop_blocked"]
    assert blocked.levelname == "ERROR"
    fields = blocked.__dict__
    assert 0.3 < fields["blocked_s"] < 1.2  # reported during the block, not after it
    assert fields["threshold_s"] == 0.3
    assert fields["stack"][0].endswith("in blocking_call_under_test")  # innermost first
    assert fields["task"]
    (unblocked,) = [r for r in caplog.records if r.getMessage() == "event_loop_unblocked"]
    assert 1.0 < unblocked.__dict__["blocked_s"] < 2.5
    blocked_total = metrics.registry.get_sample_value("fanout_event_loop_blocked_seconds_total")
    assert blocked_total is not None
    assert blocked_total > 1.0
    lag_count = metrics.registry.get_sample_value("fanout_event_loop_lag_seconds_count")
    assert lag_count is not None
    assert lag_count >= 4
    assert watchdog.reports == 1


async def test_a_busy_but_running_loop_is_not_reported(caplog):
    watchdog = LoopWatchdog(Metrics(), threshold=0.3, interval=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(watchdog.run)
        for _ in range(20):
            time.sleep(0.02)  # short stretches, each well under the threshold
            await anyio.sleep(0)
        tg.cancel_scope.cancel()
    assert watchdog.reports == 0
    assert "event_loop_blocked" not in caplog.text


def test_the_exit_deadline_ends_the_process_after_a_signal_and_keeps_the_old_handler():
    exits: list[int] = []
    called: list[int] = []
    deadline = ExitDeadline(0.2, exit=exits.append)
    previous = signal.signal(signal.SIGUSR1, lambda n, f: called.append(n))
    try:
        deadline.install([signal.SIGUSR1])
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)  # the handler runs in the main thread, between bytecodes
        assert called == [signal.SIGUSR1]
        assert deadline.started_at is not None
        time.sleep(0.4)
        assert exits == [EXIT_FORCED]
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_the_exit_deadline_can_be_called_off():
    exits: list[int] = []
    deadline = ExitDeadline(0.1, exit=exits.append)
    deadline.start()
    deadline.cancel()
    time.sleep(0.3)
    assert exits == []


def test_a_stuck_thread_does_not_keep_the_process_from_ending(caplog):
    release = threading.Event()
    stuck = threading.Thread(target=release.wait, name="stuck-disk-write")
    stuck.start()
    exits: list[int] = []
    try:
        assert exit_now_if_stuck(0, exit=exits.append, wait=0.1) == 0
        assert exits == [0]
        (line,) = [r for r in caplog.records if r.getMessage() == "exiting_with_threads_running"]
        assert "stuck-disk-write" in line.__dict__["threads"]
    finally:
        release.set()
        stuck.join()
    exits.clear()
    assert exit_now_if_stuck(0, exit=exits.append, wait=0.1) == 0
    assert exits == []


@pytest.fixture(autouse=True)
def _watchdog_logs(caplog):
    caplog.set_level(logging.INFO, "fanout.watchdog")
