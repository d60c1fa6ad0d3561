"""What the operations and the wire read of the server: settings, clock, counters."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fanout.testing.streamserver.model import Shard, Stream


class ServerState(Protocol):
    """The parts of ``StreamServer`` that serving a request reads or counts."""

    account: str
    page_size: int
    max_page_bytes: int
    iterator_ttl: float
    retention: float | None
    require_auth: bool
    calls: Counter[str]
    shard_calls: Counter[tuple[str, str]]
    errors: Counter[tuple[str, str]]
    records_served: Counter[str]

    def now(self) -> float:
        """The server's clock (epoch seconds)."""
        ...

    def trim(
        self,
        target: Stream | Shard,
        up_to_seq: int | str | None = None,
        *,
        older_than: float | None = None,
    ) -> int:
        """Trim records; returns how many."""
        ...
