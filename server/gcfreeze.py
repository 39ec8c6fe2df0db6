"""Long-lived objects out of the cyclic collector's full scans: a serving process's policy.

Theory of operation
-------------------
CPython's cyclic collector stops every thread while it runs, and a full collection scans every
tracked container the process holds.  A game server's containers are mostly long-lived: the
world, the workers and the modules from start-up, then each client's (its websocket protocol,
tasks, buffers, connection rules and session: about 135 per client on CPython 3.13).  On the
GIL build the full collection comes when enough objects have survived into the oldest
generation, which is what a wave of arrivals does: with 1,000 bots on one event loop it
scanned their ~135,000 objects a few seconds after the last one arrived and stalled every
client for 23-50 ms (twelve probes of `bench load` on the 2-core Intel Xeon VM; with this
policy the longest pause there was 5.5-8.5 ms; :mod:`server.gcwatch` times them).

``gc.freeze()`` moves every object alive into a permanent generation that collections skip.  On
the GIL build that costs nothing (two list splices); on the free-threaded build it is a walk of
the heap (a few milliseconds per 300,000 objects) and its collections, which always scan the
whole heap, skip the frozen objects' references.  The price: a frozen object that becomes
cyclic garbage is not reclaimed until it is unfrozen.  So a serving process -- the hub, and
each gateway process for its own clients -- follows :class:`FreezePolicy`:

1. on start, collect, then freeze (the world, the workers, the modules);
2. about once a second, when the clients it serves have grown by an eighth (``MIN_GROWTH`` at
   least) since the last freeze: freeze, and again at the next check (what a client keeps
   exists once its handshake is done; the second freeze takes what its first messages made);
3. once as many clients have left since the last full collection as
   ``max(MIN_CHURN, half the clients there were then)``, and the freezes since may have frozen
   MIN_CHURN clients (the clients present at each, summed): unfreeze, collect, freeze -- one
   full collection that reclaims what the departed left frozen, then freezes the survivors.

Growth, not arrivals, decides step 2: under churn at a steady count (clients that come and go
by the dozen a second) freezing every arrival froze mostly clients about to leave, and the
refreshes that reclaimed them (every 256 departures) came every four seconds, each a scan of
the whole heap: 25 full collections of up to 71 ms in a 90 s soak, against 9 of up to 53 ms
with the start-up freeze alone; never refreshing instead, the server grew 2 MiB every 5 s.
A client count that only falls lowers the mark that growth is measured from.  Counting the
clients each freeze may have caught bounds what waits frozen to about MIN_CHURN clients'
leftovers, and a server whose clients come and go at a steady count freezes, and so refreshes,
only as its count swings.

Steps 2 and 3 are for the GIL build.  On the free-threaded build each freeze stopped the world
for 10-11 ms with 1,000 clients (seven or eight of them while 1,000 bots arrived), against its
one collection per probe shortened from 23-36 to 18-26 ms (2-core Intel Xeon VM, `bench load`,
three runs each): there the policy freezes at start-up only (``arrivals`` defaults to False on
that build, so every serving process decides alike).

Between two full collections the garbage held back is at most what departed clients (and what
other code had alive at a freeze and has since dropped into a cycle) left behind, and a server
of long connections makes one full collection per wave of departures instead of one whenever
the collector's counters say so.  Pure: the caller supplies the counts and the cadence; the
collector's operations and the clock that times them are injected, so tests can count the
calls.  The policy's own stalls are reported (``freeze_ms_max``): a freeze, which no collector
callback sees, and a refresh as a whole (its collection is also one of :mod:`server.gcwatch`'s
pauses).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from server.host import free_threaded

__all__ = ["CHECK_EVERY", "MIN_CHURN", "MIN_GROWTH", "FreezePolicy"]

#: Seconds between two :meth:`FreezePolicy.check` calls of a serving process.
CHECK_EVERY = 1.0
#: Departures that always allow a refreshing full collection (fewer when few clients play).
MIN_CHURN = 256
#: Growth in clients that always allows a freeze (more when many play: an eighth).
MIN_GROWTH = 32
#: Checks that freeze once the clients have grown (this one and the next).
_FREEZE_CHECKS = 2


class FreezePolicy:
    """When a serving process freezes, and when it collects in full (module docstring).

    Args:
        arrivals: freeze as clients grow in number and refresh as they leave (steps 2 and
            3); False: the start-up freeze alone.  None (the default): on builds with the GIL
            only.
        min_churn: departures that always justify a full collection.
        min_growth: growth in clients that always justifies a freeze.
        freeze, unfreeze, collect: the collector's operations (``gc``'s by default).
        count: the frozen objects (read once, at start-up: it walks them all).
        clock: seconds, to time them.
    """

    def __init__(self, *, arrivals: bool | None = None, min_churn: int = MIN_CHURN,
                 min_growth: int = MIN_GROWTH,
                 freeze: Callable[[], Any] = gc.freeze,
                 unfreeze: Callable[[], Any] = gc.unfreeze,
                 collect: Callable[[], Any] = gc.collect,
                 count: Callable[[], int] = gc.get_freeze_count,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if min_churn < 1 or min_growth < 1:
            raise ValueError(f"min_churn and min_growth must be >= 1, got {min_churn} and "
                             f"{min_growth}")
        self.arrivals = not free_threaded() if arrivals is None else arrivals
        self.min_churn = min_churn
        self.min_growth = min_growth
        self._freeze, self._unfreeze, self._collect = freeze, unfreeze, collect
        self._count = count
        self._clock = clock
        #: objects frozen at start-up (the world, the workers, the modules)
        self.frozen_at_start = 0
        #: seconds spent in freezes and refreshes after start-up: all, and the longest
        self._spent = 0.0
        self._longest = 0.0
        self.started = False
        #: freezes after start-up, and full collections that refreshed the frozen set
        self.freezes = 0
        self.refreshes = 0
        self._left = 0       # clients left by the last full collection
        self._open = 0       # clients there were at the last full collection
        self._mark = 0       # clients at the last freeze, or fewer since: growth counts from it
        self._exposed = 0    # clients present at the freezes since the last full collection
        self._due = 0        # checks that still freeze

    def start(self, arrived: int = 0, left: int = 0) -> None:
        """Collect, then freeze everything alive: once, when the process serves."""
        self._collect()
        self._freeze()
        self.frozen_at_start = self._count()
        self.started = True
        self._left, self._open = left, arrived - left
        self._mark = self._open

    def check(self, arrived: int, left: int) -> str | None:
        """About once a second: ``arrived``/``left`` count the clients so far (never less than
        at the last call).  Returns what it did: ``"freeze"``, ``"refresh"`` or None."""
        if not (self.started and self.arrivals):
            return None
        now = arrived - left
        mark = self._mark = min(self._mark, now)
        if now - mark >= max(self.min_growth, mark // 8):
            self._due = _FREEZE_CHECKS
            self._mark = now
        t0 = self._clock()
        if self._exposed >= self.min_churn \
                and left - self._left >= max(self.min_churn, self._open // 2):
            self._unfreeze()
            self._collect()
            self._freeze()
            self.refreshes += 1
            self._left, self._open, self._mark = left, now, now
            self._due, self._exposed = 0, now
            did = "refresh"
        elif self._due:
            self._due -= 1
            self._freeze()
            self.freezes += 1
            self._exposed += now
            did = "freeze"
        else:
            return None
        took = self._clock() - t0
        self._spent += took
        self._longest = max(self._longest, took)
        return did

    def stats(self) -> dict[str, Any]:
        """JSON-ready: the objects frozen at start-up, freezes since, refreshing full
        collections, and the time they took (ms: all, and the longest)."""
        return {"frozen_at_start": self.frozen_at_start, "freezes": self.freezes,
                "refreshes": self.refreshes,
                "freeze_ms_total": self._spent * 1e3, "freeze_ms_max": self._longest * 1e3}
