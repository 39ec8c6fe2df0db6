"""One node: a process that joins a world on the bus and ticks the regions the driver gives it.

The node's life (subjects in :mod:`server.runtime.bus`)::

    connect to the bus           (BusUnreachable: one line, exit 1)
    subscribe ctl.ID; publish join every JOIN_EVERY s      until the spec arrives (or --wait ends)
    subscribe its border subjects; flush; publish ready    now no peer's border can be missed
    wait for go                  then run the shard worker every backend runs (run_worker):
                                 initial borders, Hello, Tick/Done ... until Stop
    flush and leave              (also when the driver has been silent for DRIVER_SILENCE s)

Any failure inside the worker is reported to the driver as ``Fail`` by
:func:`server.runtime.worker.run_worker`, as on every backend.
"""

from __future__ import annotations

import os
import queue
import socket
import time
from collections.abc import Callable

from server.runtime.bus import (
    JOIN_EVERY,
    Link,
    NodeEndpoint,
    Subjects,
    check_token,
    default_node_id,
    pack,
    unpack,
)
from server.runtime.errors import ChannelError, RuntimeFault
from server.runtime.worker import run_worker

#: Seconds a node waits for a world before giving up (a node started by hand, its driver later).
JOIN_WAIT = 120.0


class NodeError(RuntimeFault):
    """A node could not join a world (no driver answered in time)."""


def serve_node(bus: str, world: str, *, node_id: str | None = None, wait: float = JOIN_WAIT,
               say: Callable[[str], object] = lambda line: None) -> None:
    """Join world ``world`` on ``bus``, tick what the driver assigns until it says Stop.

    Args:
        bus: ``nats://HOST:PORT``.
        world: the world's name (one subject token).
        node_id: this node's id on the bus (default: host, pid and random digits).
        wait: seconds to wait for a driver to take this node.
        say: progress lines (the command prints them on stderr unless ``--quiet``).

    Raises:
        BusUnreachable: no NATS server at ``bus``.
        NodeError: no driver took the node within ``wait`` seconds.
        MessageError: a bad world name or node id.
    """
    subjects = Subjects(world)
    node = check_token("node id", node_id or default_node_id())
    link = Link(bus, name=f"paratick-node-{node}")
    try:
        inbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        link.subscribe(subjects.ctl(node), lambda subject, data: inbox.put(data))
        hello = pack({"node": node, "host": socket.gethostname(), "pid": os.getpid()})
        say(f"node {node}: waiting for world {world!r} on {bus}")
        deadline = time.monotonic() + wait
        spec = None
        while spec is None:
            link.publish(subjects.join, hello)
            try:
                obj = unpack(inbox.get(timeout=JOIN_EVERY))
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise NodeError(f"no driver took node {node} into world {world!r} on {bus} "
                                    f"within {wait:g} s") from None
                continue
            if isinstance(obj, dict) and "w" in obj:
                spec = obj
        ep = NodeEndpoint(link, subjects, spec, inbox)
        link.flush()
        link.publish(subjects.ready, pack({"node": node, "w": spec["w"]}))
        while True:
            data = ep.recv(1.0)
            if data is None:
                continue
            obj = unpack(data)
            if isinstance(obj, dict) and obj.get("go"):
                break
            if isinstance(obj, tuple):  # a runtime message before go: only Stop is legal
                say(f"node {node}: the driver stopped before the world started")
                return
        regions = [r for r, w in enumerate(spec["owner"]) if w == spec["w"]]
        say(f"node {node}: worker {spec['w']} of world {world!r}, regions {regions}")
        run_worker(spec, ep, ep.coord)
        if ep.gone:
            raise NodeError(f"node {node} left world {world!r}: {ep.gone}")
        link.flush()
        say(f"node {node}: world {world!r} stopped")
    except ChannelError as exc:  # the bus failed, or the driver went silent before go
        raise NodeError(f"node {node} left world {world!r}: {exc}") from exc
    finally:
        link.close()


__all__ = ["JOIN_WAIT", "NodeError", "serve_node"]
