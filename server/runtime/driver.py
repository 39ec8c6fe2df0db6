"""The driver of a world on nodes: the runtime whose workers are nodes on a NATS bus.

:class:`NodesRuntime` is :class:`~server.runtime.runtime.Runtime` with a
:class:`~server.runtime.backends.nodes.NodeCrew` for a crew; the lockstep, the digest and the
metrics are the runtime's own.  :class:`~server.runtime.recovery.ResilientNodes` wraps it to
survive a lost node.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from server.runtime import backends
from server.runtime.backends.nodes import START_TIMEOUT, NodeCrew
from server.runtime.runtime import Runtime
from sim.config import WorldConfig
from sim.entities import Row


class NodesRuntime(Runtime):
    """A :class:`~server.runtime.runtime.Runtime` whose workers are nodes on a NATS bus.

    Args:
        config, rows: the world, as for :class:`Runtime`.
        bus: ``nats://HOST:PORT``; None starts a private nats-server on loopback.
        world: the world's name on the bus.
        local_nodes: node processes to spawn here (default: one per worker).
        **options: every other :class:`Runtime` keyword (``workers``, ``kernel``, ``hook``, ...).

    Raises:
        BusUnreachable / NatsdError: see :class:`NodeCrew`; the rest as :class:`Runtime`.
    """

    def __init__(self, config: WorldConfig, rows: Iterable[Row] = (), *, bus: str | None = None,
                 world: str | None = None, local_nodes: int | None = None, epoch: int = 0,
                 **options: Any) -> None:
        options.pop("backend", None)
        options["pin"] = False  # a node's cores are its own machine's business
        self._crew_options = {"bus": bus, "world": world, "local_nodes": local_nodes,
                              "start_timeout": options.get("start_timeout", START_TIMEOUT),
                              "epoch": epoch}
        # The runtime validates "processes" (a crew of spawned workers); _start_crew then starts
        # nodes instead, and the runtime reports itself as the nodes backend.
        super().__init__(config, rows, backend="processes", **options)

    def _start_crew(self, specs: list[dict[str, Any]]) -> None:
        self.backend = "nodes"
        crew = backends.start("nodes", specs, **self._crew_options)
        assert isinstance(crew, NodeCrew)
        self._crew = crew
        self._ep = crew.ep

    @property
    def crew(self) -> NodeCrew:
        assert isinstance(self._crew, NodeCrew)
        return self._crew

    @property
    def nodes(self) -> list[str]:
        """The node id of each worker."""
        return list(self._crew.nodes) if isinstance(self._crew, NodeCrew) else []


__all__ = ["NodesRuntime"]
