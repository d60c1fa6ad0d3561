"""A configured sink as the delivery layer sees it: filter, retry timing, dead-letter destination
and the gate every call to it goes through."""

from __future__ import annotations

from collections.abc import Callable

from fanout.config import SinkConfig
from fanout.delivery.deadletter.base import DeadLetter
from fanout.delivery.gate import SinkGate
from fanout.observe.metrics import Metrics
from fanout.records import Record
from fanout.retry import RetryPolicy
from fanout.sink import Sink

Predicate = Callable[[Record], bool]


class Route:
    """One sink as the dispatcher sees it; one object per sink, shared by every shard.

    Attributes:
        name: the sink's configured name.
        sink: the sink itself.
        config: its options (batching, retry policy, dead-letter destination).
        predicate: its compiled filter; None lets every record through.
        dead_letter: where records it gives up on are written.
        backoff: the retry timing (its ``sleep`` is what tests replace).
        metrics: the metric families.
        gate: every call to the sink goes through it (``max_in_flight``, ``retry_after``);
            by default a new gate with the config's ``max_in_flight``.
        private: the sink may change the records it is given (``mutates_records``, e.g. a
            Lambda handler): it gets records no other sink sees (``fanout.delivery.private``),
            and its lanes keep pristine copies for retries and the dead-letter destination.
    """

    def __init__(
        self,
        *,
        name: str,
        sink: Sink,
        config: SinkConfig,
        predicate: Predicate | None,
        dead_letter: DeadLetter,
        backoff: RetryPolicy,
        metrics: Metrics,
        gate: SinkGate | None = None,
    ) -> None:
        self.name = name
        self.sink = sink
        self.config = config
        self.predicate = predicate
        self.dead_letter = dead_letter
        self.backoff = backoff
        self.metrics = metrics
        self.gate = gate if gate is not None else SinkGate(config.max_in_flight)
        self.private = bool(getattr(sink, "mutates_records", False))

    def __repr__(self) -> str:
        return f"Route({self.name!r})"

    def feeds(self, stream: str) -> bool:
        """True when records of ``stream`` are routed to this sink."""
        streams = self.config.streams
        return streams is None or stream in streams
