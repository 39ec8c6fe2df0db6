"""Sessions and the player-entity pool: pure state, clock injected.

A *session* is a player's claim on one player entity, identified on the wire by an unguessable
token.  It outlives its websocket connection by a grace period so that a client that reconnects
with the token gets the same entity back.  Lifecycle (:class:`SessionState`)::

    ATTACHED --detach--> DETACHED --attach (token, within grace)--> ATTACHED
        |                    |
        +------expire--------+--(grace elapsed)--> EXPIRED (entity back in the pool)

Why a pool: the runtime has no API to add or remove entities at a tick boundary, so the server
pre-spawns ``players`` player entities (kind PLAYER) and lends one per session.  An unclaimed
entity idles in the world (neutral input: no thrust, no turn), still collides and is visible;
snapshots report it as a player.  An ``add/remove entity at the next tick`` runtime call would let
the server spawn on hello instead.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from server.clock import TimeSource
from server.errors import ServerError


class SessionError(ServerError):
    """Root of this module's errors.

    Exception tree::

        SessionError
        ├── IllegalTransition   a lifecycle transition the table forbids (our bug)
        ├── BadToken            unknown or expired token (the peer's problem: send hello again)
        └── PoolExhausted       every player entity is claimed (server full)
    """


class IllegalTransition(SessionError, RuntimeError):
    pass


class BadToken(SessionError, ValueError):
    pass


class PoolExhausted(SessionError, RuntimeError):
    pass


class SessionState(Enum):
    ATTACHED = "attached"
    DETACHED = "detached"
    EXPIRED = "expired"


_SESSION_TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.ATTACHED: frozenset({SessionState.DETACHED, SessionState.EXPIRED}),
    SessionState.DETACHED: frozenset({SessionState.ATTACHED, SessionState.EXPIRED}),
    SessionState.EXPIRED: frozenset(),
}


def check_transition(table: Mapping[Any, frozenset[Any]], old: Enum, new: Enum) -> None:
    """Raise :class:`IllegalTransition` unless ``table`` allows ``old -> new``."""
    if new not in table[old]:
        raise IllegalTransition(f"{type(old).__name__}: {old.name} -> {new.name} is not allowed")


@dataclass
class Session:
    sid: int
    entity: int
    token: str
    name: str
    state: SessionState = SessionState.ATTACHED
    deadline: float = 0.0            # DETACHED: expires at this clock time
    last_seq: int = -1               # newest input seq forwarded to the world
    resumes: int = 0

    def move(self, new: SessionState) -> None:
        check_transition(_SESSION_TRANSITIONS, self.state, new)
        self.state = new


@dataclass
class SessionTable:
    """Sessions by token and id, over a pool of player entity ids.

    Args:
        entities: the player entity ids lent to sessions (lowest first).
        grace: seconds a detached session keeps its entity (default 10 s).
        clock: monotonic seconds (injected; tests pass a virtual clock).
        token_factory: returns a fresh token (default 16 random bytes, base64url).
    """

    entities: Iterable[int]
    grace: float = 10.0
    clock: TimeSource = field(default=lambda: 0.0)
    token_factory: Callable[[], str] = field(default=lambda: secrets.token_urlsafe(16))

    def __post_init__(self) -> None:
        self._free: list[int] = sorted(self.entities, reverse=True)
        self.by_token: dict[str, Session] = {}
        self.by_sid: dict[int, Session] = {}
        self._next_sid = 1
        self.counters = {"created": 0, "resumed": 0, "expired": 0, "bad_token": 0, "full": 0}

    @property
    def free(self) -> int:
        return len(self._free)

    def held(self) -> frozenset[int]:
        """The entities lent to sessions now (connected, or waiting out their grace)."""
        return frozenset(s.entity for s in self.by_sid.values())

    def open(self, name: str, token: str | None) -> tuple[Session, bool]:
        """Create a session, or resume the one ``token`` names.  Returns (session, resumed).

        Resuming an ATTACHED session is allowed (the client reconnected before the server saw
        the old connection drop); the caller must close the old connection.

        Raises:
            BadToken: ``token`` is unknown or its session expired.
            PoolExhausted: no free player entity.
        """
        self.expire()
        if token is not None:
            s = self.by_token.get(token)
            if s is None:
                self.counters["bad_token"] += 1
                raise BadToken("unknown or expired session token; send hello without a token")
            if s.state is SessionState.DETACHED:
                s.move(SessionState.ATTACHED)
            s.resumes += 1
            self.counters["resumed"] += 1
            return s, True
        if not self._free:
            self.counters["full"] += 1
            raise PoolExhausted("every player entity is in use")
        s = Session(sid=self._next_sid, entity=self._free.pop(), token=self.token_factory(),
                    name=name)
        self._next_sid += 1
        self.by_token[s.token] = s
        self.by_sid[s.sid] = s
        self.counters["created"] += 1
        return s, False

    def detach(self, s: Session) -> None:
        """The connection dropped: keep the entity for the grace period."""
        if s.state is SessionState.ATTACHED:
            s.move(SessionState.DETACHED)
            s.deadline = self.clock() + self.grace

    def close(self, s: Session) -> None:
        """The client said bye: give the entity back now."""
        if s.state is not SessionState.EXPIRED:
            self._release(s)

    def expire(self) -> list[Session]:
        """Release detached sessions whose grace period is over; returns them."""
        now = self.clock()
        gone = [s for s in self.by_sid.values()
                if s.state is SessionState.DETACHED and now >= s.deadline]
        for s in gone:
            self._release(s)
        return gone

    def _release(self, s: Session) -> None:
        s.move(SessionState.EXPIRED)
        self.by_token.pop(s.token, None)
        self.by_sid.pop(s.sid, None)
        self._free.append(s.entity)
        self.counters["expired"] += 1
