"""The paratick wire protocol: messages as frozen dataclasses, two codecs, no I/O.

Theory of operation
-------------------
A websocket connection negotiates one subprotocol, which fixes the codec and the protocol version:

* ``paratick.msgpack.v1``: every message is one *binary* frame holding a msgpack map;
* ``paratick.json.v1``: every message is one *text* frame holding a JSON object with the same
  keys and values (so a browser console or any generic websocket client can play).

Each map has a ``"t"`` key naming the message type; the other keys are the fields below.  The
codec turns bytes into an event (:meth:`Codec.decode`) and an event into bytes
(:meth:`Codec.encode`) and never touches a socket, a clock or a thread, so the server, the bots and
the tests share it.  Decoding validates *everything* a peer controls (frame type, size, syntax,
message type, field names, field types, ranges, NaN/inf, list lengths) and raises a
:class:`ProtocolError` subclass whose :attr:`~ProtocolError.code` goes back to the peer in an
:class:`Error` message.  Nothing is ever unpickled; msgpack extension types are refused.

Messages (client -> server: hello, spectate, input, bye; server -> client: welcome, watching,
snapshot, view, error, bye)::

    hello    {"t":"hello", "v":1, "name":str, "token":str|null}
    spectate {"t":"spectate", "v":1}
    welcome  {"t":"welcome", "v":1, "entity":int, "token":str, "tick":int, "tick_rate":float,
              "snapshot_rate":float, "width":float, "height":float, "view_radius":float,
              "resumed":bool, "gateway":int (only from a server with gateway threads)}
    input    {"t":"input", "seq":int, "thrust":float, "turn":float, "action":int, "ack":int|null}
    snapshot {"t":"snapshot", "tick":int, "ack":int, "base":int|null, "ents":[entity...],
              "gone":[int...]}
    watching {"t":"watching", "v":1, "tick":int, "tick_rate":float, "view_rate":float,
              "width":float, "height":float, "regions":[[x0, y0, x1, y1, worker]...],
              "workers":int, "max_entities":int, "build":str, "backend":str,
              "gateway":int (only from a server with gateway threads)}
    view     {"t":"view", "tick":int, "ents":[[x, y, kind, region]...], "total":int,
              "stats":{...}}
    error    {"t":"error", "code":str, "reason":str}
    bye      {"t":"bye", "reason":str}

A *spectator* sends ``spectate`` instead of ``hello``: it steers nothing and watches the whole
world.  ``watching`` answers it with the world's size and its regions (rectangle and owning
worker, index = region number), then ``view`` messages arrive at ``view_rate`` (a few per
second): a downsampled whole world, at most ``max_entities`` entities of ``total``, each as
integer world units ``x``, ``y``, ``kind`` (0 a player's entity, lent to a session; 1 any other:
NPCs and player slots nobody holds) and owning ``region``, plus
``stats``, a JSON object of live server figures (documented where the server builds it,
:func:`server.spectators.live_stats`; a client must ignore keys it does not know).  A spectator
never sends ``input`` (close 1008 ``spectator_input``), nor ``hello``; only ``bye``.  Servers
cap spectators: over the cap, ``error`` ``spectators_full`` and close 1013 (try again later).

A session from a browser console (JSON, no library)::

    ws = new WebSocket("ws://127.0.0.1:8765", "paratick.json.v1")
    ws.onmessage = (e) => console.log(JSON.parse(e.data))
    ws.send('{"t":"hello","v":1,"name":"me"}')          // -> welcome, then snapshots
    ws.send('{"t":"input","seq":1,"thrust":1,"turn":0,"action":0}')

``input.ack`` is the tick of the newest snapshot the client has applied; the server then sends
deltas against it.  ``snapshot.ack`` is the newest input ``seq`` applied to the world by this tick
(-1 before any).  ``snapshot.base`` is null for a full snapshot; otherwise the snapshot is a delta
against the client's snapshot of tick ``base``: ``ents`` holds entities added or changed since, and
``gone`` the ids that left the area of interest.  :func:`apply_snapshot` applies either kind.

Quantisation: an entity travels as ``[id, kind, x, y, vx, vy, heading, score]`` with x, y, vx, vy
as integers in units of 1/16 (:data:`POS_SCALE`) and heading in units of 1/1024 rad
(:data:`HEADING_SCALE`).  Both scales are powers of two, so a decoded value is exactly
representable and re-encoding it gives the same integer (quantisation is idempotent, which is what
makes "changed since the baseline" well defined).  1/16 of a world unit is far below an entity's
4-unit radius, and small integers pack into 1-3 msgpack bytes instead of 9 for a float64.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import chain, repeat
from operator import truediv
from typing import Any, ClassVar

import msgpack

from server.errors import ServerError

VERSION = 1
SUBPROTOCOL_MSGPACK = "paratick.msgpack.v1"
SUBPROTOCOL_JSON = "paratick.json.v1"
#: Server preference order: msgpack frames are about half the size of JSON ones.
SUBPROTOCOLS = (SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON)

#: Positions and velocities travel as integers in units of 1/POS_SCALE (see module docstring).
POS_SCALE = 16
#: Headings travel as integers in units of 1/HEADING_SCALE radian (0.001 rad resolution).
HEADING_SCALE = 1024
#: Longest player name accepted in hello (a display name, not a document).
MAX_NAME = 64
#: Longest session token accepted (server tokens are 22 characters: 16 random bytes, base64url).
MAX_TOKEN = 64
#: Longest error/bye reason accepted or sent.
MAX_REASON = 256
#: Default cap on entities in one decoded snapshot (clients); a 4096-entity AOI is already a
#: world-sized view, so more means a broken or hostile server.
MAX_SNAPSHOT_ENTITIES = 65536
#: Cap on regions in a decoded ``watching`` (a 256x256 grid is already far beyond any world here).
MAX_REGIONS = 65536
#: Longest build/backend description accepted in ``watching``.
MAX_LABEL = 128
#: Largest integer any field may hold (msgpack's int64 range; keeps JSON numbers exact-ish).
MAX_INT = 2**63 - 1


# ---- errors ---------------------------------------------------------------------------------
class ErrorCode(StrEnum):
    """Codes carried by :class:`Error` messages (the ``code`` a client can switch on)."""

    FRAME_TYPE = "frame_type"          # binary frame on the JSON subprotocol or vice versa
    TOO_LARGE = "too_large"            # frame over the server's size limit (then close 1009)
    MALFORMED = "malformed"            # not msgpack/JSON, or not a map with a string "t"
    UNKNOWN_TYPE = "unknown_type"      # "t" names no message this side accepts
    INVALID_FIELD = "invalid_field"    # missing/extra field, wrong type, NaN/inf, out of range
    VERSION = "version"                # hello.v is not a version this server speaks
    HELLO_FIRST = "hello_first"        # a message before hello (then close 1008)
    DUPLICATE_HELLO = "duplicate_hello"  # a second hello on one connection (then close 1008)
    BAD_TOKEN = "bad_token"            # unknown or expired session token (send hello again)
    RATE_LIMITED = "rate_limited"      # inputs faster than the limit; the extra ones are dropped
    TOO_MANY_ERRORS = "too_many_errors"  # too many bad messages in a row (then close 1008)
    TOO_MANY_CONNECTIONS = "too_many_connections"  # per-address cap reached (then close 1008)
    SERVER_FULL = "server_full"        # no free player entity (then close 1013)
    REPLACED = "replaced"              # the session was resumed on another connection (then 4000)
    HELLO_TIMEOUT = "hello_timeout"    # no hello soon enough after the handshake (then close 1008)
    IDLE_TIMEOUT = "idle_timeout"      # nothing received for too long (then close 1008)
    SHUTDOWN = "shutdown"              # the server is stopping (then close 1001)
    SPECTATOR_INPUT = "spectator_input"  # an input from a spectator (then close 1008)
    SPECTATORS_FULL = "spectators_full"  # the spectator cap is reached (then close 1013)


class ProtocolError(ServerError, ValueError):
    """Root of the protocol's exceptions: bytes from a peer that are not a valid message.

    Exception tree::

        ProtocolError               root; .code is the ErrorCode to send back
        ├── FrameTypeError          text frame on a binary subprotocol or vice versa
        ├── FrameTooLarge           frame longer than the decoder's limit
        ├── MalformedMessage        not msgpack/JSON, or not a map with a string "t"
        ├── UnknownMessageType      "t" names no message accepted in this direction
        ├── InvalidField            missing or extra field, wrong type, NaN/inf, out of range
        └── UnsupportedVersion      hello/welcome "v" is not :data:`VERSION`

    Every one is the *peer's* fault: the receiver reports it and keeps serving.  Bugs on our side
    never raise these (an encoder given a bad event raises ``TypeError``/``ValueError``).
    """

    code: ClassVar[ErrorCode] = ErrorCode.MALFORMED


class FrameTypeError(ProtocolError):
    code = ErrorCode.FRAME_TYPE


class FrameTooLarge(ProtocolError):
    code = ErrorCode.TOO_LARGE


class MalformedMessage(ProtocolError):
    code = ErrorCode.MALFORMED


class UnknownMessageType(ProtocolError):
    code = ErrorCode.UNKNOWN_TYPE


class InvalidField(ProtocolError):
    code = ErrorCode.INVALID_FIELD


class UnsupportedVersion(ProtocolError):
    code = ErrorCode.VERSION


# ---- events ---------------------------------------------------------------------------------
#: Decoded entity: (id, kind, x, y, vx, vy, heading, score), floats exact multiples of the scales.
Entity = tuple[int, int, float, float, float, float, float, int]


@dataclass(frozen=True, slots=True)
class Hello:
    """Client -> server, first message: who I am, and my token if I am resuming a session."""

    name: str = ""
    token: str | None = None
    version: int = VERSION
    TYPE: ClassVar[str] = "hello"


@dataclass(frozen=True, slots=True)
class Welcome:
    """Server -> client: the entity you control and the parameters of the world."""

    entity: int
    token: str
    tick: int
    tick_rate: float
    snapshot_rate: float
    width: float
    height: float
    view_radius: float
    resumed: bool = False
    version: int = VERSION
    #: Which gateway (event loop) serves this connection; sent only by a server with gateway
    #: threads or processes, so a client can tell how connections spread.
    gateway: int | None = None
    TYPE: ClassVar[str] = "welcome"


@dataclass(frozen=True, slots=True)
class Spectate:
    """Client -> server, first message instead of hello: let me watch the whole world."""

    version: int = VERSION
    TYPE: ClassVar[str] = "spectate"


#: One region as ``watching`` lists it: (x0, y0, x1, y1, owning worker).
RegionInfo = tuple[float, float, float, float, int]
#: One entity of a view: (x, y, kind, region), integers (x and y in world units).
ViewEntity = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class Watching:
    """Server -> spectator: the world's shape and who owns what; views follow."""

    tick: int
    tick_rate: float
    view_rate: float
    width: float
    height: float
    regions: tuple[RegionInfo, ...]
    workers: int
    max_entities: int
    build: str = ""
    backend: str = ""
    version: int = VERSION
    gateway: int | None = None
    TYPE: ClassVar[str] = "watching"


