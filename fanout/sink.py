"""The sink contract: what every destination (built-in or third-party) implements."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from fanout.records import Record

if TYPE_CHECKING:
    from fanout.metrics import Metrics


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one record of a batch was not delivered.

    Args:
        retryable: True for a transient failure (resend later), False for a permanent one
            (the record goes to the dead-letter destination at once).
        reason: a short, human readable explanation; stored with the dead-lettered record.
    """

    retryable: bool
    reason: str


# Per-record outcomes of one send(): index in the batch -> Failure. A record whose index is
# absent was delivered. Sparse on purpose: the common answer ("all delivered") is an empty
# dict, so the hot path builds no per-record result objects.
Failures = dict[int, Failure]


@dataclass(slots=True)
class SinkContext:
    """What a sink gets from the worker when it is built."""

    metrics: Metrics | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("fanout.sink"))
    extra: dict[str, Any] = field(default_factory=dict)


class Sink(Protocol):
    """A destination for change records.

    Lifecycle: ``start()`` once, then ``send()`` any number of times, then ``stop()``.
    ``stop()`` is idempotent and is called even if ``start()`` failed.

    Concurrency: ``send()`` may run concurrently for different shards (and, with
    ``parallelization_factor > 1``, for different item keys of one shard); batches of one
    shard and key arrive in stream order and never overlap.

    Attributes:
        name: the sink's name from the configuration.
        ordered: when True, a failed record holds back every later record of its batch
            (they are retried together, as Lambda does with ``batchItemFailures``); when
            False only the failed records are retried.
    """

    name: str
    ordered: bool

    async def start(self) -> None:
        """Open connections; raise to fail start-up."""

    async def send(self, batch: Sequence[Record]) -> Failures:
        """Deliver ``batch`` and report the records that were not delivered.

        Returns:
            A mapping from index in ``batch`` to ``Failure``; empty when all were delivered.

        Raises:
            Exception: any exception means nothing is known to be delivered; the whole
                batch counts as a retryable failure (and may be bisected).
        """
        ...

    async def stop(self) -> None:
        """Flush and close. Idempotent."""
