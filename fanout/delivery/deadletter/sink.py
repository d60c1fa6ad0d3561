"""The ``sink`` dead-letter destination: entries handed to another configured sink.

Write only: the entries become records of that sink, which keeps them its own way, so they
cannot be read back, acknowledged or redriven from here; read them where that sink puts them.
"""

from __future__ import annotations

from fanout.delivery.deadletter.base import Entry, PartialDeadLetterError
from fanout.delivery.gate import SinkGate
from fanout.delivery.private import copy_records
from fanout.errors import DeadLetterError
from fanout.sink import Sink


class SinkDeadLetter:
    """Hands entries to another configured sink (which sees each entry as one record).

    Args:
        sink: the sink the entries go to.
        gate: that sink's gate, so these writes count against its ``max_in_flight`` and
            respect its ``retry_after``; by default a gate of its own (unlimited).
    """

    def __init__(self, sink: Sink, gate: SinkGate | None = None) -> None:
        self.sink = sink
        self.gate = gate if gate is not None else SinkGate()
        self.name = f"sink:{sink.name}"

    async def write(self, entries: list[Entry]) -> None:
        """Send ``entries`` to the sink; any entry it does not take fails the write."""
        batch = entries
        if getattr(self.sink, "mutates_records", False):
            # The entries hold records other sinks may still be delivering.
            batch = copy_records(entries)
        try:
            failures = await self.gate.send(self.sink, batch)
        except Exception as exc:
            raise DeadLetterError(f"dead-letter sink {self.sink.name}: {exc!r}") from exc
        if failures:
            first = failures[min(failures)]
            failed = [entries[i] for i in sorted(failures) if 0 <= i < len(entries)]
            message = (
                f"dead-letter sink {self.sink.name} refused {len(failures)} of {len(entries)} "
                f"entries: {first.reason}"
            )
            if self.sink.ordered:
                # An ordered sink holds back everything after its first failure.
                failed = entries[min(failures) :]
            raise PartialDeadLetterError(message, failed or entries)

    async def aclose(self) -> None:
        """The sink itself is stopped by the worker."""
        return None
