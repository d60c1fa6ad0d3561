from __future__ import annotations

import gc

from fanout.runtime import GC_THRESHOLDS, tune_gc


def test_tune_gc_freezes_what_exists_and_makes_collections_rare() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_cyclic_garbage_is_still_collected_within_the_first_threshold() -> None:
    import weakref

    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector frees it

    before = gc.get_threshold()
    collections: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            collections.append(info["generation"])

    try:
        tune_gc()
        gc.callbacks.append(seen)
        first = Node()
        alive = weakref.ref(first)
        del first
        for _ in range(GC_THRESHOLDS[0] + 1_000):
            Node()
        assert collections, "no collection after the first threshold of cyclic garbage"
        assert alive() is None
    finally:
        gc.callbacks.remove(seen)
        gc.unfreeze()
        gc.set_threshold(*before)
