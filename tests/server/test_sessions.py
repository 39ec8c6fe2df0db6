"""Sessions and the entity pool under a virtual clock."""

from __future__ import annotations

import itertools

import pytest

from server.clock import VirtualClock
from server.sessions import (
    BadToken,
    IllegalTransition,
    PoolExhausted,
    SessionState,
    SessionTable,
)


def table(clock: VirtualClock, n: int = 2) -> SessionTable:
    counter = itertools.count()
    return SessionTable(range(n), grace=10.0, clock=clock,
                        token_factory=lambda: f"tok{next(counter)}")


def test_resume_within_grace_gets_the_same_entity() -> None:
    clock = VirtualClock()
    t = table(clock)
    s, resumed = t.open("a", None)
    assert not resumed and s.state is SessionState.ATTACHED
    t.detach(s)
    clock.advance(9.9)
    s2, resumed = t.open("a", s.token)
    assert resumed and s2 is s and s2.entity == s.entity and s2.state is SessionState.ATTACHED


def test_expired_session_frees_its_entity_and_token() -> None:
    clock = VirtualClock()
    t = table(clock, n=1)
    s, _ = t.open("a", None)
    with pytest.raises(PoolExhausted):
        t.open("b", None)
    t.detach(s)
    clock.advance(10.0)  # exactly the grace period
    with pytest.raises(BadToken):
        t.open("a", s.token)
    assert s.state is SessionState.EXPIRED
    s2, _ = t.open("b", None)
    assert s2.entity == s.entity and s2.token != s.token


def test_bye_releases_immediately_and_bad_tokens_are_counted() -> None:
    clock = VirtualClock()
    t = table(clock)
    s, _ = t.open("a", None)
    t.close(s)
    assert t.free == 2
    with pytest.raises(BadToken):
        t.open("a", "nonsense")
    assert t.counters["bad_token"] == 1


def test_illegal_transition_raises() -> None:
    clock = VirtualClock()
    t = table(clock)
    s, _ = t.open("a", None)
    t.close(s)
    with pytest.raises(IllegalTransition):
        s.move(SessionState.ATTACHED)


def test_held_entities_are_those_of_open_sessions_attached_or_in_grace() -> None:
    clock = VirtualClock()
    t = table(clock, n=3)
    assert t.held() == frozenset()
    a, _ = t.open("a", None)
    b, _ = t.open("b", None)
    assert t.held() == {a.entity, b.entity}
    t.detach(a)                       # waiting out its grace: still held
    assert t.held() == {a.entity, b.entity}
    t.close(b)                        # bye: released at once
    assert t.held() == {a.entity}
    clock.advance(10.0)
    t.expire()
    assert t.held() == frozenset()
