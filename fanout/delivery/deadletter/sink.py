"""The ``sink`` dead-letter destination: entries handed to another configured sink."""

from __future__ import annotations

from fanout.delivery.deadletter.base import Entry, PartialDeadLetterError
from fanout.errors import DeadLetterError
from fanout.sink import Sink


class SinkDeadLetter:
    """Hands entries to another configured sink (which sees each entry as one record)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.name = f"sink:{sink.name}"

    async def write(self, entries: list[Entry]) -> None:
        """Send ``entries`` to the sink; any entry it does not take fails the write."""
        try:
            failures = await self.sink.send(entries)
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
