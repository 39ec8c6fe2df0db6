"""The tick loop on a virtual clock (no thread, no real sleep), and on a real event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from server import loops
from server.clock import VirtualClock
from server.ticker import EARLY, MSPT_WINDOW, RECENT_TICKS, ThreadClock, Ticker


def make(step_seconds: list[float], clock: VirtualClock, **kw: object) -> tuple[Ticker, list[int]]:
    """A ticker whose n-th tick takes step_seconds[n % len] of virtual time."""
    calls: list[int] = []

    def step() -> list[int]:
        n = len(calls)
        calls.append(n)
        clock.advance(step_seconds[n % len(step_seconds)])
        return [n]

    return Ticker(step, 32.0, clock=clock, **kw), calls  # type: ignore[arg-type]


def test_ticks_on_time_at_the_rate() -> None:
    clock = VirtualClock()
    results: list[list[int]] = []
    seconds: list[float] = []
    t, calls = make([1 / 128], clock, on_results=results.append,
                    on_second=lambda: seconds.append(clock.now()))
    t.run(ticks=64)
    assert len(calls) == 64 and t.ticks == 64
    assert clock.now() == pytest.approx(63 / 32 + 1 / 128)  # 64 ticks due every 1/32 s
    assert results == [[n] for n in range(64)]
    assert seconds == [1 / 128, 1 + 1 / 128]  # after the tick, once a second of clock time
    st = t.stats()
    assert st["mspt_p50"] == st["mspt_max"] == pytest.approx(1000 / 128)
    assert st["deadline_misses"] == 0 and st["tick_rate_target"] == 32.0
    assert st["tick_rate_actual"] == pytest.approx(64 / clock.now())


def test_late_ticks_catch_up_then_drop_the_backlog() -> None:
    clock = VirtualClock()
    # One tick of 0.5 s (16 periods) in a run of fast ones.
    t, _ = make([1 / 256] * 4 + [0.5] + [1 / 256] * 20, clock)
    t.run(ticks=25)
    st = t.stats()
    assert st["deadline_misses"] >= 1 and st["catch_up_ticks"] == 3
    assert st["skipped"] > 0  # the rest of the backlog was dropped, not run in a burst
    assert st["mspt_max"] == pytest.approx(500.0)


def test_a_fault_stops_the_loop_and_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    clock = VirtualClock()
    faults: list[bool] = []

    def step() -> None:
        clock.advance(0.001)
        if clock.now() > 0.1:
            raise RuntimeError("worker lost")

    t = Ticker(step, 32.0, clock=clock, on_fault=lambda: faults.append(True))
    t.run(ticks=100)
    assert t.fault == "RuntimeError: worker lost" and faults == [True]
    err = capsys.readouterr().err
    assert 0 < t.ticks < 100 and "ticker stopped" in err
    assert "Traceback" in err  # not a fault the server names: a bug, with its traceback


def test_a_named_fault_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from server.runtime.errors import WorkerCrashed

    clock = VirtualClock()

    def step() -> None:
        clock.advance(0.001)
        raise WorkerCrashed("worker 1 died", worker=1)

    t = Ticker(step, 32.0, clock=clock)
    t.run(ticks=5)
    err = capsys.readouterr().err
    assert t.fault == "WorkerCrashed: worker 1 died" and t.ticks == 0
    assert err == "paratick: ticker stopped after 0 ticks: WorkerCrashed: worker 1 died\n"


def test_window_is_bounded_and_histogram_sees_every_tick() -> None:
    clock = VirtualClock()
    seen: list[float] = []
    t, _ = make([0.001], clock, observe=seen.append)
    t.run(ticks=MSPT_WINDOW + 10)
    assert len(t.durations) == MSPT_WINDOW and len(seen) == MSPT_WINDOW + 10


def test_recent_lists_the_newest_durations_in_order_numbered_by_ticks() -> None:
    clock = VirtualClock()
    steps = [k / 4096 for k in range(1, 8)]  # every tick's duration tells which tick it was
    t, _ = make(steps, clock)
    t.run(ticks=3)
    assert t.stats()["recent_ms"] == pytest.approx([s * 1e3 for s in steps[:3]])
    t.run(ticks=RECENT_TICKS + 5)
    st = t.stats()
    n = st["ticks"]
    assert n == RECENT_TICKS + 8 and len(st["recent_ms"]) == RECENT_TICKS
    # recent_ms[-1] is tick n (numbered from 1): tick k took steps[(k - 1) % 7]
    assert st["recent_ms"] == pytest.approx(
        [steps[(k - 1) % len(steps)] * 1e3 for k in range(n - RECENT_TICKS + 1, n + 1)])


def test_stop_cuts_a_real_wait_short() -> None:
    import time
    t = Ticker(lambda: None, 0.1, clock=ThreadClock())  # a tick every 10 s
    t.start()
    t0 = time.monotonic()
    t.stop()  # the thread is waiting for the next tick, or about to
    assert time.monotonic() - t0 < 1.0 and not t.running and t.ticks <= 1


# ---- on an event loop (real time, bounded) ----------------------------------------------------
def _on_loop(name: str, step: Any, until: Any, *, rate: float = 50.0,
             limit: float = 10.0, **kw: Any) -> tuple[Ticker, int]:
    """Run a ticker on a new loop of kind ``name`` until ``until(ticker)`` or ``limit`` seconds;
    returns it and how often a concurrent task got to run."""
    spins = 0

    async def main() -> Ticker:
        nonlocal spins
        t = Ticker(step, rate, clock=ThreadClock(), **kw)
        t.start_on(asyncio.get_running_loop())
        deadline = time.monotonic() + limit
        while not until(t) and time.monotonic() < deadline:
            spins += 1
            await asyncio.sleep(0.001)
        t.stop()
        return t

    return loops.run(main(), name), spins


@pytest.mark.parametrize("name", loops.available())
def test_on_a_loop_each_tick_is_a_callback_of_the_loop_at_its_deadline(name: str) -> None:
    starts: list[float] = []
    threads: set[int] = set()
    results: list[list[int]] = []

    def step() -> list[int]:
        starts.append(time.perf_counter())
        threads.add(threading.get_ident())
        return [len(starts)]

    t, spins = _on_loop(name, step, lambda t: t.ticks >= 10, on_results=results.append)
    assert t.ticks >= 10 and t.where == "loop" and t.stats()["on"] == "loop"
    assert threads == {threading.get_ident()}  # the loop's thread: this one
    assert results == [[n + 1] for n in range(len(results))] and len(results) == t.ticks
    # absolute deadlines from the schedule's start (the first tick due at once), none started
    # more than EARLY before it was due (a skipped backlog only moves deadlines later)
    assert t.started is not None
    base, period = t.started, 1 / 50
    assert all(s >= base + n * period - EARLY - 1e-6 for n, s in enumerate(starts))
    assert spins >= 2 * (t.ticks - 1)  # nothing sleeps on the loop: other tasks run between ticks
    assert not t.running


@pytest.mark.parametrize("name", loops.available())
def test_on_a_loop_a_fault_stops_the_ticks(name: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    faults: list[bool] = []
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("worker lost")

    t, _ = _on_loop(name, step, lambda t: bool(faults) and len(calls) >= 3,
                    on_fault=lambda: faults.append(True))
    assert t.fault == "RuntimeError: worker lost" and faults == [True]
    assert t.ticks == 2 and len(calls) == 3 and not t.running
    assert "ticker stopped after 2 ticks" in capsys.readouterr().err


def test_on_a_loop_stop_from_another_thread_ends_the_ticks() -> None:
    async def main() -> tuple[int, int]:
        t = Ticker(lambda: None, 200.0, clock=ThreadClock())
        t.start_on(asyncio.get_running_loop())
        deadline = time.monotonic() + 10.0
        while t.ticks < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        await asyncio.to_thread(t.stop)
        stopped_at = t.ticks
        await asyncio.sleep(0.05)  # ten periods
        return stopped_at, t.ticks

    stopped_at, later = loops.run(main(), "asyncio")
    assert later == stopped_at >= 3
