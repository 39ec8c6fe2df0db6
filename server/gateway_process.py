"""Gateways in processes: client I/O on several cores for a GIL build.

Theory of operation
-------------------
On a GIL build, gateway threads take turns on one core.  A :class:`RemoteGateway` runs the same
:class:`~server.gateway.Gateway` (handshake, connection rules, writers, timers) in a child
process of its own, listening on the hub's port with ``SO_REUSEPORT``; the hub keeps the world,
the sessions and the caps.  The two talk over one socket pair, the *link*: frames of a 4-byte
length and a msgpack array whose first item names the message.

From the child (:class:`_ChildHub` stands in for the hub there):

* ``admit``, ``hello``, ``watch``, ``http`` -- requests; the hub answers each with ``re`` and the
  request's number.  The child's event loop never waits: a hello's welcome (or refusal) is
  applied to the connection rules when the answer comes, as if the client had been slow.
* ``in`` -- the inputs the child's clients sent since the last ``in``: at most one frame per
  :data:`INPUT_BATCH_S`, whatever the number of clients.
* ``rel`` -- a connection is gone; ``st`` -- the gateway's statistics, once a second.

To the child: ``d`` -- one tick's snapshots for its clients (one frame per tick), ``v`` -- the
newest spectator view for a codec its spectators use, ``r`` -- a session was resumed on another
connection (anywhere), ``stop`` and ``fail``.

A client is known to the hub as a :class:`RemoteClient` (the child's connection number, its
address, codec and session), so the hub's session table, caps and pending inputs work alike for
clients of gateway threads and of gateway processes: a reconnect with a token may land on any
gateway, and an input is applied once, at the next tick boundary, whichever gateway took it.

Bounded everywhere: frames to a child wait in an outbox of :data:`OUTBOX` frames, and a tick's
snapshots that do not fit are dropped and counted (the client's baseline stays valid, as with a
full send queue); the child's own queues are the gateway's.  A child that ends (crash or
``fail``) loses only its own clients: the hub releases their places and sessions (kept for the
grace period, so the clients resume elsewhere) and the kernel gives new connections to the
listeners that are left.  A child whose link closes (the hub is gone) stops its gateway and
exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

import msgpack

from server import loops
from server.connection import Event
from server.gcfreeze import FreezePolicy
from server.protocol import ErrorCode, Hello, Input, Spectate, Watching, Welcome

if TYPE_CHECKING:
    from server.app import GameServer
    from server.gateway import Client, Gateway
    from server.settings import ServerSettings
    from server.transport import TransportLimits

#: What a gateway process runs (``python -c``): this module's child entry point.
BOOT = """\
import sys
from server.gateway_process import child_main
sys.exit(child_main(int(sys.argv[1])))
"""
#: Frames waiting to go to one child (a tick's snapshots are one frame).
OUTBOX = 64
#: Kernel buffer of each end of a link, bytes: a tick's snapshots for 1,000 clients fit.
LINK_BUFFER = 4 << 20
#: Seconds a child has to import, listen and say ready.
START_TIMEOUT = 30.0
#: Seconds a gateway process gathers inputs before it sends them to the hub in one frame (a
#: write per input would cost more than the rest of the input's path; a tick is 33 ms).
INPUT_BATCH_S = 0.002
#: Seconds between a child's statistics frames.
STATS_EVERY = 1.0
_HEADER = 4


def _frame(msg: Any) -> bytes:
    body = msgpack.packb(msg, use_bin_type=True)
    return len(body).to_bytes(_HEADER, "big") + body


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv_frame(sock: socket.socket) -> Any:
    """One frame from a blocking socket, or None at the end of the stream."""
    head = _recv_exactly(sock, _HEADER)
    if head is None:
        return None
    body = _recv_exactly(sock, int.from_bytes(head, "big"))
    return None if body is None else msgpack.unpackb(body, raw=False)


def _refusal(r: tuple[ErrorCode, str, int | None]) -> list[Any]:
    return ["x", r[0].value, r[1], r[2]]


# ---- the hub's side ---------------------------------------------------------------------------
class RemoteClient:
    """A client of a gateway process, as the hub's session table and caps see it."""

    __slots__ = ("addr", "admitted", "cid", "codec_name", "gateway", "said_bye", "session",
                 "spectator")

    def __init__(self, gateway: RemoteGateway, cid: int, addr: str) -> None:
        self.gateway = gateway
        self.cid = cid
        self.addr = addr
        self.codec_name = ""
        self.session: Any = None
        self.spectator = False
        self.said_bye = False
        self.admitted = False


