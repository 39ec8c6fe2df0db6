"""Shared helpers for the runtime tests (small worlds so the suite stays fast)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from server.runtime import interp
from sim.config import WorldConfig
from sim.world import World, spawn

BACKENDS = ["inline", "threads", "processes"] + (["interpreters"] if interp.available() else [])
PARALLEL = [b for b in BACKENDS if b != "inline"]


def small_world(grid: tuple[int, int] = (3, 2), entities: int = 240, seed: int = 5,
                view_radius: float = 0.0) -> tuple[WorldConfig, list[Any]]:
    cfg = WorldConfig(width=480, height=480, regions_x=grid[0], regions_y=grid[1], seed=seed,
                      view_radius=view_radius)
    return cfg, spawn(cfg, entities, players=6)


def inputs_for(tick: int) -> list[tuple[int, int, float, float, int]]:
    """Deterministic inputs that change over time (some ticks have none)."""
    if tick % 3 == 2:
        return []
    return [(p, tick, 1.0 - 0.25 * p, (-1) ** tick * 0.5, tick & 1) for p in range(6)]


def reference_digest(cfg: WorldConfig, rows: Sequence[Any], ticks: int) -> str:
    world = World(cfg, rows)
    for t in range(ticks):
        world.step(inputs_for(t))
    return world.digest()


class EntityLookup:
    """The smallest useful hook: jobs are entity ids, results ``[tag, tick, region, row]`` for
    the ids this worker owns (``tag`` shows that ``hook_args`` arrived)."""

    def __init__(self, tag: str = "") -> None:
        self.tag = tag

    def run(self, tick: int, shards: Sequence[Any], jobs: Sequence[Any]) -> list[Any]:
        wanted = {int(j) for j in jobs}
        return [[self.tag, tick, shard.region, list(row)]
                for shard in shards for row in shard.rows() if row[0] in wanted]


class ThreadName:
    """A hook that answers with the name of the thread that runs it."""

    def run(self, tick: int, shards: Sequence[Any], jobs: Sequence[Any]) -> list[Any]:
        return [threading.current_thread().name]


#: Released by the test that blocks a worker's hook (threads backend shares this module).
GATE = threading.Event()


class BlockingHook:
    """Blocks in ``run`` until :data:`GATE` is set: a hung worker for the watchdog test.  Only
    on a worker's own thread: worker 0 of a threads run is the thread that steps the runtime,
    which nothing but the caller could watch."""

    def run(self, tick: int, shards: Sequence[Any], jobs: Sequence[Any]) -> list[Any]:
        if threading.current_thread().name.startswith("paratick-worker"):
            GATE.wait(30)
        return []


class FailingHook:
    """Raises in ``run``: a bug outside the shards (not retried: the hook is not checkpointed)."""

    def run(self, tick: int, shards: Sequence[Any], jobs: Sequence[Any]) -> list[Any]:
        raise ZeroDivisionError("hook bug")


class ViewHook:
    """Returns ``[region, sorted view rows]`` for every own shard (what snapshots read)."""

    def run(self, tick: int, shards: Sequence[Any], jobs: Sequence[Any]) -> list[Any]:
        return [[s.region, sorted(s.view_rows())] for s in shards]
