"""Workers on nodes: processes, here or on other machines, that exchange borders over NATS.

The driver (this process) keeps the coordinator's role; each worker is a *node*
(:mod:`server.runtime.nodes`, ``paratick node``) joined over the bus (:mod:`server.runtime.bus`
describes the subjects and the start-up handshake).  :class:`NodeCrew` starts a private
nats-server when no bus is given, spawns ``local_nodes`` node processes, takes the first nodes to
join (its own first), hands out the specs, waits until every node is subscribed to its borders,
and says go.  A watcher thread turns the exit of a local node into an ``Exited`` message in the
coordinator's inbox, so the runtime names the dead node at once instead of at the watchdog.

:class:`~server.runtime.driver.NodesRuntime` is the runtime whose crew is a :class:`NodeCrew`
(this module imports nothing of the runtime, so that ``backends.start("nodes", ...)`` makes no
import cycle).
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from server.runtime import messages as m
from server.runtime.backends.base import Crew
from server.runtime.bus import (
    BEAT,
    BusError,
    CoordEndpoint,
    Link,
    Subjects,
    check_token,
    pack,
    unpack,
)
from server.runtime.errors import WorkerCrashed, WorkerTimeout
from server.runtime.ownership import PRESENCE_EVERY, PRESENCE_TTL, Ownership, OwnershipConflict

#: What a local node process runs (``python -c``): the ``paratick node`` command itself.
BOOT = """\
import sys
from server.cli import main
sys.exit(main(["node", *sys.argv[1:]]))
"""
#: The world name when a bus is given without one (``paratick node`` has the same default).
DEFAULT_WORLD = "paratick"
#: Seconds for every node to join and get ready (the runtime's START_TIMEOUT: spawned processes
#: import the simulation first; nodes elsewhere may be started by hand after the driver).
START_TIMEOUT = 120.0
#: Seconds between the watcher's looks at the local node processes.
WATCH_EVERY = 0.02
#: Seconds between the driver's probes of the nodes elsewhere (a request each; a node whose
#: connection closed is known at the next probe: 50 ms is under 2 ticks at 30 Hz).
PROBE_EVERY = 0.05
#: Consecutive looks (PRESENCE_EVERY apart) that must find a node's presence entry gone before
#: it counts as lost: one look can race a refresh that is late on a loaded machine.
PRESENCE_MISSES = 2


class NodeCrew(Crew):
    """Nodes joined over a bus, ``local_nodes`` of them spawned here.

    Args:
        specs: one worker spec per node.
        bus: ``nats://HOST:PORT``; None starts a private nats-server on loopback.
        world: the world's name on the bus (default :data:`DEFAULT_WORLD` with a bus, a name
            unique to this process without).
        local_nodes: node processes to spawn here (default: one per spec); the rest are
            expected to join from elsewhere (``paratick node --bus ... --world ...``).
        start_timeout: seconds for every node to join and get ready.

    Raises:
        BusUnreachable: nothing answers NATS at ``bus``.
        NatsdError: no bus given and the pinned nats-server is missing or did not start.
        WorkerCrashed: a local node exited before it was ready.
        WorkerTimeout: not enough nodes joined within ``start_timeout``.
    """

    ep: CoordEndpoint

    def __init__(self, specs: Sequence[dict[str, Any]], *, bus: str | None = None,
                 world: str | None = None, local_nodes: int | None = None,
                 start_timeout: float = START_TIMEOUT, epoch: int = 0) -> None:
        n = len(specs)
        local = n if local_nodes is None else max(0, min(int(local_nodes), n))
        self.epoch = epoch
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.nodes: list[str] = []
        self.ownership: Ownership | None = None
        #: Why the ownership buckets are not kept ("" when they are).
        self.ownership_error = ""
        #: The owners bucket's revision of each region after this crew's assignment.
        self.revisions: dict[int, int] = {}
        self._decided: set[str] = set()  # nodes told to leave or to rejoin after Stop
        self._stack = contextlib.ExitStack()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        try:
            if bus is None:
                from server.runtime import natsd
                bus = self._stack.enter_context(natsd.local_server())
                world = world or f"run{os.getpid()}"
            self.bus = bus
            self.world = check_token("world name", world or DEFAULT_WORLD)
            subjects = Subjects(self.world)
            self.link = link = Link(bus, name="paratick-driver")
            self._stack.callback(link.close)
            self.ep = CoordEndpoint(link, subjects)
            joins: queue.SimpleQueue[bytes] = queue.SimpleQueue()
            readies: queue.SimpleQueue[bytes] = queue.SimpleQueue()
            subs = [link.subscribe(subjects.join, lambda subject, data: joins.put(data)),
                    link.subscribe(subjects.ready, lambda subject, data: readies.put(data))]
            link.every(BEAT, subjects.beat, b"")
            self._spawn(local)
            deadline = time.monotonic() + start_timeout
            self.nodes = self._take(joins, n, n - local, deadline)
            self.ep.bind(self.nodes)
            self._own([self.nodes[w] for w in specs[0]["owner"]])
            for w, spec in enumerate(specs):
                spec = dict(spec, bus={"coord": n, "world": self.world, "node": self.nodes[w]})
                link.publish(subjects.ctl(self.nodes[w]), pack(spec))
            self._await(readies, set(self.nodes), deadline, "get ready")
            for node in self.nodes:
                link.publish(subjects.ctl(node), pack({"go": True}))
            for handle in subs:  # the world is complete: later announcements are not ours
                link.unsubscribe(handle)
            self._watcher = threading.Thread(target=self._watch, name="paratick-node-watch",
                                             daemon=True)
            self._watcher.start()
        except BaseException:
            self._kill_all()
            self._stack.close()
            raise

    # ---- start-up --------------------------------------------------------------------------------
    def _spawn(self, count: int) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        for k in range(count):
            node = f"{self.world}-e{self.epoch}-n{k}"
            argv = [sys.executable, "-c", BOOT, "--bus", self.bus, "--world", self.world,
                    "--id", node, "--quiet"]
            self.procs[node] = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)

    def _check_local(self, nodes: Iterable[str], what: str) -> None:
        for node in nodes:
            proc = self.procs.get(node)
            if proc is not None and proc.poll() is not None:
                raise WorkerCrashed(f"node {node} exited with status {proc.returncode} before "
                                    f"it could {what} (see its message above)")

    def _take(self, joins: queue.SimpleQueue[bytes], n: int, foreign: int,
              deadline: float) -> list[str]:
        """The first ``n`` nodes to join: every local one, and ``foreign`` others."""
        nodes: list[str] = []
        others = 0
        while len(nodes) < n:
            self._check_local(self.procs, "join")
            try:
                obj = unpack(joins.get(timeout=0.1))
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise WorkerTimeout(
                        f"{len(nodes)} of {n} nodes joined world {self.world!r} on {self.bus} "
                        f"in time (start one with: paratick node --bus {self.bus} --world "
                        f"{self.world})") from None
                continue
            node = obj.get("node") if isinstance(obj, dict) else None
            if not isinstance(node, str) or node in nodes:
                continue
            if node not in self.procs:
                if others >= foreign:
                    continue
                others += 1
            nodes.append(node)
        return nodes

    def _await(self, readies: queue.SimpleQueue[bytes], pending: set[str], deadline: float,
               what: str) -> None:
        while pending:
            self._check_local(pending, what)
            try:
                obj = unpack(readies.get(timeout=0.1))
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise WorkerTimeout(f"nodes {', '.join(sorted(pending))} did not {what} "
                                        "in time") from None
                continue
            if isinstance(obj, dict):
                pending.discard(obj.get("node"))

    def _own(self, table: Sequence[str]) -> None:
        """Write region -> node into the owners bucket (compare-and-set per region); the world
        starts only when every region has an owner.  A bus without JetStream: no buckets."""
        try:
            self.ownership = Ownership(self.link, self.world)
        except OwnershipConflict:
            raise
        except BusError as exc:
            self.ownership_error = str(exc)
            return
        self.revisions = self.ownership.assign(dict(enumerate(table)))
        if not self.ownership.complete(len(table)):
            raise OwnershipConflict(f"world {self.world!r}: some regions have no owner after "
                                    "the assignment")

    def rejoin(self, nodes: Iterable[str]) -> None:
        """Ask ``nodes`` to join again after their Stop (the world restarts); the others are
        told to leave when the crew is joined."""
        self._tell({"rejoin": True}, nodes)
        self._decided.update(nodes)

    def _tell(self, what: dict[str, Any], nodes: Iterable[str]) -> None:
        subjects = Subjects(self.world)
        for node in nodes:
            with contextlib.suppress(Exception):
                self.link.publish(subjects.ctl(node), pack(what))
        self.link.flush()

    # ---- running ---------------------------------------------------------------------------------
    def _watch(self) -> None:
        """Post ``Exited`` for every node whose process ends (local ones, from the process
        table), whose connection closed (the others, probed every PROBE_EVERY s) or whose
        presence entry expired (a machine that vanished without closing its connection), once
        each."""
        told: set[str] = set()
        seen: set[str] = set()
        missing: dict[str, int] = {}
        remote = [node for node in self.nodes if node not in self.procs]
        subjects = Subjects(self.world)
        next_presence = next_look = 0.0
        while not self._stop.wait(WATCH_EVERY):
            for w, node in enumerate(self.nodes):
                proc = self.procs.get(node)
                if node in told or proc is None or proc.poll() is None:
                    continue
                told.add(node)
                self.ep.post(m.encode(m.Exited(w, f"node {node} (pid {proc.pid}) exited with "
                                                  f"status {proc.returncode}")))
            if not remote or time.monotonic() < next_presence:
                continue
            next_presence = time.monotonic() + PROBE_EVERY
            try:  # a node whose connection closed: the server says so at once
                closed = self.link.gone([subjects.probe(n) for n in remote])
            except Exception:
                closed = set()
            for node in remote:
                if subjects.probe(node) in closed and node not in told:
                    told.add(node)
                    self.ep.post(m.encode(m.Exited(
                        self.nodes.index(node), f"node {node} is no longer on the bus (its "
                                                "connection closed)")))
            if self.ownership is None or time.monotonic() < next_look:
                continue
            next_look = time.monotonic() + PRESENCE_EVERY
            try:
                present = self.ownership.present(remote)
            except Exception:
                continue  # the bus is going away: the runtime hears it from the endpoint
            seen |= present
            for node in remote:
                missing[node] = 0 if node in present else missing.get(node, 0) + 1
                if node in seen and missing[node] >= PRESENCE_MISSES and node not in told:
                    told.add(node)
                    self.ep.post(m.encode(m.Exited(
                        self.nodes.index(node),
                        f"node {node}'s presence expired ({PRESENCE_TTL:g} s without a refresh)")))

    def dead(self) -> list[int]:
        return [w for w, node in enumerate(self.nodes)
                if node in self.procs and self.procs[node].poll() is not None]

    def join(self, deadline: float) -> None:
        self._stop.set()
        # Every node waits, after Stop, for the driver's word: leave, or join again.
        self._tell({"rejoin": False}, [n for n in self.nodes if n not in self._decided])
        self._decided.update(self.nodes)
        for proc in self.procs.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _kill_all(self) -> None:
        self._stop.set()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def close(self) -> None:
        self._stop.set()
        self._stack.close()


__all__ = ["DEFAULT_WORLD", "START_TIMEOUT", "NodeCrew"]