class RemoteGateway:
    """The hub's handle on one gateway process (see the module docstring).

    Args:
        hub: the server.
        index: the gateway's number.
    """

    def __init__(self, hub: GameServer, index: int) -> None:
        self.hub = hub
        self.index = index
        self.failed: str | None = None
        #: Codec name -> spectators of this gateway using it (which views to send it).
        self.spectators: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.errors_sent: Counter[str] = Counter()
        self.transport_counters: Counter[str] = Counter()
        self.transports = 0
        self._stats: dict[str, Any] = {"index": index, "connections": 0, "playing": 0,
                                       "spectating": 0, "peak": 0, "frames_in": 0,
                                       "frames_out": 0, "cpu_s": 0.0, "loop_lag_p99_ms": 0.0,
                                       "failed": None}
        self._dropped = 0
        self.clients: dict[int, RemoteClient] = {}
        self._outbox: queue.Queue[bytes | None] = queue.Queue(OUTBOX)
        self._ready: queue.Queue[Any] = queue.Queue(1)
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self.pid = 0

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self, host: str, port: int, *, reuse_port: bool = True) -> int:
        """Start the process, which listens on ``host:port``; returns the port."""
        ours, theirs = socket.socketpair()
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, LINK_BUFFER)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, LINK_BUFFER)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", BOOT, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                env=env, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self.pid = self._proc.pid
        self._sock = ours
        hub = self.hub
        spec = {"index": self.index, "host": host, "port": port, "reuse_port": reuse_port,
                "settings": asdict(hub.settings),
                "transport": [hub.guard.limits.max_open, hub.guard.limits.max_per_address]}
        ours.sendall(_frame(spec))
        for target, name in ((self._read_loop, "reader"), (self._write_loop, "writer")):
            th = threading.Thread(target=target, name=f"paratick-gateway-{self.index}-{name}",
                                  daemon=True)
            th.start()
            self._threads.append(th)
        try:
            got = await asyncio.to_thread(self._ready.get, True, START_TIMEOUT)
        except queue.Empty:
            got = f"gateway process {self.index} did not start within {START_TIMEOUT:g} s"
        if isinstance(got, str):  # why it could not start
            await asyncio.to_thread(self._end)
            raise OSError(got)
        return int(got)

    async def stop(self, reason: str) -> None:
        """Bye and close 1001 to every client of the process, then let it exit."""
        from server.gateway import FLUSH_TIMEOUT

        self._stopping = True
        self._send(["stop", reason])
        await asyncio.to_thread(self._end, 3 * FLUSH_TIMEOUT + 2)

    async def fail(self, why: str) -> None:
        """Lose this gateway (fault injection): its clients are closed with 1011."""
        self.failed = why
        self._send(["fail", why])
        await asyncio.to_thread(self._end, 10.0)

    def _end(self, wait: float = 0.0) -> None:
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(queue.Full):
            self._outbox.put(None, timeout=1.0)  # ends the writer
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        for th in self._threads:
            th.join(5.0)
        if self._sock is not None:
            self._sock.close()

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """The hub's way to reach a gateway from any thread: here the call only queues a frame."""
        fn(*args)

    # ---- to the child ---------------------------------------------------------------------------
    def _send(self, msg: Any, *, droppable: bool = False) -> bool:
        try:
            if droppable:
                self._outbox.put_nowait(_frame(msg))
            else:
                self._outbox.put(_frame(msg), timeout=5.0)
        except queue.Full:
            return False
        return True

    def deliver(self, items: list[tuple[RemoteClient, Any]]) -> None:
        """One tick's snapshots for this process's clients (one frame)."""
        if not self._send(["d", [(c.cid, payload) for c, payload in items]], droppable=True):
            self._dropped += len(items)

    def replace(self, c: RemoteClient) -> None:
        self._send(["r", c.cid])

    def push_views(self) -> None:
        board = self.hub.board
        for name, count in list(self.spectators.items()):
            if count <= 0:
                continue
            try:
                got = board.payload(name)
            except Exception as exc:  # a bug of ours: log it (rate-limited), skip this view
                self.hub.log.note("views", f"building a spectator view failed: {exc!r}")
                continue
            if got is not None:
                self._send(["v", name, got[0], got[1]], droppable=True)

    def _write_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            data = self._outbox.get()
            if data is None:
                return
            try:
                sock.sendall(data)
            except OSError:
                return

    # ---- from the child -------------------------------------------------------------------------
    def _read_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        try:
            while True:
                try:
                    msg = _recv_frame(sock)
                except OSError:
                    msg = None
                if msg is None:
                    break
                try:
                    self._on(msg)
                except Exception as exc:  # a bug of ours: log it, keep serving the others
                    self.hub.log.note("gateway-link",
                                      f"gateway {self.index}: bad link message: {exc!r}")
        finally:
            self._gone()

    def _gone(self) -> None:
        """The process ended: release what its clients held; they resume elsewhere."""
        if not self._stopping and self.failed is None:
            self.failed = "gateway process ended"
        self._stats["failed"] = self.failed
        with contextlib.suppress(queue.Full):
            self._ready.put_nowait(self.failed or "gateway process ended")
        for c in list(self.clients.values()):
            self._release(c, c.admitted)
        self._stats["connections"] = self._stats["playing"] = self._stats["spectating"] = 0
        self.transports = 0

    def _on(self, msg: list[Any]) -> None:
        kind = msg[0]
        hub = self.hub
        if kind == "in":
            clients = self.clients
            submit = hub.submit
            for cid, seq, thrust, turn, action, ack in msg[1]:
                c = clients.get(cid)
                if c is not None:
                    submit(c, Input(seq, thrust, turn, action, ack))
        elif kind == "rel":
            c = self.clients.get(msg[1])
            if c is not None:
                c.said_bye = bool(msg[3])
                self._release(c, bool(msg[2]))
        elif kind == "admit":
            _, rid, cid, addr = msg
            c = self.clients[cid] = RemoteClient(self, cid, addr)
            refusal = hub.admit(addr)
            c.admitted = refusal is None
            self._send(["re", rid, None if refusal is None else _refusal(refusal)[1:]])
        elif kind == "hello":
            _, rid, cid, codec, name, token = msg
            c = self.clients[cid]
            c.codec_name = codec
            got = hub.open_session(c, Hello(name=name, token=token))
            self._send(["re", rid, _refusal(got) if isinstance(got, tuple)
                        else ["w", asdict(got)]])
        elif kind == "watch":
            _, rid, cid, codec = msg
            c = self.clients[cid]
            c.codec_name = codec
            got_w = hub.grant_view(c)
            if isinstance(got_w, tuple):
                self._send(["re", rid, _refusal(got_w)])
            else:
                self.spectators[codec] += 1
                self._send(["re", rid, ["w", asdict(got_w)]])
        elif kind == "http":
            _, rid, path = msg
            self._send(["re", rid, list(hub.stats_document(path))])
        elif kind == "st":
            st = msg[1]
            self._stats = st["gateway"]
            self._stats["failed"] = self.failed
            self.counters = Counter(st["counters"])
            self.counters["snapshots_dropped"] += self._dropped
            self.errors_sent = Counter(st["errors_sent"])
            self.transport_counters = Counter(st["transport"])
            self.transports = st["transports"]
        elif kind == "ready":
            self._ready.put(msg[1])
        elif kind == "error":
            self.failed = msg[1]
            self._ready.put(msg[1])

    def _release(self, c: RemoteClient, admitted: bool) -> None:
        self.clients.pop(c.cid, None)
        if c.spectator:
            self.spectators[c.codec_name] -= 1
            if self.spectators[c.codec_name] <= 0:
                del self.spectators[c.codec_name]  # no spectator left: no views to send
        self.hub.release(c, admitted=admitted)

    def stats(self) -> dict[str, Any]:
        """The process's figures (sent once a second); its connections as the hub counts them
        (current to the message)."""
        clients = list(self.clients.values())
        return {**self._stats, "connections": len(clients),
                "playing": sum(1 for c in clients if c.session is not None),
                "spectating": sum(1 for c in clients if c.spectator), "pid": self.pid}


