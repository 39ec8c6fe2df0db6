"""A stand-in for :class:`server.runtime.Runtime` used until the real runtime is merged.

It implements the same ``step(inputs, view, jobs) -> TickResult`` contract over
:class:`sim.world.World` in the calling thread and runs the hook in-process, so the server and
its tests can be developed against the contract.  Not a backend: the real runtime's
``backend="inline"`` replaces it; :func:`server.app.default_runtime_factory` prefers the real one.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sim.config import WorldConfig
from sim.entities import Row
from sim.world import World


@dataclass
class TickResult:
    tick: int
    hook_results: list[Any] = field(default_factory=list)


class _Metrics:
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)


class StandinRuntime:
    """``Runtime``'s public contract, one thread, one hook instance."""

    def __init__(self, config: WorldConfig, rows: Iterable[Row], *, backend: str = "inline",
                 workers: int | None = None, kernel: str = "python", hook: str | None = None,
                 hook_args: Mapping[str, Any] | None = None) -> None:
        self.world = World(config, rows, kernel=kernel)
        self._hook: Any = None
        if hook is not None:
            modname, _, clsname = hook.partition(":")
            self._hook = getattr(importlib.import_module(modname), clsname)(**(hook_args or {}))
        self._last_ms = 0.0
        self._ticks = 0

    @property
    def tick(self) -> int:
        return self.world.tick

    def step(self, inputs: Iterable[Any] = (), view: bool = False,
             jobs: Iterable[Any] = ()) -> TickResult:
        t0 = time.perf_counter()
        self.world.step(inputs, view=view)
        jobs = list(jobs)
        results = []
        if jobs and self._hook is not None:
            results.append(self._hook.run(self.world.tick, self.world.shards, jobs))
        self._last_ms = (time.perf_counter() - t0) * 1e3
        self._ticks += 1
        return TickResult(self.world.tick, results)

    def rows(self) -> list[Row]:
        return self.world.rows()

    def digest(self) -> str:
        return self.world.digest()

    def metrics(self) -> _Metrics:
        return _Metrics({"backend": "standin", "tick": self.world.tick,
                         "last_step_ms": self._last_ms, "steps": self._ticks})

    def worker_gil(self) -> list[bool]:
        return [True]

    def close(self) -> None:
        self._hook = None

    def __enter__(self) -> StandinRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
