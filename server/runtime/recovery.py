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

A lost *bus* is not a lost node, and ends the world.  When a step fails, the driver first asks
whether its own connection still works (closed, or no answer to a PING within
:data:`BUS_CHECK` s); if not, :class:`~server.runtime.bus.BusLost` is raised at once, naming the
bus and the tick, with no restart tried.  Restarting would be a race, not a policy: a broker back
on the same port within the connect timeout would let the local nodes resume while the nodes
elsewhere, whose connections closed too, have left for good.  ``paratick run`` and ``paratick
serve`` print that one line and exit with status 1.

:func:`start_runtime` is the runtime a server asks for by backend name: this class for
``nodes``, :class:`~server.runtime.runtime.Runtime` for the others.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

from server.runtime import natsd
from server.runtime.bus import BusLost
from server.runtime.driver import NodesRuntime
from server.runtime.errors import RuntimeConfigError, RuntimeFault, WorkerCrashed, WorkerTimeout
from server.runtime.metrics import RuntimeMetrics
from server.runtime.runtime import Runtime, State, TickResult
from server.runtime.worker import CHECKPOINT_EVERY
from sim.config import WorldConfig
from sim.entities import Row
from sim.world import digest as rows_digest
from sim.world import normalise_inputs

#: Node losses a world survives before the failure is raised: a world that keeps losing nodes
#: has a cause to fix, not to retry.
MAX_RECOVERIES = 3
#: Seconds the driver waits for the bus to answer a PING after a failed step before it calls the
#: bus lost: a working broker answers in microseconds on loopback, milliseconds across machines.
BUS_CHECK = 1.0


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

    @property
    def kernel(self) -> str:
        return self.rt.kernel

    @property
    def owner(self) -> list[int]:
        """The worker owning each region (the same in every epoch: nodes change, blocks not)."""
        return self.rt.owner

    @property
    def world(self) -> str:
        """The world's name on the bus."""
        return self.rt.crew.world

    @property
    def bus(self) -> str:
        """The bus the world runs on (the private server's URL when none was given)."""
        return self._bus

    def step(self, inputs: Iterable[Any] = (), view: bool = False,
             jobs: Sequence[Any] = ()) -> TickResult:
        """One lockstep tick; a lost node costs a pause, not the world.

        Raises:
            InvalidInput: a malformed input (nothing was sent).
            WorkerError: a shard kept failing (ShardFault), or more than ``max_recoveries``
                nodes were lost.
            BusLost: the driver's own connection to the bus failed (no restart is tried).
            BusUnreachable: the bus went away during a restart.
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
                gone = self._bus_gone()
                if gone:
                    raise BusLost(f"lost the bus at {self._bus} at tick {t} ({gone}); the "
                                  "world stopped") from exc
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

    def _bus_gone(self) -> str:
        """Why the driver's connection to the bus no longer works ("" when it does, and when
        the failure came from starting the next epoch: that start reached the bus, or it would
        have raised BusUnreachable, and the closed epoch's connection says nothing)."""
        if self.rt.state is State.CLOSED:
            return ""
        link = self.rt.crew.link
        if link.lost or link.closed.is_set():
            return "the connection closed"
        if not link.flush(BUS_CHECK):
            return f"no answer within {BUS_CHECK:g} s"
        return ""

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


def start_runtime(config: WorldConfig, rows: Iterable[Row] = (), *, backend: str = "inline",
                  bus: str | None = None, world: str | None = None,
                  local_nodes: int | None = None, **options: Any) -> Runtime | ResilientNodes:
    """The runtime for ``backend``: :class:`ResilientNodes` for ``nodes`` (with the bus
    options), :class:`~server.runtime.runtime.Runtime` for the others.

    Raises:
        RuntimeConfigError: bus options given for a backend other than ``nodes``; the rest as
            the runtime started.
    """
    if backend == "nodes":
        return ResilientNodes(config, rows, bus=bus, world=world, local_nodes=local_nodes,
                              **options)
    if bus is not None or world is not None or local_nodes is not None:
        raise RuntimeConfigError("a bus, a world name and local nodes need the nodes backend")
    return Runtime(config, rows, backend=backend, **options)


__all__ = ["BUS_CHECK", "MAX_RECOVERIES", "ResilientNodes", "start_runtime"]