@dataclass(frozen=True, slots=True)
class View:
    """Server -> spectator: a downsampled whole world at ``tick`` and live statistics.

    ``total`` is how many entities the world holds (``entities`` is at most the server's cap);
    ``stats`` is free-form JSON (see the module docstring).
    """

    tick: int
    entities: tuple[ViewEntity, ...] = ()
    total: int = 0
    stats: Mapping[str, Any] | None = None
    TYPE: ClassVar[str] = "view"


@dataclass(frozen=True, slots=True)
class Input:
    """Client -> server: sticky controls, applied at the next tick boundary."""

    seq: int
    thrust: float = 0.0
    turn: float = 0.0
    action: int = 0
    ack: int | None = None
    TYPE: ClassVar[str] = "input"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Server -> client: the entities in the area of interest at ``tick`` (full or delta)."""

    tick: int
    ack: int
    entities: tuple[Entity, ...] = ()
    removed: tuple[int, ...] = ()
    base: int | None = None
    TYPE: ClassVar[str] = "snapshot"

    @property
    def is_delta(self) -> bool:
        return self.base is not None


@dataclass(frozen=True, slots=True)
class Error:
    """Either direction: what was wrong (``code``, an :class:`ErrorCode` value) and why."""

    code: str
    reason: str = ""
    TYPE: ClassVar[str] = "error"


@dataclass(frozen=True, slots=True)
class Bye:
    """Either direction: I am closing on purpose."""

    reason: str = ""
    TYPE: ClassVar[str] = "bye"


Message = Hello | Spectate | Welcome | Watching | Input | Snapshot | View | Error | Bye
CLIENT_MESSAGES: frozenset[str] = frozenset({"hello", "spectate", "input", "bye"})
SERVER_MESSAGES: frozenset[str] = frozenset({"welcome", "watching", "snapshot", "view", "error",
                                             "bye"})


# ---- quantisation ---------------------------------------------------------------------------
WireEntity = tuple[int, int, int, int, int, int, int, int]
#: Half a turn in heading units.
HALF_TURN = round(math.pi * HEADING_SCALE)


def quantise(view_row: Iterable[Any]) -> WireEntity:
    """A sim ``ViewRow`` (id, kind, x, y, vx, vy, heading, score) -> wire integers.

    Headings are wrapped to [-pi, pi) so they stay small integers, and wrapped once more in
    integer units so that a value on the boundary quantises the same way twice.
    """
    eid, kind, x, y, vx, vy, h, score = view_row
    hq = round(((h + math.pi) % (2 * math.pi) - math.pi) * HEADING_SCALE)
    hq = (hq + HALF_TURN) % (2 * HALF_TURN) - HALF_TURN
    return (eid, kind, round(x * POS_SCALE), round(y * POS_SCALE), round(vx * POS_SCALE),
            round(vy * POS_SCALE), hq, score)


def dequantise(w: WireEntity) -> Entity:
    return (w[0], w[1], w[2] / POS_SCALE, w[3] / POS_SCALE, w[4] / POS_SCALE, w[5] / POS_SCALE,
            w[6] / HEADING_SCALE, w[7])


# ---- validation helpers (peer data) -----------------------------------------------------------
def _int(m: Mapping[str, Any], key: str, lo: int = 0, hi: int = MAX_INT) -> int:
    v = m[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidField(f"{key} must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise InvalidField(f"{key} must be in [{lo}, {hi}], got {v}")
    return v


def _opt_int(m: Mapping[str, Any], key: str, lo: int = 0) -> int | None:
    return None if m.get(key) is None else _int(m, key, lo)


def _float(m: Mapping[str, Any], key: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    v = m[key]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise InvalidField(f"{key} must be a number, got {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f):
        raise InvalidField(f"{key} must be finite, got {f!r}")
    if not lo <= f <= hi:
        raise InvalidField(f"{key} must be in [{lo:g}, {hi:g}], got {f:g}")
    return f


def _str(m: Mapping[str, Any], key: str, limit: int) -> str:
    v = m[key]
    if not isinstance(v, str):
        raise InvalidField(f"{key} must be a string, got {type(v).__name__}")
    if len(v) > limit:
        raise InvalidField(f"{key} is longer than {limit} characters")
    return v


def _bool(m: Mapping[str, Any], key: str) -> bool:
    v = m[key]
    if not isinstance(v, bool):
        raise InvalidField(f"{key} must be a boolean, got {type(v).__name__}")
    return v


def _version(m: Mapping[str, Any]) -> int:
    v = _int(m, "v", 0, MAX_INT)
    if v != VERSION:
        raise UnsupportedVersion(f"protocol version {v} is not supported; this peer speaks "
                                 f"{VERSION}")
    return v


_INT_ONLY = frozenset((int,))


def _entity(v: Any) -> WireEntity:
    if not isinstance(v, list | tuple) or len(v) != 8:
        raise InvalidField("an entity is [id, kind, x, y, vx, vy, heading, score]")
    # Exact ints only (a bool is not one), checked with C-level passes: a client validates every
    # entity of every snapshot, and a per-item isinstance loop was most of a bot's decode time.
    if frozenset(map(type, v)) != _INT_ONLY or min(v) < -MAX_INT or max(v) > MAX_INT:
        raise InvalidField("entity fields are integers (quantised, see POS_SCALE)")
    if v[0] < 0:
        raise InvalidField("entity id must be >= 0")
    return tuple(v)


_SEQUENCES = frozenset((list, tuple))
_LEN8 = frozenset((8,))


def _entities(v: list[Any]) -> tuple[Entity, ...]:
    """A snapshot's entities checked and dequantised: ``tuple(map(dequantise, map(_entity,
    v)))``, with the checks made over all of them at once.

    A validating client decodes every entity of every snapshot: entity by entity that was about
    2 us each, eight times msgpack's own unpacking.  Here a few C-level passes check the shapes
    and the flattened fields, and the divisions run as ``map``s over the columns (the same
    operations on the same integers: the same floats).  A list that fails a check goes entity by
    entity instead, which raises the error that names the first bad one.
    """
    if not v:
        return ()
    if frozenset(map(type, v)) <= _SEQUENCES and frozenset(map(len, v)) == _LEN8:
        flat = list(chain.from_iterable(v))
        ids = flat[0::8]
        if frozenset(map(type, flat)) == _INT_ONLY and min(flat) >= -MAX_INT \
                and max(flat) <= MAX_INT and min(ids) >= 0:
            pos = repeat(POS_SCALE)
            return tuple(zip(ids, flat[1::8], map(truediv, flat[2::8], pos),
                             map(truediv, flat[3::8], pos), map(truediv, flat[4::8], pos),
                             map(truediv, flat[5::8], pos),
                             map(truediv, flat[6::8], repeat(HEADING_SCALE)), flat[7::8],
                             strict=True))
    return tuple(map(dequantise, map(_entity, v)))


def _list(m: Mapping[str, Any], key: str, limit: int) -> list[Any]:
    v = m[key]
    if not isinstance(v, list | tuple):
        raise InvalidField(f"{key} must be a list, got {type(v).__name__}")
    if len(v) > limit:
        raise InvalidField(f"{key} has {len(v)} items, more than {limit}")
    return list(v)


def _region(v: Any) -> RegionInfo:
    if not isinstance(v, list | tuple) or len(v) != 5:
        raise InvalidField("a region is [x0, y0, x1, y1, worker]")
    m = dict(zip(("x0", "y0", "x1", "y1", "worker"), v, strict=True))
    return (_float(m, "x0"), _float(m, "y0"), _float(m, "x1"), _float(m, "y1"),
            _int(m, "worker"))


def _view_entity(v: Any) -> ViewEntity:
    if not isinstance(v, list | tuple) or len(v) != 4:
        raise InvalidField("a view entity is [x, y, kind, region]")
    if frozenset(map(type, v)) != _INT_ONLY or min(v) < -MAX_INT or max(v) > MAX_INT:
        raise InvalidField("view entity fields are integers")
    return (v[0], v[1], v[2], v[3])


#: message type -> (required fields, optional fields); everything else is an unknown field.
_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "hello": (frozenset({"v", "name"}), frozenset({"token"})),
    "spectate": (frozenset({"v"}), frozenset()),
    "watching": (frozenset({"v", "tick", "tick_rate", "view_rate", "width", "height", "regions",
                            "workers", "max_entities", "build", "backend"}),
                 frozenset({"gateway"})),
    "view": (frozenset({"tick", "ents", "total", "stats"}), frozenset()),
    "welcome": (frozenset({"v", "entity", "token", "tick", "tick_rate", "snapshot_rate", "width",
                           "height", "view_radius", "resumed"}), frozenset({"gateway"})),
    "input": (frozenset({"seq", "thrust", "turn", "action"}), frozenset({"ack"})),
    "snapshot": (frozenset({"tick", "ack", "ents", "gone"}), frozenset({"base"})),
    "error": (frozenset({"code", "reason"}), frozenset()),
    "bye": (frozenset(), frozenset({"reason"})),
}


def _plain_input(m: dict[str, Any]) -> Input | None:
    """The input ``m`` holds when it is the plain shape every client sends (exactly its fields,
    integers and in-range floats, ``ack`` absent, None or an integer), else None: the general
    path then decides (it also takes integer thrust or turn, and names what is wrong).

    Inputs are most of the messages a server reads; this path makes the same checks as
    :func:`_build` in a few comparisons (a NaN fails every range comparison).
    """
    n = len(m)
    seq = m.get("seq")
    thrust = m.get("thrust")
    turn = m.get("turn")
    action = m.get("action")
    ack = m.get("ack")
    if (n == 5 or (n == 6 and "ack" in m)) \
            and type(seq) is int and 0 <= seq <= MAX_INT \
            and type(action) is int and 0 <= action <= 255 \
            and type(thrust) is float and -1.0 <= thrust <= 1.0 \
            and type(turn) is float and -1.0 <= turn <= 1.0 \
            and (ack is None or (type(ack) is int and 0 <= ack <= MAX_INT)):
        return Input(seq, thrust, turn, action, ack)
    return None


def _build(t: str, m: Mapping[str, Any], max_entities: int) -> Message:
    if t == "input":
        return Input(seq=_int(m, "seq"), thrust=_float(m, "thrust", -1.0, 1.0),
                     turn=_float(m, "turn", -1.0, 1.0), action=_int(m, "action", 0, 255),
                     ack=_opt_int(m, "ack"))
    if t == "hello":
        tok = m.get("token")
        return Hello(version=_version(m), name=_str(m, "name", MAX_NAME),
                     token=None if tok is None else _str(m, "token", MAX_TOKEN))
    if t == "snapshot":
        ents = _entities(_list(m, "ents", max_entities))
        gone = _list(m, "gone", max_entities)
        if gone and (not frozenset(map(type, gone)) <= _INT_ONLY or min(gone) < 0
                     or max(gone) > MAX_INT):
            raise InvalidField("gone holds entity ids (integers >= 0)")
        return Snapshot(tick=_int(m, "tick"), ack=_int(m, "ack", -1), entities=ents,
                        removed=tuple(gone), base=_opt_int(m, "base"))
    if t == "welcome":
        return Welcome(version=_version(m), entity=_int(m, "entity"),
                       token=_str(m, "token", MAX_TOKEN), tick=_int(m, "tick"),
                       tick_rate=_float(m, "tick_rate", 0.0),
                       snapshot_rate=_float(m, "snapshot_rate", 0.0),
                       width=_float(m, "width", 0.0), height=_float(m, "height", 0.0),
                       view_radius=_float(m, "view_radius", 0.0), resumed=_bool(m, "resumed"),
                       gateway=_opt_int(m, "gateway"))
    if t == "spectate":
        return Spectate(version=_version(m))
    if t == "view":
        stats = m["stats"]
        if not isinstance(stats, dict):
            raise InvalidField(f"stats must be a map, got {type(stats).__name__}")
        return View(tick=_int(m, "tick"),
                    entities=tuple(map(_view_entity, _list(m, "ents", max_entities))),
                    total=_int(m, "total"), stats=stats)
    if t == "watching":
        return Watching(version=_version(m), tick=_int(m, "tick"),
                        tick_rate=_float(m, "tick_rate", 0.0),
                        view_rate=_float(m, "view_rate", 0.0),
                        width=_float(m, "width", 0.0), height=_float(m, "height", 0.0),
                        regions=tuple(map(_region, _list(m, "regions", MAX_REGIONS))),
                        workers=_int(m, "workers", 1), max_entities=_int(m, "max_entities"),
                        build=_str(m, "build", MAX_LABEL), backend=_str(m, "backend", MAX_LABEL),
                        gateway=_opt_int(m, "gateway"))
    if t == "error":
        return Error(code=_str(m, "code", 64), reason=_str(m, "reason", MAX_REASON))
    if t == "bye":
        return Bye(reason=_str(m, "reason", MAX_REASON) if "reason" in m else "")
    raise AssertionError(t)  # pragma: no cover - _FIELDS and _build list the same types


def _to_map(msg: Message) -> dict[str, Any]:
    if isinstance(msg, Input):
        return {"t": "input", "seq": msg.seq, "thrust": msg.thrust, "turn": msg.turn,
                "action": msg.action, "ack": msg.ack}
    if isinstance(msg, Snapshot):
        return {"t": "snapshot", "tick": msg.tick, "ack": msg.ack, "base": msg.base,
                "ents": [quantise(e) for e in msg.entities], "gone": list(msg.removed)}
    if isinstance(msg, Hello):
        return {"t": "hello", "v": msg.version, "name": msg.name, "token": msg.token}
    if isinstance(msg, Welcome):
        out = {"t": "welcome", "v": msg.version, "entity": msg.entity, "token": msg.token,
               "tick": msg.tick, "tick_rate": msg.tick_rate, "snapshot_rate": msg.snapshot_rate,
               "width": msg.width, "height": msg.height, "view_radius": msg.view_radius,
               "resumed": msg.resumed}
        if msg.gateway is not None:
            out["gateway"] = msg.gateway
        return out
    if isinstance(msg, View):
        return {"t": "view", "tick": msg.tick, "ents": [list(e) for e in msg.entities],
                "total": msg.total, "stats": dict(msg.stats or {})}
    if isinstance(msg, Spectate):
        return {"t": "spectate", "v": msg.version}
    if isinstance(msg, Watching):
        out = {"t": "watching", "v": msg.version, "tick": msg.tick, "tick_rate": msg.tick_rate,
               "view_rate": msg.view_rate, "width": msg.width, "height": msg.height,
               "regions": [list(r) for r in msg.regions], "workers": msg.workers,
               "max_entities": msg.max_entities, "build": msg.build[:MAX_LABEL],
               "backend": msg.backend[:MAX_LABEL]}
        if msg.gateway is not None:
            out["gateway"] = msg.gateway
        return out
    if isinstance(msg, Error):
        return {"t": "error", "code": str(msg.code), "reason": msg.reason[:MAX_REASON]}
    if isinstance(msg, Bye):
        return {"t": "bye", "reason": msg.reason[:MAX_REASON]}
    raise TypeError(f"not a paratick message: {msg!r:.80}")


def snapshot_map(tick: int, ack: int, ents: Iterable[WireEntity], gone: Iterable[int],
                 base: int | None) -> dict[str, Any]:
    """The wire map of a snapshot from already-quantised entities; the server builds the same
    payload from per-entity fragments (:meth:`Codec.dumps_snapshot`), tests hold them equal."""
    return {"t": "snapshot", "tick": tick, "ack": ack, "base": base, "ents": list(ents),
            "gone": list(gone)}


# ---- codecs -----------------------------------------------------------------------------------
class Codec:
    """Bytes <-> events for one subprotocol.  Stateless, so one instance serves every peer.

    Args (of :meth:`decode`):
        data: the payload of one websocket message (``bytes`` for binary frames, ``str`` for
            text frames).
        accept: message types this side accepts (:data:`CLIENT_MESSAGES` on a server).
        max_size: frame size limit in bytes (characters for text frames).
        max_entities: cap on list lengths in a snapshot.
    """

    name: ClassVar[str]
    binary: ClassVar[bool]

    def dumps(self, obj: Mapping[str, Any]) -> bytes | str:
        raise NotImplementedError

    def loads(self, data: bytes | str) -> Any:
        raise NotImplementedError

    def encode(self, msg: Message) -> bytes | str:
        """The frame payload for ``msg`` (bytes for msgpack, str for JSON)."""
        return self.dumps(_to_map(msg))

    def fragment(self, entity: WireEntity) -> Any:
        """One quantised entity, encoded on its own, for :meth:`dumps_snapshot`.

        A server encodes each entity once per tick and splices the fragments into every
        client's snapshot that lists it, instead of re-encoding the same integers per client.
        """
        raise NotImplementedError

    def fragmenter(self) -> Callable[[WireEntity], Any]:
        """:meth:`fragment` as a callable that may keep state between calls: use it from one
        thread (a shard worker's hook asks for one per tick)."""
        return self.fragment

    def dumps_snapshot(self, tick: int, ack: int, base: int | None, fragments: Sequence[Any],
                       gone: Iterable[int]) -> bytes | str:
        """The same payload as ``dumps(snapshot_map(tick, ack, ents, gone, base))``, built from
        the entities' :meth:`fragment` encodings."""
        raise NotImplementedError

    def decode(self, data: bytes | str, *, accept: frozenset[str] = CLIENT_MESSAGES,
               max_size: int = 1 << 20, max_entities: int = MAX_SNAPSHOT_ENTITIES) -> Message:
        """Validate and decode one frame.

        Raises:
            ProtocolError: a subclass naming what is wrong; ``.code`` is the error code to send.
        """
        if isinstance(data, bytearray | memoryview):
            data = bytes(data)
        if not isinstance(data, bytes | str):
            raise FrameTypeError(f"a frame is bytes or str, got {type(data).__name__}")
        if isinstance(data, str) == self.binary:
            want = "binary" if self.binary else "text"
            raise FrameTypeError(f"{self.name} carries {want} frames only")
        if len(data) > max_size:
            raise FrameTooLarge(f"frame of {len(data)} bytes exceeds the {max_size}-byte limit")
        try:
            obj = self.loads(data)
        except ProtocolError:
            raise
        except (ValueError, RecursionError, msgpack.UnpackException) as exc:
            # Some msgpack errors have an empty message: name the exception instead.
            why = str(exc) or type(exc).__name__
            raise MalformedMessage(f"not valid {self.name} data: {why}"[:MAX_REASON]) from exc
        if type(obj) is dict and obj.get("t") == "input" and "input" in accept:
            inp = _plain_input(obj)
            if inp is not None:
                return inp
        if not isinstance(obj, dict):
            raise MalformedMessage(f"a message is a map, got {type(obj).__name__}")
        t = obj.get("t")
        if not isinstance(t, str):
            raise MalformedMessage('a message needs a string "t" naming its type')
        if t not in accept:
            raise UnknownMessageType(f"unknown or unexpected message type {t[:32]!r}")
        required, optional = _FIELDS[t]
        keys = set(obj) - {"t"}
        missing = required - keys
        if missing:
            raise InvalidField(f"{t} lacks field(s) {', '.join(sorted(missing))}")
        extra = keys - required - optional
        if extra:
            names = ", ".join(sorted(str(k)[:32] for k in extra)[:4])
            raise InvalidField(f"{t} has unknown field(s) {names}")
        try:
            return _build(t, obj, max_entities)
        except (KeyError, TypeError) as exc:  # defensive: _build checks types first
            raise InvalidField(f"{t}: {exc}"[:MAX_REASON]) from exc


def _no_ext(code: int, data: bytes) -> Any:
    raise MalformedMessage(f"msgpack extension type {code} is not allowed")


_FIXARRAY = [bytes((0x90 | n,)) for n in range(16)]
_ENTS_KEY = b"\xa4ents"
#: A snapshot map's first bytes: 6 entries, "t": "snapshot", then the "tick" key.
_SNAPSHOT_TICK = b"\x86\xa1t\xa8snapshot\xa4tick"
_ACK_KEY = b"\xa3ack"
_BASE_KEY = b"\xa4base"
_GONE_KEY = b"\xa4gone"
_NIL = b"\xc0"
_INPUT_SEQ = b"\x86\xa1t\xa5input\xa3seq"
_THRUST_KEY = b"\xa6thrust"
_TURN_KEY = b"\xa4turn"
_ACTION_KEY = b"\xa6action"
_FLOAT64 = struct.Struct(">d").pack
#: msgpack's one-byte integers (positive and negative fixint), by value.
_FIXINT = {n: msgpack.packb(n) for n in range(-32, 128)}


def pack_int(n: int) -> bytes:
    """``msgpack.packb(n)`` for an integer in msgpack's range (the smallest encoding), without
    building a packer: a snapshot's header holds three per client."""
    b = _FIXINT.get(n)
    if b is not None:
        return b
    if n > 0:
        if n <= 0xFF:
            return b"\xcc" + n.to_bytes(1)
        if n <= 0xFFFF:
            return b"\xcd" + n.to_bytes(2)
        if n <= 0xFFFFFFFF:
            return b"\xce" + n.to_bytes(4)
        return b"\xcf" + n.to_bytes(8)
    if n >= -0x80:
        return b"\xd0" + n.to_bytes(1, signed=True)
    if n >= -0x8000:
        return b"\xd1" + n.to_bytes(2, signed=True)
    if n >= -0x80000000:
        return b"\xd2" + n.to_bytes(4, signed=True)
    return b"\xd3" + n.to_bytes(8, signed=True)


class MsgpackCodec(Codec):
    name = SUBPROTOCOL_MSGPACK
    binary = True

    def dumps(self, obj: Mapping[str, Any]) -> bytes:
        return msgpack.packb(obj, use_bin_type=True)

    def loads(self, data: bytes | str) -> Any:
        # Binary payloads (bin type) are never part of a message: refuse bytes values by
        # leaving raw=False (str) and checking types in validation; extension types raise.
        return msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_no_ext)

    def fragment(self, entity: WireEntity) -> bytes:
        return msgpack.packb(entity)

    def fragmenter(self) -> Callable[[WireEntity], bytes]:
        # One packer for many entities: packb builds a packer per call.
        return msgpack.Packer().pack

    def dumps_snapshot(self, tick: int, ack: int, base: int | None, fragments: Sequence[Any],
                       gone: Iterable[int]) -> bytes:
        return b"".join((self.snapshot_head(tick, ack, base, len(fragments)), *fragments,
                         self.snapshot_tail(gone)))

    @staticmethod
    def snapshot_head(tick: int, ack: int, base: int | None, count: int) -> bytes:
        """A snapshot's bytes before its ``count`` entity fragments.

        The 6-entry map's header, "t", "tick", "ack" and "base", then "ents" and its array
        header: with the fragments and :meth:`snapshot_tail`, the bytes msgpack.packb writes
        for snapshot_map() (tests compare them), without packing every entity again.
        """
        if count < 16:
            arr = _FIXARRAY[count]
        elif count < 0x10000:
            arr = b"\xdc" + count.to_bytes(2, "big")
        else:
            arr = b"\xdd" + count.to_bytes(4, "big")
        return b"".join((_SNAPSHOT_TICK, pack_int(tick), _ACK_KEY, pack_int(ack), _BASE_KEY,
                         _NIL if base is None else pack_int(base), _ENTS_KEY, arr))

    @staticmethod
    def input_bytes(seq: int, thrust: float, turn: float, action: int, ack: int | None) -> bytes:
        """``encode(Input(seq, thrust, turn, action, ack))`` without building the message or
        its map (what a bot sends twenty times a second; tests compare the bytes).  ``thrust``
        and ``turn`` are floats, as msgpack writes them (float 64); others take the general
        path."""
        if type(thrust) is not float or type(turn) is not float:
            return MsgpackCodec().encode(Input(seq, thrust, turn, action, ack))  # type: ignore[return-value]
        return b"".join((_INPUT_SEQ, pack_int(seq), _THRUST_KEY, b"\xcb", _FLOAT64(thrust),
                         _TURN_KEY, b"\xcb", _FLOAT64(turn), _ACTION_KEY, pack_int(action),
                         _ACK_KEY, _NIL if ack is None else pack_int(ack)))

    @staticmethod
    def snapshot_tail(gone: Iterable[int]) -> bytes:
        """A snapshot's bytes after its entity fragments: the "gone" ids."""
        return _GONE_KEY + msgpack.packb(list(gone))


