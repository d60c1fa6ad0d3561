"""Process-wide settings for a worker process (``fanout run`` applies them at start-up)."""

from __future__ import annotations

import gc

# Generation thresholds for the cycle collector. A GetRecords page parses into about 150,000
# dicts and lists (1,000 records with nested images); with CPython's defaults (700, 10, 10)
# the collector runs hundreds of times per page and every few pages walks every live object,
# which took two thirds of the worker's CPU time in the throughput benchmark. Records are
# acyclic and are freed by reference counting as soon as every sink has them, and the
# benchmark's collections found no cyclic garbage at all on the hot path, so collections
# can be rare: cycles from error paths are still collected, only later.
GC_THRESHOLDS = (100_000, 50, 100)


def tune_gc(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Collect once, freeze what start-up built (modules, config, clients) so later
    collections never walk it again, and make collections rare (see ``GC_THRESHOLDS``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
