"""One node: a process that joins a world on the bus and ticks the regions the driver gives it.

The node's life (subjects in :mod:`server.runtime.bus`)::

    connect to the bus           (BusUnreachable: one line, exit 1)
    subscribe ctl.ID; publish join every JOIN_EVERY s      until the spec arrives (or --wait ends)
    subscribe its border subjects; flush; publish ready    now no peer's border can be missed
    wait for go                  then run the shard worker every backend runs (run_worker):
                                 initial borders, Hello, Tick/Done ... until Stop
    flush; leave, or join again  (the driver said rejoin before Stop: it restarts the world)
    (a node also leaves when the driver has been silent for DRIVER_SILENCE s, and at once, with
    exit status 1, when its connection to the bus is lost)

Any failure inside the worker is reported to the driver as ``Fail`` by
:func:`server.runtime.worker.run_worker`, as on every backend.
"""

from __future__ import annotations

import os
import queue
import socket
import time
from collections.abc import Callable
from typing import Any

from server.runtime import messages as m
from server.runtime.bus import (
    JOIN_EVERY,
    Link,
    NodeEndpoint,
    Subjects,
    check_token,
    default_node_id,
    drain,
    pack,
    unpack,
)
from server.runtime.channels import MAX_INBOX
from server.runtime.errors import ChannelError, RuntimeFault
from server.runtime.ownership import keep_present
from server.runtime.worker import run_worker

#: Seconds a node waits for a world before giving up (a node started by hand, its driver later).
JOIN_WAIT = 120.0


class NodeError(RuntimeFault):
    """A node could not join a world (no driver answered in time)."""


def is_membership(data: bytes) -> bool:
    """Whether ``data`` is a membership message (a msgpack map: spec, go, rejoin) rather than a
    runtime message (a msgpack array, :mod:`server.runtime.messages`)."""
    return bool(data) and (0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF))


def serve_node(bus: str, world: str, *, node_id: str | None = None, wait: float = JOIN_WAIT,
               say: Callable[[str], object] = lambda line: None) -> int:
    """Join world ``world`` on ``bus``, tick what the driver assigns until it says Stop.

    A driver that says ``rejoin`` before Stop (it is restarting the world from a checkpoint
    after losing another node) gets this node back: it joins again, with the same id.

    Args:
        bus: ``nats://HOST:PORT``.
        world: the world's name (one subject token).
        node_id: this node's id on the bus (default: host, pid and random digits).
        wait: seconds to wait for a driver to take this node.
        say: progress lines (the command prints them on stderr unless ``--quiet``).

    Returns:
        How many times the node ran the world (epochs).

    Raises:
        BusUnreachable: no NATS server at ``bus``.
        NodeError: no driver took the node within ``wait`` seconds, or the driver fell silent.
        MessageError: a bad world name or node id.
    """
    subjects = Subjects(world)
    node = check_token("node id", node_id or default_node_id())
    link = Link(bus, name=f"paratick-node-{node}")
    epochs = 0
    try:
        control: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        inbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()

        def on_ctl(subject: str, data: bytes) -> None:
            box = control if is_membership(data) else inbox
            # The lockstep bounds what the driver has in flight to a few messages; beyond
            # MAX_INBOX unread ones, a flood from a stranger is dropped, never buffered.
            if box.qsize() < MAX_INBOX:
                box.put(data)

        link.subscribe(subjects.ctl(node), on_ctl)
        link.answer(subjects.probe(node))
        hello = pack({"node": node, "host": socket.gethostname(), "pid": os.getpid()})
        keep_present(link, world, node, hello)
        while True:
            say(f"node {node}: waiting for world {world!r} on {bus}")
            spec = _join(link, subjects, hello, control, wait)
            if spec is None:
                if epochs:
                    say(f"node {node}: no world came back within {wait:g} s")
                    return epochs
                raise NodeError(f"no driver took node {node} into world {world!r} on {bus} "
                                f"within {wait:g} s")
            for _ in drain(inbox):  # runtime messages of an earlier epoch
                pass
            ep = NodeEndpoint(link, subjects, spec, inbox)
            link.flush()
            link.publish(subjects.ready, pack({"node": node, "w": spec["w"]}))
            if _go(ep, control, inbox):
                regions = [r for r, w in enumerate(spec["owner"]) if w == spec["w"]]
                say(f"node {node}: worker {spec['w']} of world {world!r}, regions {regions}")
                run_worker(spec, ep, ep.coord)
                epochs += 1
            if link.lost or link.closed.is_set():  # the broker went away: no world to go back to
                raise NodeError(f"node {node} left world {world!r}: "
                                f"{link.lost or 'the bus connection closed'}")
            ep.detach()
            if ep.gone:
                raise NodeError(f"node {node} left world {world!r}: {ep.gone}")
            link.flush()
            if not _rejoin(control, ep.silence):
                say(f"node {node}: world {world!r} stopped")
                return epochs
            say(f"node {node}: world {world!r} restarts; joining again")
    except ChannelError as exc:  # the bus failed, or the driver went silent before go
        raise NodeError(f"node {node} left world {world!r}: {exc}") from exc
    finally:
        link.close()


def _join(link: Link, subjects: Subjects, hello: bytes, control: queue.SimpleQueue[bytes],
          wait: float) -> dict[str, Any] | None:
    """Announce the node until a spec arrives; None after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        link.publish(subjects.join, hello)
        try:
            obj = unpack(control.get(timeout=JOIN_EVERY))
        except queue.Empty:
            if time.monotonic() > deadline:
                return None
            continue
        if isinstance(obj, dict) and "w" in obj:
            return obj


def _rejoin(control: queue.SimpleQueue[bytes], wait: float) -> bool:
    """The driver's word after Stop: join again (True) or leave (False, also after ``wait``
    seconds of silence)."""
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        try:
            obj = unpack(control.get(timeout=left))
        except queue.Empty:
            break
        if isinstance(obj, dict) and "rejoin" in obj:
            return bool(obj["rejoin"])
    return False


def _go(ep: NodeEndpoint, control: queue.SimpleQueue[bytes],
        inbox: queue.SimpleQueue[bytes]) -> bool:
    """Wait for the driver's go (True), or its Stop (False: the world never started)."""
    while True:
        try:
            obj = unpack(control.get(timeout=0.1))
        except queue.Empty:
            try:
                data = inbox.get_nowait()
            except queue.Empty:
                ep.check()  # raises ChannelClosed when the driver fell silent
                continue
            return not isinstance(data if isinstance(data, m.Borders) else m.decode(data),
                                  m.Stop)
        if isinstance(obj, dict) and obj.get("go"):
            return True


__all__ = ["JOIN_WAIT", "NodeError", "is_membership", "serve_node"]
