"""The websocket game server: gateways own the connections, a ticker ticks the world, the
runtime's workers build the snapshots.

Theory of operation
-------------------
:class:`GameServer` is the hub.  It owns the runtime, the ticker, the session table and the
connection caps; client connections belong to gateways (:mod:`server.gateway`): event loops that
run the handshake, the connection rules (:mod:`server.connection`) and the writers.  With
``gateways=0`` a single gateway runs on the hub's own event loop (the single-loop server); with
G >= 1, G gateways run on threads of their own, or in processes of their own
(``gateway_backend="processes"``, :mod:`server.gateway_process`), all listening on one port.

Where a byte from a client goes: a gateway reads and checks it; a hello becomes
:meth:`GameServer.claim` (a session from :mod:`server.sessions`), an input
:meth:`GameServer.submit`: it is stored as the entity's *pending* input (last one wins) under
the hub's lock, whichever gateway took it.

Where a tick happens: the ticker (:class:`server.ticker.Ticker`: on the hub's event loop with
the inline backend, else on a thread of its own) wakes at the absolute deadlines of
the runtime's :class:`~server.runtime.TickScheduler` (no drift; catch-up policy), swaps the
pending inputs out under the lock, and calls ``Runtime.step(inputs, view, jobs)``.
Inputs are therefore applied exactly once, at the next tick boundary, by whichever shard owns the
entity.  The step carries one snapshot job per playing session due one on that tick
(:class:`server.pacing.SnapshotPacer`: ``snapshot_rate`` a second per client, on the tick that
applies the client's input where its budget allows); the runtime's workers run
:class:`server.snapshots.SnapshotHook` in parallel and return encoded frames, which the hub
hands to each gateway with one call per gateway per tick.

Spectators (:mod:`server.spectators`) watch the whole world: :meth:`GameServer.watch` grants a
place under ``max_spectators``; while any is connected the ticker adds one world job to a tick
at most :data:`~server.spectators.VIEW_RATE` times a second, the workers return a strided sample
of their shards, and :meth:`GameServer._post` publishes it on the :class:`ViewBoard
<server.spectators.ViewBoard>`, from which the gateways build, encode and send the view.

HTTP on the same port (``process_request`` of every gateway): ``GET /stats`` (JSON),
``GET /metrics`` (Prometheus text format, :mod:`server.exposition`: counters, gauges and the
tick-duration and input-latency histograms the hub keeps), and the live page: ``GET /`` and its
assets, the files of ``server/web/`` (:data:`server.settings.STATIC`), read once at import.  Any
other plain GET is 404; a websocket handshake goes on whatever its path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from http import HTTPStatus
from typing import Any

from server import exposition, gcfreeze, host, loops, spectators
from server.clock import TimeSource
from server.connection import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY,
    CLOSE_TRY_LATER,
    TIMER_RESOLUTION,
    Event,
)
from server.gateway import Client, Gateway, GatewayThread
from server.gateway_process import RemoteClient, RemoteGateway
from server.gcwatch import GcWatch
from server.pacing import SnapshotPacer
from server.protocol import ErrorCode, Hello, Input, Spectate, Watching, Welcome
from server.sessions import BadToken, PoolExhausted, SessionTable
from server.settings import ServerSettings, http_answer, respond_document
from server.ticker import Ticker
from server.transport import (
    BurstLog,
    DescriptorBudget,
    TransportGuard,
    descriptor_budget,
)
from sim.config import WorldConfig
from sim.entities import IN_SEQ, InputRow
from sim.geometry import Layout
from sim.world import spawn

#: Transports (handshakes included) admitted per address beyond ``max_per_address``, so that a
#: client over the cap gets a ``too_many_connections`` error rather than a reset.
TRANSPORT_SLACK = 16


RuntimeFactory = Callable[..., Any]


def default_runtime_factory() -> RuntimeFactory:
    """:func:`server.runtime.recovery.start_runtime`: :class:`server.runtime.Runtime`, or the
    resilient nodes runtime for ``backend="nodes"`` (imported late: ``paratick --help`` stays
    instant)."""
    from server.runtime.recovery import start_runtime

    return start_runtime


# ---- the server ---------------------------------------------------------------------------------
class GameServer:
    """The hub: one runtime and its ticker, the sessions, and the gateways that serve clients.

    Use as ``async with GameServer(...) as srv``.  With ``settings.gateways == 0`` the one
    gateway runs on the caller's event loop; with G >= 1 each of G gateways runs its own event
    loop on its own thread, all listening on one port (``SO_REUSEPORT``).

    Thread safety: gateways call :meth:`admit`, :meth:`claim`, :meth:`submit` and
    :meth:`release` from their loops and the ticker calls :meth:`_tick_once` and :meth:`_post`
    from its thread; all shared state (sessions, the caps' counts, pending inputs, players,
    which client holds which session) is guarded by one lock, held for a few dict operations.

    Args:
        world: the world configuration; ``view_radius`` must be > 0 (the AOI radius).
        settings: server settings (:class:`ServerSettings`).
        runtime_factory: ``Runtime``-compatible class (default :func:`default_runtime_factory`).
        clock: monotonic seconds for sessions and the connection rules' timers.
    """

    def __init__(self, world: WorldConfig, settings: ServerSettings | None = None, *,
                 runtime_factory: RuntimeFactory | None = None,
                 clock: TimeSource = time.monotonic) -> None:
        if not world.view_radius > 0:
            raise ValueError("the server needs WorldConfig.view_radius > 0 (the AOI radius)")
        self.world = world
        self.settings = s = settings or ServerSettings()
        s.check_world(world.tick_rate)
        self.clock = clock
        self._factory = runtime_factory
        self.limits = s.connection_limits()
        self.histograms = exposition.server_histograms()
        #: This process's garbage-collector pauses (watched from start to stop).
        self.gc = GcWatch()
        #: When this process freezes its long-lived objects (with ``settings.freeze_objects``).
        self.gc_policy = gcfreeze.FreezePolicy()
        self.log = BurstLog(clock=clock)
        self.guard = TransportGuard(s.transport_limits(s.max_connections, s.max_per_address),
                                    on_refused=self._on_refused)
        #: Connection caps in force (the settings', lowered to what the descriptor limit allows).
        self.max_connections = s.max_connections
        self.max_per_address = s.max_per_address
        self.descriptors: DescriptorBudget | None = None
        self.gateways: list[Gateway | RemoteGateway] = []
        self._threads: list[GatewayThread] = []
        #: Whether clients are served by gateway threads or processes (not the hub's loop).
        self._multi = False
        # Shared between the gateways and the ticker thread, guarded by _lock.
        self._lock = threading.Lock()
        self.sessions = SessionTable(range(s.players), grace=s.grace, clock=clock)
        self.by_sid: dict[int, Client | RemoteClient] = {}
        self.per_address: Counter[str] = Counter()
        self._open = 0
        self.counters: Counter[str] = Counter()                   # hub-level: hellos, resumes
        #: entity -> (sid, input, clock time received; None for the neutral input on leaving)
        self._pending: dict[int, tuple[int, InputRow, float | None]] = {}
        self._players: dict[int, list[Any]] = {}                  # sid -> [entity, codec, base]
        self.spectators = 0                                       # spectators connected
        #: The newest world sample and the view built from it (see server.spectators).
        self.board = spectators.ViewBoard(self.stats, lambda: self.spectators)
        #: Ticks between world samples while spectators watch (VIEW_RATE of the tick rate).
        self._view_every = max(1, round(world.tick_rate / spectators.VIEW_RATE))
        self._last_view = -(1 << 62)
        # Ticker-thread only.
        self._applied: dict[int, int] = {}                        # sid -> newest applied seq
        self._pacer = SnapshotPacer(self.settings.snapshot_rate, world.tick_rate)
        #: Ticks x workers whose snapshot hook raised (their clients missed that snapshot).
        self._snapshot_errors = 0
        self.tick = 0
        self._runtime_metrics: dict[str, Any] = {}
        self.runtime: Any = None
        self.ticker: Ticker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.loop_kind = "asyncio"  # the kind of event loop serving clients (server.loops)
        self._started = 0.0
        self._expiry_task: asyncio.Task[None] | None = None
        self._gc_task: asyncio.Task[None] | None = None
        self.port = s.port
        self.closed = False
        #: Set when the ticker stopped on an exception: the world no longer advances, so the
        #: owner should stop the server (``paratick serve`` does, exit status 1).
        self.failed = asyncio.Event()

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        factory = self._factory or default_runtime_factory()
        rows = spawn(self.world, s.players + s.npcs, players=s.players)
        # a node's cores are its own machine's business; the default is left to the runtime
        nodes = ({"bus": s.bus, "world": s.bus_world, "local_nodes": s.local_nodes}
                 if s.backend == "nodes" else {} if s.pin else {"pin": False})
        self.runtime = await asyncio.to_thread(
            factory, self.world, rows, backend=s.backend, workers=s.workers, kernel=s.kernel,
            hook="server.spectators:SpectatorHook",
            hook_args={"view_radius": self.world.view_radius}, **nodes)
        self.tick = self.runtime.tick
        self._refresh_runtime_metrics()
        self._loop = loop = asyncio.get_running_loop()
        self.loop_kind = loops.running()
        loop.set_exception_handler(self.log.exception_handler())
        self._apply_descriptor_budget()
        try:
            await self._start_gateways(s.gateways)
        except BaseException:
            await self._stop_gateways("server failed to start")
            await asyncio.to_thread(self.runtime.close)  # e.g. port in use: stop the workers
            self.runtime = None
            raise
        self._started = self.clock()
        if s.freeze_objects:  # before the watch: this collection is not a pause under load
            self.gc_policy.start()
            self._gc_task = asyncio.create_task(self._gc_loop())
        self.gc.install()
        self._warn_if_exposed()
        self.ticker = Ticker(self._tick_once, self.world.tick_rate, on_results=self._post,
                             on_second=self._refresh_runtime_metrics, on_fault=self._post_fault,
                             observe=self.histograms[exposition.TICK_DURATION].observe)
        if s.ticks_on_loop():
            self.ticker.start_on(loop)
        else:
            self.ticker.start()
        self._expiry_task = asyncio.create_task(self._expiry_loop())

    async def _start_gateways(self, count: int) -> None:
        s = self.settings
        if count == 0:
            gw = Gateway(self, 0)
            self.gateways.append(gw)
            self.port = await gw.start(s.host, s.port, reuse_port=False)
            return
        port = s.port
        self._multi = True
        for i in range(count):
            if s.gateway_backend == "processes":
                from server.gateway_process import RemoteGateway

                remote = RemoteGateway(self, i)
                self.gateways.append(remote)
                port = await remote.start(s.host, port, reuse_port=True)
                continue
            gw = Gateway(self, i)
            th = GatewayThread(gw, s.loop)
            self.gateways.append(gw)
            self._threads.append(th)
            port = await th.run(gw.start(s.host, port, reuse_port=True))
        self.port = port

    async def _stop_gateways(self, reason: str) -> None:
        if not self._multi:
            for gw in self.gateways:
                await gw.stop(reason)
            return
        threads = {id(th.gateway): th for th in self._threads}
        await asyncio.gather(*(threads[id(gw)].run(gw.stop(reason)) if id(gw) in threads
                               else gw.stop(reason) for gw in self.gateways),
                             return_exceptions=True)
        for th in self._threads:
            await asyncio.to_thread(th.close)

    async def stop(self, reason: str = "server shutting down") -> dict[str, Any]:
        """Close every client (bye, then close 1001), stop ticking and the workers.

        Within :data:`~server.gateway.FLUSH_TIMEOUT` clients get their bye and close;
        connections still open then (clients that do not read) are aborted, so stopping is
        bounded.

        Returns:
            The final stats.
        """
        if self.closed:
            return self.stats()
        self.closed = True
        await self._stop_gateways(reason)
        for task in (self._expiry_task, self._gc_task):
            if task is not None:
                task.cancel()
        if self.ticker is not None:
            await asyncio.to_thread(self.ticker.stop)
        final = self.stats()
        self.gc.uninstall()
        if self.runtime is not None:
            await asyncio.to_thread(self.runtime.close)
        return final

    async def __aenter__(self) -> GameServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def fail_gateway(self, index: int, why: str = "injected fault") -> None:
        """Lose gateway ``index`` (fault injection): its clients are closed with 1011 and
        reconnect through the others.  Needs ``gateways >= 2``."""
        if len(self.gateways) < 2:
            raise ValueError("a gateway can fail only with two or more gateways")
        gw = self.gateways[index]
        for th in self._threads:
            if th.gateway is gw:
                await th.run(th.gateway.fail(why))
                return
        await gw.fail(why)

    async def _expiry_loop(self) -> None:
        while True:
            await asyncio.sleep(TIMER_RESOLUTION)
            with self._lock:
                self.sessions.expire()

    async def _gc_loop(self) -> None:
        while True:
            await asyncio.sleep(gcfreeze.CHECK_EVERY)
            with self._lock:
                arrived, left = self.counters["admitted"], self.counters["released"]
            self.gc_policy.check(arrived, left)

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

    def origins(self) -> list[str | None] | None:
        return self.settings.websocket_origins()

    def ssl_context(self) -> ssl.SSLContext | None:
        return self.settings.ssl_context()

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

    # ---- what gateways ask (any gateway's thread) ----------------------------------------------
    def admit(self, addr: str) -> tuple[ErrorCode, str, int] | None:
        """Count a new connection from ``addr``; the refusal (code, reason, close code) when a
        cap is reached or the server is stopping, else None.  Every call is matched by one
        :meth:`release` (with ``admitted`` saying whether this returned None)."""
        with self._lock:
            if self.closed:
                return ErrorCode.SHUTDOWN, "server shutting down", CLOSE_GOING_AWAY
            if self.per_address[addr] >= self.max_per_address:
                self.counters["rejected_address"] += 1
                return (ErrorCode.TOO_MANY_CONNECTIONS,
                        f"at most {self.max_per_address} connections per address", CLOSE_POLICY)
            if self._open >= self.max_connections:
                self.counters["rejected_full"] += 1
                return ErrorCode.SERVER_FULL, "too many connections", CLOSE_TRY_LATER
            self.per_address[addr] += 1
            self._open += 1
            self.counters["admitted"] += 1
            self.counters["peak"] = max(self.counters["peak"], self._open)
            return None

    async def admit_connection(self, c: Client) -> tuple[ErrorCode, str, int] | None:
        """:meth:`admit` for a gateway's new connection (a gateway process asks it over its
        link, so the call is awaited)."""
        return self.admit(c.addr)

    def claim(self, c: Client, hello: Hello) -> list[Event]:
        """A hello: a new session, or the one its token names (taken from its old connection,
        on whichever gateway that is)."""
        got = self.open_session(c, hello)
        if isinstance(got, tuple):
            return c.conn.refuse(*got)
        return c.conn.welcome(got)

    def open_session(self, c: Client | RemoteClient, hello: Hello,
                     ) -> Welcome | tuple[ErrorCode, str, int | None]:
        """What :meth:`claim` decides: the welcome, or the refusal (code, reason, close)."""
        with self._lock:
            try:
                session, resumed = self.sessions.open(hello.name, hello.token)
            except BadToken as exc:
                refusal: tuple[ErrorCode, str, int | None] = (ErrorCode.BAD_TOKEN, str(exc),
                                                              None)
            except PoolExhausted as exc:
                self.counters["rejected_full"] += 1
                refusal = (ErrorCode.SERVER_FULL, str(exc), CLOSE_TRY_LATER)
            else:
                refusal = None  # type: ignore[assignment]
                old = self.by_sid.get(session.sid)
                self.by_sid[session.sid] = c
                self._players[session.sid] = [session.entity, c.codec_name, -1]
                c.session = session
                self.counters["resumed" if resumed else "hellos"] += 1
                tick = self.tick
        if refusal is not None:
            return refusal
        if old is not None and old is not c:
            old.gateway.call_soon(old.gateway.replace, old)
        w = self.world
        return Welcome(
            entity=session.entity, token=session.token, tick=tick, tick_rate=w.tick_rate,
            snapshot_rate=self.settings.snapshot_rate, width=w.width, height=w.height,
            view_radius=w.view_radius, resumed=resumed,
            gateway=c.gateway.index if self._multi else None)

    def watch(self, c: Client, spectate: Spectate) -> list[Event]:
        """A spectate: a spectator's place under ``max_spectators``, or a refusal (1013)."""
        got = self.grant_view(c)
        if isinstance(got, tuple):
            return c.conn.refuse(*got)
        return c.conn.watching(got)

    def grant_view(self, c: Client | RemoteClient,
                   ) -> Watching | tuple[ErrorCode, str, int | None]:
        """What :meth:`watch` decides: the watching message, or the refusal."""
        cap = self.settings.max_spectators
        with self._lock:
            if self.spectators >= cap:
                self.counters["rejected_spectators"] += 1
                refused = True
            else:
                self.spectators += 1
                self.counters["spectators_peak"] = max(self.counters["spectators_peak"],
                                                       self.spectators)
                c.spectator = True
                refused = False
            tick = self.tick
        if refused:
            why = (f"the server's {cap} spectator places are all taken; try again later"
                   if cap else "this server admits no spectators")
            return ErrorCode.SPECTATORS_FULL, why, CLOSE_TRY_LATER
        w = self.world
        rt = self.runtime
        regions = tuple((r.x0, r.y0, r.x1, r.y1, rt.owner[i])
                        for i, r in enumerate(map(Layout(w).rect, range(w.regions))))
        interp = host.interpreter()
        build = (f"CPython {interp['version']}"
                 f"{' free-threaded' if interp['free_threaded'] else ''}, "
                 f"GIL {'on' if interp['gil_enabled'] else 'off'}")
        return Watching(
            tick=tick, tick_rate=w.tick_rate, view_rate=spectators.VIEW_RATE, width=w.width,
            height=w.height, regions=regions, workers=rt.workers,
            max_entities=self.board.cap, build=build,
            backend=f"{rt.backend} ({rt.kernel} kernel)",
            gateway=c.gateway.index if self._multi else None)

    def submit(self, c: Client | RemoteClient, msg: Input) -> None:
        """An input for the next tick boundary (the newest per entity wins)."""
        session = c.session
        if session is None:  # replaced by another connection: its inputs are not ours
            return
        session.last_seq = msg.seq
        row: InputRow = (session.entity, msg.seq, msg.thrust, msg.turn, msg.action)
        now = self.clock()
        with self._lock:
            if self.by_sid.get(session.sid) is not c:
                return
            self._pending[session.entity] = (session.sid, row, now)
            if msg.ack is not None and msg.ack <= self.tick:
                p = self._players.get(session.sid)
                if p is not None:
                    p[2] = msg.ack

    def release(self, c: Client | RemoteClient, *, admitted: bool) -> None:
        """``c`` is gone: free its place under the caps; detach (or end) its session."""
        session = c.session
        with self._lock:
            if c.spectator:
                c.spectator = False
                self.spectators -= 1
            if admitted:
                self._open -= 1
                self.counters["released"] += 1
                self.per_address[c.addr] -= 1
                if self.per_address[c.addr] <= 0:
                    del self.per_address[c.addr]
            if session is None or self.by_sid.get(session.sid) is not c:
                return
            del self.by_sid[session.sid]
            neutral: InputRow = (session.entity, max(0, session.last_seq), 0.0, 0.0, 0)
            self._players.pop(session.sid, None)
            self._pending[session.entity] = (session.sid, neutral, None)  # stop the entity
            if c.said_bye:
                self.sessions.close(session)
            else:
                self.sessions.detach(session)

    # ---- ticker side (runs on the ticker's thread, or the hub's loop) ----------------------------
    def _tick_once(self) -> list[Any]:
        start = self.clock()
        with self._lock:
            pending, self._pending = self._pending, {}
            players = [(sid, p[0], p[1], p[2]) for sid, p in self._players.items()]
        self.histograms[exposition.INPUT_LATENCY].observe_many(
            start - t for _, _, t in pending.values() if t is not None)
        applied = self._applied
        fresh = set()  # sessions whose input this tick applies (not the stops of those who left)
        for sid, row, t in pending.values():
            applied[sid] = row[IN_SEQ]
            if t is not None:
                fresh.add(sid)
        if len(applied) > 2 * len(players) + 64:  # forget sessions that ended (bounded dict)
            live = {p[0] for p in players} | {sid for sid, _, _ in pending.values()}
            for sid in [sid for sid in applied if sid not in live]:
                del applied[sid]
        tick = self.tick
        jobs = []
        if players:
            # Jobs (server.snapshots.Job) as plain tuples, one per client: cheaper to build.
            jobs = [(eid, sid, codec, base, applied.get(sid, -1))
                    for sid, eid, codec, base in self._pacer.pick(tick, players, fresh)]
        view = bool(jobs)  # only players' areas of interest need the neighbours' view rows
        if self.spectators and tick - self._last_view >= self._view_every:
            self._last_view = tick
            jobs.append(spectators.world_job(self.board.cap, self.world.regions))
        res = self.runtime.step([row for _, row, _ in pending.values()], view=view, jobs=jobs)
        self.tick = res.tick
        if res.hook_errors:  # a bug of ours: say so (rate-limited) and count it, tick on
            self._snapshot_errors += len(res.hook_errors)
            worker, trace = res.hook_errors[0]
            last = (trace.strip().splitlines() or ["?"])[-1]
            self.log.note("snapshots", f"building tick {res.tick}'s snapshots failed on worker "
                                       f"{worker}, its clients miss them: {last}"[:300])
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
        """Hand each gateway its clients' frames: one call per gateway per tick; publish a
        world sample and ask the gateways with spectators to send it."""
        per: dict[Gateway | RemoteGateway, list[tuple[Any, Any]]] = {}
        samples = []
        with self._lock:
            by_sid = self.by_sid
            for sid, payload in results:
                if sid == spectators.WORLD_SESSION:
                    samples.append(payload)
                    continue
                c = by_sid.get(sid)
                if c is not None:
                    per.setdefault(c.gateway, []).append((c, payload))
            held = self.sessions.held() if samples else frozenset()
        for gw, items in per.items():
            gw.call_soon(gw.deliver, items)
        if samples:
            self.board.publish(samples, held)
            for gw in self.gateways:
                if gw.spectators:
                    gw.call_soon(gw.push_views)

    # ---- HTTP ------------------------------------------------------------------------------------
    def http(self, connection: Any, request: Any) -> Any:
        """``process_request`` of every gateway: /stats, /metrics and the live page's files;
        None lets the websocket handshake go on."""
        path, resp = http_answer(self.settings, connection, request)
        if path is None:
            return resp
        return respond_document(connection, *self.stats_document(path))

    def stats_document(self, path: str) -> tuple[int, str, str]:
        """``/stats`` (JSON) or ``/metrics`` (Prometheus text): (status, body, content type)."""
        if path == "/stats":
            return HTTPStatus.OK, json.dumps(self.stats(), indent=1) + "\n", "application/json"
        histograms: dict[str, exposition.HistogramSource] = {**self.histograms,
                                                             exposition.GC_PAUSE: self.gc}
        return (HTTPStatus.OK, exposition.render(self.stats(), histograms).decode(),
                exposition.CONTENT_TYPE)

    def stats(self) -> dict[str, Any]:
        """JSON-ready server statistics (what ``GET /stats`` returns); any thread."""
        gws = [gw.stats() for gw in self.gateways]
        counts: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for gw in self.gateways:
            counts.update(dict(gw.counters))
            errors.update(dict(gw.errors_sent))
        with self._lock:
            hub = dict(self.counters)
            active, free = len(self.sessions.by_sid), self.sessions.free
            session_counts = dict(self.sessions.counters)
            addresses = len(self.per_address)
            watching = self.spectators
        g = Counter(self.guard.counters)
        transports = self.guard.open
        for gw in self.gateways:  # gateway processes have transport guards of their own
            if isinstance(gw, RemoteGateway):
                g.update(gw.transport_counters)
                transports += gw.transports
        return {
            "tick": self.tick,
            "loop": self.loop_kind,
            "uptime_s": self.clock() - self._started if self._started else 0.0,
            "ticker": self.ticker.stats() if self.ticker else {},
            "connections": {"open": sum(x["connections"] for x in gws),
                            "playing": sum(x["playing"] for x in gws),
                            "peak": hub.get("peak", 0),
                            "accepted": counts["connections_accepted"],
                            "dropped": counts["connections_dropped"],
                            "rejected_address": hub.get("rejected_address", 0),
                            "rejected_full": hub.get("rejected_full", 0),
                            "spectators": watching,
                            "spectators_max": self.settings.max_spectators,
                            "spectators_peak": hub.get("spectators_peak", 0),
                            "rejected_spectators": hub.get("rejected_spectators", 0),
                            "spectator_inputs": counts["spectator_inputs"],
                            "addresses": addresses,
                            "max": self.max_connections,
                            "max_per_address": self.max_per_address,
                            "transports": transports,
                            "refused_descriptors": g.get("refused_descriptors", 0),
                            "hello_timeouts": counts["hello_timeouts"],
                            "idle_timeouts": counts["idle_timeouts"],
                            "control_floods": g.get("control_flood", 0),
                            "message_floods": counts["floods"],
                            "write_stalls": g.get("write_stalled", 0),
                            "read_pauses": g.get("read_paused", 0)},
            "gateways": gws,
            "sessions": {"active": active, "free": free, **session_counts},
            "messages": {"in": counts["messages_in"], "out": counts["messages_out"],
                         "bytes_in": counts["bytes_in"], "bytes_out": counts["bytes_out"],
                         "inputs": counts["inputs"], "snapshots_out": counts["snapshots_out"],
                         "snapshots_dropped": counts["snapshots_dropped"],
                         "views_out": counts["views_out"],
                         "views_dropped": counts["views_dropped"],
                         "bad": counts["bad_messages"], "rate_limited": counts["rate_limited"],
                         "errors_dropped": counts["errors_dropped"],
                         "internal_errors": counts["internal_errors"],
                         "snapshot_errors": self._snapshot_errors,
                         "errors_sent": dict(errors)},
            "settings": asdict(self.settings),
            "world": self.world.to_dict(),
            "runtime": self._runtime_metrics,
            "gc": {**self.gc.stats(), **self.gc_policy.stats()},
        }
