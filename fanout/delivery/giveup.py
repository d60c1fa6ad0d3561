"""Records given up on: written to the route's dead-letter destination until they are stored.

Nothing is dropped: while the destination fails, the lane's batch is not settled, so the
shard's checkpoint does not advance past it. Each stored record is counted and logged
(``record_dead_lettered``); each failed write is counted and logged (``dead_letter_failed``).
"""

from __future__ import annotations

import logging

from fanout.delivery import deadletter as dead_letters
from fanout.delivery.route import Route
from fanout.delivery.telemetry import LaneTelemetry
from fanout.progress.tracker import ShardProgress
from fanout.records import Record

log = logging.getLogger("fanout.dispatch")

# Backoff attempts stop growing here: a destination that comes back is used within a few
# initial delays, not after a full cap.
_MAX_BACKOFF_ATTEMPT = 8


class DeadLetterWriter:
    """Builds and writes the dead-letter entries of one shard for one sink."""

    def __init__(self, route: Route, progress: ShardProgress, telemetry: LaneTelemetry) -> None:
        self.route = route
        self.progress = progress
        self.telemetry = telemetry

    def entry(
        self,
        record: Record,
        *,
        error_class: str,
        message: str,
        attempts: int,
        first_failure_at: float,
        last_failure_at: float,
    ) -> dead_letters.Entry:
        """The dead-letter entry of ``record`` from this shard for this sink."""
        progress = self.progress
        return dead_letters.entry(
            record=record,
            sink=self.route.name,
            stream=progress.stream_name,
            stream_arn=progress.stream_arn,
            shard_id=progress.shard_id,
            error_class=error_class,
            error_message=message,
            attempts=attempts,
            first_failure_at=first_failure_at,
            last_failure_at=last_failure_at,
        )

    async def write(self, entries: list[dead_letters.Entry]) -> None:
        """Write ``entries``; keep trying (with the route's backoff) until all are stored.

        A write that stored some entries (``PartialDeadLetterError``) is retried for the rest
        only.
        """
        destination = self.route.dead_letter
        attempt = 0
        remaining = entries
        while True:
            if not self.progress.may_deliver():  # the lease moved: the new owner retries them
                await self.progress.lease_lost()
            try:
                await destination.write(remaining)
            except Exception as exc:  # noqa: BLE001 - whatever broke, the record stays unsettled
                attempt += 1
                if isinstance(exc, dead_letters.PartialDeadLetterError) and exc.remaining:
                    left = {id(e) for e in exc.remaining}
                    self._count([e for e in remaining if id(e) not in left])
                    remaining = exc.remaining
                self.telemetry.dlq_failures.inc()
                log.error(
                    "dead_letter_failed",
                    extra=self.telemetry.fields(
                        remaining[0]["record"],
                        records=len(remaining),
                        destination=destination.name,
                        error=f"{type(exc).__name__}: {exc}",
                        attempt=attempt,
                        note="the shard does not advance until the dead-letter write succeeds",
                    ),
                )
                await self.route.backoff.wait(min(attempt, _MAX_BACKOFF_ATTEMPT))
                continue
            self._count(remaining)
            return

    def _count(self, entries: list[dead_letters.Entry]) -> None:
        if not entries:
            return
        telemetry = self.telemetry
        telemetry.dlq_writes.inc(len(entries))
        telemetry.dead_lettered.inc(len(entries))
        destination = self.route.dead_letter.name
        for item in entries:
            log.error(
                "record_dead_lettered",
                extra=telemetry.fields(
                    item["record"],
                    destination=destination,
                    error_class=item["error"]["class"],
                    error=item["error"]["message"],
                    attempts=item["attempts"],
                ),
            )
