"""Showing a backfill's progress: a bar on a terminal (stderr), log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from fanout.backfill.runner import Backfill

log = logging.getLogger("fanout.backfill")

BAR = 30


class ProgressReport:
    """Called by the backfill about once a second.

    Args:
        interval: seconds between log lines (when not drawing a bar).
        stream: where the bar goes (default stderr); a bar only if it is a terminal.
    """

    def __init__(self, interval: float, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.bar = self.stream.isatty()
        self.interval = interval
        self._last_line = 0.0

    def __call__(self, backfill: Backfill) -> None:
        elapsed = max(1e-6, time.monotonic() - backfill.started)
        read = backfill.items_read
        total = backfill.item_count
        rate = backfill.items_this_run / elapsed
        rcu = backfill.budget.consumed / elapsed
        # as saved: a run that stops now resumes from there
        done = sum(1 for s in backfill.saved if s.done)
        settled = sum(s.items for s in backfill.saved)
        if self.bar:
            share = min(1.0, read / total) if total else 0.0
            filled = int(share * BAR)
            of = f"/~{total:,}" if total else ""
            self.stream.write(
                f"\rbackfill [{'#' * filled}{'.' * (BAR - filled)}] {read:,}{of} items "
                f"{rate:,.0f}/s  {rcu:,.1f}/{backfill.options.read_capacity:g} RCU/s  "
                f"segments {done}/{len(backfill.scans)} "
            )
            self.stream.flush()
            return
        now = time.monotonic()
        if now - self._last_line < self.interval:
            return
        self._last_line = now
        log.info(
            "backfill_progress",
            extra={
                "backfill": backfill.row.backfill_id if backfill.row else None,
                "items": read,
                "items_settled": settled,
                "table_items": total,
                "seconds": round(elapsed, 3),
                "items_per_s": round(rate, 1),
                "consumed_rcu": round(backfill.budget.consumed, 1),
                "rcu_per_s": round(rcu, 2),
                "read_capacity": backfill.options.read_capacity,
                "segments_done": done,
                "segments": len(backfill.scans),
            },
        )

    def close(self) -> None:
        if self.bar:
            self.stream.write("\n")
            self.stream.flush()
