"""The game server's tick loop: fixed-rate ticks on a clock that tests can replace.

Theory of operation
-------------------
A :class:`Ticker` asks the runtime's :class:`~server.runtime.scheduler.TickScheduler` (policy
``CATCH_UP``: players live in real time, so late ticks run back to back, at most three, and a
longer stall drops the backlog instead of slowing the world clock) how long to wait, waits on
its :class:`~server.runtime.scheduler.Clock`, calls ``step()`` and times it on the same clock.
The loop body is :meth:`Ticker.tick_once`; :meth:`Ticker.run` repeats it until stopped, on a
thread in the server (:meth:`Ticker.start`) or synchronously on a
:class:`~server.runtime.scheduler.VirtualClock` in tests, where ``sleep`` advances time and
nothing waits for real.

Real time is :class:`ThreadClock`: ``time.perf_counter`` and a sleep that :meth:`stop` cuts
short, so stopping never waits for a tick period.

Or on an event loop (:meth:`Ticker.start_on`): each tick is a timer callback of the loop, due at
the same absolute deadlines; nothing sleeps.  A tick then never runs beside the loop's own
callbacks.  That is what the server does when the step runs in the calling thread (the inline
backend).  On a GIL build a ticker thread could not run in parallel with the loop anyway, and
every tick waited for the loop's thread to hand over the GIL (up to the switch interval, 5 ms,
at each request): ticks took twice as long in wall time under load, and every snapshot waited
with them.  On a free-threaded build with the bots sharing two cores, the thread gained nothing
either (the tick's p99 was 15 ms on the loop against 23-31 on the thread, input->ack p99 no
worse); with idle cores to spare, ``tick_on="thread"`` lets the tick run beside the loop.  A
backend whose step waits for its workers keeps the thread, so the loop serves clients meanwhile.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from server.clock import Clock
from server.errors import ServerError
from server.quantiles import percentiles
from server.runtime.scheduler import Overload, TickScheduler

#: Recent tick durations kept for the MSPT percentiles in /stats (about 34 s at 30 Hz).
MSPT_WINDOW = 1024
#: The newest tick durations listed one by one in /stats (``recent_ms``; about 2 s at 30 Hz): a
#: reader polling once a second sees every tick, numbered by ``ticks``.
RECENT_TICKS = 64
#: Seconds between ``on_second`` calls (the runtime's metrics are refreshed this often).
SECOND = 1.0
#: On an event loop, a tick whose timer fires at most this early runs at once (uvloop's timers
#: have millisecond resolution: waiting again for a fraction of one would spin).
EARLY = 0.001


class ThreadClock:
    """Real time for a ticker thread: ``perf_counter``, and a sleep that ``wake`` interrupts."""

    def __init__(self) -> None:
        self._wake = threading.Event()

    def now(self) -> float:
        return time.perf_counter()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._wake.wait(seconds)

    def wake(self) -> None:
        self._wake.set()


class Ticker:
    """Fixed-rate tick loop driving ``step``.

    Args:
        step: runs one tick; returns what to hand to ``on_results`` (falsy: nothing).
        tick_rate: ticks per second.
        clock: the clock to wait on and time with (default: real time, :class:`ThreadClock`).
        on_results: called with each tick's results (on the ticker's thread).
        on_second: called about once a second of clock time, after a tick.
        on_fault: called once if ``step`` raises; the loop then stops (the fault is logged
            with its traceback and kept in :attr:`fault`).
        observe: called with each tick's duration in seconds (e.g. a histogram's ``observe``).
    """

    def __init__(self, step: Callable[[], Any], tick_rate: float, *, clock: Clock | None = None,
                 on_results: Callable[[Any], None] | None = None,
                 on_second: Callable[[], None] | None = None,
                 on_fault: Callable[[], None] | None = None,
                 observe: Callable[[float], None] | None = None) -> None:
        self.step = step
        self.dt = 1.0 / tick_rate
        self.clock: Clock = clock if clock is not None else ThreadClock()
        self.on_results = on_results
        self.on_second = on_second
        self.on_fault = on_fault
        self.observe = observe
        self.scheduler = TickScheduler(rate=tick_rate, overload=Overload.CATCH_UP)
        self.durations: deque[float] = deque(maxlen=MSPT_WINDOW)   # milliseconds
        # stats() sorts the durations on another thread while the ticker appends: on a
        # free-threaded build that races (deque mutated during iteration) without a lock.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_second = -1e18
        self.ticks = 0
        self.fault: str | None = None
        self.started: float | None = None

    # ---- the loop -----------------------------------------------------------------------------
    def begin(self) -> None:
        """Start the schedule now (the first tick is due at once)."""
        self.started = self.clock.now()
        self.scheduler.start(self.started)

    def tick_once(self) -> None:
        """Wait until the next tick is due, run it and account for it."""
        clock = self.clock
        sched = self.scheduler
        clock.sleep(sched.delay(clock.now()))
        if self._stop.is_set():
            return
        self._tick()

    def _tick(self) -> None:
        """Run the tick that is due now and account for it."""
        clock = self.clock
        sched = self.scheduler
        start = clock.now()
        sched.begin(start)
        results = self.step()
        end = clock.now()
        sched.end(end)
        with self._lock:
            self.durations.append((end - start) * 1e3)
            self.ticks += 1
        if self.observe is not None:
            self.observe(end - start)
        if results and self.on_results is not None:
            self.on_results(results)
        if start - self._last_second >= SECOND:
            self._last_second = start
            if self.on_second is not None:
                self.on_second()

    def run(self, ticks: int | None = None) -> None:
        """Tick until :meth:`stop` (or ``ticks`` ticks); a fault in ``step`` ends the loop."""
        if self.started is None:
            self.begin()
        try:
            n = 0
            while not self._stop.is_set() and (ticks is None or n < ticks):
                self.tick_once()
                n += 1
        except Exception as exc:  # a runtime fault or a bug: say so, stop ticking
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self.fault = f"{type(exc).__name__}: {exc}"
        print(f"paratick: ticker stopped after {self.ticks} ticks: {self.fault}",
              file=sys.stderr)
        if not isinstance(exc, ServerError):  # a fault we name says it all in one line
            traceback.print_exc()
        if self.on_fault is not None:
            self.on_fault()

    def start(self) -> None:
        """Run on a thread of its own."""
        self.begin()
        self._thread = threading.Thread(target=self.run, name="paratick-ticker", daemon=True)
        self._thread.start()

    def start_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run on ``loop``: each tick is a timer callback of it (call from the loop's thread;
        ``step`` and ``on_results`` then run there).  The clock must be real time."""
        self.begin()
        self._loop = loop
        loop.call_soon(self._fire)

    def _fire(self) -> None:
        loop = self._loop
        if self._stop.is_set() or loop is None:
            return
        delay = self.scheduler.delay(self.clock.now())
        if delay > EARLY:
            loop.call_later(delay, self._fire)
            return
        try:
            self._tick()
        except Exception as exc:  # as on a thread: say so, stop ticking
            self._failed(exc)
            self._stop.set()
            return
        if not self._stop.is_set():
            loop.call_later(self.scheduler.delay(self.clock.now()), self._fire)

    @property
    def where(self) -> str:
        """Where the ticks run: ``thread``, ``loop`` (:meth:`start_on`) or ``none`` yet."""
        return "loop" if self._loop is not None else "thread" if self._thread else "none"

    def stop(self) -> None:
        """Stop after the tick in progress (a wait for the next one is cut short); from any
        thread.  On a loop, no tick starts once this has returned (the loop's thread finishes one in
        progress before it runs anything else)."""
        self._stop.set()
        wake = getattr(self.clock, "wake", None)
        if wake is not None:
            wake()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join()

    @property
    def running(self) -> bool:
        """Whether the ticker is ticking (its thread alive, or on a loop and not stopped)."""
        if self._loop is not None:
            return not self._stop.is_set()
        return self._thread is not None and self._thread.is_alive()

    # ---- statistics ---------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Ticks, the tick rate achieved, MSPT over the last :data:`MSPT_WINDOW` ticks, and the
        last :data:`RECENT_TICKS` durations in order (``recent_ms[-1]`` is tick ``ticks``)."""
        with self._lock:
            d = list(self.durations)
            ticks = self.ticks
        q = percentiles(d, (50, 95, 99)) if d else {"p50": 0.0, "p95": 0.0, "p99": 0.0}
        elapsed = self.clock.now() - self.started if self.started is not None else 0.0
        sched = self.scheduler.stats
        return {"ticks": ticks, "on": self.where, "tick_rate_target": 1.0 / self.dt,
                "tick_rate_actual": ticks / elapsed if elapsed > 0 else 0.0,
                "mspt_mean": sum(d) / len(d) if d else 0.0,
                **{f"mspt_{k}": v for k, v in q.items()},
                "mspt_max": max(d) if d else 0.0, "budget_ms": self.dt * 1e3,
                "deadline_misses": sched.deadline_misses, "skipped": sched.skipped,
                "catch_up_ticks": sched.catch_up_ticks, "fault": self.fault,
                "recent_ms": d[-RECENT_TICKS:]}
