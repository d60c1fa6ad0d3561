"""What the parts reading one configured stream share: its seams and knobs (``StreamParts``),
where shards without a checkpoint start (``StreamStart``) and its discovery status for
``/readyz`` (``DiscoveryStatus``)."""

from __future__ import annotations

from dataclasses import dataclass

from anyio.abc import TaskGroup

from fanout.config import StreamConfig
from fanout.delivery import Route
from fanout.observe.metrics import Metrics
from fanout.progress.leases import LeaseCoordinator
from fanout.progress.store import CheckpointStore
from fanout.progress.writer import CheckpointWriter
from fanout.stream.api import StreamsAPI
from fanout.stream.budget import MemoryBudget
from fanout.stream.reader import ReaderOptions

# Stream records carry ApproximateCreationDateTime rounded down (to the second on AWS, to
# the minute on DynamoDB Local). Skipping "records older than T" keeps this much slack so
# a rounded timestamp never hides a record written after T: a few extra, never one lost.
_TIMESTAMP_SLACK_S = 60.0


@dataclass(frozen=True, slots=True)
class StreamParts:
    """What every stream ARN a configured stream reads shares (built once per stream).

    Attributes:
        name: the configured stream's name (logs, metric labels).
        config: its configuration.
        client: the DynamoDB Streams calls.
        store: checkpoint reads (``prune``).
        checkpoints: every checkpoint write.
        routes: the sinks this stream feeds.
        metrics: the process's metrics.
        lanes: the task group the shards' lanes run in (they outlive the readers).
        options: polling knobs and retry timing.
        leases: this worker's leases (a shard is read only under one).
        budget: the process's byte budget for buffered records (None: not counted).
    """

    name: str
    config: StreamConfig
    client: StreamsAPI
    store: CheckpointStore
    checkpoints: CheckpointWriter
    routes: list[Route]
    metrics: Metrics
    lanes: TaskGroup
    options: ReaderOptions
    leases: LeaseCoordinator
    budget: MemoryBudget | None = None


@dataclass(frozen=True, slots=True)
class StreamStart:
    """Where the shards of a stream without a checkpoint start.

    Attributes:
        timestamp: records older than this (epoch seconds) are skipped; None: none are.
        first_run: the very first start at LATEST: closed shards are skipped, open ones
            read from a LATEST iterator.
    """

    timestamp: float | None = None
    first_run: bool = False

    @property
    def skip_before(self) -> float | None:
        """Records older than this are skipped in shards without a checkpoint."""
        if self.timestamp is None:
            return None
        return self.timestamp - _TIMESTAMP_SLACK_S


@dataclass
class DiscoveryStatus:
    """For ``/readyz``: whether the stream was listed once, when the shards were last listed
    (monotonic), and why the latest attempt failed (None once one succeeds)."""

    ready: bool = False
    discovered_at: float | None = None
    error: str | None = None