def _no_constant(name: str) -> Any:
    raise MalformedMessage(f"JSON constant {name} is not allowed")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (``{"seq":1,"seq":2}`` is ambiguous: refused)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise MalformedMessage(f"duplicate key {key[:32]!r} in a JSON object")
            seen.add(key)
    return obj


class JsonCodec(Codec):
    name = SUBPROTOCOL_JSON
    binary = False

    def dumps(self, obj: Mapping[str, Any]) -> str:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)

    def loads(self, data: bytes | str) -> Any:
        return json.loads(data, parse_constant=_no_constant, object_pairs_hook=_unique_keys)

    def fragment(self, entity: WireEntity) -> str:
        return json.dumps(entity, separators=(",", ":"))

    def dumps_snapshot(self, tick: int, ack: int, base: int | None, fragments: Sequence[Any],
                       gone: Iterable[int]) -> str:
        head = json.dumps({"t": "snapshot", "tick": tick, "ack": ack, "base": base},
                          separators=(",", ":"))
        return "".join((head[:-1], ',"ents":[', ",".join(fragments), '],"gone":',
                        json.dumps(list(gone), separators=(",", ":")), "}"))


CODECS: dict[str, Codec] = {SUBPROTOCOL_MSGPACK: MsgpackCodec(), SUBPROTOCOL_JSON: JsonCodec()}


def codec_for(subprotocol: str | None) -> Codec:
    """The codec of a negotiated subprotocol (None, a client that offered none: JSON)."""
    return CODECS[subprotocol or SUBPROTOCOL_JSON]


# ---- client-side state ------------------------------------------------------------------------
class SnapshotGap(ProtocolError):
    """A delta against a baseline this client does not have (the client should ack afresh)."""

    code = ErrorCode.INVALID_FIELD


def apply_snapshot(history: Mapping[int, Mapping[int, Entity]], snap: Snapshot,
                   ) -> dict[int, Entity]:
    """The entity map (id -> entity) a client sees after ``snap``.

    Args:
        history: the client's earlier entity maps by tick (at least the acked baselines it may
            still be sent deltas against).
        snap: a decoded snapshot, full or delta.

    Raises:
        SnapshotGap: ``snap`` is a delta against a tick missing from ``history``.
    """
    if snap.base is None:
        return {e[0]: e for e in snap.entities}
    base = history.get(snap.base)
    if base is None:
        raise SnapshotGap(f"delta against tick {snap.base}, which this client does not have")
    out = dict(base)
    for eid in snap.removed:
        out.pop(eid, None)
    for e in snap.entities:
        out[e[0]] = e
    return out
