"""A shard: one region's entities and the pure step that advances them one tick.

Theory of operation
-------------------
A tick of a sharded world is exact: it gives the same bytes as ticking the unsplit world.  Three
rules make that true.

1. **Jacobi collisions.**  An entity's new state depends only on its own state and its
   neighbours' *previous* states, never on states already updated this tick.  So a region needs
   only read-only copies (*ghosts*) of the neighbouring entities within interaction range.
2. **Order-free exact sums.**  Each contact's velocity impulse is quantised to an integer number
   of ``2**-24`` units before summation (:data:`QUANTUM`).  Integer sums are associative, so the
   order in which a shard happens to find an entity's contacts (which depends on the split) cannot
   change a single bit; the numpy kernel sums the same integers and is bit-identical too.
3. **Message-passing at the tick boundary.**  After computing tick ``t+1``, a shard sends each
   neighbour one :data:`Border`: the entities that now belong to it (*handoffs*, full rows) and
   the ghosts it needs (position and radius of every entity within :attr:`ghost_range` of its
   rectangle).  Speeds are capped so that an entity moves less than a region per tick
   (:class:`~sim.config.WorldConfig` validates it), hence the eight neighbours are always enough.

A shard's life per tick: ``absorb(borders from every neighbour)`` then ``advance(tick, inputs)``,
which returns the borders to send.  :meth:`Shard.emit` produces the first borders after creation
or restore.  Shards hold no clocks, threads or sockets; the runtime moves the borders.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sim.config import WorldConfig
from sim.entities import FIELDS, InputRow, Row
from sim.errors import ConfigError, SchemaError
from sim.geometry import Layout

#: Contact impulses are rounded toward zero to a multiple of this before being summed.
QUANTUM_BITS = 24
SCALE = float(1 << QUANTUM_BITS)
INV_SCALE = 1.0 / SCALE  # exact: a power of two

#: Compact entity view for snapshots: (id, kind, x, y, vx, vy, heading, score).
ViewRow = tuple[int, int, float, float, float, float, float, int]
#: What one shard sends one neighbour per tick: handoff rows, flat ghost triples
#: ``[x0, y0, r0, x1, y1, r1, ...]`` and view rows (only on ticks advanced with ``view=True``).
Border = tuple[list[Row], list[float], list[ViewRow]]

TAU = 2.0 * math.pi


class Shard(ABC):
    """One region of a world.  Create with :func:`sim.kernels.make_shard`."""

    kernel: str = "?"
    #: True for shards whose neighbours are all ticked together with them as one group, so
    #: every border they exchange is empty and delivering them may be skipped.
    internal_borders: bool = False

    def __init__(self, config: WorldConfig, region: int) -> None:
        if not 0 <= region < config.regions:
            raise ConfigError(f"region {region} is not in [0, {config.regions})")
        self.config = config
        self.layout = Layout(config)
        self.region = region
        self.rect = self.layout.rect(region)
        self.neighbours = self.layout.neighbours(region)
        self._view_in: list[ViewRow] = []

    # ---- state --------------------------------------------------------------------------------
    @abstractmethod
    def rows(self) -> list[Row]:
        """The entities this shard owns, as rows sorted by id."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of owned entities."""

    @abstractmethod
    def _ghost_flat(self) -> list[float]:
        """Ghost triples pending for the next advance."""

    @abstractmethod
    def _load(self, rows: Sequence[Row], ghosts: Sequence[float]) -> None:
        """Replace owned entities and pending ghosts."""

    def state(self) -> dict[str, Any]:
        """A msgpack-encodable checkpoint (owned rows + pending ghosts + view rows)."""
        return {"region": self.region, "rows": [list(r) for r in self.rows()],
                "ghosts": list(self._ghost_flat()), "view": [list(v) for v in self._view_in]}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Return to a checkpoint taken with :meth:`state` (used to recover from a fault)."""
        try:
            if state["region"] != self.region:
                raise SchemaError(f"checkpoint of region {state['region']} given to {self.region}")
            self._load([tuple(r) for r in state["rows"]], list(state["ghosts"]))
            self._view_in = [tuple(v) for v in state["view"]]
        except (KeyError, TypeError) as exc:
            raise SchemaError(f"not a shard checkpoint: {exc}") from exc

    def checkpoint(self, reuse: Any = None) -> Any:
        """An in-memory checkpoint for :meth:`rollback` (fault recovery inside one worker).

        Unlike :meth:`state` it need not be encodable, only cheap: a kernel may hand back its
        own copies (the numpy kernel copies its arrays instead of listing every entity).
        ``reuse``: an earlier checkpoint of this shard that the caller hands back, no longer
        needed by anyone; a kernel may copy into its memory rather than allocate (the numpy
        kernel does: fresh memory faults in page by page, tens of milliseconds at 250,000
        entities on the 2-core VM).
        """
        return self.state()

    def rollback(self, checkpoint: Any) -> None:
        """Return to a :meth:`checkpoint` of this shard (which stays valid for another
        rollback)."""
        self.restore(checkpoint)

    # ---- the tick -------------------------------------------------------------------------------
    @abstractmethod
    def absorb(self, borders: Iterable[Border]) -> None:
        """Take the borders neighbours sent for the coming tick (handoffs, ghosts, views)."""

    @abstractmethod
    def advance(self, tick: int, inputs: Mapping[int, InputRow], *,
                view: bool = False) -> dict[int, Border]:
        """Advance owned entities from ``tick`` to ``tick + 1``.

        Args:
            tick: the tick being computed from (NPC random draws use it).
            inputs: latest validated input per entity id; ids this shard does not own are ignored,
                so the runtime may broadcast one mapping to every shard.
            view: also send neighbours the view rows their snapshots need.

        Returns:
            One :data:`Border` per neighbour (empty ones included: the receiver counts them to
            know it has everything for the next tick).
        """

    def emit(self, *, view: bool = False) -> dict[int, Border]:
        """Borders for the current state without advancing (the first exchange of a run)."""
        out: dict[int, Border] = {n: ([], [], []) for n in self.neighbours}
        g = self.config.ghost_range
        vr = self.config.view_radius
        near = self.layout.regions_near
        for row in self.rows():
            x, y, r = row[2], row[3], row[6]
            for dst in near(x, y, g):
                if dst != self.region:
                    out[dst][1].extend((x, y, r))
            if view:
                for dst in near(x, y, vr):
                    if dst != self.region:
                        out[dst][2].append(_view(row))
        return out

    def view_rows(self) -> list[ViewRow]:
        """Own entities plus those neighbours sent with ``view=True`` (for area-of-interest)."""
        return [_view(r) for r in self.rows()] + self._view_in


def _view(row: Sequence[Any]) -> ViewRow:
    return (row[0], row[1], row[2], row[3], row[4], row[5], row[7], row[8])


assert len(FIELDS) == 13
