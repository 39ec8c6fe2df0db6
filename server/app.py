"""The websocket game server: connections on the event loop, ticks on a thread, snapshots in
workers.

Theory of operation
-------------------
Where a byte from a client goes: websockets (asyncio) reads it through
:class:`server.transport.GuardedConnection` (control-frame budget, read backpressure, descriptor
gate) -> :meth:`GameServer._read` -> :meth:`Connection.receive_frame
<server.connection.Connection.receive_frame>`, the sans-I/O connection rules (limits, phase,
decode) -> :meth:`GameServer._apply` carries out the events: a hello claims a session
(:mod:`server.sessions`), an input is stored as the entity's *pending* input (last one wins) under
a lock.

Where a tick happens: the ticker thread (:class:`Ticker`) wakes at the absolute deadlines of the
runtime's :class:`~server.runtime.TickScheduler` (no drift; catch-up policy), swaps the pending
inputs out under the lock, and calls
``Runtime.step(inputs, view, jobs)``.  Inputs are therefore applied at the next tick boundary by
whichever shard owns the entity.  On snapshot ticks (``snapshot_rate`` of ``tick_rate``, spread
evenly) the step carries one job per playing session; the runtime's workers run
:class:`server.snapshots.SnapshotHook` in parallel and return encoded frames.  The ticker hands
them to the event loop with one ``call_soon_threadsafe`` per tick.

Where a byte to a client goes: each connection has a writer task and two bounded queues: control
messages (welcome, errors, bye; errors beyond :data:`CONTROL_QUEUE` are dropped and counted) and
snapshots (at most ``send_queue``; when full the *oldest unsent* snapshot is dropped and counted:
a newer snapshot supersedes it, and the client's acked baseline stays valid).  The writer awaits
``send``, whose backpressure (websockets' ``write_limit``) is what makes a slow client's queue
fill; a client that stops reading altogether is aborted after ``write_stall_timeout``.

HTTP on the same port (``process_request``): ``GET /stats`` (JSON) and ``GET /metrics``
(Prometheus text format, written by hand: a flat gauge per numeric leaf of /stats, no new
dependency).

Bad input never raises out of a handler: the connection rules turn every
:class:`~server.protocol.ProtocolError` into an ``error`` message, and close the connection only
where they must (the close codes are listed in :mod:`server.connection`).  One timer
(:meth:`GameServer._timer_loop`) expires sessions and applies the hello and idle timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import ssl
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from typing import Any

from server.connection import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TRY_LATER,
    TIMER_RESOLUTION,
    ByeReceived,
    CloseConnection,
    Connection,
    ConnectionLimits,
    ConnectionPhase,
    ControlLimits,
    Event,
    HelloReceived,
    InputReceived,
    SendMessage,
)
from server.protocol import SUBPROTOCOLS, ErrorCode, Welcome, codec_for
from server.sessions import BadToken, Clock, PoolExhausted, Session, SessionTable
from server.ticker import Ticker
from server.transport import (
    SEND_BUFFER,
    BurstLog,
    DescriptorBudget,
    TransportGuard,
    TransportLimits,
    descriptor_budget,
)
from sim.config import WorldConfig
from sim.entities import InputRow
from sim.world import spawn

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
#: Transports (handshakes included) admitted per address beyond ``max_per_address``, so that a
#: client over the cap gets a ``too_many_connections`` error rather than a reset.
TRANSPORT_SLACK = 16


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """Everything about the server that is not the world.

    Attributes:
        host: bind address; loopback by default, nothing is exposed unless asked.
        port: TCP port (0 picks a free one; tests use it).
        snapshot_rate: snapshots per second per client (20 Hz on 30 Hz ticks).
        players: player entities pre-spawned and lent one per session (= session cap).
        npcs: NPC entities.
        backend, workers, kernel: passed to the runtime.
        max_frame, input_rate, input_burst, max_strikes, hello_timeout, idle_timeout: the
            connection rules (:class:`server.connection.ConnectionLimits` says why each default).
        control_rate, control_burst: pings and pongs per second per connection and the bucket
            size (:class:`server.connection.ControlLimits`); over it, close 1008.
        write_stall_timeout: seconds a connection's output may stay above its high-water mark
            (the client is not reading) before it is aborted.
        send_buffer: SO_SNDBUF of client sockets (:class:`server.transport.TransportLimits`).
        max_per_address: connections from one IP (bots on one machine share 127.0.0.1, so the
            default admits the 1,000-bot benchmark).
        max_connections: connections in total (handshakes beyond it get ``server_full``).
            Both caps are lowered at start-up to what the descriptor limit allows.
        send_queue: unsent snapshots kept per client before the oldest is dropped (200 ms at
            20 Hz: older ones are stale anyway).
        grace: seconds a dropped connection's session keeps its entity for a reconnect.
        origins: browser origins allowed to connect (e.g. ``https://game.example``).  Empty:
            any origin on a loopback address; on any other address only clients that send no
            Origin header (bots, not web pages).
        certfile, keyfile: PEM certificate chain and key: serve wss:// (TLS).
        public_stats: answer ``/stats`` and ``/metrics`` to everyone even when not bound to
            loopback (by default they answer loopback clients only there).
    """

    host: str = "127.0.0.1"
    port: int = 8765
    snapshot_rate: float = 20.0
    players: int = 1024
    npcs: int = 1000
    backend: str = "threads"
    workers: int | None = None
    kernel: str = "python"
    max_frame: int = 4096
    input_rate: float = 60.0
    input_burst: float = 10.0
    max_strikes: int = 8
    hello_timeout: float = 10.0
    idle_timeout: float = 120.0
    control_rate: float = 4.0
    control_burst: float = 16.0
    write_stall_timeout: float = 10.0
    send_buffer: int | None = SEND_BUFFER
    max_per_address: int = 1100
    max_connections: int = 4096
    send_queue: int = 4
    grace: float = 10.0
    origins: tuple[str, ...] = field(default=())
    certfile: str | None = None
    keyfile: str | None = None
    public_stats: bool = False

    def __post_init__(self) -> None:
        for name in ("snapshot_rate", "grace"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("players", "max_per_address", "max_connections", "send_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.npcs < 0:
            raise ValueError("npcs must be >= 0")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("TLS needs both a certificate file and a key file")
        self.connection_limits()  # validates the connection rules
        self.transport_limits(self.max_connections, self.max_per_address)

    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(max_frame=self.max_frame, input_rate=self.input_rate,
                                input_burst=self.input_burst, max_strikes=self.max_strikes,
                                hello_timeout=self.hello_timeout,
                                idle_timeout=self.idle_timeout)

    def transport_limits(self, max_open: int, max_per_address: int) -> TransportLimits:
        control = ControlLimits(rate=self.control_rate, burst=self.control_burst)
        return TransportLimits(control=control, write_stall_timeout=self.write_stall_timeout,
                               max_open=max(1, max_open),
                               max_per_address=max(1, max_per_address),
                               send_buffer=self.send_buffer)

    @property
    def loopback(self) -> bool:
        """Whether ``host`` is a loopback address (only this machine can connect)."""
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


RuntimeFactory = Callable[..., Any]


def default_runtime_factory() -> RuntimeFactory:
    """:class:`server.runtime.Runtime` (imported late: ``paratick --help`` stays instant)."""
    from server.runtime import Runtime

    return Runtime


# ---- connections ------------------------------------------------------------------------------
class Client:
    """One websocket connection on the event loop: the connection rules plus its queues.

    Args:
        ws: the websockets connection.
        addr: the peer's IP address.
        conn: the connection rules (:class:`server.connection.Connection`).
        queue: unsent snapshots kept (the oldest is dropped beyond it).
    """

    def __init__(self, ws: Any, addr: str, conn: Connection, queue: int) -> None:
        self.ws = ws
        self.addr = addr
        self.conn = conn
        self.session: Session | None = None
        self.control: deque[bytes | str] = deque(maxlen=CONTROL_QUEUE + _CONTROL_MARGIN)
        self.snapshots: deque[bytes | str] = deque(maxlen=queue)
        self.wake = asyncio.Event()


# ---- the server ---------------------------------------------------------------------------------
class GameServer:
    """A websocket front end over one runtime.  Use as ``async with GameServer(...) as srv``.

    Args:
        world: the world configuration; ``view_radius`` must be > 0 (the AOI radius).
        settings: server settings (:class:`ServerSettings`).
        runtime_factory: ``Runtime``-compatible class (default :func:`default_runtime_factory`).
        clock: monotonic seconds for sessions, rate limits and the tick schedule.
    """

    def __init__(self, world: WorldConfig, settings: ServerSettings | None = None, *,
                 runtime_factory: RuntimeFactory | None = None,
                 clock: Clock = time.monotonic) -> None:
        if not world.view_radius > 0:
            raise ValueError("the server needs WorldConfig.view_radius > 0 (the AOI radius)")
        self.world = world
        self.settings = s = settings or ServerSettings()
        self.clock = clock
        self._factory = runtime_factory
        self.sessions = SessionTable(range(s.players), grace=s.grace, clock=clock)
        self.limits = s.connection_limits()
        self.counters: Counter[str] = Counter()
        self.errors_sent: Counter[str] = Counter()
        self.clients: set[Client] = set()
        self.per_address: Counter[str] = Counter()
        self.by_sid: dict[int, Client] = {}
        self.peak = 0
        # Shared with the ticker thread, guarded by _lock.
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[int, InputRow]] = {}      # entity -> (sid, input)
        self._players: dict[int, list[Any]] = {}                  # sid -> [entity, codec, base]
        # Ticker-thread only.
        self._applied: dict[int, int] = {}                        # sid -> newest applied seq
        self.tick = 0
        self._runtime_metrics: dict[str, Any] = {}
        self.runtime: Any = None
        self.ticker: Ticker | None = None
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = 0.0
        self._expiry_task: asyncio.Task[None] | None = None
        self.port = s.port
        self.closed = False
        #: Connection caps in force (the settings', lowered to what the descriptor limit allows).
        self.max_connections = s.max_connections
        self.max_per_address = s.max_per_address
        self.descriptors: DescriptorBudget | None = None
        self.log = BurstLog(clock=clock)
        self.guard = TransportGuard(s.transport_limits(s.max_connections, s.max_per_address),
                                    on_refused=self._on_refused)
        #: Set when the ticker stopped on an exception: the world no longer advances, so the
        #: owner should stop the server (``paratick serve`` does, exit status 1).
        self.failed = asyncio.Event()

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        from websockets.asyncio.server import serve

        s = self.settings
        factory = self._factory or default_runtime_factory()
        rows = spawn(self.world, s.players + s.npcs, players=s.players)
        self.runtime = await asyncio.to_thread(
            factory, self.world, rows, backend=s.backend, workers=s.workers, kernel=s.kernel,
            hook="server.snapshots:SnapshotHook",
            hook_args={"view_radius": self.world.view_radius})
        self.tick = self.runtime.tick
        self._refresh_runtime_metrics()
        self._loop = loop = asyncio.get_running_loop()
        loop.set_exception_handler(self.log.exception_handler())
        self._apply_descriptor_budget()
        try:
            self._server = await serve(
                self._handle, s.host, s.port,
                subprotocols=list(SUBPROTOCOLS),  # type: ignore[arg-type]
                select_subprotocol=_select_subprotocol,  # type: ignore[arg-type]
                process_request=self._http,
                max_size=s.max_frame * HARD_FRAME_FACTOR,
                compression=None,  # per-message deflate costs CPU per frame at 1,000 clients
                origins=self._origins(),  # type: ignore[arg-type]
                ssl=self._ssl_context(),
                close_timeout=FLUSH_TIMEOUT,
                create_connection=self.guard.factory())  # type: ignore[arg-type]
        except BaseException:
            await asyncio.to_thread(self.runtime.close)  # e.g. port in use: stop the workers
            self.runtime = None
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        self._started = self.clock()
        self._warn_if_exposed()
        self.ticker = Ticker(self._tick_once, self.world.tick_rate, on_results=self._post,
                             on_second=self._refresh_runtime_metrics, on_fault=self._post_fault)
        self.ticker.start()
        self._expiry_task = asyncio.create_task(self._timer_loop())

    def _apply_descriptor_budget(self) -> None:
        """Lower the connection caps to what RLIMIT_NOFILE allows (raising it where it can)."""
        s = self.settings
        budget = descriptor_budget()
        self.descriptors = budget
        self.max_connections = max(1, min(s.max_connections, budget.available))
        self.max_per_address = min(s.max_per_address, self.max_connections)
        # The gate admits a few handshakes beyond the caps (they are refused politely, with an
        # error message, after the handshake) but never more than the descriptors allow.
        self.guard.limits = s.transport_limits(
            budget.available, min(budget.available, self.max_per_address + TRANSPORT_SLACK))
        if self.max_connections < s.max_connections or self.max_per_address < s.max_per_address:
            print(f"paratick: the descriptor limit ({budget.soft}, {budget.in_use} in use) "
                  f"allows {budget.available} client connections: at most "
                  f"{self.max_connections} in total and {self.max_per_address} per address "
                  "(raise it with `ulimit -n`)", file=sys.stderr, flush=True)

    def _origins(self) -> list[str | None] | None:
        """websockets' ``origins``: None checks nothing; None in the list admits no Origin."""
        s = self.settings
        if not s.origins and s.loopback:
            return None
        return [None, *s.origins]

    def _ssl_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if s.certfile is None or s.keyfile is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(s.certfile, s.keyfile)
        return ctx

    def _warn_if_exposed(self) -> None:
        s = self.settings
        if s.loopback:
            return
        tls = "TLS on" if s.certfile else "TLS OFF (use --certfile/--keyfile)"
        origins = ", ".join(s.origins) if s.origins else "none (use --origin)"
        stats = "everyone (--public-stats)" if s.public_stats else "loopback clients only"
        print(f"paratick: warning: listening on {s.host}, reachable from other machines; "
              f"{tls}; browser origins allowed: {origins}; /stats and /metrics answer {stats}",
              file=sys.stderr, flush=True)

    def _on_refused(self, refused: int) -> None:
        lim = self.guard.limits
        self.log.note("refused", f"refusing connections at the transport gate ({lim.max_open} "
                      f"open in all, {lim.max_per_address} per address, from the descriptor "
                      f"limit and --max-per-address); {refused} refused so far")

    async def stop(self, reason: str = "server shutting down") -> dict[str, Any]:
        """Close every client (bye, then close 1001), stop ticking and the workers.

        Within :data:`FLUSH_TIMEOUT` clients get their bye and close; connections still open
        then (clients that do not read) are aborted, so stopping is bounded.

        Returns:
            The final stats.
        """
        if self.closed:
            return self.stats()
        self.closed = True
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
        if self._expiry_task is not None:
            self._expiry_task.cancel()
        if self.ticker is not None:
            await asyncio.to_thread(self.ticker.stop)
        final = self.stats()
        if self.runtime is not None:
            await asyncio.to_thread(self.runtime.close)
        return final

    async def __aenter__(self) -> GameServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _timer_loop(self) -> None:
        """Session expiry and the connections' hello and idle timeouts, one timer for all."""
        while True:
            await asyncio.sleep(TIMER_RESOLUTION)
            self.sessions.expire()
            now = self.clock()
            for c in list(self.clients):
                due = c.conn.deadline()
                if due is not None and now >= due:
                    self._apply(c, c.conn.check_timeouts(now))

    # ---- ticker side (runs on the ticker thread) -------------------------------------------------
    def _is_snapshot_tick(self, tick: int) -> bool:
        r = self.settings.snapshot_rate / self.world.tick_rate
        return int((tick + 1) * r + 1e-9) > int(tick * r + 1e-9)

    def _tick_once(self) -> list[Any]:
        with self._lock:
            pending, self._pending = self._pending, {}
            players = [(sid, p[0], p[1], p[2]) for sid, p in self._players.items()]
        applied = self._applied
        for sid, row in pending.values():
            applied[sid] = row[1]
        if len(applied) > 2 * len(players) + 64:  # forget sessions that ended (bounded dict)
            live = {p[0] for p in players} | {sid for sid, _ in pending.values()}
            for sid in [sid for sid in applied if sid not in live]:
                del applied[sid]
        tick = self.tick
        jobs = []
        if players and self._is_snapshot_tick(tick):
            jobs = [(eid, sid, codec, base, applied.get(sid, -1))
                    for sid, eid, codec, base in players]
        res = self.runtime.step([row for _, row in pending.values()], view=bool(jobs), jobs=jobs)
        self.tick = res.tick
        return list(res.hook_results) if jobs else []  # (sid, payload) pairs, all workers

    def _refresh_runtime_metrics(self) -> None:
        try:
            self._runtime_metrics = self.runtime.metrics().to_dict()
        except Exception as exc:  # metrics are diagnostics: never stop the ticker for them
            self._runtime_metrics = {"error": f"{type(exc).__name__}: {exc}"}

    def _post_fault(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.failed.set)

    def _post(self, results: list[Any]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closing during shutdown
            loop.call_soon_threadsafe(self._deliver, results)

    # ---- event-loop side ----------------------------------------------------------------------
    def _deliver(self, results: list[Any]) -> None:
        by_sid = self.by_sid
        for sid, payload in results:
            c = by_sid.get(sid)
            if c is None or c.conn.close_code is not None:
                continue
            if len(c.snapshots) == c.snapshots.maxlen:
                self.counters["snapshots_dropped"] += 1
            c.snapshots.append(payload)
            c.wake.set()

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
                    count["snapshots_out"] += 1
                await ws.send(data)
                count["messages_out"] += 1
                count["bytes_out"] += len(data)
            if conn.close_code is not None:
                # Closing here (not in the reader) also ends the reader's ``async for``.
                await ws.close(conn.close_code, conn.close_reason)
                return

    def _apply(self, c: Client, events: list[Event]) -> None:
        """Carry out what the connection rules decided."""
        for ev in events:
            if isinstance(ev, InputReceived):
                self._on_input(c, ev)
            elif isinstance(ev, SendMessage):
                if ev.droppable and len(c.control) >= CONTROL_QUEUE:
                    self.counters["errors_dropped"] += 1
                    continue
                c.control.append(c.conn.codec.encode(ev.message))
                c.wake.set()
            elif isinstance(ev, HelloReceived):
                self._apply(c, self._on_hello(c, ev))
            elif isinstance(ev, CloseConnection):
                c.wake.set()  # the writer flushes what is queued, then closes
            else:
                assert isinstance(ev, ByeReceived)

    async def _handle(self, ws: Any) -> None:
        addr = str(ws.remote_address[0]) if ws.remote_address else "?"
        conn = Connection(codec_for(ws.subprotocol), self.limits, now=self.clock(),
                          counters=self.counters, errors_sent=self.errors_sent)
        c = Client(ws, addr, conn, self.settings.send_queue)
        self.counters["connections_accepted"] += 1
        writer = asyncio.create_task(self._writer(c))
        self.clients.add(c)
        self.per_address[addr] += 1
        self.peak = max(self.peak, len(self.clients))
        try:
            if self.closed:
                self._apply(c, conn.refuse(ErrorCode.SHUTDOWN, "server shutting down",
                                           CLOSE_GOING_AWAY))
            elif self.per_address[addr] > self.max_per_address:
                self.counters["rejected_address"] += 1
                self._apply(c, conn.refuse(
                    ErrorCode.TOO_MANY_CONNECTIONS,
                    f"at most {self.max_per_address} connections per address", CLOSE_POLICY))
            elif len(self.clients) > self.max_connections:
                self.counters["rejected_full"] += 1
                self._apply(c, conn.refuse(ErrorCode.SERVER_FULL, "too many connections",
                                           CLOSE_TRY_LATER))
            else:
                await self._read(c)
        except Exception as exc:  # a bug of ours: log it, tell the client nothing specific
            if not _is_closed_error(exc):
                self.counters["internal_errors"] += 1
                print(f"paratick: connection handler error ({addr}): {exc!r}", file=sys.stderr)
                traceback.print_exc()
                self._apply(c, conn.abort(CLOSE_INTERNAL, "internal error"))
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
            self._disconnect(c)

    async def _read(self, c: Client) -> None:
        from websockets.exceptions import ConnectionClosed

        conn = c.conn
        clock = self.clock
        try:
            async for data in c.ws:
                # After a close was decided the connection returns nothing, but keep draining:
                # websockets stops reading the socket when max_queue frames are unconsumed, and
                # then it would never see the peer's close frame.
                events = conn.receive_frame(data, clock())
                if events:
                    self._apply(c, events)
        except ConnectionClosed as exc:
            if conn.close_code is None and (exc.rcvd is None or exc.rcvd.code != 1000):
                self.counters["connections_dropped"] += 1
            if exc.sent is not None and exc.sent.code == CLOSE_TOO_BIG \
                    and conn.close_code is None:
                self.errors_sent[str(ErrorCode.TOO_LARGE)] += 1  # websockets closed it itself

    def _on_hello(self, c: Client, ev: HelloReceived) -> list[Event]:
        msg = ev.hello
        try:
            session, resumed = self.sessions.open(msg.name, msg.token)
        except BadToken as exc:
            return c.conn.refuse(ErrorCode.BAD_TOKEN, str(exc))
        except PoolExhausted as exc:
            self.counters["rejected_full"] += 1
            return c.conn.refuse(ErrorCode.SERVER_FULL, str(exc), CLOSE_TRY_LATER)
        old = self.by_sid.get(session.sid)
        if old is not None and old is not c:
            old.session = None  # the session now belongs to the new connection
            self._apply(old, old.conn.replaced())
        c.session = session
        self.by_sid[session.sid] = c
        with self._lock:
            self._players[session.sid] = [session.entity, c.conn.codec.name, -1]
        self.counters["resumed" if resumed else "hellos"] += 1
        w = self.world
        return c.conn.welcome(Welcome(
            entity=session.entity, token=session.token, tick=self.tick, tick_rate=w.tick_rate,
            snapshot_rate=self.settings.snapshot_rate, width=w.width, height=w.height,
            view_radius=w.view_radius, resumed=resumed))

    def _on_input(self, c: Client, ev: InputReceived) -> None:
        msg = ev.input
        session = c.session
        if session is None:  # replaced by another connection: its inputs are not ours
            return
        session.last_seq = msg.seq
        row: InputRow = (session.entity, msg.seq, msg.thrust, msg.turn, msg.action)
        with self._lock:
            self._pending[session.entity] = (session.sid, row)
            if msg.ack is not None and msg.ack <= self.tick:
                p = self._players.get(session.sid)
                if p is not None:
                    p[2] = msg.ack

    def _disconnect(self, c: Client) -> None:
        self.clients.discard(c)
        self.per_address[c.addr] -= 1
        if self.per_address[c.addr] <= 0:
            del self.per_address[c.addr]
        c.conn.closed()
        session = c.session
        if session is None or self.by_sid.get(session.sid) is not c:
            return
        del self.by_sid[session.sid]
        neutral: InputRow = (session.entity, max(0, session.last_seq), 0.0, 0.0, 0)
        with self._lock:
            self._players.pop(session.sid, None)
            self._pending[session.entity] = (session.sid, neutral)  # stop the idle entity
        if c.conn.said_bye:
            self.sessions.close(session)
        else:
            self.sessions.detach(session)

    # ---- HTTP ------------------------------------------------------------------------------------
    def _http(self, connection: Any, request: Any) -> Any:
        path = request.path.split("?", 1)[0]
        if path not in ("/stats", "/metrics"):
            return None  # continue with the websocket handshake
        if not (self.settings.loopback or self.settings.public_stats):
            peer = connection.remote_address[0] if connection.remote_address else ""
            if not is_loopback(str(peer)):
                return connection.respond(HTTPStatus.FORBIDDEN,
                                          "statistics are served to loopback clients only\n")
        if path == "/stats":
            body, ctype = json.dumps(self.stats(), indent=1) + "\n", "application/json"
        else:
            body, ctype = prometheus_text(self.stats()), "text/plain; version=0.0.4; charset=utf-8"
        resp = connection.respond(HTTPStatus.OK, body)
        del resp.headers["Content-Type"]
        resp.headers["Content-Type"] = ctype
        return resp

    def stats(self) -> dict[str, Any]:
        """JSON-ready server statistics (what ``GET /stats`` returns)."""
        c = self.counters
        playing = sum(1 for x in self.clients if x.conn.phase is ConnectionPhase.PLAYING)
        g = self.guard.counters
        return {
            "tick": self.tick,
            "uptime_s": self.clock() - self._started if self._started else 0.0,
            "ticker": self.ticker.stats() if self.ticker else {},
            "connections": {"open": len(self.clients), "playing": playing, "peak": self.peak,
                            "accepted": c["connections_accepted"],
                            "dropped": c["connections_dropped"],
                            "rejected_address": c["rejected_address"],
                            "rejected_full": c["rejected_full"],
                            "addresses": len(self.per_address),
                            "max": self.max_connections,
                            "max_per_address": self.max_per_address,
                            "transports": self.guard.open,
                            "refused_descriptors": g["refused_descriptors"],
                            "hello_timeouts": c["hello_timeouts"],
                            "idle_timeouts": c["idle_timeouts"],
                            "control_floods": g["control_flood"],
                            "message_floods": c["floods"],
                            "write_stalls": g["write_stalled"],
                            "read_pauses": g["read_paused"]},
            "sessions": {"active": len(self.sessions.by_sid), "free": self.sessions.free,
                         **self.sessions.counters},
            "messages": {"in": c["messages_in"], "out": c["messages_out"],
                         "bytes_in": c["bytes_in"], "bytes_out": c["bytes_out"],
                         "inputs": c["inputs"], "snapshots_out": c["snapshots_out"],
                         "snapshots_dropped": c["snapshots_dropped"],
                         "bad": c["bad_messages"], "rate_limited": c["rate_limited"],
                         "errors_dropped": c["errors_dropped"],
                         "internal_errors": c["internal_errors"],
                         "errors_sent": dict(self.errors_sent)},
            "settings": asdict(self.settings),
            "world": self.world.to_dict(),
            "runtime": self._runtime_metrics,
        }


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


def prometheus_text(stats: dict[str, Any]) -> str:
    """Prometheus text exposition (format 0.0.4) of every numeric leaf of ``stats``.

    Names are ``paratick_<path>``.  Lists of objects (the runtime's per-shard and per-worker
    metrics) become labelled series: ``paratick_runtime_shards_mspt_p99{region="3"}``.
    ``messages.errors_sent`` becomes one metric with a ``code`` label.  Everything is exposed as
    a gauge: counters and gauges share one JSON tree here, and a gauge is never wrong for a value
    that only grows.
    """
    series: dict[str, list[str]] = {}

    def emit(name: str, value: Any, labels: dict[str, str]) -> None:
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int | float):
            return
        lab = ",".join(f'{k}="{v}"' for k, v in labels.items())
        series.setdefault(name, []).append(f"{name}{{{lab}}} {float(value)!r}" if lab
                                           else f"{name} {float(value)!r}")

    def walk(prefix: str, obj: Any, labels: dict[str, str]) -> None:
        for key, value in obj.items():
            name = f"{prefix}_{_metric_name(str(key))}"
            if prefix == "paratick_messages" and key == "errors_sent":
                for code, n in sorted(value.items()):
                    emit(name, n, {**labels, "code": _metric_name(code)})
            elif isinstance(value, dict):
                walk(name, value, labels)
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, dict):
                        key_name = next((k for k in ("region", "worker") if k in item), "index")
                        walk(name, {k: v for k, v in item.items() if k != key_name},
                             {**labels, key_name: str(item.get(key_name, i))})
                    else:
                        emit(name, item, {**labels, "index": str(i)})
            else:
                emit(name, value, labels)

    walk("paratick", {k: v for k, v in stats.items() if k not in ("settings", "world")}, {})
    lines: list[str] = []
    for name, samples in series.items():
        lines.append(f"# TYPE {name} gauge")
        lines.extend(samples)
    return "\n".join(lines) + "\n"


def _metric_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in text)

