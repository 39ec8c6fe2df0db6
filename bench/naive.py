"""The naive reference kernel, the baseline of the kernel speed-ups (benchmark use only).

What a first pure-Python implementation looks like: one object per entity, a dict grid rebuilt
every tick, the full 3x3 stencil scanned for every entity (each pair seen twice), float impulses
summed in discovery order.  Same physics as :mod:`sim.kernels.python` (Jacobi contacts, drag,
speed cap, walls, NPC wander) but none of its care: not bit-identical, not shardable.  It exists
so that ``bench/sim_kernels.py`` can report the real kernels' speed-up measured in the same run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sim.config import WorldConfig
from sim.entities import ID, RADIUS, VX, VY, X, Y
from sim.rng import uniform


class Entity:
    __slots__ = ("eid", "r", "vx", "vy", "x", "y")

    def __init__(self, row: Sequence[Any]) -> None:
        self.eid = row[ID]
        self.x = row[X]
        self.y = row[Y]
        self.vx = row[VX]
        self.vy = row[VY]
        self.r = row[RADIUS]


class NaiveWorld:
    """All entities in one list, ticked with a rebuilt dict grid."""

    def __init__(self, config: WorldConfig, rows: Sequence[Sequence[Any]]) -> None:
        self.config = config
        self.entities = [Entity(r) for r in rows]
        self.tick = 0

    def __len__(self) -> int:
        return len(self.entities)

    def step(self) -> None:
        cfg = self.config
        cell = 2.0 * cfg.radius
        grid: dict[tuple[int, int], list[Entity]] = {}
        for e in self.entities:
            grid.setdefault((int(e.x // cell), int(e.y // cell)), []).append(e)
        dt = cfg.dt
        impulses = []
        for e in self.entities:
            cx, cy = int(e.x // cell), int(e.y // cell)
            ax = ay = 0.0
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    for o in grid.get((cx + dx, cy + dy), ()):
                        if o is e:
                            continue
                        ddx = o.x - e.x
                        ddy = o.y - e.y
                        d = math.hypot(ddx, ddy)
                        rr = e.r + o.r
                        if d < rr:
                            w = cfg.stiffness * (1.0 - (d * d) / (rr * rr)) / rr
                            ax -= w * ddx
                            ay -= w * ddy
            impulses.append((ax, ay))
        damp = 1.0 - cfg.drag * dt
        cap = cfg.max_speed
        for e, (ax, ay) in zip(self.entities, impulses, strict=True):
            if (e.eid + self.tick) % cfg.wander_period == 0:
                ax += (uniform(cfg.seed, e.eid, self.tick, 0) - 0.5) * cfg.wander_kick
                ay += (uniform(cfg.seed, e.eid, self.tick, 1) - 0.5) * cfg.wander_kick
            e.vx = (e.vx + ax) * damp
            e.vy = (e.vy + ay) * damp
            s = math.hypot(e.vx, e.vy)
            if s > cap:
                e.vx *= cap / s
                e.vy *= cap / s
            e.x += e.vx * dt
            e.y += e.vy * dt
            if e.x < e.r or e.x > cfg.width - e.r:
                e.vx = -e.vx
                e.x = min(max(e.x, e.r), cfg.width - e.r)
            if e.y < e.r or e.y > cfg.height - e.r:
                e.vy = -e.vy
                e.y = min(max(e.y, e.r), cfg.height - e.r)
        self.tick += 1
