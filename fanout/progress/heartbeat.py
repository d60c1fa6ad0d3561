"""This worker's heartbeat: the renewals of all its leases at once, written from a thread of
their own so that a loop saturated with records cannot delay them."""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable

import anyio
import anyio.to_thread

from fanout.errors import FanoutError
from fanout.progress.renewals import Renewals
from fanout.progress.store import CheckpointStore, WorkerRow

log = logging.getLogger("fanout.leases")

# A loop that did not tick for this many lease durations is wedged: renewals stop.
WEDGED = 3


class Heartbeat:
    """Raises this worker's heartbeat counter every renewal interval and records each
    renewal in ``renewals``.

    Args:
        store: the checkpoint store.
        worker_id: this worker.
        sinks: this worker's sink set, as stored.
        renewals: updated after every heartbeat written.
        leases: how many leases this worker holds now (written in its row, logged).
        on_failure: called after a heartbeat failed (from the heartbeat thread too).
    """

    def __init__(
        self,
        store: CheckpointStore,
        worker_id: str,
        sinks: str,
        renewals: Renewals,
        *,
        leases: Callable[[], int],
        on_failure: Callable[[], None],
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.sinks = sinks
        self.renewals = renewals
        self.timing = renewals.timing
        self.clock = renewals.clock
        self._leases = leases
        self._on_failure = on_failure
        self.loop_alive = self.clock()  # when the event loop last showed signs of life
        self._beat = 0
        self._started_at = time.time()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        """Renew from a thread: a loop busy with records (every shard reading at full speed)
        can delay its tasks by seconds, a thread gets the interpreter within milliseconds."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._beat_forever, name=f"fanout-heartbeat-{self.worker_id}", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        """Stop the thread (waits at most one lease duration for it)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            await anyio.to_thread.run_sync(thread.join, self.timing.duration)

    def _beat_forever(self) -> None:
        interval = self.timing.renew_interval
        rng = random.Random()
        blocked = False
        while not self._stop.wait(interval * rng.uniform(0.9, 1.0)):
            started = self.clock()
            # A loop that showed no sign of life for this long is wedged, not busy (a busy
            # one is late by seconds): stop renewing, so peers take its shards.
            if started - self.loop_alive > WEDGED * self.timing.duration:
                if not blocked:
                    blocked = True
                    log.error(
                        "event_loop_blocked",
                        extra={
                            "worker": self.worker_id,
                            "seconds": round(started - self.loop_alive, 1),
                            "note": "renewals stop: the leases expire and peers take them",
                        },
                    )
                continue
            blocked = False
            beat = self._beat + 1
            try:
                self.store.heartbeat_sync(self._row(beat))
            except Exception as exc:  # noqa: BLE001 - any failure is a failed renewal
                self._failed(str(exc) or type(exc).__name__)
                continue
            self._beat = beat
            self.renewals.renewed(started, self.clock())

    async def write(self) -> None:
        """Write one heartbeat from the event loop (raises what the store raises)."""
        beat = self._beat + 1
        await self.store.heartbeat(self._row(beat))
        self._beat = beat

    async def renew(self) -> bool:
        """One heartbeat from the event loop (start-up; tests); True if it was written."""
        started = self.clock()
        try:
            with anyio.fail_after(self.timing.duration):
                await self.write()
        except (FanoutError, TimeoutError) as exc:
            self._failed(str(exc) or "timed out")
            return False
        self.renewals.renewed(started, self.clock())
        return True

    def _row(self, beat: int) -> WorkerRow:
        return WorkerRow(
            worker_id=self.worker_id,
            heartbeat=beat,
            heartbeat_at=time.time(),
            started_at=self._started_at,
            host=socket.gethostname(),
            pid=os.getpid(),
            sinks=self.sinks,
            leases=self._leases(),
        )

    def _failed(self, error: str) -> None:
        """A heartbeat failed (called from the heartbeat thread too: logging and the
        Prometheus client are thread-safe)."""
        log.warning(
            "lease_renew_failed",
            extra={
                "worker": self.worker_id,
                "error": error,
                "leases": self._leases(),
                "valid_for_s": round(max(0.0, self.renewals.left()), 2),
            },
        )
        self._on_failure()
