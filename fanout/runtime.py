"""Process-wide settings for a worker process (``fanout run`` applies them at start-up)."""

from __future__ import annotations

import gc

# Generation thresholds for the cycle collector. A GetRecords page parses into about 150,000
# dicts and lists (1,000 records with nested images), and the lanes keep tens of thousands of
# records alive while sinks work on them. Records are acyclic and are freed by reference
# counting once every sink has them, so walking them finds nothing; yet with CPython's
# defaults (700, 10, 10) the collector ran hundreds of times per page, and with (100_000, 50,
# 100) every record kept by a handler sink's lane was still promoted and walked again by
# frequent full collections (a third of the CPU time with three handler sinks). The first
# threshold counts container objects allocated and not yet freed: while records come and go,
# that count stays near the records in flight and collections are rare; cyclic garbage (from
# error paths) adds to it and is collected after 2,000,000 such objects at most (bench, 4
# shards, three handler sinks: 50 -> 40 CPU s per million records; docs/performance.md).
GC_THRESHOLDS = (2_000_000, 10, 10)


def tune_gc(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Collect once, freeze what start-up built (modules, config, clients) so later
    collections never walk it again, and make collections rare (see ``GC_THRESHOLDS``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
