"""FreezePolicy: when a serving process freezes, and when it collects in full."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from server.gcfreeze import MIN_CHURN, MIN_GROWTH, FreezePolicy
from server.host import free_threaded


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
        """A policy whose freeze takes 1 ms and whose collection takes 10 ms (on any build,
        following arrivals unless ``arrivals`` says otherwise)."""
        kw.setdefault("arrivals", True)
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


def test_growth_freezes_on_that_check_and_the_next() -> None:
    ops = Ops()
    p = ops.policy()
    p.start()
    ops.take()
    # fewer than MIN_GROWTH more clients: nothing; then growth: two freezes
    assert [p.check(a, 0) for a in (10, MIN_GROWTH - 1, MIN_GROWTH, MIN_GROWTH, MIN_GROWTH)] \
        == [None, None, "freeze", "freeze", None]
    # a ramp of 200 a second freezes every check, and once more after it ends
    assert [p.check(a, 0) for a in (232, 432, 632, 632, 632)] == ["freeze"] * 4 + [None]
    # beyond 8 * MIN_GROWTH clients, an eighth more is needed
    assert p.check(632 + 78, 0) is None and p.check(632 + 79, 0) == "freeze"
    assert ops.take() == ["freeze"] * 7
    st = p.stats()
    assert (st["freezes"], st["refreshes"]) == (7, 0)
    assert st["freeze_ms_total"] == pytest.approx(7.0) and st["freeze_ms_max"] == pytest.approx(1.0)


def test_churn_at_a_steady_count_neither_freezes_nor_refreshes() -> None:
    """Clients that come and go by the dozen at a steady count: after the first freezes, none
    (the newcomers are mostly about to leave) and no full collection."""
    ops = Ops()
    p = ops.policy()
    p.start()
    ops.take()
    got = [p.check(50 + 60 * k, 60 * k) for k in range(100)]  # 6,000 come and go, 50 stay
    assert got[:2] == ["freeze", "freeze"] and set(got[2:]) == {None}
    assert ops.take() == ["freeze", "freeze"]


def test_a_falling_count_lowers_the_growth_mark() -> None:
    ops = Ops()
    p = ops.policy(min_churn=10**6)  # no refresh in this test
    p.start(arrived=400)
    assert p.check(400, 300) is None  # 300 left: the mark falls to 100
    assert p.check(400 + MIN_GROWTH - 1, 300) is None
    assert p.check(400 + MIN_GROWTH, 300) == "freeze"  # back up by MIN_GROWTH from 100


def test_departures_refresh_once_enough_frozen_clients_left() -> None:
    ops = Ops()
    p = ops.policy(min_churn=10, min_growth=1)
    p.start(arrived=100)  # 100 clients when serving began: not frozen as clients
    ops.take()
    assert p.check(100, 60) is None  # 60 left, but no client was frozen since the start
    assert p.check(104, 60) is None  # 40 left: 4 more is not growth, an eighth (5) is
    assert p.check(105, 60) == "freeze"  # 45 present: 45 clients exposed
    # the churn is max(10, 100 // 2) = 50 departures since the start: a refresh comes first
    assert p.check(105, 60) == "refresh"
    assert ops.take() == ["freeze", "unfreeze", "collect", "freeze"]
    # counted again from this collection: 45 open and exposed, so max(10, 22) departures
    assert p.check(105, 81) is None and p.check(105, 82) == "refresh"
    st = p.stats()
    assert (st["freezes"], st["refreshes"]) == (1, 2)
    assert st["freeze_ms_max"] == pytest.approx(11.0)  # unfreeze, collect and freeze
    # 23 open and exposed now: the next refresh after max(10, 11) more
    assert p.check(105, 92) is None and p.check(105, 93) == "refresh"


def test_few_exposed_clients_need_no_refresh() -> None:
    ops = Ops()
    p = ops.policy()
    p.start()
    ops.take()
    assert [p.check(MIN_GROWTH, 0) for _ in range(3)] == ["freeze", "freeze", None]
    # 2 * MIN_GROWTH clients exposed (< MIN_CHURN): departures alone never refresh
    assert p.check(MIN_GROWTH + 10 * MIN_CHURN, 10 * MIN_CHURN) is None
    assert ops.take() == ["freeze", "freeze"]


def test_without_arrivals_only_the_start_up_freeze() -> None:
    ops = Ops()
    p = ops.policy(arrivals=False)
    p.start()
    assert [p.check(a, a // 2) for a in (10, 1000, 5000)] == [None] * 3
    assert ops.take() == ["collect", "freeze"]


def test_by_default_only_builds_with_the_gil_follow_arrivals() -> None:
    assert FreezePolicy().arrivals is not free_threaded()


def test_rejects_a_churn_or_growth_below_one() -> None:
    with pytest.raises(ValueError, match="min_churn"):
        FreezePolicy(min_churn=0)
    with pytest.raises(ValueError, match="min_growth"):
        FreezePolicy(min_growth=0)


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
    p = FreezePolicy(arrivals=True, min_churn=1, min_growth=1)
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
