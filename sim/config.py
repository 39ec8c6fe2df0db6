"""World configuration: every tunable of the simulation, validated once, frozen.

Each default says why it has that value.  Validation happens at construction, so a world that
exists can always tick: in particular the speed cap is checked against the region size, which is
what guarantees that an entity never skips a region and that ghosts from the eight neighbouring
regions are enough for an exact sharded tick.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from sim.errors import ConfigError

#: Extra width of the ghost band beyond the interaction range.  Region membership is decided with
#: floating-point divisions; one unit of slack makes the band strictly conservative.  Extra ghosts
#: are harmless (pairs are filtered by distance), a missing one would break determinism.
GHOST_SLACK = 1.0


@dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """Parameters of one world.  All lengths in world units, times in seconds.

    Attributes:
        width: world width; the reference arena (arena-20k) is 2048.
        height: world height.
        regions_x: regions along x (shards); any positive integer.
        regions_y: regions along y.
        tick_rate: fixed-timestep rate in Hz; 30 Hz is the usual server tick for action games.
        radius: entity radius (all spawned entities use it; the interaction range is 2*radius).
        max_speed: speed cap; must stay below ``region size / dt`` (validated).
        drag: velocity decay per second (v *= 1 - drag*dt each tick).
        player_accel: acceleration at full thrust (units/s^2).
        boost: thrust multiplier while a player's action bit 0 is set.
        turn_rate: radians per second at full turn.
        stiffness: velocity change (units/s) per tick from one fully overlapping contact.
        wander_period: NPCs draw a new random kick every this many ticks (staggered by id).
        wander_kick: largest velocity kick an NPC draws (units/s, per axis, +/- half of it).
        view_radius: area-of-interest radius used by the server's snapshots; 0 disables view
            exchange.  At most a region's size minus one step and one unit (validated), so
            the eight neighbours always cover it, even for an entity that just left.
        seed: world seed; NPC random streams derive from (seed, entity id, tick).
    """

    width: float = 2048.0
    height: float = 2048.0
    regions_x: int = 1
    regions_y: int = 1
    tick_rate: float = 30.0
    radius: float = 4.0
    max_speed: float = 120.0
    drag: float = 0.5
    player_accel: float = 240.0
    boost: float = 2.0
    turn_rate: float = math.pi
    stiffness: float = 30.0
    wander_period: int = 32
    wander_kick: float = 60.0
    view_radius: float = 0.0
    seed: int = 1
    _derived: dict[str, float] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        def positive(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
            return float(value)

        for name in ("regions_x", "regions_y", "wander_period"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("width", "height", "tick_rate", "radius", "max_speed"):
            positive(name)
        for name in ("drag", "player_accel", "boost", "turn_rate", "stiffness", "wander_kick",
                     "view_radius"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) \
                or not 0 <= self.seed < 2**64:
            raise ConfigError(f"seed must be an integer in [0, 2**64), got {self.seed!r}")
        dt = 1.0 / self.tick_rate
        if self.drag * dt >= 1.0:
            raise ConfigError(f"drag*dt must be < 1 (drag={self.drag}, dt={dt:.4g})")
        rw, rh = self.width / self.regions_x, self.height / self.regions_y
        if 2 * self.radius >= min(self.width, self.height) / 2:
            raise ConfigError(f"radius {self.radius} is too large for a "
                              f"{self.width:g} x {self.height:g} world")
        ghost = 2 * self.radius + GHOST_SLACK
        step = self.max_speed * dt
        if step + ghost >= min(rw, rh):
            limit = (min(rw, rh) - ghost) * self.tick_rate
            raise ConfigError(
                f"max_speed {self.max_speed:g} is too high for regions of {rw:g} x {rh:g} at "
                f"{self.tick_rate:g} Hz: an entity would move {step:g} units per tick, and with "
                f"the {ghost:g}-unit interaction band that could skip a region; use max_speed < "
                f"{max(limit, 0):.4g} or fewer regions")
        # An entity that just left a region is still classified by it: its view band must stay
        # within the neighbouring regions, so the band plus one step (and the unit of slack the
        # ghost band has too) must fit in a region.
        view_max = min(rw, rh) - step - GHOST_SLACK
        if self.view_radius > view_max:
            raise ConfigError(f"view_radius {self.view_radius:g} is too large for regions of "
                              f"{rw:g} x {rh:g}: with a step of {step:g} per tick it must be <= "
                              f"{max(view_max, 0):.4g}; use fewer regions or a smaller view radius")
        d = self._derived
        d.update(dt=dt, region_w=rw, region_h=rh, ghost=ghost, cell=2 * self.radius,
                 damp=1.0 - self.drag * dt)

    # Derived values, computed once (these are read in hot loops through locals).
    @property
    def dt(self) -> float:
        return self._derived["dt"]

    @property
    def region_w(self) -> float:
        return self._derived["region_w"]

    @property
    def region_h(self) -> float:
        return self._derived["region_h"]

    @property
    def ghost_range(self) -> float:
        """Width of the band around a region whose entities it receives as ghosts."""
        return self._derived["ghost"]

    @property
    def regions(self) -> int:
        return self.regions_x * self.regions_y

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_derived", None)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldConfig:
        names = {f for f in cls.__dataclass_fields__ if not f.startswith("_")}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown configuration fields: {', '.join(sorted(unknown))}")
        return cls(**data)

    def replace(self, **changes: Any) -> WorldConfig:
        return WorldConfig.from_dict({**self.to_dict(), **changes})


def parse_grid(text: str) -> tuple[int, int]:
    """Parse a region grid such as ``"4x4"``, ``"3x2"`` or ``"16"`` (a single number is Nx1)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"regions must look like 4x4 or 16, got {text!r}") from None
    if len(nums) == 1:
        nums.append(1)
    if len(nums) != 2 or min(nums) < 1:
        raise ConfigError(f"regions must be two positive integers like 4x4, got {text!r}")
    return nums[0], nums[1]


def grid_of(count: int, width: float, height: float, narrowest: float) -> tuple[int, int]:
    """A region grid of ``count`` regions for a ``width`` x ``height`` world: as square as the
    count allows, the longer side along the world's longer side (2 -> 2x1, 4 -> 2x2, 6 -> 3x2,
    16 -> 4x4); where that makes a region narrower than ``narrowest``, the smallest square grid
    of at least ``count`` regions instead (11 -> 4x4 rather than 11x1)."""
    n = max(1, count)
    short = next(d for d in range(math.isqrt(n), 0, -1) if n % d == 0)
    long = n // short
    rx, ry = (long, short) if width >= height else (short, long)
    if width / rx < narrowest or height / ry < narrowest:
        rx = ry = math.ceil(math.sqrt(n))
    return rx, ry
