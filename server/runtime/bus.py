"""The bus channel: the runtime's endpoints over NATS subjects, so regions can live on other nodes.

Theory of operation
-------------------
A *node* is one OS process that owns a block of regions and ticks them with the same
:class:`~server.runtime.worker.WorkerCore` every other backend runs; the *driver* (``paratick run
--backend nodes``) keeps the coordinator's role of every backend: it broadcasts ``Tick t +
inputs``, collects ``Done t`` and answers for the digest.  Nothing of the lockstep changes: the
same typed messages (:mod:`server.runtime.messages`) travel, as the same msgpack bytes, on NATS
subjects instead of sockets or queues.  A node's endpoint is a participant index like any other
(workers ``0..N-1``, the coordinator ``N``).

Subjects (``W`` is the world name, one token of ``[A-Za-z0-9_-]``)::

    paratick.W.join              node -> driver   {"node": ID, "host", "pid"}  repeated until ...
    paratick.W.ctl.ID            driver -> node   ... the spec (a map), then {"go": true} once every
                                                  node is ready, then Tick / Rows / Stop messages;
                                                  after Stop {"rejoin": false} (leave) or true
                                                  (the world restarts: join again)
    paratick.W.ready             node -> driver   {"node": ID, "w": W}  subscribed to its borders
    paratick.W.coord             node -> driver   Hello / Done / RowsOk / Fail
    paratick.W.border.DST.SRC    node -> node     Borders(tick, src worker, [(SRC, DST, border)])
    paratick.W.beat              driver -> nodes  {} every BEAT seconds: the driver is alive
    paratick.W.probe.ID          driver -> node   a request the node answers (no responders:
                                                  its connection is gone, the node is lost)

Borders.  A worker sends one ``Borders`` message per peer *worker* per tick; a node's endpoint
splits it into one message per (source region, destination region) pair that are neighbours on
different nodes, **sent even when empty** and stamped with the tick, on the pair's own subject.
The receiving endpoint counts, per (tick, peer), the pairs it expects (from the layout and the
owner table, both in the spec); when every pair of a peer has arrived it hands the worker one
``Borders`` message with all of them, exactly what the worker would have received over a socket.
So each node's barrier knows when tick ``t`` is complete without trusting message counts, and a
pair seen twice (a redelivery, a replay) is dropped by its key ``(tick, src, dst)``.

Membership.  Spawned or started by hand, a node knows only the bus and the world name; it
publishes ``join`` (every :data:`JOIN_EVERY` s) until the driver sends it a spec on its own
``ctl`` subject.  The first N nodes to join get worker indices ``0..N-1`` in arrival order (the
digest does not depend on which node runs which block).  NATS core delivers at most once and keeps
nothing for late subscribers, so no border may be sent before every peer subscribed: a node
subscribes to its border subjects, flushes (the server has the subscription once the PONG comes
back), says ``ready``, and builds its worker (which exchanges the initial borders) only after the
driver's ``go``.

Membership messages are msgpack maps, runtime messages msgpack arrays, so one ``ctl`` subject
carries both and the node tells them apart by the first byte.

Liveness.  The driver beats every :data:`BEAT` s; a node whose driver is silent for
:data:`DRIVER_SILENCE` s leaves (``ChannelClosed``), so no node outlives its world.  The driver
learns of a local node's death from the process table (:mod:`server.runtime.backends.nodes`), of
any node's from its presence entry in JetStream (:mod:`server.runtime.ownership`, which also
keeps region ownership), and :mod:`server.runtime.recovery` restarts the world without it.
Connections never reconnect (``allow_reconnect=False``): when the broker goes away, every node
leaves (``ChannelClosed``) and the driver stops the world with :class:`BusLost`, at once and the
same way whether or not the broker comes back.

The NATS client (nats-py) is asyncio; the runtime's endpoints are blocking.  :class:`Link` runs one
event loop on a private thread per process: ``send`` hands the publish to that loop
(``call_soon_threadsafe``: publishes leave in the order they were sent), message callbacks run on
it and put bytes into the endpoint's inbox (a ``SimpleQueue``, the ``recv`` side).  Border
reassembly runs on the loop thread only, so it needs no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from server.runtime import messages as m
from server.runtime.channels import MAX_INBOX, Endpoint
from server.runtime.errors import ChannelClosed, ChannelError, MessageError
from sim.config import WorldConfig
from sim.geometry import Layout

#: Subject prefix of everything paratick publishes.
PREFIX = "paratick"
#: Seconds between a node's ``join`` announcements while it waits for a world.
JOIN_EVERY = 0.25
#: Seconds between the driver's beats.
BEAT = 0.5
#: Seconds of driver silence after which a node leaves: ten beats, so a GC pause or a loaded
#: 2-core machine never ends a world, while an orphaned node is gone within seconds.
DRIVER_SILENCE = 5.0
#: Seconds the driver waits for a probe's answer (only "no responders" counts; see Link.gone).
PROBE_TIMEOUT = 0.5
#: Seconds to reach the bus before giving up with :class:`BusUnreachable`.
CONNECT_TIMEOUT = 5.0
#: Ticks of ``(tick, src, dst)`` keys kept to drop duplicates: a redelivery arrives within the
#: lockstep's one tick of slack; a replay after recovery restarts the window.
DEDUP_TICKS = 8
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class BusError(ChannelError):
    """The bus misbehaved: a message could not be published or the connection was lost."""


class BusUnreachable(BusError):
    """No NATS server answered at the bus address (wrong address, server down, not NATS)."""


class BusLost(BusError):
    """The driver's connection to the bus failed while the world ran: the world stops (a lost
    bus is not a lost node; :mod:`server.runtime.recovery` says why no restart is tried)."""


def check_token(kind: str, value: str) -> str:
    """``value`` if it is one subject token of ``[A-Za-z0-9_-]`` (1 to 64 characters).

    Raises:
        MessageError: anything else (dots and wildcards would change the subject's meaning).
    """
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise MessageError(f"a {kind} is 1 to 64 of A-Z a-z 0-9 _ -, got {value!r}")
    return value


@dataclass(frozen=True)
class Subjects:
    """The subjects of one world (see the module docstring)."""

    world: str

    def __post_init__(self) -> None:
        check_token("world name", self.world)

    @property
    def base(self) -> str:
        return f"{PREFIX}.{self.world}"

    @property
    def join(self) -> str:
        return f"{self.base}.join"

    @property
    def ready(self) -> str:
        return f"{self.base}.ready"

    @property
    def coord(self) -> str:
        return f"{self.base}.coord"

    @property
    def beat(self) -> str:
        return f"{self.base}.beat"

    def ctl(self, node: str) -> str:
        return f"{self.base}.ctl.{node}"

    def probe(self, node: str) -> str:
        return f"{self.base}.probe.{node}"

    def border(self, dst: int, src: int) -> str:
        return f"{self.base}.border.{dst}.{src}"

    def borders_to(self, dst: int) -> str:
        return f"{self.base}.border.{dst}.*"

    def parse_border(self, subject: str) -> tuple[int, int]:
        """``(src, dst)`` of a border subject.

        Raises:
            MessageError: not a border subject of this world.
        """
        head = f"{self.base}.border."
        if not subject.startswith(head):
            raise MessageError(f"{subject!r} is not a border subject of world {self.world!r}")
        dst, _, src = subject[len(head):].partition(".")
        try:
            return int(src), int(dst)
        except ValueError:
            raise MessageError(f"{subject!r} is not a border subject") from None


def default_node_id() -> str:
    """A node id unique on the bus: host, pid and 4 random hex digits, as one subject token."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{os.urandom(2).hex()}"


# ---- the pure part: which pairs, splitting and reassembling -------------------------------------
def border_pairs(config: WorldConfig, owner: Sequence[int], w: int,
                 ) -> tuple[dict[int, list[tuple[int, int]]], dict[int, set[tuple[int, int]]]]:
    """The (src, dst) region pairs worker ``w`` sends to and expects from each peer worker.

    Returns:
        ``(out, inbound)``: ``out[p]`` the pairs from ``w``'s regions to peer ``p``'s (sorted),
        ``inbound[p]`` the pairs from ``p``'s regions to ``w``'s.  Neighbours are those of
        :meth:`sim.geometry.Layout.neighbours` (symmetric), so ``out`` of one node is
        ``inbound`` of the other.
    """
    layout = Layout(config)
    out: dict[int, list[tuple[int, int]]] = {}
    inbound: dict[int, set[tuple[int, int]]] = {}
    for r in range(config.regions):
        if owner[r] != w:
            continue
        for n in layout.neighbours(r):
            p = owner[n]
            if p == w:
                continue
            out.setdefault(p, []).append((r, n))
            inbound.setdefault(p, set()).add((n, r))
    return {p: sorted(v) for p, v in out.items()}, inbound


def split(msg: m.Borders, pairs: Sequence[tuple[int, int]]
          ) -> list[tuple[int, int, bytes]]:
    """One ``Borders`` message per pair in ``pairs``, empty ones included: ``(src, dst, bytes)``.

    Raises:
        MessageError: ``msg`` carries a pair that is not in ``pairs`` (a layout mismatch).
    """
    by_pair: dict[tuple[int, int], list[Any]] = {pair: [] for pair in pairs}
    for item in msg.borders:
        key = (item[0], item[1])
        if key not in by_pair:
            raise MessageError(f"worker {msg.src} sent a border from region {key[0]} to region "
                               f"{key[1]}, which are not neighbours across these nodes")
        by_pair[key].append(item)
    return [(src, dst, m.encode(m.Borders(msg.tick, msg.src, items)))
            for (src, dst), items in by_pair.items()]


@dataclass
class Assembler:
    """Per-pair border messages in, one ``Borders`` message per (tick, peer) out.

    Sans-I/O: :meth:`add` takes one decoded pair message and returns the ``Borders`` messages it
    completed.  ``inbound`` is :func:`border_pairs`' second value.

    Attributes:
        duplicates: pair messages dropped because their ``(tick, src, dst)`` was seen already.
    """

    inbound: Mapping[int, set[tuple[int, int]]]
    duplicates: int = 0
    _peer_of: dict[tuple[int, int], int] = field(default_factory=dict)
    _partial: dict[tuple[int, int], tuple[set[tuple[int, int]], list[Any]]] = field(
        default_factory=dict)
    _seen: dict[int, set[tuple[int, int]]] = field(default_factory=dict)
    _newest: int = -(1 << 62)

    def __post_init__(self) -> None:
        for p, pairs in self.inbound.items():
            for pair in pairs:
                self._peer_of[pair] = p

    def add(self, src: int, dst: int, msg: m.Borders) -> list[m.Borders]:
        """Take the pair ``src -> dst`` of tick ``msg.tick``.

        Raises:
            MessageError: a pair this node does not expect (another world's layout).
        """
        peer = self._peer_of.get((src, dst))
        if peer is None:
            raise MessageError(f"border from region {src} to region {dst} is not expected here")
        tick = msg.tick
        if tick < self._newest - DEDUP_TICKS:  # long gone (its keys were forgotten): a replay
            self.duplicates += 1
            return []
        seen = self._seen.setdefault(tick, set())
        if (src, dst) in seen:
            self.duplicates += 1
            return []
        seen.add((src, dst))
        if tick > self._newest:
            self._newest = tick
            for old in [t for t in self._seen if t < tick - DEDUP_TICKS]:
                del self._seen[old]
        key = (tick, peer)
        if key not in self._partial:
            self._partial[key] = (set(self.inbound[peer]), [])
        missing, items = self._partial[key]
        missing.discard((src, dst))
        items.extend(msg.borders)
        if missing:
            return []
        del self._partial[key]
        return [m.Borders(tick, peer, items)]


# ---- the connection --------------------------------------------------------------------------
class Link:
    """One NATS connection, run by an event loop on a private daemon thread.

    Args:
        url: ``nats://HOST:PORT`` (several, comma-separated, for a cluster).
        name: the connection's name on the server (``nats server report connections``).
        timeout: seconds to connect.

    Raises:
        BusUnreachable: nothing answered NATS at ``url`` within ``timeout``.
    """

    def __init__(self, url: str, *, name: str = "paratick",
                 timeout: float = CONNECT_TIMEOUT) -> None:
        import nats  # the client is imported only by what talks to the bus

        self.url = url
        self.closed = threading.Event()
        self.lost = ""
        self._tasks: set[asyncio.Task[Any]] = set()  # strong references (asyncio keeps weak ones)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="paratick-bus",
                                        daemon=True)
        self._thread.start()
        errors: list[BaseException] = []

        async def on_error(exc: BaseException) -> None:
            errors.append(exc)

        async def on_closed() -> None:
            self.lost = self.lost or "the bus connection closed"
            self.closed.set()

        async def on_disconnected() -> None:
            self.lost = self.lost or f"lost the bus at {url}"

        async def connect() -> Any:
            return await nats.connect(
                url.split(","), name=name, connect_timeout=max(0.5, timeout / 2),
                allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0.1,
                error_cb=on_error, closed_cb=on_closed, disconnected_cb=on_disconnected)

        try:
            self.nc = self._run(asyncio.wait_for(connect(), timeout), timeout + 1)
        except Exception as exc:
            self._stop_loop()
            why = errors[-1] if errors else exc
            reason = (str(why) or type(why).__name__).splitlines()[0]
            raise BusUnreachable(f"no NATS server at {url}: {reason}") from exc
        self.max_payload = int(self.nc.max_payload)

    def _run(self, coro: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def run(self, coro: Any, timeout: float = CONNECT_TIMEOUT) -> Any:
        """Run ``coro`` on the link's loop and return its result (JetStream calls).

        Raises:
            ChannelClosed: the connection is closed.
            TimeoutError: no result within ``timeout`` seconds.
        """
        if self._loop.is_closed():
            coro.close()
            raise ChannelClosed("the bus connection is closed")
        return self._run(coro, timeout)

    def subscribe(self, subject: str, callback: Callable[[str, bytes], None]) -> Any:
        """Call ``callback(subject, data)`` on the loop thread for every message on ``subject``
        (blocks until the server has the subscription); returns a handle for
        :meth:`unsubscribe`."""
        async def cb(msg: Any) -> None:
            callback(msg.subject, msg.data)

        async def sub() -> Any:
            handle = await self.nc.subscribe(subject, cb=cb)
            await self.nc.flush()
            return handle

        return self._run(sub(), CONNECT_TIMEOUT)

    def answer(self, subject: str) -> Any:
        """Answer every request on ``subject`` with an empty reply, on the loop thread (a node
        answers the driver's probes so; see :meth:`gone`)."""
        async def cb(msg: Any) -> None:
            with contextlib.suppress(Exception):
                await msg.respond(b"")

        async def sub() -> Any:
            handle = await self.nc.subscribe(subject, cb=cb)
            await self.nc.flush()
            return handle

        return self._run(sub(), CONNECT_TIMEOUT)

    def gone(self, subjects: Sequence[str], timeout: float = PROBE_TIMEOUT) -> set[str]:
        """Those of ``subjects`` that nobody subscribes to any more.

        One request per subject, all at once.  A subject without a subscriber gets the server's
        "no responders" status at once: the answering connection is closed (its process died,
        the server saw the socket close).  A late or missing reply proves nothing (a loaded
        node) and does not count: only the server's word does, so load never looks like death.
        """
        from nats.errors import NoRespondersError

        async def probe(subject: str) -> bool:
            try:
                await self.nc.request(subject, b"", timeout=timeout)
            except NoRespondersError:
                return True
            except Exception:
                return False
            return False

        async def all_() -> set[str]:
            found = await asyncio.gather(*(probe(s) for s in subjects))
            return {s for s, dead in zip(subjects, found, strict=True) if dead}

        result: set[str] = self._run(all_(), timeout + 1)
        return result

    def unsubscribe(self, handle: Any) -> None:
        """Stop a subscription of :meth:`subscribe` (messages already queued may still come)."""
        with contextlib.suppress(Exception):
            self._run(handle.unsubscribe(), CONNECT_TIMEOUT)

    def publish(self, subject: str, data: bytes) -> None:
        """Queue ``data`` for ``subject`` (thread-safe; leaves in call order).

        Raises:
            ChannelClosed: the connection is closed or lost.
            MessageError: larger than the server's ``max_payload``.
        """
        if self.closed.is_set() or self.lost:
            raise ChannelClosed(self.lost or "the bus connection is closed")
        if len(data) > self.max_payload:
            raise MessageError(f"a {len(data)}-byte message exceeds the bus's max_payload "
                               f"({self.max_payload} bytes): raise max_payload in the NATS "
                               "server's config (at most 64MB)")
        try:
            self._loop.call_soon_threadsafe(self._publish, subject, data)
        except RuntimeError as exc:  # the loop is closed
            raise ChannelClosed("the bus connection is closed") from exc

    def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """:meth:`publish` each ``(subject, data)``, in order, with one hand-over to the loop
        (a tick's border pairs: one wake-up of the loop thread instead of one per pair)."""
        if self.closed.is_set() or self.lost:
            raise ChannelClosed(self.lost or "the bus connection is closed")
        for _, data in items:
            if len(data) > self.max_payload:
                raise MessageError(f"a {len(data)}-byte message exceeds the bus's max_payload "
                                   f"({self.max_payload} bytes)")
        try:
            self._loop.call_soon_threadsafe(self._publish_many, list(items))
        except RuntimeError as exc:
            raise ChannelClosed("the bus connection is closed") from exc

    def _publish(self, subject: str, data: bytes) -> None:
        task = self._loop.create_task(self.nc.publish(subject, data))
        task.add_done_callback(self._published)

    def _publish_many(self, items: list[tuple[str, bytes]]) -> None:
        async def publish_all() -> None:
            for subject, data in items:
                await self.nc.publish(subject, data)

        task = self._loop.create_task(publish_all())
        task.add_done_callback(self._published)

    def _published(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.lost = self.lost or f"publish failed: {task.exception()!r}"

    def flush(self, timeout: float = CONNECT_TIMEOUT) -> bool:
        """Wait until the server has everything published so far (a PING/PONG round trip)."""
        if self._loop.is_closed():
            return False
        try:
            self._run(self.nc.flush(timeout=max(1, int(timeout))), timeout + 1)
        except Exception:
            return False
        return True

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` as a task on the link's loop (cancelled when the link closes)."""
        def start() -> None:
            task = self._loop.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._loop.call_soon_threadsafe(start)

    def every(self, seconds: float, subject: str, data: bytes) -> None:
        """Publish ``data`` on ``subject`` every ``seconds`` until closed (the driver's beat)."""
        async def beat() -> None:
            while not self.closed.is_set():
                with contextlib.suppress(Exception):
                    await self.nc.publish(subject, data)
                await asyncio.sleep(seconds)

        self.spawn(beat())

    def close(self) -> None:
        """Flush, close the connection and stop the loop (idempotent)."""
        if self._loop.is_closed():
            return
        if not self.nc.is_closed:
            with contextlib.suppress(Exception):
                self._run(self.nc.drain(), CONNECT_TIMEOUT)
            with contextlib.suppress(Exception):
                self._run(self.nc.close(), CONNECT_TIMEOUT)
        self.closed.set()
        self._stop_loop()

    def _stop_loop(self) -> None:
        async def cancel_all() -> None:
            me = asyncio.current_task()
            for task in asyncio.all_tasks():
                if task is not me:
                    task.cancel()

        with contextlib.suppress(Exception):
            self._run(cancel_all(), 1.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(2.0)
        if not self._thread.is_alive():
            self._loop.close()


# ---- endpoints -------------------------------------------------------------------------------
class _BusEndpoint(Endpoint):
    """An inbox filled by the link's callbacks; ``recv`` blocks on it."""

    def __init__(self, index: int, link: Link, subjects: Subjects,
                 inbox: queue.SimpleQueue[Any] | None = None) -> None:
        super().__init__(index)
        self.link = link
        self.subjects = subjects
        #: Bytes from the link, or a ``Borders`` message the loop thread already reassembled.
        self.inbox: queue.SimpleQueue[Any] = inbox if inbox is not None else queue.SimpleQueue()
        self._alarm = ""

    def post(self, data: bytes) -> None:
        """Put ``data`` in this endpoint's own inbox (a crash notice from a local watcher)."""
        self.inbox.put(data)

    def _put(self, subject: str, data: bytes | m.Borders) -> None:
        if self.inbox.qsize() >= MAX_INBOX:  # on the loop thread: tell the reader, keep nothing
            self._raise_alarm(f"{MAX_INBOX} unread messages for participant {self.index}: the "
                              "lockstep bounds them lower (a stranger on our subjects?)")
            return
        self.inbox.put(data)

    def _raise_alarm(self, why: str) -> None:
        """Make the reader's next ``recv`` raise MessageError(``why``) (from the loop thread)."""
        if not self._alarm:
            self._alarm = why
            self.inbox.put(b"")

    def _publish(self, subject: str, data: bytes) -> None:
        self.link.publish(subject, data)
        self.stats.messages_sent += 1
        self.stats.bytes_sent += len(data)

    def _alive(self) -> None:
        """Raise ChannelClosed when the other side is known to be gone (subclasses)."""
        if self.link.lost or self.link.closed.is_set():
            raise ChannelClosed(self.link.lost or "the bus connection is closed")

    def recv(self, timeout: float | None = None) -> bytes | None:
        item = self._next(timeout)
        return item if item is None or isinstance(item, bytes) else m.encode(item)

    def recv_message(self, timeout: float | None, spin: float = 0.0) -> m.Message | None:
        item = self._next(timeout)
        return m.decode(item) if isinstance(item, bytes) else item

    def _next(self, timeout: float | None) -> bytes | m.Borders | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                data = self.inbox.get(timeout=0.2 if deadline is None
                                      else max(0.0, min(0.2, deadline - time.monotonic())))
            except queue.Empty:
                self._alive()
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            if data == b"":  # the loop thread's alarm (no runtime message is empty)
                raise MessageError(self._alarm)
            self.stats.messages_received += 1
            if isinstance(data, bytes):  # (reassembled borders were counted as they came)
                self.stats.bytes_received += len(data)
            return data

    def flush(self, timeout: float) -> bool:
        return True  # publishes are queued in order; nats-py's flusher writes them out

    def close(self) -> None:
        self.link.close()


class CoordEndpoint(_BusEndpoint):
    """The driver's endpoint: participant ``len(nodes)``; worker ``w`` is node ``nodes[w]``."""

    def __init__(self, link: Link, subjects: Subjects) -> None:
        super().__init__(-1, link, subjects)
        self.nodes: list[str] = []
        link.subscribe(subjects.coord, self._put)

    def bind(self, nodes: Sequence[str]) -> None:
        """Worker ``w`` is node ``nodes[w]`` from now on."""
        self.nodes = list(nodes)
        self.index = len(self.nodes)

    def send(self, dst: int, data: bytes) -> None:
        if not 0 <= dst < len(self.nodes):
            raise ChannelClosed(f"no node is worker {dst}")
        self._publish(self.subjects.ctl(self.nodes[dst]), data)


class NodeEndpoint(_BusEndpoint):
    """A node's endpoint: worker ``w`` of the spec; its inbox already receives ``ctl.ID``.

    Args:
        link: the node's connection.
        subjects: the world's subjects.
        spec: the worker spec (``w``, ``config``, ``owner``; ``bus.coord`` the driver's index).
        inbox: the queue the node's ``ctl`` subscription fills.
    """

    def __init__(self, link: Link, subjects: Subjects, spec: Mapping[str, Any],
                 inbox: queue.SimpleQueue[Any]) -> None:
        super().__init__(int(spec["w"]), link, subjects, inbox)
        self.coord = int(spec["bus"]["coord"])
        #: Seconds of driver silence after which this node leaves (the spec may shorten it).
        self.silence = float(spec["bus"].get("silence", DRIVER_SILENCE))
        #: Why this endpoint gave up on the world ("" while it has not).
        self.gone = ""
        config = WorldConfig.from_dict(dict(spec["config"]))
        self.out_pairs, inbound = border_pairs(config, list(spec["owner"]), self.index)
        self.assembler = Assembler(inbound)
        self.last_beat = time.monotonic()
        self._subs = [link.subscribe(subjects.beat, self._beat)]
        for dst in sorted({dst for pairs in inbound.values() for _, dst in pairs}):
            self._subs.append(link.subscribe(subjects.borders_to(dst), self._border))

    def detach(self) -> None:
        """Leave this world's border and beat subjects (the node may join another world)."""
        for handle in self._subs:
            self.link.unsubscribe(handle)
        self._subs = []

    def _beat(self, subject: str, data: bytes) -> None:
        self.last_beat = time.monotonic()

    def _border(self, subject: str, data: bytes) -> None:
        # On the loop thread: decode, deduplicate, and hand over complete (tick, peer) sets as
        # the message itself (the worker would only decode it again).
        self.stats.bytes_received += len(data)
        try:
            src, dst = self.subjects.parse_border(subject)
            msg = m.decode(data)
            if not isinstance(msg, m.Borders):
                raise MessageError(f"{m.name(msg)} on border subject {subject}")
            done = self.assembler.add(src, dst, msg)
        except MessageError as exc:  # a stranger's bytes: make the worker fail loudly
            self._raise_alarm(str(exc))
            return
        for whole in done:
            self._put(subject, whole)

    def check(self) -> None:
        """Raise ChannelClosed when the bus is lost or the driver has fallen silent."""
        self._alive()

    def _alive(self) -> None:
        super()._alive()
        silent = time.monotonic() - self.last_beat
        if silent > self.silence:
            self.gone = f"the driver has been silent for {silent:.1f} s"
            exc = ChannelClosed(self.gone)
            exc.peer = self.coord  # type: ignore[attr-defined]
            raise exc

    def send(self, dst: int, data: bytes) -> None:
        if dst == self.coord:
            self._publish(self.subjects.coord, data)
            return
        self.send_message(dst, m.decode(data))

    def send_message(self, dst: int, msg: m.Message) -> None:
        if dst == self.coord:
            self._publish(self.subjects.coord, m.encode(msg))
            return
        if not isinstance(msg, m.Borders):
            raise MessageError(f"worker {self.index} sent {m.name(msg)} to worker {dst}; only "
                               "borders travel between nodes")
        parts = [(self.subjects.border(rdst, src), part)
                 for src, rdst, part in split(msg, self.out_pairs.get(dst, ()))]
        self.link.publish_many(parts)
        self.stats.messages_sent += len(parts)
        self.stats.bytes_sent += sum(len(part) for _, part in parts)


def pack(obj: Any) -> bytes:
    """A membership message (a map), as msgpack."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    """A membership message back; runtime messages (arrays) come back as tuples.  Bytes that
    are not msgpack (a stranger on a membership subject) come back as None."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=False)
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException):
        return None


def drain(inbox: queue.SimpleQueue[bytes]) -> Iterable[bytes]:
    """Everything in ``inbox`` now, without blocking."""
    while True:
        try:
            yield inbox.get_nowait()
        except queue.Empty:
            return


__all__ = ["BEAT", "DRIVER_SILENCE", "JOIN_EVERY", "Assembler", "BusError", "BusLost",
           "BusUnreachable", "CoordEndpoint", "Link", "NodeEndpoint", "Subjects", "border_pairs",
           "check_token", "default_node_id", "drain", "pack", "split", "unpack"]
