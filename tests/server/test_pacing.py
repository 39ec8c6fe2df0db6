"""server.pacing: snapshot_rate a second per client, sent on the ticks that apply its inputs."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.pacing import FULL, SnapshotPacer


def run(pacer: SnapshotPacer, fresh_ticks: list[set[int]], sids: tuple[int, ...] = (7,),
        start: int = 0) -> dict[int, list[int]]:
    """The ticks on which each client got a snapshot; ``fresh_ticks[i]``: the sessions whose
    input tick ``start + i`` applies."""
    got: dict[int, list[int]] = {sid: [] for sid in sids}
    clients = [(sid, "payload") for sid in sids]
    for i, fresh in enumerate(fresh_ticks):
        for sid, _ in pacer.pick(start + i, clients, fresh):
            got[sid].append(start + i)
    return got


def gaps(ticks: list[int]) -> set[int]:
    return {b - a for a, b in itertools.pairwise(ticks)}


def test_a_client_that_sends_nothing_gets_the_rate_and_the_fixed_schedules_gaps() -> None:
    got = run(SnapshotPacer(20, 30), [set()] * 3000)[7]
    assert got[0] == 0  # a new client's first snapshot comes on its first tick
    assert abs(len(got) - 2000) <= FULL
    assert gaps(got) == {1, 2}


def test_inputs_at_the_snapshot_rate_are_each_answered_on_the_tick_that_applies_them() -> None:
    for phase in range(3):
        # 20 inputs a second on 30 Hz ticks: applied on ticks 1.5 apart
        applied = {phase + math.ceil(k * 1.5) for k in range(998)}
        got = run(SnapshotPacer(20, 30), [{7} if t in applied else set() for t in range(1500)])[7]
        late = sorted(t for t in applied if t not in got)
        assert late == [], f"phase {phase}: inputs of ticks {late[:5]} waited"
        assert abs(len(got) - 1000) <= FULL + 1


def test_inputs_every_tick_still_get_only_the_rate() -> None:
    got = run(SnapshotPacer(20, 30), [{7}] * 3000)[7]
    assert abs(len(got) - 2000) <= FULL
    assert gaps(got) <= {1, 2}


def test_the_rate_equal_to_the_tick_rate_is_every_tick() -> None:
    got = run(SnapshotPacer(30, 30), [set(), {7}] * 100)[7]
    assert got == list(range(200))


def test_clients_are_paced_apart() -> None:
    pacer = SnapshotPacer(20, 30)
    fresh = [{1} if t % 3 == 1 else set() for t in range(300)]
    got = run(pacer, fresh, sids=(1, 2))
    assert all(t in got[1] for t in range(300) if t % 3 == 1)
    assert abs(len(got[1]) - 200) <= 2 and abs(len(got[2]) - 200) <= 2


def test_clients_that_left_are_forgotten() -> None:
    pacer = SnapshotPacer(20, 30)
    for tick in range(50):  # 50 generations of 10 clients each, one tick each
        clients = [(sid, None) for sid in range(tick * 10, tick * 10 + 10)]
        pacer.pick(tick, clients, set())
    assert len(pacer._state) <= 2 * 10 + 64 + 10


@pytest.mark.parametrize(("rate", "tick_rate"), [(0, 30), (-1, 30), (31, 30)])
def test_impossible_rates_are_refused(rate: float, tick_rate: float) -> None:
    with pytest.raises(ValueError, match="snapshot rate"):
        SnapshotPacer(rate, tick_rate)


@settings(max_examples=150, deadline=None)
@given(tick_rate=st.sampled_from([10, 20, 30, 60]),
       share=st.floats(min_value=0.05, max_value=1.0),
       inputs=st.lists(st.booleans(), min_size=1, max_size=600))
def test_never_above_the_rate_never_below_it_never_a_longer_gap(
        tick_rate: int, share: float, inputs: list[bool]) -> None:
    rate = tick_rate * share
    pacer = SnapshotPacer(rate, tick_rate)
    r = rate / tick_rate
    got = run(pacer, [{7} if x else set() for x in inputs])[7]
    n = len(inputs)
    assert got and got[0] == 0
    # never more than the rate allows over any span (plus the budget a client may hold) ...
    for i, a in enumerate(got):
        for j in range(i + 1, len(got)):
            span = got[j] - a + 1
            assert j - i + 1 <= span * r + FULL + 1 + 1e-9
    # ... never fewer than it promises, whatever the inputs ...
    assert len(got) >= n * r - FULL
    # ... and never a longer wait than the fixed schedule's longest gap
    assert all(g <= math.ceil(1 / r - 1e-9) for g in gaps(got))
    assert n - 1 - got[-1] < math.ceil(1 / r - 1e-9)
