"""When does the next tick start?  A fixed-rate tick scheduler with an overload policy.

Theory of operation
-------------------
Tick ``n`` after the last (re)base is due at ``base + n * period``: deadlines are absolute, so
the time a tick takes never shifts the ones after it.  Sleeping ``period`` after each tick
instead would make a 50 ms target with 20 ms of work tick every 70 ms (the drift Colyseus users
reported in colyseus/colyseus#324).  ``flat_out`` ignores deadlines (benchmarks).

When a tick ends after the next one was due, the server is overloaded; the policy decides:

* ``Overload.DILATE`` (time dilation, as EVE Online does): the world clock slows down instead of
  skipping or bunching ticks.  The deadlines are rebased to "now", so the next tick starts at
  once; the *dilation factor* (world seconds per wall second = period / actual tick interval) is
  reported.  ``dilation_floor`` is the slowest world clock accepted: a tick interval longer than
  ``period / floor`` counts as a deadline miss (below that, players see lag, not slow motion).
* ``Overload.CATCH_UP``: the world clock keeps real time; late ticks run back to back with no
  sleep, but at most ``max_catch_up`` in a row.  If still behind after that, the backlog is
  dropped (``skipped`` counts the ticks that never ran) and deadlines are rebased, so a long
  stall cannot turn into an unbounded burst.

The scheduler is pure logic: the caller passes the time (``begin(now)`` / ``end(now)``) and asks
for the delay before the next tick (``delay(now)``).  :func:`run` drives it with a
:class:`server.clock.Clock`; tests use :class:`server.clock.VirtualClock`, where ``sleep``
advances time without sleeping.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from server.clock import Clock
from server.runtime.errors import RuntimeConfigError

#: Default rate: 30 Hz is the usual server tick rate for action games (WorldConfig agrees).
DEFAULT_RATE = 30.0
#: EVE Online's time dilation bottoms out at 10 % of real time; below, lag is the honest answer.
DEFAULT_DILATION_FLOOR = 0.1
#: Late ticks run back to back at most this many times before the backlog is dropped: 3 ticks
#: (100 ms at 30 Hz) absorbs a GC pause without a visible burst.
DEFAULT_MAX_CATCH_UP = 3


class Overload(enum.Enum):
    DILATE = "dilate"
    CATCH_UP = "catch-up"


@dataclass
class SchedulerStats:
    """Counters since start.  ``dilation`` is the last tick's factor, 1.0 when on time."""

    ticks: int = 0
    deadline_misses: int = 0
    skipped: int = 0
    catch_up_ticks: int = 0
    dilation: float = 1.0
    min_dilation: float = 1.0
    rebases: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TickScheduler:
    """Fixed-rate deadlines with a selectable overload policy.

    Args:
        rate: target ticks per second.
        flat_out: start every tick as soon as the previous one ends (benchmarks).
        overload: what to do when a tick ends after the next one was due.
        dilation_floor: slowest world clock accepted under DILATE (0 < floor <= 1).
        max_catch_up: late ticks run back to back under CATCH_UP before dropping the backlog.
    """

    def __init__(self, *, rate: float = DEFAULT_RATE, flat_out: bool = False,
                 overload: Overload | str = Overload.DILATE,
                 dilation_floor: float = DEFAULT_DILATION_FLOOR,
                 max_catch_up: int = DEFAULT_MAX_CATCH_UP) -> None:
        if not rate > 0:
            raise RuntimeConfigError(f"rate must be > 0 Hz, got {rate!r}")
        if not 0 < dilation_floor <= 1:
            raise RuntimeConfigError(f"dilation_floor must be in (0, 1], got {dilation_floor!r}")
        if max_catch_up < 0:
            raise RuntimeConfigError(f"max_catch_up must be >= 0, got {max_catch_up!r}")
        try:
            self.overload = Overload(overload)
        except ValueError:
            raise RuntimeConfigError(f"overload must be 'dilate' or 'catch-up', "
                                     f"got {overload!r}") from None
        self.period = 1.0 / rate
        self.flat_out = flat_out
        self.dilation_floor = dilation_floor
        self.max_catch_up = max_catch_up
        self.stats = SchedulerStats()
        self._base: float | None = None
        self._n = 0            # ticks since base
        self._started: float | None = None
        self._late_run = 0

    def start(self, now: float) -> None:
        """The first tick is due at ``now``."""
        self._base = now
        self._n = 0

    def due(self) -> float:
        """When the next tick is due."""
        if self._base is None:
            raise RuntimeConfigError("call start(now) before scheduling ticks")
        return self._base + self._n * self.period

    def delay(self, now: float) -> float:
        """Seconds to wait before starting the next tick (0 when due or flat out)."""
        if self.flat_out:
            return 0.0
        return max(0.0, self.due() - now)

    def begin(self, now: float) -> None:
        """A tick starts now."""
        if self._base is None:
            self.start(now)
        self._started = now

    def end(self, now: float) -> None:
        """The tick begun last ended now: account for it and schedule the next."""
        start = self._started if self._started is not None else now
        st = self.stats
        st.ticks += 1
        self._n += 1
        if self.flat_out:
            return
        due = self.due()
        if self.overload is Overload.DILATE:
            # Late means the next tick starts right away, so this tick's start-to-start
            # interval is its own duration.
            interval = now - start
            late = now > due
            if late:
                self._base, self._n = now, 0  # the world clock slows: rebase, no catch-up
                st.rebases += 1
            factor = min(1.0, self.period / interval) if interval > 0 else 1.0
            st.dilation = factor if late else 1.0
            st.min_dilation = min(st.min_dilation, st.dilation)
            if late and factor < self.dilation_floor:
                st.deadline_misses += 1
        else:
            if now > due:
                st.deadline_misses += 1
                if self._late_run >= self.max_catch_up:
                    behind = int((now - due) / self.period) + 1
                    st.skipped += behind
                    self._base, self._n = now, 0
                    st.rebases += 1
                    self._late_run = 0
                else:
                    self._late_run += 1
                    st.catch_up_ticks += 1
            else:
                self._late_run = 0


def run(step: Callable[[], object], scheduler: TickScheduler, clock: Clock, ticks: int,
        on_tick: Callable[[int], object] | None = None) -> SchedulerStats:
    """Run ``ticks`` calls of ``step`` paced by ``scheduler`` on ``clock``."""
    scheduler.start(clock.now())
    for i in range(ticks):
        clock.sleep(scheduler.delay(clock.now()))
        scheduler.begin(clock.now())
        step()
        scheduler.end(clock.now())
        if on_tick is not None:
            on_tick(i)
    return scheduler.stats


# The clocks live in server.clock; they stay importable from here for older callers.
__all__ = ["DEFAULT_DILATION_FLOOR", "DEFAULT_MAX_CATCH_UP", "DEFAULT_RATE", "Clock",
           "Overload", "SchedulerStats", "TickScheduler", "run"]
