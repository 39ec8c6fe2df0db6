"""A whole world ticked region by region in one thread: the reference for every backend.

:class:`World` owns one :class:`~sim.shard.Shard` per region and moves their borders itself; the
runtime's parallel backends do the same with workers and channels and must produce the same
:func:`digest`.  Also here: deterministic spawning, digests and save/load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgpack

from sim.config import WorldConfig
from sim.entities import ID, NPC, PLAYER, InputRow, Row, X, Y, validate_input, validate_row
from sim.errors import InvalidInput, SchemaError
from sim.geometry import Layout
from sim.kernels import make_shards
from sim.rng import uniform
from sim.shard import Border, Shard

SAVE_VERSION = 1
DIGEST_VERSION = 1


def spawn(config: WorldConfig, entities: int, *, players: int = 0) -> list[Row]:
    """``entities`` rows placed by the world seed; ids ``0..players-1`` are players.

    Positions are uniform over the world; velocities uniform in a box of half the speed cap.
    """
    if entities < 0 or not 0 <= players <= entities:
        raise InvalidInput(f"need 0 <= players <= entities, got {players} and {entities}")
    s, r = config.seed, config.radius
    w, h, v = config.width - 2 * r, config.height - 2 * r, config.max_speed * 0.5
    rows: list[Row] = []
    for eid in range(entities):
        # Negative "ticks" keep spawn draws apart from the per-tick NPC draws.
        x = r + uniform(s, eid, -1, 0) * w
        y = r + uniform(s, eid, -1, 1) * h
        vx = (uniform(s, eid, -1, 2) - 0.5) * v
        vy = (uniform(s, eid, -1, 3) - 0.5) * v
        kind = PLAYER if eid < players else NPC
        rows.append((eid, kind, x, y, vx, vy, r, 0.0, 0, 0.0, 0.0, 0, 0))
    return rows


def digest(rows: Iterable[Sequence[Any]], tick: int) -> str:
    """blake2b-128 of the canonical msgpack encoding of (version, tick, rows sorted by id)."""
    canon = sorted(tuple(r) for r in rows)
    data = msgpack.packb([DIGEST_VERSION, tick, canon], use_bin_type=True)
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def partition(config: WorldConfig, rows: Iterable[Any], *, validate: bool = True,
              ) -> list[list[Row]]:
    """Rows grouped by the region that owns them (index = region), in the order given.

    The one place a world is split: :class:`World` and the parallel runtime both start here,
    so they hand every shard the same rows in the same order.

    Args:
        config: the world (its layout decides ownership).
        rows: entity rows; each is checked with :func:`~sim.entities.validate_row` unless
            ``validate`` is False (rows this process produced itself).

    Raises:
        InvalidInput: a malformed row, or two rows with the same entity id.
    """
    layout = Layout(config)
    per: list[list[Row]] = [[] for _ in range(config.regions)]
    seen: set[int] = set()
    for raw in rows:
        row = validate_row(raw, width=config.width, height=config.height,
                           max_radius=config.radius) if validate else raw
        if row[ID] in seen:
            raise InvalidInput(f"duplicate entity id {row[ID]}")
        seen.add(row[ID])
        per[layout.region_of(row[X], row[Y])].append(row)
    return per


def save(config: WorldConfig, tick: int, rows: Sequence[Row]) -> bytes:
    """A world's save: msgpack of (version, config, tick, rows sorted by id), what
    :meth:`World.load` reads.  Every world that saves (this module's, the runtime's) writes it
    here, so a save means the same bytes whoever ticked the world."""
    return msgpack.packb({"v": SAVE_VERSION, "config": config.to_dict(), "tick": tick,
                          "rows": rows}, use_bin_type=True)


def normalise_inputs(inputs: Iterable[Any]) -> dict[int, InputRow]:
    """Validate inputs and keep the last one per entity (a later input replaces an earlier one)."""
    out: dict[int, InputRow] = {}
    for inp in inputs:
        row = validate_input(inp)
        out[row[ID]] = row
    return out


class World:
    """Every region of one world, ticked in the calling thread.

    With the numpy kernel the regions are one :class:`~sim.kernels.numpy.NumpyGroup` (one set of
    array operations per tick) unless ``per_region`` asks for one shard per region, or
    ``groups`` splits them the way workers owning them would (one group each, exchanging
    borders); the results are the same bits either way (:func:`sim.kernels.make_shards`).
    """

    def __init__(self, config: WorldConfig, rows: Iterable[Row] = (), *, kernel: str = "python",
                 tick: int = 0, validate: bool = True, per_region: bool = False,
                 groups: Sequence[Sequence[int]] | None = None) -> None:
        self.config = config
        self.layout = Layout(config)
        self.tick = tick
        self.kernel = kernel
        per = partition(config, rows, validate=validate)
        if groups is None:
            groups = [range(config.regions)]
        if sorted(r for g in groups for r in g) != list(range(config.regions)):
            raise InvalidInput(f"groups must split regions 0..{config.regions - 1} between them")
        shards = [s for g in groups
                  for s in make_shards(config, {r: per[r] for r in g}, kernel=kernel,
                                       per_region=per_region)]
        self.shards: list[Shard] = sorted(shards, key=lambda s: s.region)
        #: One group ticking the whole world: every border is empty, nothing to deliver.
        self._internal = all(s.internal_borders for s in self.shards)
        self._deliver({s.region: s.emit() for s in self.shards})

    def _deliver(self, outboxes: Mapping[int, Mapping[int, Border]]) -> None:
        inbox: dict[int, list[Border]] = {s.region: [] for s in self.shards}
        for src in sorted(outboxes):
            for dst, border in outboxes[src].items():
                inbox[dst].append(border)
        for shard in self.shards:
            shard.absorb(inbox[shard.region])

    def step(self, inputs: Iterable[Any] = (), *, view: bool = False) -> None:
        """Advance every region one tick; ``inputs`` are (id, seq, thrust, turn, action)."""
        norm = normalise_inputs(inputs)
        out = {s.region: s.advance(self.tick, norm, view=view) for s in self.shards}
        if not self._internal:
            self._deliver(out)
        self.tick += 1

    def rows(self) -> list[Row]:
        return sorted(r for s in self.shards for r in s.rows())

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards)

    def digest(self) -> str:
        return digest(self.rows(), self.tick)

    def save(self) -> bytes:
        """The world as bytes; :meth:`load` gives a world whose future is identical."""
        return save(self.config, self.tick, self.rows())

    @classmethod
    def load(cls, data: bytes, *, kernel: str = "python", regions: tuple[int, int] | None = None,
             ) -> World:
        """Rebuild a saved world, optionally with another kernel or region grid."""
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
            if not isinstance(obj, dict) or obj.get("v") != SAVE_VERSION:
                raise SchemaError(f"not a paratick save of version {SAVE_VERSION}")
            config = WorldConfig.from_dict(obj["config"])
            if regions is not None:
                config = config.replace(regions_x=regions[0], regions_y=regions[1])
            tick = obj["tick"]
            rows = [tuple(r) for r in obj["rows"]]
        except (msgpack.UnpackException, ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, SchemaError):
                raise
            raise SchemaError(f"not a paratick save: {exc}") from exc
        if not isinstance(tick, int) or tick < 0:
            raise SchemaError(f"bad tick in save: {tick!r}")
        return cls(config, rows, kernel=kernel, tick=tick)
