"""Entity rows: the one representation of an entity that crosses any boundary.

An entity is a tuple of plain Python values (``Row``) in the field order of :data:`FIELDS`.  Rows
are what handoff messages, saves, digests and snapshots carry, so they are msgpack-encodable as
they are; kernels keep their own column layout internally and convert at the edges.
"""

from __future__ import annotations

import math
from typing import Any, Final

from sim.errors import InvalidInput

PLAYER = 0
NPC = 1

#: Field order of a row.  ``thrust``/``turn``/``action``/``seq`` are the player's sticky input
#: state: they travel with the entity on handoff, so a region border is invisible to a player.
FIELDS = ("id", "kind", "x", "y", "vx", "vy", "radius", "heading", "score",
          "thrust", "turn", "action", "seq")
# Written out (not ``= range(...)``) so that type checkers see literal indices into the row tuple.
ID: Final = 0
KIND: Final = 1
X: Final = 2
Y: Final = 3
VX: Final = 4
VY: Final = 5
RADIUS: Final = 6
HEADING: Final = 7
SCORE: Final = 8
THRUST: Final = 9
TURN: Final = 10
ACTION: Final = 11
SEQ: Final = 12
assert FIELDS.index("seq") == SEQ and FIELDS.index("radius") == RADIUS

Row = tuple[int, int, float, float, float, float, float, float, int, float, float, int, int]
#: A player's input: (entity id, client sequence number, thrust, turn, action bits).
InputRow = tuple[int, int, float, float, int]
IN_ENTITY: Final = 0
IN_SEQ: Final = 1
IN_THRUST: Final = 2
IN_TURN: Final = 3
IN_ACTION: Final = 4
#: Field order of a view row (what a shard shows of an entity to areas of interest and clients:
#: :data:`sim.shard.ViewRow`), which is also the order of a snapshot's wire entity.
VIEW_FIELDS = ("id", "kind", "x", "y", "vx", "vy", "heading", "score")
V_ID: Final = 0
V_KIND: Final = 1
V_X: Final = 2
V_Y: Final = 3
V_VX: Final = 4
V_VY: Final = 5
V_HEADING: Final = 6
V_SCORE: Final = 7

_INTS = (ID, KIND, SCORE, ACTION, SEQ)
_MAX_INT = 2**63 - 1


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{name} must be a number, got {type(value).__name__}")
    f = float(value)
    if not math.isfinite(f):
        raise InvalidInput(f"{name} must be finite, got {f!r}")
    return f


def _int(name: str, value: Any, lo: int = 0, hi: int = _MAX_INT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise InvalidInput(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def validate_row(row: Any, *, width: float, height: float, max_radius: float) -> Row:
    """Check an entity row from outside (a save file, a spawn list) and normalise its types.

    Raises:
        InvalidInput: wrong length or types, non-finite numbers, position outside the world or a
            radius that is not in (0, max_radius].
    """
    if not isinstance(row, list | tuple) or len(row) != len(FIELDS):
        raise InvalidInput(f"an entity row has {len(FIELDS)} fields {FIELDS}, got {row!r:.80}")
    out: list[Any] = []
    for i, (name, value) in enumerate(zip(FIELDS, row, strict=True)):
        out.append(_int(name, value) if i in _INTS else _finite(name, value))
    if out[KIND] not in (PLAYER, NPC):
        raise InvalidInput(f"kind must be {PLAYER} (player) or {NPC} (npc), got {out[KIND]}")
    r = out[RADIUS]
    if not 0 < r <= max_radius:
        raise InvalidInput(f"radius must be in (0, {max_radius:g}], got {r:g}")
    if not (r <= out[X] <= width - r and r <= out[Y] <= height - r):
        raise InvalidInput(f"entity {out[ID]} at ({out[X]:g}, {out[Y]:g}) is outside the world")
    return tuple(out)


def validate_input(inp: Any) -> InputRow:
    """Check one player input; NaN/inf and out-of-range values never reach the state.

    ``thrust`` and ``turn`` must be finite and are clamped to [-1, 1]; ``action`` is a bit field
    (bit 0 = boost) in [0, 255]; ``seq`` is the client's sequence number (>= 0).

    Raises:
        InvalidInput: the input is malformed; the message says which field and why.
    """
    if type(inp) is tuple and len(inp) == 5:
        # The shape a server passes on (already in range): the same result in a few comparisons
        # (a NaN fails every range comparison and takes the checks below).
        eid, seq, thrust, turn, action = inp
        if type(eid) is int and 0 <= eid <= _MAX_INT and type(seq) is int \
                and 0 <= seq <= _MAX_INT and type(thrust) is float and -1.0 <= thrust <= 1.0 \
                and type(turn) is float and -1.0 <= turn <= 1.0 and type(action) is int \
                and 0 <= action <= 255:
            return inp
    if not isinstance(inp, list | tuple) or len(inp) != 5:
        raise InvalidInput("an input is (entity_id, seq, thrust, turn, action)")
    eid = _int("entity_id", inp[0])
    seq = _int("seq", inp[1])
    thrust = min(1.0, max(-1.0, _finite("thrust", inp[2])))
    turn = min(1.0, max(-1.0, _finite("turn", inp[3])))
    action = _int("action", inp[4], 0, 255)
    return (eid, seq, thrust, turn, action)
