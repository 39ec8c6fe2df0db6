"""Counter-based random numbers: a pure function of (seed, entity id, tick, lane).

There is no RNG *state* anywhere in the simulation: an NPC's random draw at tick ``t`` is
``uniform(seed, id, t, lane)``.  That is what makes a sharded run equal an unsharded one (no
stream is shared or advanced in a region-dependent order) and lets the numpy kernel compute the
very same numbers vectorised.  The mixer is SplitMix64 (Steele, Lea & Flood, OOPSLA 2014).
"""

from __future__ import annotations

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
M1 = 0xBF58476D1CE4E5B9
M2 = 0x94D049BB133111EB
#: Multipliers that spread (id, tick, lane) over 64 bits before mixing (odd constants).
K_ID = 0xD1B54A32D192ED03
K_TICK = 0xABC98388FB8FAC03
K_LANE = 0x8CB92BA72F3D8DD7
TWO_M53 = 2.0**-53


def mix64(z: int) -> int:
    z = (z + GOLDEN) & MASK
    z = ((z ^ (z >> 30)) * M1) & MASK
    z = ((z ^ (z >> 27)) * M2) & MASK
    return z ^ (z >> 31)


def uniform(seed: int, eid: int, tick: int, lane: int) -> float:
    """A float in [0, 1) determined by its arguments alone (53 random bits)."""
    z = mix64((seed ^ (eid * K_ID) ^ (tick * K_TICK) ^ (lane * K_LANE)) & MASK)
    return (z >> 11) * TWO_M53
