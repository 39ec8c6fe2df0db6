"""Where workers run: one module per backend, one interface for the runtime.

Theory of operation
-------------------
A backend starts a *crew*: N workers, each running :func:`server.runtime.worker.run_worker` on
its spec, which builds the worker *kind* the spec names (:data:`server.runtime.worker.KINDS`;
today ``shard``, the lockstep shard worker) and serves until told to stop.  The runtime talks to
a crew only through :class:`Crew`: its coordinator endpoint (messages to and from the workers),
which workers are gone, and joining them on shutdown.  Adding a backend means one module here;
adding a kind of worker (a gateway worker, say) means one entry in ``KINDS``, on every backend
at once.

* :mod:`.threads` -- worker threads, a ``deque`` inbox per participant (no serialisation of the
  queue itself; messages are msgpack bytes as everywhere).
* :mod:`.interpreters` -- one subinterpreter per worker, each with its own GIL (PEP 684/734).
* :mod:`.processes` -- one fresh interpreter process per worker (fork + exec, never a bare
  fork), a socket mesh between them.
* :mod:`.nodes` -- one *node* process per worker, here or on other machines, exchanging borders
  over NATS subjects (:mod:`server.runtime.bus`); its runtime is
  :class:`~server.runtime.driver.NodesRuntime`.

``inline`` is not a crew: the runtime runs the one worker in its own thread of control.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from server.runtime.backends.base import Crew, post_exit


def start(backend: str, specs: Sequence[dict[str, Any]], **options: Any) -> Crew:
    """Start one worker per spec on ``backend`` (threads, interpreters, processes or nodes;
    ``options`` are the nodes crew's: bus, world, local_nodes, start_timeout, epoch; and the
    threads crew's ``lead``: worker 0 runs on the coordinator's thread, not started here)."""
    if backend == "threads":
        from server.runtime.backends.threads import ThreadCrew
        return ThreadCrew(specs, lead=options.get("lead", False))
    if backend == "interpreters":
        from server.runtime.backends.interpreters import InterpreterCrew
        return InterpreterCrew(specs)
    if backend == "processes":
        from server.runtime.backends.processes import ProcessCrew
        return ProcessCrew(specs)
    if backend == "nodes":
        from server.runtime.backends.nodes import NodeCrew
        return NodeCrew(specs, **options)
    raise ValueError(f"no crew for backend {backend!r}")


__all__ = ["Crew", "post_exit", "start"]
