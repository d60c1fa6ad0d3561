"""The seam between progress tracking and storage: ``CheckpointStore``, its rows and leases.

A store belongs to one *application* (``Config.application``): every row it reads or writes
is that application's, so two configurations on one store are two consumers. Besides the
per-shard checkpoints it holds what the workers of an application coordinate through:

* a **lease** per shard (``owner``, ``counter``): who reads the shard. The counter grows on
  every change of owner (take, release, hand-over), so a write conditional on
  ``(owner, counter)`` fails once the lease moved, even if it came back since;
* a **worker row** per running worker, whose ``heartbeat`` counter the worker raises every
  renewal interval; a lease whose owner's heartbeat stood still for ``lease_duration`` (on
  the observer's own monotonic clock) is expired;
* the application's **sink set**, as the last worker started recorded it;
* the **window states** of a shard (``WindowState``: a ``tumbling_window`` handler sink's
  open window and its state), written with the shard's checkpoint in one transaction.
* its **backfills** (``fanout backfill``, ``backfill: on_first_start``): per backfill, what
  it loads and who runs it, and per Scan segment how far its settled pages reach.

``fanout.progress.leases`` holds the rules built on these operations; ``docs/leases.md``
the protocol and its timing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson


@dataclass(frozen=True, slots=True)
class LeaseToken:
    """What a write conditional on a lease expects of the row: its owner and counter."""

    owner: str
    counter: int


@dataclass(frozen=True, slots=True)
class WindowState:
    """The tumbling window of one sink on one shard, stored with the shard's checkpoint.

    Attributes:
        sink: the sink's name.
        start: the open window's start (epoch seconds); None when no window is open.
        state: the state the handler returned for the open window (a JSON object).
        covered: the sink's last record (sequence number) that ``state`` accounts for:
            after a restart, records up to it are not delivered to the sink again.
        closed: the end of the last window whose final invocation completed; no window
            before it opens again.
    """

    sink: str
    start: float | None = None
    state: Mapping[str, Any] = field(default_factory=dict)
    covered: str | None = None
    closed: float | None = None

    def to_json(self) -> bytes:
        """Everything but the sink's name, as JSON (how the stores keep it)."""
        return orjson.dumps(
            {
                "start": self.start,
                "state": self.state,
                "covered": self.covered,
                "closed": self.closed,
            }
        )

    @classmethod
    def from_json(cls, sink: str, data: bytes | str) -> WindowState:
        """The window state ``to_json`` wrote for ``sink``."""
        raw = orjson.loads(data)
        return cls(
            sink, raw.get("start"), raw.get("state") or {}, raw.get("covered"), raw.get("closed")
        )


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """One checkpoint to write.

    Attributes:
        stream_arn: the stream the shard belongs to.
        shard_id: the shard.
        sequence: the last settled sequence number; None keeps the stored one.
        finished: the shard was read to its end and every record settled (never undone).
        lease: write only while the row's lease is this one (else the row is rejected); a
            finished row written with its lease also releases the lease. None: written
            whoever holds the shard (facts any worker may record: a shard skipped or gone).
        windows: window states written with the row, in the same transaction (only if the
            row is written). A finished row deletes the shard's window states instead (at
            least those it names).
    """

    stream_arn: str
    shard_id: str
    sequence: str | None
    finished: bool = False
    lease: LeaseToken | None = None
    windows: tuple[WindowState, ...] = ()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One stored shard row: its checkpoint and its lease.

    Attributes:
        stream_arn: the stream.
        shard_id: the shard.
        sequence: the checkpoint (None: nothing settled yet).
        finished: read to its end, every record settled.
        updated_at: when the row was created or its checkpoint last written (epoch s).
        owner: the worker holding the lease, if any.
        counter: the lease counter (grows on every change of owner).
        taken_at: when the owner took the lease (epoch s, the taker's clock).
        handoff_to: a worker that asked the owner to hand the shard over.
    """

    stream_arn: str
    shard_id: str
    sequence: str | None
    finished: bool
    updated_at: float
    owner: str | None = None
    counter: int = 0
    taken_at: float | None = None
    handoff_to: str | None = None

    @property
    def lease(self) -> LeaseToken | None:
        """The lease as a write conditional on it expects it (None when unowned)."""
        return LeaseToken(self.owner, self.counter) if self.owner is not None else None


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """One running worker of the application.

    Attributes:
        worker_id: unique per process start (host, pid and a random part).
        heartbeat: raised by the worker every renewal interval; starts at 1.
        heartbeat_at: when it was last raised (epoch s, the worker's clock; for people and
            start-up checks only: expiry is judged on the observer's monotonic clock).
        started_at: when the worker started (epoch s).
        host: the host name.
        pid: the process id.
        sinks: the worker's sink set, ``name=type`` joined by commas.
        leases: leases it held at its last heartbeat.
    """

    worker_id: str
    heartbeat: int
    heartbeat_at: float
    started_at: float
    host: str = ""
    pid: int = 0
    sinks: str = ""
    leases: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything of one application: shard rows, worker rows, the recorded sink set."""

    shards: list[Checkpoint] = field(default_factory=list)
    workers: list[WorkerRow] = field(default_factory=list)
    sinks: str | None = None


# A claim's ``heartbeat`` when the owner has no worker row: the row must still be absent.
NO_WORKER_ROW = 0


@dataclass(frozen=True, slots=True)
class Claim:
    """A take: the lease of one shard as the taker saw it, to become the taker's.

    The take succeeds only if the row is unfinished and still has ``owner`` and ``counter``
    and, when ``heartbeat`` is set (an expired lease), the owner's worker row still has that
    heartbeat (``NO_WORKER_ROW``: still has no row). So an owner that renewed after the
    taker looked keeps its lease.
    """

    stream_arn: str
    shard_id: str
    owner: str | None
    counter: int
    heartbeat: int | None = None


@dataclass(frozen=True, slots=True)
class Release:
    """Give a held lease up: to nobody (``to`` None), or straight to another worker."""

    stream_arn: str
    shard_id: str
    lease: LeaseToken
    to: str | None = None


@dataclass(frozen=True, slots=True)
class BackfillRow:
    """One backfill of the application: which table it scans into which sinks, its records'
    version time, and who runs it (``fanout.backfill``; ``docs/backfill.md``).

    Attributes:
        backfill_id: unique within the application (letters, digits, ``.``, ``_``, ``-``).
        stream: the configured stream whose table is scanned.
        table: the table.
        sinks: the sinks it loads, names joined by commas.
        segments: Scan segments (``TotalSegments``).
        version_time: the ``ApproximateCreationDateTime`` its records carry (epoch s): its
            first start, minus the clock margin. Kept for good, so a resumed backfill writes
            the same stamps.
        created_at: when it was created (epoch s).
        origin: ``cli`` (``fanout backfill``) or ``worker`` (``backfill: on_first_start``).
        done: every segment settled (or the backfill was abandoned).
        owner: the process running it (a worker id), None when nobody does.
        owner_at: when the owner last wrote (epoch s, the owner's clock).
    """

    backfill_id: str
    stream: str
    table: str
    sinks: str
    segments: int
    version_time: int
    created_at: float
    origin: str
    done: bool = False
    owner: str | None = None
    owner_at: float = 0.0

    @property
    def sink_names(self) -> list[str]:
        """The sinks it loads."""
        return [name for name in self.sinks.split(",") if name]


@dataclass(frozen=True, slots=True)
class SegmentRow:
    """How far one Scan segment of a backfill is settled.

    Attributes:
        backfill_id: the backfill.
        segment: the segment number (0 to ``segments - 1``).
        position: the ``LastEvaluatedKey`` after the last page whose records are all settled,
            as JSON; None: from the segment's start.
        items: items of the segment read up to that page.
        done: the segment was read to its end and every record settled.
    """

    backfill_id: str
    segment: int
    position: str | None
    items: int
    done: bool = False


@dataclass(frozen=True, slots=True)
class BackfillState:
    """A backfill and its segments' progress (segments never written are absent)."""

    row: BackfillRow
    segments: dict[int, SegmentRow] = field(default_factory=dict)


class CheckpointStore(Protocol):
    """Durable per-shard checkpoints and leases of one application, the stored start time of
    each stream, and the application's worker rows and sink set.

    ``open()`` once before any other call, ``aclose()`` once at the end. Every call may
    raise ``fanout.errors.CheckpointError``; callers retry. A write that returned is
    durable. Conditional writes (``save`` with a lease, ``take``, ``release``,
    ``request_handoff``) are atomic per row: the condition and the change happen together
    or not at all; a failed condition is an answer (the row is rejected), not an error.
    """

    @property
    def application(self) -> str:
        """Whose rows this store reads and writes."""
        ...

    @property
    def describe(self) -> str:
        """Where the store is, for people (a file path, a table)."""
        ...

    async def open(self) -> None:
        """Connect, creating what is missing."""
        ...

    async def aclose(self) -> None:
        """Release the connection. Idempotent."""
        ...

    # -- checkpoints ------------------------------------------------------------------------

    async def load(self, stream_arn: str) -> dict[str, Checkpoint]:
        """Every shard row of one stream, by shard id."""
        ...

    async def save(self, rows: Sequence[CheckpointRow]) -> list[CheckpointRow]:
        """Write ``rows``; returns those rejected because their lease moved (the others are
        written). A ``None`` sequence keeps the stored one; ``finished`` never goes back. A
        row's ``windows`` are written together with it or not at all."""
        ...

    async def stream_start(self, stream_arn: str, timestamp: float) -> tuple[float, bool]:
        """The stream's stored start time; stores ``timestamp`` on the very first call.

        Returns:
            ``(start_timestamp, created)``; created is True only for the first call.
        """
        ...

    async def prune(self, stream_arn: str, keep: Sequence[str]) -> int:
        """Delete finished rows of shards not in ``keep``; returns how many."""
        ...

    async def all(self) -> list[Checkpoint]:
        """Every shard row of the application, ordered by stream ARN and shard id."""
        ...

    async def load_windows(self, stream_arn: str, shard_id: str) -> dict[str, WindowState]:
        """The window states stored for one shard (written with ``save``), by sink name."""
        ...

    # -- leases -----------------------------------------------------------------------------

    async def scan(self) -> Snapshot:
        """Every shard row and worker row of the application, and its sink set, read
        consistently (a write that returned before the scan began is in it)."""
        ...

    async def ensure(self, stream_arn: str, shard_ids: Sequence[str]) -> dict[str, Checkpoint]:
        """The rows of ``shard_ids``, creating the missing ones (unowned, no checkpoint)."""
        ...

    async def take(self, claims: Sequence[Claim], owner: str) -> list[Checkpoint | None]:
        """Take each claimed lease for ``owner`` (see ``Claim``); per claim, the row as
        taken, or None when its condition failed."""
        ...

    async def release(self, releases: Sequence[Release]) -> list[bool]:
        """Give held leases up (conditional on each lease); per release, whether it held."""
        ...

    async def request_handoff(
        self, stream_arn: str, shard_id: str, lease: LeaseToken, to: str
    ) -> bool:
        """Ask the owner of ``lease`` to hand the shard to ``to`` (marks the row; the lease
        stays the owner's until it releases). False when the lease moved meanwhile."""
        ...

    async def heartbeat(self, worker: WorkerRow) -> None:
        """Write the worker's row (created on the first call)."""
        ...

    def heartbeat_sync(self, worker: WorkerRow) -> None:
        """``heartbeat``, blocking: called from the lease coordinator's heartbeat thread
        (never from the event loop), so a loop busy with records cannot delay renewals.

        Raises:
            CheckpointError: the store failed.
        """
        ...

    async def remove_worker(self, worker_id: str, heartbeat: int | None = None) -> None:
        """Delete a worker row (only while its heartbeat is ``heartbeat``, when given)."""
        ...

    async def record_sinks(self, sinks: str) -> None:
        """Record the application's sink set (``name=type`` joined by commas)."""
        ...

    # -- backfills --------------------------------------------------------------------------

    async def backfills(self) -> list[BackfillState]:
        """Every backfill of the application with its segments, ordered by id."""
        ...

    async def claim_backfill(
        self, row: BackfillRow, expected: BackfillRow | None
    ) -> BackfillRow | None:
        """Create ``row`` (``expected`` None: only while no backfill has its id), or take the
        stored one over (only while it still has ``expected``'s owner and ``owner_at``: its
        owner and ``owner_at`` become ``row``'s, nothing else changes). Returns the stored
        row, or None when the condition failed."""
        ...

    async def save_backfill(
        self,
        backfill_id: str,
        owner: str,
        segments: Sequence[SegmentRow],
        *,
        done: bool = False,
        release: bool = False,
        now: float | None = None,
    ) -> bool:
        """While ``owner`` runs the backfill: write ``segments``, set its ``owner_at`` to
        ``now`` (default: the time), mark it ``done`` (never undone), and with ``release``
        give it up (no owner). False, with nothing written, when it has another owner or
        none."""
        ...
