"""The tick scheduler on a virtual clock: no drift, flat out, time dilation, bounded catch-up."""

from __future__ import annotations

import itertools

import pytest

from server.runtime import Overload, RuntimeConfigError, TickScheduler, VirtualClock
from server.runtime.scheduler import run


def drive(sched: TickScheduler, work: list[float]) -> list[float]:
    """Run one tick per entry of ``work`` (virtual seconds each); returns tick start times."""
    clock = VirtualClock()
    starts: list[float] = []
    it = iter(work)

    def step() -> None:
        starts.append(clock.now())
        clock.advance(next(it))

    run(step, sched, clock, len(work))
    return starts


def test_fixed_rate_does_not_drift() -> None:
    # 50 ms target, 20 ms of work: ticks every 50 ms, not 70 (colyseus/colyseus#324).
    sched = TickScheduler(rate=20)
    starts = drive(sched, [0.020] * 200)
    assert starts[-1] == pytest.approx(199 * 0.050, abs=1e-9)
    assert all(b - a == pytest.approx(0.050) for a, b in itertools.pairwise(starts))
    assert sched.stats.deadline_misses == 0
    assert sched.stats.dilation == 1.0


def test_jittery_work_keeps_absolute_deadlines() -> None:
    sched = TickScheduler(rate=20)
    work = [0.010, 0.045, 0.001, 0.030] * 25
    starts = drive(sched, work)
    for n, s in enumerate(starts):
        assert s == pytest.approx(n * 0.050, abs=1e-9)


def test_flat_out_never_sleeps() -> None:
    sched = TickScheduler(rate=30, flat_out=True)
    starts = drive(sched, [0.004] * 50)
    assert starts[-1] == pytest.approx(49 * 0.004)
    assert sched.stats.ticks == 50


def test_dilation_slows_the_world_clock_and_reports_the_factor() -> None:
    sched = TickScheduler(rate=20, overload=Overload.DILATE, dilation_floor=0.1)
    starts = drive(sched, [0.100] * 10)  # every tick takes twice its budget
    assert all(b - a == pytest.approx(0.100) for a, b in itertools.pairwise(starts))
    assert sched.stats.dilation == pytest.approx(0.5)
    assert sched.stats.deadline_misses == 0  # 0.5 is above the 0.1 floor
    # back under budget: full speed and fixed-rate deadlines again
    more = drive(sched, [0.010] * 3)
    assert sched.stats.dilation == 1.0
    assert more[1] - more[0] == pytest.approx(0.050)


def test_dilation_below_the_floor_counts_misses() -> None:
    sched = TickScheduler(rate=20, overload="dilate", dilation_floor=0.5)
    drive(sched, [0.200] * 5)  # factor 0.25 < floor 0.5
    assert sched.stats.deadline_misses == 5
    assert sched.stats.min_dilation == pytest.approx(0.25)


def test_catch_up_runs_late_ticks_back_to_back_but_bounded() -> None:
    sched = TickScheduler(rate=20, overload=Overload.CATCH_UP, max_catch_up=2)
    # one 300 ms stall (6 periods), then light ticks
    starts = drive(sched, [0.300] + [0.001] * 10)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    back_to_back = [g for g in gaps if g == pytest.approx(0.001)]
    assert len(back_to_back) <= 2 + 1  # max_catch_up late ticks, then the backlog is dropped
    assert sched.stats.skipped > 0
    assert sched.stats.catch_up_ticks <= 2
    assert gaps[-1] == pytest.approx(0.050)  # back on a fixed rate afterwards
    assert sched.stats.dilation == 1.0


def test_catch_up_recovers_a_short_delay_without_skipping() -> None:
    sched = TickScheduler(rate=20, overload=Overload.CATCH_UP, max_catch_up=3)
    starts = drive(sched, [0.070] + [0.010] * 6)  # 20 ms late once
    assert sched.stats.skipped == 0
    assert starts[-1] == pytest.approx(6 * 0.050)  # caught up: back on the original grid


@pytest.mark.parametrize("kwargs", [{"rate": 0}, {"dilation_floor": 0}, {"dilation_floor": 1.5},
                                    {"max_catch_up": -1}, {"overload": "panic"}])
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(RuntimeConfigError):
        TickScheduler(**kwargs)  # type: ignore[arg-type]
