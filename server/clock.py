"""Time, injected: the two shapes of clock paratick code takes, and the two clocks it passes.

Nothing that makes a decision reads the system clock itself; it is handed one, so tests drive
time by hand and never sleep for real (trio's ``Clock`` and ``MockClock`` are the model).

* :data:`TimeSource` -- reading the time only: a callable returning monotonic seconds.  Session
  grace periods, the connection rules' rate limits, the bots' latency stamps and the runtime's
  tick timing take one; ``time.monotonic`` and ``time.perf_counter`` are TimeSources, and so is
  each clock below (calling it is ``now()``).
* :class:`Clock` -- a clock a loop can also *wait* on: ``now()`` and ``sleep(seconds)``.  The
  tick scheduler's :func:`~server.runtime.scheduler.run` and the server's ticker take one.

:class:`MonotonicClock` is real time; :class:`VirtualClock` is time that moves only when told to
(``sleep`` and ``advance`` add to it), for tests of either shape.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

#: Monotonic seconds on demand: ``time.monotonic``, ``time.perf_counter`` or a clock below.
TimeSource = Callable[[], float]


class Clock(Protocol):
    """Monotonic seconds, and a way to wait for them to pass."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """Real time: ``time.perf_counter`` and ``time.sleep``."""

    def now(self) -> float:
        return time.perf_counter()

    __call__ = now

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class VirtualClock:
    """Time that moves only when told to: ``sleep`` and ``advance`` add to ``now``.

    ``slept`` totals the sleeps, so a test can tell waiting from working.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self.slept = 0.0

    def now(self) -> float:
        return self._now

    __call__ = now

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._now += seconds
            self.slept += seconds

    def advance(self, seconds: float) -> None:
        self._now += seconds
