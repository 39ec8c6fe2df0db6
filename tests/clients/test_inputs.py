"""The input clock on a virtual clock: which sender runs when, and how often the timer wakes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from clients.inputs import InputClock


class Timers:
    """A virtual clock with ``call_at`` (one pending timer at a time, as the clock arms them)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.armed: list[tuple[float, Callable[[], None]]] = []
        self.wakeups = 0

    def call_at(self, when: float, cb: Callable[[], None]) -> Timers:
        self.armed.append((when, cb))
        return self

    def cancel(self) -> None:
        self.armed.pop()

    def run_until(self, t: float, *, late: float = 0.0) -> None:
        """Fire each timer (``late`` seconds after its time) until the clock passes ``t``."""
        while self.armed and self.armed[-1][0] + late <= t:
            assert len(self.armed) == 1, "the clock keeps one timer"
            when, cb = self.armed.pop()
            self.now = max(self.now, when + late)
            self.wakeups += 1
            cb()
        self.now = max(self.now, t)


def sender(log: list[tuple[str, float]], name: str, timers: Timers,
           until: float = float("inf")) -> Callable[[], bool]:
    def send() -> bool:
        if timers.now >= until:
            return False
        log.append((name, timers.now))
        return True
    return send


def make(period: float = 0.05, slots: int = 25) -> tuple[InputClock, Timers]:
    timers = Timers()
    return InputClock(period, clock=lambda: timers.now, call_at=timers.call_at,
                      slots=slots), timers


def test_each_bot_sends_once_a_period_at_its_phase() -> None:
    clock, timers = make()
    log: list[tuple[str, float]] = []
    clock.add(sender(log, "a", timers), 0.10)   # slot 2: 4 ms into each period
    clock.add(sender(log, "b", timers), 0.50)   # slot 12: 24 ms
    timers.run_until(0.2)
    a = [t for n, t in log if n == "a"]
    b = [t for n, t in log if n == "b"]
    assert a == pytest.approx([0.004, 0.054, 0.104, 0.154])
    assert b == pytest.approx([0.024, 0.074, 0.124, 0.174])
    # the timer wakes only for slots that hold bots: two a period
    assert timers.wakeups == 8


def test_a_late_timer_sends_what_each_bot_owes_back_to_back() -> None:
    clock, timers = make()
    log: list[tuple[str, float]] = []
    clock.add(sender(log, "a", timers), 0.0)
    clock.add(sender(log, "b", timers), 0.5)
    timers.run_until(0.0)
    assert [n for n, _ in log] == ["a"]
    # the loop stalls: the timer for b's first slot (24 ms) fires at 144 ms, and that wake-up
    # runs every slot due since, in order, each bot once per turn it owes
    when, cb = timers.armed.pop()
    assert when == pytest.approx(0.024)
    timers.now = 0.144
    cb()
    assert [n for n, _ in log] == ["a", "b", "a", "b", "a", "b"]
    assert all(t == 0.144 for _, t in log[1:])
    assert timers.armed[0][0] == pytest.approx(0.150)  # then on time again


def test_a_bot_that_is_done_leaves_and_an_empty_clock_sleeps() -> None:
    clock, timers = make()
    log: list[tuple[str, float]] = []
    clock.add(sender(log, "a", timers, until=0.11), 0.0)
    timers.run_until(1.0)
    assert [t for _, t in log] == pytest.approx([0.0, 0.05, 0.10])
    assert clock.bots == 0 and not timers.armed  # no timer once no bot is left
    clock.add(sender(log, "b", timers), 0.0)      # a new bot wakes it at its next turn
    assert timers.armed and timers.armed[0][0] == pytest.approx(1.0)
    timers.run_until(1.06)
    assert [n for n, _ in log][-2:] == ["b", "b"]


def test_a_bot_added_before_the_armed_slot_gets_the_earlier_turn() -> None:
    clock, timers = make()
    log: list[tuple[str, float]] = []
    clock.add(sender(log, "late", timers), 0.8)   # armed for 40 ms
    timers.now = 0.001
    clock.add(sender(log, "early", timers), 0.2)  # 10 ms: must not wait for 40 ms + a period
    timers.run_until(0.045)
    assert [n for n, _ in log] == ["early", "late"]
    assert log[0][1] == pytest.approx(0.010)


def test_a_timer_that_fires_a_little_early_runs_its_slot_and_does_not_spin() -> None:
    clock, timers = make()
    log: list[tuple[str, float]] = []
    clock.add(sender(log, "a", timers), 0.5)      # 24 ms
    when, cb = timers.armed.pop()
    timers.now = when - 0.0004                     # a loop whose timers round to the millisecond
    cb()
    assert len(log) == 1
    assert timers.armed and timers.armed[0][0] == pytest.approx(when + 0.05)


def test_slots_are_never_narrower_than_the_loops_timers() -> None:
    clock, timers = make(period=0.005, slots=25)   # 200 inputs a second
    assert len(clock.slots) == 2 and clock.width == pytest.approx(0.0025)
    log: list[tuple[str, float]] = []
    clock.add(sender(log, "a", timers), 0.9)
    timers.run_until(0.1)
    assert len(log) == 20 and timers.wakeups == 20  # one wake-up per input, no spinning
    clock, _ = make(period=1.0, slots=25)
    assert len(clock.slots) == 25


def test_a_sender_that_raises_leaves_and_the_others_go_on() -> None:
    clock, timers = make()
    log: list[tuple[str, float]] = []

    def broken() -> bool:
        raise RuntimeError("a bug")

    clock.add(broken, 0.1)
    clock.add(sender(log, "a", timers), 0.1)        # the same slot, after the broken one
    with pytest.raises(RuntimeError, match="a bug"):  # for the event loop to log
        timers.run_until(0.01)
    assert clock.bots == 1 and timers.armed          # re-armed before raising
    timers.run_until(0.2)
    assert [t for _, t in log] == pytest.approx([0.004, 0.054, 0.104, 0.154])


def test_close_stops_the_timer() -> None:
    clock, timers = make()
    log: list[tuple[str, float]] = []
    clock.add(sender(log, "a", timers), 0.3)
    clock.close()
    assert not timers.armed and clock.bots == 0
    timers.run_until(1.0)
    assert log == []


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="period"):
        make(period=0.0)
    with pytest.raises(ValueError, match="slot"):
        make(slots=0)
