"""Gateways: event loops that own client connections end to end.

Theory of operation
-------------------
A :class:`Gateway` is one asyncio event loop's share of the clients: its websockets listener
(all gateways listen on one port with ``SO_REUSEPORT``, so the kernel spreads new connections
over them), the handshake, each connection's rules (:class:`server.connection.Connection`), its
writer task and bounded queues, and the hello and idle timeouts of its own connections.  It
knows nothing of the world: what a connection decides that concerns the world goes to the hub
(:class:`server.app.GameServer`) through five thread-safe calls — :meth:`~GameServer.admit`
(connection caps), :meth:`~GameServer.claim` (a hello), :meth:`~GameServer.watch` (a
spectate), :meth:`~GameServer.submit` (an input) and :meth:`~GameServer.release` (a connection
gone) — and snapshots come back from the ticker as one :meth:`Gateway.deliver` call per gateway
per tick.  Spectators' views are pulled, not pushed: when the ticker has published a world
sample, :meth:`Gateway.push_views` takes the view already encoded for each codec from the hub's
:class:`~server.spectators.ViewBoard` (the first loop to ask builds it) and queues those bytes
for each of its spectators, so the tick never builds or encodes a view.

Where a byte from a client goes: the kernel picks a gateway's listening socket -> websockets
reads it through :class:`server.transport.GuardedConnection` (control-frame budget, read
backpressure, descriptor gate) -> :meth:`Gateway._read` -> :meth:`Connection.receive_frame
<server.connection.Connection.receive_frame>` -> :meth:`Gateway._apply` carries out the events.

Where a byte to a client goes: each connection has a writer task and two bounded queues: control
messages (welcome, errors, bye; errors beyond :data:`CONTROL_QUEUE` are dropped and counted) and
snapshots (at most ``send_queue``; when full the *oldest unsent* snapshot is dropped and counted:
a newer snapshot supersedes it, and the client's acked baseline stays valid).  The writer awaits
``send``, whose backpressure (websockets' ``write_limit``) is what makes a slow client's queue
fill; a client that stops reading altogether is aborted after ``write_stall_timeout``.

Gateways run on threads (:class:`GatewayThread`): on a free-threaded build they run in parallel
and share the hub's session table and input buffer directly (no serialisation); on a GIL build
they take turns, so the server defaults to a single gateway on the main event loop there.  Or
they run in processes (:mod:`server.gateway_process`), in parallel on any build: the same class,
whose hub is then a stand-in that asks the real one over a socket (``admit_connection`` is
awaited; a hello's welcome is applied when the answer comes).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from server import loops
from server.connection import (
    CLOSE_INTERNAL,
    TIMER_RESOLUTION,
    ByeReceived,
    CloseConnection,
    Connection,
    ConnectionPhase,
    Event,
    HelloReceived,
    InputReceived,
    SendMessage,
    SpectateReceived,
)
from server.protocol import SUBPROTOCOLS, codec_for

if TYPE_CHECKING:
    from server.app import GameServer
    from server.sessions import Session

#: Per-connection control-message queue bound (welcome, errors, bye): a peer that provokes more
#: errors than this before its writer catches up loses the extra error messages (counted).  The
#: few messages that are never dropped (welcome, the error before a close, bye) fit in a small
#: margin above it, so the queue is bounded either way.
CONTROL_QUEUE = 16
_CONTROL_MARGIN = 4
#: Library-level frame cap, as a multiple of the protocol limit: frames between the two get an
#: ``error`` message before the 1009 close; larger ones are refused by websockets itself.
HARD_FRAME_FACTOR = 16
#: Seconds shutdown waits for writers to flush bye messages and for closing handshakes; after it
#: the remaining connections are aborted, so SIGINT/SIGTERM always stop the server within about
#: twice this (flush, then the closing handshakes websockets waits for).
FLUSH_TIMEOUT = 2.0
#: Messages kept from a connection that the hub has not admitted yet (more are dropped, counted).
EARLY_MESSAGES = 16
#: Event-loop lag samples kept for the p99 in /stats (one per timer tick: a minute).
LAG_WINDOW = 120


class Client:
    """One websocket connection on a gateway: the connection rules plus its queues.

    Args:
        ws: the websockets connection.
        addr: the peer's IP address.
        conn: the connection rules (:class:`server.connection.Connection`).
        gateway: the gateway that owns it.
        queue: unsent snapshots kept (the oldest is dropped beyond it).
    """

    def __init__(self, ws: Any, addr: str, conn: Connection, gateway: Gateway,
                 queue: int, cid: int = 0) -> None:
        self.ws = ws
        #: Its number on this gateway (how a gateway process names it to the hub).
        self.cid = cid
        self.addr = addr
        self.conn = conn
        self.gateway = gateway
        self.session: Session | None = None
        self.control: deque[bytes | str] = deque(maxlen=CONTROL_QUEUE + _CONTROL_MARGIN)
        self.snapshots: deque[bytes | str] = deque(maxlen=queue)
        self.wake = asyncio.Event()
        #: Holds one of the hub's spectator places (set and cleared by the hub, under its lock).
        self.spectator = False
        #: Tick of the newest view queued for this spectator (a view is sent once).
        self.view_tick = -1

    @property
    def codec_name(self) -> str:
        return self.conn.codec.name

    @property
    def said_bye(self) -> bool:
        return self.conn.said_bye


class Gateway:
    """One event loop's client connections (see the module docstring).

    Args:
        hub: the server the gateway serves.
        index: its number (0-based), in /stats and logs.
    """

    def __init__(self, hub: GameServer, index: int) -> None:
        self.hub = hub
        self.index = index
        self.clients: set[Client] = set()
        #: Clients of this gateway that watch (a subset of ``clients``), for push_views.
        self.spectators: set[Client] = set()
        self.counters: Counter[str] = Counter()
        self.errors_sent: Counter[str] = Counter()
        self.peak = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread_id: int | None = None
        self.port = 0
        self.failed: str | None = None
        self.cpu_s = 0.0
        self._lag: deque[float] = deque(maxlen=LAG_WINDOW)
        # stats() reads the lag window from another thread while the gateway's timer appends:
        # on a free-threaded build that raced ("deque mutated during iteration", even through
        # deque.copy()) without a lock.
        self._lag_lock = threading.Lock()
        self._server: Any = None
        self._timer: asyncio.Task[None] | None = None
        self._cids = itertools.count(1)

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self, host: str, port: int, *, reuse_port: bool) -> int:
        """Listen on ``host:port`` (sharing it with the other gateways); returns the port."""
        from websockets.asyncio.server import serve

        hub = self.hub
        s = hub.settings
        self.loop = asyncio.get_running_loop()
        self.thread_id = threading.get_ident()
        self.loop.set_exception_handler(hub.log.exception_handler())
        self._server = await serve(
            self._handle, host, port,
            subprotocols=list(SUBPROTOCOLS),  # type: ignore[arg-type]
            select_subprotocol=_select_subprotocol,  # type: ignore[arg-type]
            process_request=hub.http,
            max_size=s.max_frame * HARD_FRAME_FACTOR,
            compression=None,  # per-message deflate costs CPU per frame at 1,000 clients
            origins=hub.origins(),  # type: ignore[arg-type]
            ssl=hub.ssl_context(),
            close_timeout=FLUSH_TIMEOUT,
            reuse_port=reuse_port,
            create_connection=hub.guard.factory())  # type: ignore[arg-type]
        self.port = self._server.sockets[0].getsockname()[1]
        self._timer = asyncio.create_task(self._timer_loop())
        return self.port

    async def stop(self, reason: str) -> None:
        """Bye and close 1001 to every client; abort those that do not read; stop listening."""
        if self._server is not None:
            self._server.close(close_connections=False)  # stop accepting
        for c in list(self.clients):
            self._apply(c, c.conn.shutdown(reason))
        if self.clients:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_TIMEOUT):
                    while self.clients:
                        await asyncio.sleep(0.01)
        for c in list(self.clients):  # not reading: no flush will ever come
            with contextlib.suppress(Exception):
                c.ws.transport.abort()
        if self._server is not None:
            self._server.close(close_connections=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2 * FLUSH_TIMEOUT):
                    await self._server.wait_closed()
        if self._timer is not None:
            self._timer.cancel()

    async def fail(self, why: str) -> None:
        """This gateway is lost (a fault): stop listening and close its clients with 1011.

        The other gateways keep serving; the clients reconnect, and the kernel hands their new
        connections to the listeners that are left.
        """
        self.failed = why
        print(f"paratick: gateway {self.index} failed: {why}; closing its "
              f"{len(self.clients)} connections (1011)", file=sys.stderr, flush=True)
        if self._server is not None:
            self._server.close(close_connections=False)
        for c in list(self.clients):
            self._apply(c, c.conn.abort(CLOSE_INTERNAL, f"gateway {self.index} failed"))
        await self.stop("gateway failed")

    def call_soon(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` on this gateway's loop, from any thread."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self.thread_id:
            fn(*args)
        else:
            with contextlib.suppress(RuntimeError):  # loop closing during shutdown
                loop.call_soon_threadsafe(fn, *args)

    # ---- snapshots (from the ticker, one call per tick) ------------------------------------
    def deliver(self, items: list[tuple[Client, Any]]) -> None:
        count = self.counters
        sent = nbytes = 0
        for c, payload in items:
            if c.conn.close_code is not None:
                continue
            # Straight to the socket when nothing is queued before it and the transport takes
            # it; else through the writer task (which waits for the client to read).
            if not c.control and not c.snapshots and c.ws.send_now(payload):
                sent += 1
                nbytes += len(payload)
                continue
            if len(c.snapshots) == c.snapshots.maxlen:
                count["snapshots_dropped"] += 1
            c.snapshots.append(payload)
            c.wake.set()
        if sent:
            count["snapshots_out"] += sent
            count["messages_out"] += sent
            count["bytes_out"] += nbytes

    def push_views(self) -> None:
        """Queue the newest world view for each of this gateway's spectators (on this loop).

        The view is built and encoded once per sample and codec, by whichever gateway asks
        first (:meth:`server.spectators.ViewBoard.payload`); a spectator's queue is the same
        bounded drop-oldest queue as a player's snapshots.
        """
        count = self.counters
        board = self.hub.board
        encoded: dict[str, tuple[int, bytes | str] | None] = {}
        for c in list(self.spectators):
            if c.conn.close_code is not None:
                continue
            name = c.conn.codec.name
            if name not in encoded:
                try:
                    encoded[name] = board.payload(name)
                except Exception as exc:  # a bug of ours: log it (rate-limited), skip this view
                    count["view_errors"] += 1
                    self.hub.log.note("views", f"building a spectator view failed: {exc!r}")
                    encoded[name] = None
            got = encoded[name]
            if got is None or got[0] <= c.view_tick:
                continue
            c.view_tick = got[0]
            if len(c.snapshots) == c.snapshots.maxlen:
                count["views_dropped"] += 1
            c.snapshots.append(got[1])
            c.wake.set()

    # ---- connections --------------------------------------------------------------------------
    async def _writer(self, c: Client) -> None:
        ws = c.ws
        conn = c.conn
        count = self.counters
        while True:
            await c.wake.wait()
            c.wake.clear()
            while c.control or c.snapshots:
                if c.control:
                    data = c.control.popleft()
                else:
                    data = c.snapshots.popleft()
                    count["views_out" if c.spectator else "snapshots_out"] += 1
                await ws.send(data)
                count["messages_out"] += 1
                count["bytes_out"] += len(data)
            if conn.close_code is not None:
                # Closing here (not in the reader) also ends the reader's wait.  A peer
                # that broke the rules is not waited for: it may never stop sending.
                if conn.cut_off:
                    ws.fail(conn.close_code, conn.close_reason)
                else:
                    await ws.close(conn.close_code, conn.close_reason)
                return

    def _apply(self, c: Client, events: list[Event]) -> None:
        """Carry out what the connection rules decided."""
        for ev in events:
            if isinstance(ev, InputReceived):
                self.hub.submit(c, ev.input)
            elif isinstance(ev, SendMessage):
                if ev.droppable and len(c.control) >= CONTROL_QUEUE:
                    self.counters["errors_dropped"] += 1
                    continue
                c.control.append(c.conn.codec.encode(ev.message))
                c.wake.set()
            elif isinstance(ev, HelloReceived):
                self._apply(c, self.hub.claim(c, ev.hello))
            elif isinstance(ev, SpectateReceived):
                self._apply(c, self.hub.watch(c, ev.spectate))
                if c.spectator:
                    self.spectators.add(c)
            elif isinstance(ev, CloseConnection):
                if ev.cut_off:
                    c.ws.discard_input()  # nothing more it sends is worth parsing
                c.wake.set()  # the writer flushes what is queued, then closes
            else:
                assert isinstance(ev, ByeReceived)

    def replace(self, c: Client) -> None:
        """``c``'s session was resumed on another connection (called on this loop)."""
        c.session = None
        self._apply(c, c.conn.replaced())

    async def _handle(self, ws: Any) -> None:
        hub = self.hub
        addr = str(ws.remote_address[0]) if ws.remote_address else "?"
        conn = Connection(codec_for(ws.subprotocol), hub.limits, now=hub.clock(),
                          counters=self.counters, errors_sent=self.errors_sent)
        c = Client(ws, addr, conn, self, hub.settings.send_queue, next(self._cids))
        self.counters["connections_accepted"] += 1
        writer = asyncio.create_task(self._writer(c))
        self.clients.add(c)
        self.peak = max(self.peak, len(self.clients))
        admitted = False
        # Messages that arrive while the hub decides (a gateway process asks it over a socket)
        # wait here, at most EARLY_MESSAGES of them: a client sends a hello, then waits.
        early: list[bytes | str] = []

        def hold(data: bytes | str) -> None:
            if len(early) < EARLY_MESSAGES:
                early.append(data)
            else:
                self.counters["early_dropped"] += 1

        ws.on_message = hold
        try:
            refusal = await hub.admit_connection(c)
            if refusal is not None:
                ws.on_message = None
                self._apply(c, conn.refuse(*refusal))
            else:
                admitted = True
                await self._read(c, early)
        except Exception as exc:  # a bug of ours: log it, tell the client nothing specific
            if not _is_closed_error(exc):
                self._internal_error(c, exc)
        finally:
            if conn.close_code is None:
                conn.abort(1000, "")
            c.wake.set()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(FLUSH_TIMEOUT):
                    await writer
            if not writer.done():  # a client that does not read: close without flushing
                writer.cancel()
                with contextlib.suppress(Exception):
                    c.ws.transport.abort()
            self.clients.discard(c)
            self.spectators.discard(c)
            conn.closed()
            hub.release(c, admitted=admitted)

    async def _read(self, c: Client, early: list[bytes | str]) -> None:
        """Feed ``c``'s messages to its connection rules until the connection closes (first
        ``early``: those that came before it was admitted).

        Messages arrive synchronously from the transport (:attr:`GuardedConnection.on_message
        <server.transport.GuardedConnection.on_message>`): no queue and no task wake-up per
        message.  After a close was decided the rules return nothing for what still arrives.
        """
        conn = c.conn
        ws = c.ws
        clock = self.hub.clock
        apply = self._apply

        def on_message(data: bytes | str) -> None:
            try:
                events = conn.receive_frame(data, clock())
                if events:
                    apply(c, events)
            except Exception as exc:  # a bug of ours: as in _handle, but we are in a callback
                self._internal_error(c, exc)

        ws.on_message = on_message
        for data in early:
            on_message(data)
        try:
            await ws.wait_closed()
        finally:
            ws.on_message = None
        protocol = ws.protocol
        rcvd, sent = protocol.close_rcvd, protocol.close_sent
        if conn.close_code is None and (rcvd is None or rcvd.code != 1000):
            self.counters["connections_dropped"] += 1
        if sent is not None and sent.code == 1009 and conn.close_code is None:
            self.errors_sent["too_large"] += 1  # websockets closed it itself

    def _internal_error(self, c: Client, exc: Exception) -> None:
        """A bug of ours while handling ``c``: logged, and the client closed with 1011."""
        self.counters["internal_errors"] += 1
        print(f"paratick: connection handler error ({c.addr}): {exc!r}", file=sys.stderr)
        traceback.print_exc()
        self._apply(c, c.conn.abort(CLOSE_INTERNAL, "internal error"))

    async def _timer_loop(self) -> None:
        """Hello and idle timeouts of this gateway's connections; CPU time and loop lag."""
        clock = self.hub.clock
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(TIMER_RESOLUTION)
            self.record_lag(time.monotonic() - t0 - TIMER_RESOLUTION)
            self.cpu_s = time.thread_time()
            now = clock()
            for c in list(self.clients):
                due = c.conn.deadline()
                if due is not None and now >= due:
                    self._apply(c, c.conn.check_timeouts(now))

    # ---- statistics ---------------------------------------------------------------------------
    def record_lag(self, seconds: float) -> None:
        """One sample of the event loop's lag (how late its timer woke), from its own thread."""
        with self._lag_lock:
            self._lag.append(max(0.0, seconds))

    def stats(self) -> dict[str, Any]:
        """This gateway's figures; safe to call from any thread (copies before reading; the lag
        window under its lock)."""
        clients = list(self.clients)
        count = dict(self.counters)
        with self._lag_lock:
            lag = sorted(self._lag)
        return {"index": self.index, "connections": len(clients),
                "playing": sum(1 for c in clients if c.conn.phase is ConnectionPhase.PLAYING),
                "spectating": len(self.spectators),
                "peak": self.peak, "frames_in": count.get("messages_in", 0),
                "frames_out": count.get("messages_out", 0), "cpu_s": self.cpu_s,
                "loop_lag_p99_ms": lag[min(len(lag) - 1, round(0.99 * (len(lag) - 1)))] * 1e3
                if lag else 0.0, "failed": self.failed}