# ---- the child's side ---------------------------------------------------------------------------
def _resolver(fut: asyncio.Future[Any]) -> Callable[[Any], None]:
    def resolve(result: Any) -> None:
        if not fut.done():
            fut.set_result(result)

    return resolve


class _Views:
    """The newest view per codec, as the hub sent them (what :class:`ViewBoard` is in the hub)."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[int, bytes | str]] = {}

    def payload(self, name: str) -> tuple[int, bytes | str] | None:
        return self.latest.get(name)


class _Link(asyncio.Protocol):
    """The child's end of the link: frames in, frames out, on the gateway's event loop."""

    def __init__(self, on_frame: Callable[[Any], None], on_lost: Callable[[], None]) -> None:
        self.on_frame = on_frame
        self.on_lost = on_lost
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= _HEADER:
            size = int.from_bytes(buf[pos:pos + _HEADER], "big")
            end = pos + _HEADER + size
            if end > n:
                break
            self.on_frame(msgpack.unpackb(buf[pos + _HEADER:end], raw=False))
            pos = end
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost()

    def send(self, msg: Any) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_frame(msg))


class _ChildHub:
    """What a gateway in a child process asks of its hub, answered over the link.

    It offers the gateway the hub's interface (:class:`server.app.GameServer`'s ``admit``,
    ``claim``, ``watch``, ``submit``, ``release``, ``http`` and settings); ``claim`` and ``watch``
    return no events at once: their answer is applied when the hub's reply comes.
    """

    def __init__(self, settings: ServerSettings, transport: TransportLimits,
                 link: _Link) -> None:
        from server.transport import BurstLog, TransportGuard

        self.settings = settings
        self.limits = settings.connection_limits()
        self.clock = time.monotonic
        self.log = BurstLog(clock=self.clock)
        self.guard = TransportGuard(transport)
        self.board = _Views()
        self.link = link
        self.gateway: Gateway | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, Callable[[Any], None]] = {}
        self._inputs: list[tuple[Any, ...]] = []
        self._cids: dict[int, Client] = {}
        #: Set when the gateway has stopped and the process may exit.
        self.done = asyncio.Event()
        self.finishing: asyncio.Task[None] | None = None

    # The hub's interface, as the gateway uses it.
    def origins(self) -> list[str | None] | None:
        return self.settings.websocket_origins()

    def ssl_context(self) -> Any:
        return self.settings.ssl_context()

    def _ask(self, msg: list[Any], then: Callable[[Any], None]) -> None:
        rid = next(self._ids)
        self._waiting[rid] = then
        self.link.send([msg[0], rid, *msg[1:]])

    async def admit_connection(self, c: Client) -> tuple[ErrorCode, str, int] | None:
        self._cids[c.cid] = c
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ask(["admit", c.cid, c.addr], _resolver(fut))
        got = await fut
        return None if got is None else (ErrorCode(got[0]), got[1], got[2])

    def claim(self, c: Client, hello: Hello) -> list[Event]:
        def then(got: list[Any]) -> None:
            if c.conn.close_code is not None or self.gateway is None:
                return
            if got[0] == "x":
                events = c.conn.refuse(ErrorCode(got[1]), got[2], got[3])
            else:
                events = c.conn.welcome(Welcome(**got[1]))
            self.gateway._apply(c, events)

        self._ask(["hello", c.cid, c.conn.codec.name, hello.name, hello.token], then)
        return []

    def watch(self, c: Client, spectate: Spectate) -> list[Event]:
        def then(got: list[Any]) -> None:
            gw = self.gateway
            if gw is None:
                return
            if got[0] == "x":
                if c.conn.close_code is None:
                    gw._apply(c, c.conn.refuse(ErrorCode(got[1]), got[2], got[3]))
                return
            c.spectator = True
            gw.spectators.add(c)
            if c.conn.close_code is None:
                d = got[1]
                d["regions"] = tuple(tuple(r) for r in d["regions"])
                gw._apply(c, c.conn.watching(Watching(**d)))

        self._ask(["watch", c.cid, c.conn.codec.name], then)
        return []

    def submit(self, c: Client, msg: Input) -> None:
        if not self._inputs:
            asyncio.get_running_loop().call_later(INPUT_BATCH_S, self._flush_inputs)
        self._inputs.append((c.cid, msg.seq, msg.thrust, msg.turn, msg.action, msg.ack))

    def _flush_inputs(self) -> None:
        batch, self._inputs = self._inputs, []
        if batch:
            self.link.send(["in", batch])

    def release(self, c: Client, *, admitted: bool) -> None:
        if self._inputs:
            self._flush_inputs()  # its last inputs go first
        self._cids.pop(c.cid, None)
        self.link.send(["rel", c.cid, admitted, c.conn.said_bye])

    async def http(self, connection: Any, request: Any) -> Any:
        from server.settings import http_answer, respond_document

        path, resp = http_answer(self.settings, connection, request)
        if path is None:
            return resp
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ask(["http", path], _resolver(fut))
        return respond_document(connection, *await fut)

    # Frames from the hub.
    def on_frame(self, msg: list[Any]) -> None:
        kind = msg[0]
        gw = self.gateway
        if gw is None:
            return
        if kind == "d":
            cids = self._cids
            items = [(c, payload) for cid, payload in msg[1]
                     if (c := cids.get(cid)) is not None]
            if items:
                gw.deliver(items)
        elif kind == "re":
            then = self._waiting.pop(msg[1], None)
            if then is not None:
                then(msg[2])
        elif kind == "v":
            self.board.latest[msg[1]] = (msg[2], msg[3])
            gw.push_views()
        elif kind == "r":
            c = self._cids.get(msg[1])
            if c is not None:
                gw.replace(c)
        elif kind in ("stop", "fail"):
            self.finishing = asyncio.get_running_loop().create_task(self._finish(kind, msg[1]))

    async def _finish(self, kind: str, why: str) -> None:
        gw = self.gateway
        if gw is None:
            return
        if kind == "fail":
            await gw.fail(why)
        else:
            await gw.stop(why)
        self.send_stats()
        self.gateway = None
        self.done.set()

    def send_stats(self) -> None:
        gw = self.gateway
        if gw is None:
            return
        self.link.send(["st", {"gateway": gw.stats(), "counters": dict(gw.counters),
                               "errors_sent": dict(gw.errors_sent),
                               "transport": dict(self.guard.counters),
                               "transports": self.guard.open}])


async def _child(sock: socket.socket, spec: dict[str, Any]) -> int:
    from server.gateway import Gateway
    from server.settings import ServerSettings

    names = {f.name for f in fields(ServerSettings)}
    raw = {k: v for k, v in spec["settings"].items() if k in names}
    raw["origins"] = tuple(raw.get("origins", ()))
    settings = ServerSettings(**raw)
    loop = asyncio.get_running_loop()
    hub: _ChildHub | None = None

    def on_frame(msg: Any) -> None:
        if hub is not None:
            hub.on_frame(msg)

    def on_lost() -> None:  # the hub is gone: stop serving
        if hub is not None and hub.gateway is not None:
            hub.finishing = loop.create_task(hub._finish("stop", "server shutting down"))
        elif hub is not None:
            hub.done.set()

    sock.setblocking(False)
    _, link = await loop.create_unix_connection(lambda: _Link(on_frame, on_lost), sock=sock)
    hub = _ChildHub(settings, settings.transport_limits(*spec["transport"]), link)
    gw = Gateway(hub, spec["index"])  # type: ignore[arg-type]
    hub.gateway = gw
    try:
        port = await gw.start(spec["host"], spec["port"], reuse_port=spec["reuse_port"])
    except OSError as exc:
        link.send(["error", f"cannot listen on {spec['host']}:{spec['port']}: "
                            f"{exc.strerror or exc}"])
        return 1
    policy = FreezePolicy() if settings.freeze_objects else None
    if policy is not None:  # this process's own clients (server.gcfreeze)
        policy.start()
    link.send(["ready", port])

    async def stats_loop() -> None:
        while True:
            await asyncio.sleep(STATS_EVERY)
            hub.send_stats()
            if policy is not None:
                arrived = gw.counters["connections_accepted"]
                policy.check(arrived, arrived - len(gw.clients))

    task = loop.create_task(stats_loop())
    await hub.done.wait()
    task.cancel()
    await asyncio.sleep(0)  # let the last frames go out
    if link.transport is not None:
        link.transport.close()
    return 0


def child_main(fd: int) -> int:
    """A gateway process: its spec is the link's first frame.

    The terminal's Ctrl-C reaches the whole process group; the hub stops its gateways (bye and
    close 1001 first), so this process ignores it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    spec = _recv_frame(sock)
    if spec is None:
        return 1
    return loops.run(_child(sock, spec), spec["settings"].get("loop", "asyncio"))
