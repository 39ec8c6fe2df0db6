"""Scripted players: the inputs headless runs feed their players, a pure function of the tick.

``paratick sim`` and ``paratick run`` drive entities ``0..players-1`` with :func:`scripted_inputs`,
so the same options give the same digest on the single-thread reference and on every parallel
backend, run after run.  Draws come from :func:`sim.rng.uniform` on lanes of their own (NPC
wander draws use lanes 0 and 1), so scripted players never disturb the NPCs' random streams.
"""

from __future__ import annotations

from sim.entities import InputRow
from sim.rng import uniform

#: RNG lanes of the scripted players' thrust, turn and action draws.
LANE_THRUST, LANE_TURN, LANE_ACTION = 10, 11, 12


def scripted_inputs(seed: int, players: int, tick: int) -> list[InputRow]:
    """One input per player for ``tick``: thrust and turn uniform in [-1, 1), action bits 0-3.

    Args:
        seed: the world seed (different worlds, different scripts).
        players: entities ``0..players-1`` get an input.
        tick: the tick the inputs are for; also their sequence number.
    """
    out: list[InputRow] = []
    for pid in range(players):
        thrust = uniform(seed, pid, tick, LANE_THRUST) * 2.0 - 1.0
        turn = uniform(seed, pid, tick, LANE_TURN) * 2.0 - 1.0
        action = int(uniform(seed, pid, tick, LANE_ACTION) * 4)
        out.append((pid, tick, thrust, turn, action))
    return out