class GatewayThread:
    """A gateway on a thread of its own, with its own event loop.

    Args:
        gateway: the gateway to run.
        loop: the kind of event loop (:func:`server.loops.resolve`).
    """

    def __init__(self, gateway: Gateway, loop: str = "asyncio") -> None:
        self.gateway = gateway
        self.loop = loops.new_loop(loop)
        self.thread = threading.Thread(target=self.loop.run_forever,
                                       name=f"paratick-gateway-{gateway.index}", daemon=True)
        self.thread.start()

    def submit(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def run(self, coro: Any) -> Any:
        """Await ``coro`` on this thread's loop from another loop."""
        return await asyncio.wrap_future(self.submit(coro))

    def close(self) -> None:
        """Stop the loop and the thread (after :meth:`Gateway.stop`)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10.0)
        if not self.thread.is_alive():
            self.loop.close()


def _select_subprotocol(connection: Any, offered: Iterable[str]) -> str | None:
    """First of our subprotocols the client offers.

    A client that offers none gets no ``Sec-WebSocket-Protocol`` header (RFC 6455 forbids
    selecting one it did not offer) and is spoken to in JSON (:func:`codec_for` of None), so a
    generic websocket client can play.  Offering only subprotocols we do not speak is refused
    with HTTP 400 (``NegotiationError``).
    """
    from websockets.exceptions import NegotiationError

    offered = list(offered)
    if not offered:
        return None
    for name in SUBPROTOCOLS:
        if name in offered:
            return name
    raise NegotiationError(f"unsupported subprotocol; use one of {', '.join(SUBPROTOCOLS)}")


def _is_closed_error(exc: BaseException) -> bool:
    from websockets.exceptions import ConnectionClosed

    return isinstance(exc, ConnectionClosed)
