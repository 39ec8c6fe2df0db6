"""A world on nodes that survives losing one: pause, reassign its regions, replay, go on.

Theory of operation
-------------------
:class:`ResilientNodes` drives a :class:`~server.runtime.driver.NodesRuntime` and keeps,
on the driver, what a restart needs: a *world checkpoint* (every entity row at tick ``c``, asked
from the nodes every ``checkpoint_every`` ticks, the same rows ``World.save`` writes) and the
inputs of every tick since (``(tick, inputs, view)``).  A tick is a pure function of state, inputs
and tick number, and a world rebuilt from its rows at tick ``c`` ticks on bit-identically (the
shard contract; ``Runtime(config, rows, tick=c)`` is how a loaded save resumes), so:

1. A node is lost: its process ends (seen from the process table within
   :data:`~server.runtime.backends.nodes.WATCH_EVERY` s, before the lockstep's next barrier) or
   its presence entry expires (a node elsewhere), and the step in progress raises
   ``WorkerCrashed`` (or ``WorkerTimeout`` at the tick watchdog).
2. The world pauses: no tick is issued.  Nodes elsewhere that are still alive are asked to join
   again; every node is stopped.
3. The regions are reassigned: a new epoch of the runtime starts from the checkpoint's rows at
   tick ``c`` on the same number of nodes (new local node processes replace the lost one and the
   local survivors; remote survivors rejoin), and the owners bucket records each region's new
   owner by compare-and-set on its revision.
4. The logged inputs of ticks ``c .. t-1`` are replayed, and tick ``t`` is stepped again.

The digest after recovery is the one a fault-free run reaches (the test kills a node with SIGKILL
and compares).  Every region rolls back, not only the lost node's: the lockstep needs every region
at the same tick, and the survivors' later state is exactly what the replay recomputes.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

from server.runtime import natsd
from server.runtime.driver import NodesRuntime
from server.runtime.errors import RuntimeConfigError, RuntimeFault, WorkerCrashed, WorkerTimeout
from server.runtime.metrics import RuntimeMetrics
from server.runtime.runtime import TickResult
from server.runtime.worker import CHECKPOINT_EVERY
from sim.config import WorldConfig
from sim.entities import Row
from sim.world import digest as rows_digest
from sim.world import normalise_inputs

#: Node losses a world survives before the failure is raised: a world that keeps losing nodes
#: has a cause to fix, not to retry.
MAX_RECOVERIES = 3


class ResilientNodes:
    """A nodes runtime that recovers from a lost node (see the module docstring).

    Args:
        config, rows: the world.
        bus: ``nats://HOST:PORT``; None starts one private nats-server for every epoch.
        world: the world's name on the bus.
        local_nodes: node processes started here (default: one per worker).
        workers: node count.
        checkpoint_every: ticks between world checkpoints (the replay after a loss is at most
            this long).
        max_recoveries: losses survived before the failure is raised.
        **options: every other :class:`~server.runtime.runtime.Runtime` keyword.

    Attributes:
        recoveries: one dict per recovery: ``tick`` (the tick that failed), ``lost`` (node id),
            ``reason``, ``checkpoint`` (the tick restarted from), ``replayed`` (ticks),
            ``detect_s`` (from the start of the failed step to the failure: an upper bound of
            the detection time when the node died during the step), ``pause_s`` (from the
            failure to the tick done again), ``owners`` (region -> node and revision after the
            reassignment).
    """

    def __init__(self, config: WorldConfig, rows: Iterable[Row] = (), *, bus: str | None = None,
                 world: str | None = None, local_nodes: int | None = None,
                 workers: int | None = None, checkpoint_every: int = CHECKPOINT_EVERY,
                 max_recoveries: int = MAX_RECOVERIES, tick: int = 0, **options: Any) -> None:
        if checkpoint_every < 1:
            raise RuntimeConfigError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        self.config = config
        self._stack = contextlib.ExitStack()
        if bus is None:
            bus = self._stack.enter_context(natsd.local_server())
            world = world or f"run{os.getpid()}"
        self._bus = bus
        self._world = world
        self._local = local_nodes
        self._workers = workers
        self._options = options
        self.checkpoint_every = checkpoint_every
        self.max_recoveries = max_recoveries
        self.recoveries: list[dict[str, Any]] = []
        self._epoch = 0
        rows = list(rows)
        self._ckpt: tuple[int, list[Row]] = (tick, rows)
        self._log: list[tuple[int, list[Any], bool]] = []
        try:
            self.rt = self._start(rows, tick, local_nodes)
        except BaseException:
            self._stack.close()
            raise

    def _start(self, rows: Sequence[Row], tick: int, local: int | None) -> NodesRuntime:
        return NodesRuntime(self.config, rows, bus=self._bus, world=self._world,
                            local_nodes=local, workers=self._workers, epoch=self._epoch,
                            tick=tick, **self._options)

    # ---- the runtime's surface -------------------------------------------------------------------
    @property
    def tick(self) -> int:
        return self.rt.tick

    @property
    def workers(self) -> int:
        return self.rt.workers

    @property
    def backend(self) -> str:
        return self.rt.backend

    @property
    def nodes(self) -> list[str]:
        return self.rt.nodes

    def step(self, inputs: Iterable[Any] = (), view: bool = False,
             jobs: Sequence[Any] = ()) -> TickResult:
        """One lockstep tick; a lost node costs a pause, not the world.

        Raises:
            InvalidInput: a malformed input (nothing was sent).
            WorkerError: a shard kept failing (ShardFault), or more than ``max_recoveries``
                nodes were lost.
        """
        norm = list(normalise_inputs(inputs).values())  # InvalidInput before anything is sent
        t = self.rt.tick
        started = time.monotonic()
        lost: WorkerCrashed | WorkerTimeout | None = None
        while True:
            try:
                if lost is not None:  # a node died during the tick, or during a restart
                    self._recover(lost, t, started)
                result = self.rt.step(norm, view, jobs)
                break
            except (WorkerCrashed, WorkerTimeout) as exc:
                if len(self.recoveries) >= self.max_recoveries:
                    raise
                lost = exc
        if lost is not None:
            self.recoveries[-1]["pause_s"] = time.monotonic() - self.recoveries[-1].pop("_t0")
        self._log.append((t, norm, bool(view)))
        if self.rt.tick - self._ckpt[0] >= self.checkpoint_every:
            self._ckpt = (self.rt.tick, self.rt.rows())
            self._log.clear()
        return result

    def _recover(self, exc: WorkerCrashed | WorkerTimeout, t: int, started: float) -> None:
        """Stop this epoch, start the next from the checkpoint, replay up to tick ``t``
        (``started``: when the failed step began)."""
        t0 = time.monotonic()
        old = self.rt
        nodes = old.nodes
        lost = nodes[exc.worker] if 0 <= exc.worker < len(nodes) else "?"
        record: dict[str, Any] = {"tick": t, "lost": lost, "reason": " ".join(str(exc).split()),
                                  "checkpoint": self._ckpt[0], "replayed": len(self._log),
                                  "detect_s": t0 - started, "_t0": t0, "owners": {}}
        self.recoveries.append(record)  # counted before the restart, which may fail too
        local_old = set(old.crew.procs)
        survivors = [n for w, n in enumerate(nodes) if n != lost and n not in local_old
                     and w not in old.crew.dead()]
        # Remote survivors come back; every local node is replaced by a fresh process.
        old.crew.rejoin(survivors)
        with contextlib.suppress(RuntimeFault):
            old.close()
        self._epoch += 1
        local = old.workers - len(survivors)
        ckpt_tick, rows = self._ckpt
        self.rt = self._start(rows, ckpt_tick, local)
        for tick, inputs, view in self._log:
            assert self.rt.tick == tick
            self.rt.step(inputs, view)
        assert self.rt.tick == t, (self.rt.tick, t)
        ownership = self.rt.crew.ownership
        record["owners"] = (ownership.owners(self.config.regions) if ownership is not None
                            else {})

    def rows(self) -> list[Row]:
        return self.rt.rows()

    def digest(self) -> str:
        return rows_digest(self.rows(), self.rt.tick)

    def metrics(self, scheduler: dict[str, Any] | None = None) -> RuntimeMetrics:
        return self.rt.metrics(scheduler)

    def worker_gil(self) -> list[bool]:
        return self.rt.worker_gil()

    def worker_pids(self) -> list[int]:
        return self.rt.worker_pids()

    def close(self) -> None:
        try:
            self.rt.close()
        finally:
            self._stack.close()

    def __enter__(self) -> ResilientNodes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["MAX_RECOVERIES", "ResilientNodes"]
