"""server.gcwatch: the collector's pauses, counted per generation while installed."""

from __future__ import annotations

import gc
import itertools
from collections.abc import Callable

from server.exposition import GC_BUCKETS, Histogram
from server.gcwatch import GcWatch


def stepping_clock(step: float) -> Callable[[], float]:
    """A clock that moves ``step`` seconds each time it is read."""
    ticks = itertools.count()
    return lambda: next(ticks) * step


def test_a_full_collection_is_counted_and_timed_while_installed() -> None:
    pauses = Histogram(GC_BUCKETS)
    watch = GcWatch(pauses, clock=stepping_clock(0.05))  # read at start and stop: 50 ms each
    watch.install()
    watch.install()  # idempotent: one callback, not two
    try:
        gc.collect()
    finally:
        watch.uninstall()
    st = watch.stats()
    full = [g for g in st["by_generation"] if g["generation"] == 2]
    assert full and full[0]["collections"] >= 1
    assert st["collections"] == sum(g["collections"] for g in st["by_generation"])
    assert abs(st["pause_ms_max"] - 50.0) < 1e-6
    assert abs(st["pause_ms_total"] - 50.0 * st["collections"]) < 1e-6
    count = pauses.snapshot()[2]
    assert count == st["collections"]
    assert st["threshold"] == list(gc.get_threshold()) and st["frozen"] == gc.get_freeze_count()


def test_nothing_is_counted_after_uninstall() -> None:
    watch = GcWatch(Histogram(GC_BUCKETS))
    watch.install()
    watch.uninstall()
    watch.uninstall()  # idempotent
    gc.collect()
    st = watch.stats()
    assert st["collections"] == 0 and st["by_generation"] == [] and st["pause_ms_max"] == 0.0
