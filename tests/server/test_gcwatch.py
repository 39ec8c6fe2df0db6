"""server.gcwatch: the collector's pauses, counted per generation while installed."""

from __future__ import annotations

import gc
import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest

from server.gcwatch import GcWatch


def stepping_clock(step: float) -> Callable[[], float]:
    """A clock that moves ``step`` seconds each time it is read."""
    ticks = itertools.count()
    return lambda: next(ticks) * step


def test_a_full_collection_is_counted_and_timed_while_installed() -> None:
    watch = GcWatch(clock=stepping_clock(0.05))  # read at start and stop: 50 ms each
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
    buckets, seconds, count = watch.snapshot()  # the /metrics histogram: 50 ms is <= 0.05
    assert count == st["collections"] and abs(seconds - 0.05 * count) < 1e-9
    assert dict(buckets)[0.05] == count and dict(buckets)[0.025] == 0
    assert st["threshold"] == list(gc.get_threshold())


def test_nothing_is_counted_after_uninstall() -> None:
    watch = GcWatch()
    watch.install()
    watch.uninstall()
    watch.uninstall()  # idempotent
    gc.collect()
    st = watch.stats()
    assert st["collections"] == 0 and st["by_generation"] == [] and st["pause_ms_max"] == 0.0


def test_a_collection_inside_a_reader_does_not_deadlock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The callback takes no lock: a collection that starts while stats() runs on the same
    thread (any allocation may start one) just swaps in a newer state."""
    watch = GcWatch()
    threshold = gc.get_threshold

    def collecting_threshold() -> tuple[int, int, int]:
        gc.collect()  # as if stats()'s own allocation had triggered a collection here
        return threshold()

    monkeypatch.setattr(gc, "get_threshold", collecting_threshold)
    seen: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: seen.append(watch.stats()), daemon=True)
    watch.install()
    try:
        reader.start()
        reader.join(timeout=10)
    finally:
        watch.uninstall()
    assert not reader.is_alive(), "stats() deadlocked on a collection inside it"
    assert watch.stats()["collections"] >= 1 and len(seen) == 1
