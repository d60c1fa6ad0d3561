"""The sink set of an application: how it is stored, and the start-up check that every live
worker of the application runs the same sinks (they share its shards)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import anyio

from fanout.errors import ConfigError
from fanout.progress.renewals import LeaseTiming
from fanout.progress.store import Snapshot, WorkerRow
from fanout.progress.workers import RECENT_BEATS


def sink_set_text(sinks: dict[str, str]) -> str:
    """A sink set as stored: ``name=type`` pairs, sorted, joined by commas."""
    return ",".join(f"{name}={kind}" for name, kind in sorted(sinks.items()))


def parse_sink_set(text: str | None) -> dict[str, str]:
    """The inverse of :func:`sink_set_text`."""
    if not text:
        return {}
    pairs = (part.partition("=") for part in text.split(","))
    return {name: kind for name, _, kind in pairs}


class SinkChanges(NamedTuple):
    """Sink names added, removed and given another type, each sorted."""

    added: list[str]
    removed: list[str]
    retyped: list[str]


def sink_changes(before: str | None, after: str | None) -> SinkChanges:
    """What changed from the stored sink set ``before`` to ``after``."""
    old, new = parse_sink_set(before), parse_sink_set(after)
    return SinkChanges(
        added=sorted(set(new) - set(old)),
        removed=sorted(set(old) - set(new)),
        retyped=sorted(n for n in set(new) & set(old) if new[n] != old[n]),
    )


async def check_sink_set(
    snap: Snapshot,
    scan: Callable[[], Awaitable[Snapshot]],
    *,
    application: str,
    worker_id: str,
    sinks: str,
    timing: LeaseTiming,
    clock: Callable[[], float],
) -> None:
    """Refuse to start beside a live worker of the application with other sinks.

    Args:
        snap: the scan made at start-up.
        scan: scans the store again (while watching whether a heartbeat moves).
        application: the application's name (for the message).
        worker_id: this worker.
        sinks: this worker's sink set, as stored.
        timing: the lease duration (how long a heartbeat is watched).
        clock: monotonic seconds.

    Raises:
        ConfigError: a live worker of the application runs other sinks.
    """
    recent = time.time() - RECENT_BEATS * timing.duration
    others = {
        w.worker_id: w.heartbeat
        for w in snap.workers
        if w.worker_id != worker_id and w.sinks != sinks and w.heartbeat_at > recent
    }
    if not others:
        return
    # Alive means its heartbeat moves: watch for up to one lease duration.
    rows = {w.worker_id: w for w in snap.workers}
    deadline = clock() + timing.duration
    while others and clock() < deadline:
        await anyio.sleep(min(timing.renew_interval / 2, 1.0))
        latest = await scan()
        for row in latest.workers:
            if row.worker_id in others and row.heartbeat != others[row.worker_id]:
                raise _refusal(rows[row.worker_id], application, sinks)
        present = {w.worker_id for w in latest.workers}
        others = {w: b for w, b in others.items() if w in present}


def _refusal(live: WorkerRow, application: str, sinks: str) -> ConfigError:
    changed = sink_changes(live.sinks, sinks)
    changes = "; ".join(
        part
        for part in (
            f"added {', '.join(changed.added)}" if changed.added else "",
            f"removed {', '.join(changed.removed)}" if changed.removed else "",
            f"changed type of {', '.join(changed.retyped)}" if changed.retyped else "",
        )
        if part
    )
    return ConfigError(
        "sinks",
        f"application {application!r} has a live worker ({live.worker_id} on "
        f"{live.host or '?'}, pid {live.pid}) running the sinks {live.sinks or '(none)'}; "
        f"this configuration runs {sinks} ({changes}). Workers of one application "
        "share its shards and must run the same sinks: stop the other workers first, or "
        "give this configuration its own `application` name",
    )
