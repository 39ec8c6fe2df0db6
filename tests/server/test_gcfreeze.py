"""FreezePolicy: when a serving process freezes, and when it collects in full."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from server.gcfreeze import MIN_CHURN, FreezePolicy


class Ops:
    """The collector's operations, recorded in order, on a fake clock."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.now = 0.0

    def op(self, name: str, seconds: float) -> Callable[[], None]:
        def run() -> None:
            self.calls.append(name)
            self.now += seconds
        return run

    def policy(self, **kw: Any) -> FreezePolicy:
        """A policy whose freeze takes 1 ms and whose collection takes 10 ms."""
        return FreezePolicy(freeze=self.op("freeze", 0.001),
                            unfreeze=self.op("unfreeze", 0.0),
                            collect=self.op("collect", 0.010), count=lambda: 42,
                            clock=lambda: self.now, **kw)

    def take(self) -> list[str]:
        out, self.calls = self.calls, []
        return out


def test_start_collects_then_freezes_and_nothing_happens_before_it() -> None:
    ops = Ops()
    p = ops.policy()
    assert p.check(5, 0) is None and ops.take() == []  # not serving yet
    p.start()
    assert ops.take() == ["collect", "freeze"]
    assert [p.check(0, 0) for _ in range(5)] == [None] * 5 and ops.take() == []
    assert p.stats() == {"frozen_at_start": 42, "freezes": 0, "refreshes": 0,
                         "freeze_ms_total": 0.0, "freeze_ms_max": 0.0}  # nor timed


def test_arrivals_freeze_on_that_check_and_the_next() -> None:
    ops = Ops()
    p = ops.policy()
    p.start()
    ops.take()
    assert [p.check(a, 0) for a in (3, 3, 3, 3)] == ["freeze", "freeze", None, None]
    # a stream of arrivals freezes every check, and once more after it ends
    assert [p.check(a, 0) for a in (4, 9, 20, 20, 20, 20)] == ["freeze"] * 4 + [None] * 2
    assert ops.take() == ["freeze"] * 6
    st = p.stats()
    assert (st["freezes"], st["refreshes"]) == (6, 0)
    assert st["freeze_ms_total"] == pytest.approx(6.0) and st["freeze_ms_max"] == pytest.approx(1.0)


def test_departures_refresh_once_past_the_churn_then_count_again() -> None:
    ops = Ops()
    p = ops.policy(min_churn=10)
    p.start(arrived=100)  # 100 clients when serving began
    ops.take()
    # the churn is max(10, 100 // 2) = 50 departures
    assert p.check(100, 49) is None
    assert p.check(100, 50) == "refresh"
    assert ops.take() == ["unfreeze", "collect", "freeze"]
    # counted again from this collection: 50 open, so max(10, 25) more
    assert p.check(100, 74) is None and p.check(100, 75) == "refresh"
    st = p.stats()
    assert (st["freezes"], st["refreshes"]) == (0, 2)
    assert st["freeze_ms_max"] == pytest.approx(11.0)  # unfreeze, collect and freeze


def test_few_clients_need_min_churn_departures() -> None:
    ops = Ops()
    p = ops.policy()
    p.start()
    ops.take()
    arrived = 2 * MIN_CHURN
    assert p.check(arrived, MIN_CHURN - 1) == "freeze"  # arrivals; not enough left yet
    assert p.check(arrived, MIN_CHURN) == "refresh"  # a refresh also freezes
    assert p.check(arrived, MIN_CHURN) is None  # the arrivals were frozen by the refresh
    assert ops.take() == ["freeze", "unfreeze", "collect", "freeze"]


def test_without_arrivals_only_the_start_up_freeze() -> None:
    ops = Ops()
    p = ops.policy(arrivals=False)
    p.start()
    assert [p.check(a, a // 2) for a in (10, 1000, 5000)] == [None] * 3
    assert ops.take() == ["collect", "freeze"]


def test_rejects_a_churn_below_one() -> None:
    with pytest.raises(ValueError, match="min_churn"):
        FreezePolicy(min_churn=0)


class Node:
    """A garbage collector-tracked object that can be in a cycle and weakly referenced."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def real_gc() -> Iterator[None]:
    """The process's own collector, left unfrozen afterwards."""
    assert gc.get_freeze_count() == 0
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.usefixtures("real_gc")
def test_with_the_real_collector_a_frozen_cycle_waits_for_the_refresh() -> None:
    p = FreezePolicy(min_churn=1)
    p.start()
    assert gc.get_freeze_count() == p.frozen_at_start > 0
    node = Node()  # a client's objects, made after the start
    ref = weakref.ref(node)
    assert p.check(1, 0) == "freeze"
    del node  # the client leaves: its objects are a cycle, frozen
    gc.collect()
    assert ref() is not None  # out of the collector's reach
    assert p.check(1, 1) == "refresh"
    assert ref() is None  # the refresh unfroze and collected it
    assert gc.get_freeze_count() > 0  # what is alive is frozen again
