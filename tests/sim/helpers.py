"""Shared helpers for the sim tests: recorded input logs and world runs."""

from __future__ import annotations

import random
from typing import Any

from sim.config import WorldConfig
from sim.world import World, spawn


def input_log(seed: int, players: int, ticks: int) -> list[list[tuple[Any, ...]]]:
    """A recorded input log: for each tick, the inputs some players sent (possibly none)."""
    rnd = random.Random(seed)
    log: list[list[tuple[Any, ...]]] = []
    for t in range(ticks):
        tick_inputs = []
        for pid in range(players):
            if rnd.random() < 0.3:
                tick_inputs.append((pid, t, rnd.uniform(-1.5, 1.5), rnd.uniform(-1.5, 1.5),
                                    rnd.randrange(4)))
        log.append(tick_inputs)
    return log


def run_world(config: WorldConfig, entities: int, ticks: int, *, kernel: str = "python",
              players: int = 0, log_seed: int = 0, view: bool = False,
              per_region: bool = False) -> World:
    """Spawn and tick a world, feeding it the recorded input log; returns the world."""
    world = World(config, spawn(config, entities, players=players), kernel=kernel,
                  per_region=per_region)
    for inputs in input_log(log_seed, players, ticks):
        world.step(inputs, view=view)
    return world
