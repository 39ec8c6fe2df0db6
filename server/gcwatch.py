"""Pauses of this process's cyclic garbage collector, seen through :data:`gc.callbacks`.

A collection stops every thread of the process while it runs.  Under load that matters: on the
GIL build (CPython 3.13.15) with 875 bots on one event loop (2-core Intel Xeon VM, commit
d671642's server timed from outside), a full (generation 2) collection scanned ~150,000 objects
and took 26-73 ms, about every 13 s; every input and snapshot in flight waited for it.  The
free-threaded build (3.13.15t) has one generation; with 500 bots its collections took 2.4 ms at
the median and 24 ms at most.  So a server says how often it collected and for how long, per
generation, in ``/stats`` (``gc``) and as the ``paratick_gc_pause_seconds`` histogram in
``/metrics``.

What is measured is the wall time between the ``start`` and ``stop`` callbacks of one
collection: the collection itself and any other callbacks registered after this one.  Only
this process's collections are seen; gateway and worker processes collect on their own.

No locks.  The callback runs inside whatever allocation triggered the collection, possibly in a
thread that holds a lock of ours at that moment (a histogram's, while it copies its counts), so
taking any lock there could deadlock the server.  Collections never overlap (they hold the GIL,
or stop the world on the free-threaded build), so the callback is the only writer: it builds a
new immutable :class:`_State` and swaps it in with one assignment, and readers take the
reference once.
"""

from __future__ import annotations

import bisect
import gc
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.exposition import GC_BUCKETS, cumulative

__all__ = ["GcWatch"]


@dataclass(frozen=True)
class _State:
    buckets: tuple[int, ...]                   # pauses per bucket (not cumulative), last: +Inf
    seconds: float = 0.0                       # all pauses together
    collected: int = 0                         # objects found unreachable and freed
    #: generation -> (collections, seconds paused in all, longest pause in seconds)
    gens: Mapping[int, tuple[int, float, float]] = field(default_factory=dict)


class GcWatch:
    """Counts and times this process's garbage collections while installed.

    Args:
        buckets: upper bounds (seconds) of the pause histogram (:meth:`snapshot`).
        clock: seconds, monotonic (injected for tests).
    """

    def __init__(self, buckets: Sequence[float] = GC_BUCKETS,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.bounds = tuple(buckets)
        self._clock = clock
        self._state = _State(buckets=(0,) * (len(self.bounds) + 1))
        self._started: float | None = None
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
        now = self._clock()
        if phase == "start":
            self._started = now
            return
        started, self._started = self._started, None
        if started is None:  # installed mid-collection: no start seen
            return
        pause = max(0.0, now - started)
        gen = int(info.get("generation", 0))
        st = self._state
        buckets = list(st.buckets)
        buckets[bisect.bisect_left(self.bounds, pause)] += 1  # le is inclusive
        n, seconds, longest = st.gens.get(gen, (0, 0.0, 0.0))
        self._state = _State(buckets=tuple(buckets), seconds=st.seconds + pause,
                             collected=st.collected + int(info.get("collected", 0)),
                             gens={**st.gens, gen: (n + 1, seconds + pause, max(longest, pause))})

    def snapshot(self) -> tuple[list[tuple[float, int]], float, int]:
        """The pauses as :meth:`server.exposition.Histogram.snapshot` gives its observations:
        ``(cumulative buckets, sum, count)``, in seconds."""
        st = self._state
        return cumulative(self.bounds, st.buckets, st.seconds)

    def stats(self) -> dict[str, Any]:
        """JSON-ready: collections, total and longest pause (ms) per generation, objects freed
        and the collector's thresholds.  (Not the frozen objects: ``gc.get_freeze_count()``
        walks them all, milliseconds with a server's clients frozen; :mod:`server.gcfreeze`
        counts them once, at start-up.)"""
        st = self._state
        gens = sorted(st.gens.items())
        return {
            "collections": sum(n for _, (n, _, _) in gens),
            "pause_ms_total": st.seconds * 1e3,
            "pause_ms_max": max((m for _, (_, _, m) in gens), default=0.0) * 1e3,
            "collected": st.collected,
            "by_generation": [{"generation": g, "collections": n, "pause_ms_total": s * 1e3,
                               "pause_ms_max": m * 1e3} for g, (n, s, m) in gens],
            "threshold": list(gc.get_threshold()),
        }
