"""Pauses of this process's cyclic garbage collector, seen through :data:`gc.callbacks`.

A collection stops every thread of the process while it runs.  Under load that matters: on the
GIL build (CPython 3.13.15) with 875 bots on one event loop (2-core Intel Xeon VM, commit
d671642's server timed from outside), a full (generation 2) collection scanned ~150,000 objects
and took 26-73 ms, about every 13 s; every input and snapshot in flight waited for it.  The
free-threaded build (3.13.15t) has one generation; with 500 bots its collections took 2.4 ms at
the median and 24 ms at most.  So a server says
how often it collected and for how long, per generation, in ``/stats`` (``gc``) and as the
``paratick_gc_pause_seconds`` histogram in ``/metrics``.

What is measured is the wall time between the ``start`` and ``stop`` callbacks of one
collection: the collection itself and any other callbacks registered after this one.  Only
this process's collections are seen; gateway and worker processes collect on their own.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any

from server.exposition import Histogram

__all__ = ["GcWatch"]


class GcWatch:
    """Counts and times this process's garbage collections while installed.

    Args:
        pauses: the histogram each pause is observed into, in seconds.
        clock: seconds, monotonic (injected for tests).
    """

    def __init__(self, pauses: Histogram, clock: Callable[[], float] = time.perf_counter) -> None:
        self._pauses = pauses
        self._clock = clock
        self._lock = threading.Lock()
        self._started: float | None = None
        self._count: dict[int, int] = {}
        self._total: dict[int, float] = {}
        self._max: dict[int, float] = {}
        self._collected = 0
        self._installed = False

    def install(self) -> None:
        """Start watching (idempotent)."""
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def uninstall(self) -> None:
        """Stop watching (idempotent); what was counted stays."""
        if self._installed:
            gc.callbacks.remove(self._callback)
            self._installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        # Called by the collector itself: no allocation-heavy work, never raise.
        now = self._clock()
        if phase == "start":
            self._started = now
            return
        started, self._started = self._started, None
        if started is None:  # installed mid-collection: no start seen
            return
        pause = max(0.0, now - started)
        gen = int(info.get("generation", 0))
        with self._lock:
            self._count[gen] = self._count.get(gen, 0) + 1
            self._total[gen] = self._total.get(gen, 0.0) + pause
            if pause > self._max.get(gen, 0.0):
                self._max[gen] = pause
            self._collected += int(info.get("collected", 0))
        self._pauses.observe(pause)

    def stats(self) -> dict[str, Any]:
        """JSON-ready: collections, total and longest pause (ms) per generation, objects freed,
        the collector's thresholds and the objects frozen out of its reach."""
        with self._lock:
            gens = sorted(self._count)
            return {
                "collections": sum(self._count.values()),
                "pause_ms_total": sum(self._total.values()) * 1e3,
                "pause_ms_max": max(self._max.values(), default=0.0) * 1e3,
                "collected": self._collected,
                "by_generation": [{"generation": g, "collections": self._count[g],
                                   "pause_ms_total": self._total[g] * 1e3,
                                   "pause_ms_max": self._max[g] * 1e3} for g in gens],
                "threshold": list(gc.get_threshold()),
                "frozen": gc.get_freeze_count(),
            }
