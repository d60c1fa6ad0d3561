"""Records of their own for the sinks that may change them, copied only where needed.

A Lambda handler may change its event, nested images included; another sink must still
receive the record as it was read, and so must the handler's own retries and its
dead-letter entries. Copying every batch for every handler sink costs a second parse of
every record per sink (an orjson round trip, about 24 µs for a typical 1.3 KB record, as
much as reading it). Two facts make most copies unnecessary:

* A record that reaches only one sink may be given to it as it is: nothing else holds it.
  With filters, most records reach few sinks.
* What a retry or the dead-letter destination needs is the record as it was, and the
  page it came in is still at hand: the reader keeps the answer's bytes on the page's
  ticket (``Reread``) while a private sink may need them, and a failed send parses them
  again (``Pristine``). Where no page is kept (the redrive command), the lane keeps the
  batch as bytes (``orjson.dumps``, about 4 µs a record) instead.

So for every page the dispatcher hands each private sink the records no other sink
receives as they are, and a copy of the others; sinks that do not change records share
the originals. Over the benchmark's three handler sinks (two filtered) this is 0.4 copies
per record instead of 1.4 (docs/performance.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson

from fanout.progress.tracker import Ticket
from fanout.records import Record

log = logging.getLogger("fanout.dispatch")


def copy_records(records: Sequence[Record]) -> list[Record]:
    """A deep copy of ``records`` (an orjson round trip: C speed, JSON values only)."""
    copied: list[Record] = orjson.loads(orjson.dumps(records))
    return copied


def private_parts(parts: list[list[Record]], private: Sequence[bool]) -> list[list[Record]]:
    """Each route's records, where a private route shares no record object with another.

    ``parts[i]`` are the records (of one page) routed to route ``i``, ``private[i]`` whether
    that route may change them. Routes that do not change records share the originals; the
    private routes, largest part first, keep the originals of the records no route before
    them took and get copies of the rest. Every record keeps its position.

    Largest first: the number of copies is the same whatever the order (one fewer than the
    private routes a record reaches), yet on the benchmark (three handler sinks, one of
    them taking every record) giving the originals to the largest part cut the CPU time per
    record by a tenth (docs/performance.md, §6); most likely because the page's objects
    then stay together in one lane and are freed together, and only the small parts are
    copied and mixed.
    """
    taken: set[int] = set()
    for part, mutates in zip(parts, private, strict=True):
        if part and not mutates:
            taken.update(map(id, part))
    result = list(parts)
    # The largest part keeps its originals: the fewer records are copied in a part, the
    # fewer lists mix copies and originals.
    order = sorted(range(len(parts)), key=lambda i: -len(parts[i]))
    for i in order:
        part, mutates = parts[i], private[i]
        if not part or not mutates:
            continue
        shared = [j for j, record in enumerate(part) if id(record) in taken] if taken else []
        taken.update(map(id, part))
        if len(shared) == len(part):
            result[i] = copy_records(part)
        elif shared:
            mine = list(part)
            for j, copy in zip(shared, copy_records([part[j] for j in shared]), strict=True):
                mine[j] = copy
            result[i] = mine
    return result


class Pristine:
    """A private sink's batch as it was read, for its retries and dead-letter entries:
    the batch's sequence numbers and the pages it came from (parsed again only if a send
    failed), or, when a page is not kept, the batch itself as bytes."""

    __slots__ = ("_bytes", "_pages", "_sequence_numbers")

    def __init__(self, batch: Sequence[Record], segments: Sequence[tuple[Ticket, int]]) -> None:
        self._pages: list[Ticket] = []
        self._sequence_numbers: list[str] = []
        self._bytes = b""
        if segments and all(ticket.reread is not None for ticket, _ in segments):
            self._pages = [ticket for ticket, _ in segments]
            self._sequence_numbers = [record["dynamodb"]["SequenceNumber"] for record in batch]
        else:
            self._bytes = orjson.dumps(batch)

    def records(self) -> list[Record]:
        """The batch as it was read (new objects)."""
        if not self._pages:
            return copy_records_from(self._bytes)
        found: dict[str, Record] = {}
        for ticket in self._pages:
            reread = ticket.reread
            assert reread is not None
            for record in reread():
                dynamodb = record.get("dynamodb") if isinstance(record, dict) else None
                if isinstance(dynamodb, dict):
                    found[dynamodb.get("SequenceNumber")] = record  # type: ignore[index]
        return [found[seq] for seq in self._sequence_numbers]


def copy_records_from(raw: bytes) -> list[Record]:
    """Records from their ``orjson.dumps`` bytes."""
    records: list[Record] = orjson.loads(raw)
    return records
