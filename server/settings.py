"""Server settings, and the HTTP answers any gateway gives without asking the hub.

:class:`ServerSettings` is everything about the server that is not the world; the hub
(:mod:`server.app`) and every gateway, on a thread or in a process of its own
(:mod:`server.gateway_process`), read the same settings.  :func:`respond_static` and
:func:`stats_allowed` answer what needs no hub: the live page's files and who may read the
statistics.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from server import host, loops, spectators
from server.connection import ConnectionLimits, ControlLimits
from server.transport import SEND_BUFFER, TransportLimits
from sim.config import grid_of

#: The connection rules' and the transport's own defaults (one home for each value).
_RULES = ConnectionLimits()
_CONTROL = ControlLimits()
_TRANSPORT = TransportLimits()
#: More gateways than this would only add threads that contend for the same cores.
MAX_GATEWAYS = 64


def _load_static() -> dict[str, tuple[str, str]]:
    """The live page's files (``server/web/``) by URL path: (text, Content-Type).

    Only files directly in the folder with a known type are served, looked up by exact name: a
    path naming anything else (``..``, a subfolder, an encoded slash) is simply not a key.
    """
    from importlib import resources

    types = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
             ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
    out: dict[str, tuple[str, str]] = {}
    try:
        root = resources.files("server") / "web"
        entries = list(root.iterdir())
    except (FileNotFoundError, NotADirectoryError, ModuleNotFoundError):
        return out
    for entry in entries:
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in types:
            out["/" + entry.name] = (entry.read_text(encoding="utf-8"), types[suffix])
    if "/index.html" in out:
        out["/"] = out["/index.html"]
    return out


#: URL path -> (body, Content-Type) of the live page (``GET /``), read once.
STATIC: dict[str, tuple[str, str]] = _load_static()
#: Headers of every static answer: always revalidate (a new server may ship a new page), never
#: sniff types, load scripts and open websockets to this server only ('self' covers ws:// and
#: wss:// to the page's own host and port in CSP Level 3, which current browsers implement).
STATIC_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                  "Content-Security-Policy": "default-src 'self'; "
                                             "img-src 'self' data:; base-uri 'none'; "
                                             "frame-ancestors 'none'"}


def default_gateways(*, free_threaded: bool | None = None, cores: int | None = None) -> int:
    """Gateways to run by default: one per usable core (at most 8) on a free-threaded build
    with at least two cores, where they run in parallel; 0 (the single-loop server) with the
    GIL, where gateway threads would only take turns."""
    if free_threaded is None:
        free_threaded = host.free_threaded() and not host.gil_enabled()
    if cores is None:
        cores = host.usable_cores()
    return min(cores, 8) if free_threaded and cores >= 2 else 0


def default_kernel(backend: str) -> str:
    """The tick kernel a server runs by default: numpy, except on subinterpreters, where numpy
    does not load.  A served world's ticks and snapshots cost the shard workers less with it:
    400 bots on the 4x4-region world of ``bench load``, 2-core VM, GIL build, shard workers in
    processes: 0.58-0.59 against 0.75-0.78 ms of CPU per bot-second per worker, tick p50 5.0
    against 7.6 ms.  Both kernels tick the same world bit for bit."""
    return "python" if backend == "interpreters" else "numpy"


#: The grid ``--regions auto`` gives the nodes backend: nodes on several machines must agree on
#: it, so it does not depend on any one machine's cores.
NODES_REGIONS = (2, 2)


def auto_regions(backend: str, workers: int | None, width: float, height: float,
                 view_radius: float) -> tuple[int, int]:
    """The region grid of ``--regions auto``: one region per worker (``workers``, else the
    usable cores; one for ``inline``), as square as the count allows, no region narrower than
    two view radii where a square grid avoids it (:func:`sim.config.grid_of`); the nodes
    backend: :data:`NODES_REGIONS`.

    A worker owning several regions ticks them as one group but still builds, sends and takes
    in the borders and view rows between them: at 400 bots on 2 cores (``bench load``, GIL
    build, 2 worker processes, 2-core VM) the server used 1.60 ms of CPU per bot-second with
    2x1 regions against 2.02 with 4x4, and held 625 bots against 500.
    """
    if backend == "nodes":
        return NODES_REGIONS
    count = 1 if backend == "inline" else workers or host.usable_cores()
    return grid_of(count, width, height, 2 * view_radius)


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
        pin: pin each worker to a core of its own where every worker has one (the runtime's
            rule); False leaves placement to the OS.  Never for nodes.
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
        gateways: event loops serving clients, all on one port, each on a thread or in a
            process of its own (``gateway_backend``); 0 serves every client from the caller's
            event loop (:func:`default_gateways` chooses from the build and the cores).
        gateway_backend: ``threads`` (parallel on a free-threaded build; the gateways share
            the hub's tables directly) or ``processes`` (:mod:`server.gateway_process`:
            parallel on any build; inputs and frames cross a socket as msgpack).
        loop: the event loop of every loop serving clients (:mod:`server.loops`): ``auto``
            (uvloop where it installs, else asyncio's), ``asyncio`` or ``uvloop``.
        tick_on: where ticks run (:class:`server.ticker.Ticker`): ``thread`` (a ticker thread of
            its own), ``loop`` (timer callbacks of the hub's event loop; inline backend only) or
            ``auto`` (:meth:`ticks_on_loop`).
        max_spectators: spectators at most (:data:`server.spectators.MAX_SPECTATORS`); more
            get ``spectators_full`` and close 1013; 0 refuses every spectator.
        bus, bus_world, local_nodes: with ``backend="nodes"``, the NATS server
            (``nats://HOST:PORT``; None starts a private one), the world's name on it and the
            node processes started here (:class:`server.runtime.recovery.ResilientNodes`).
        freeze_objects: keep long-lived objects out of the collector's full scans
            (:mod:`server.gcfreeze`): once started, collect and freeze every object alive (the
            world, the workers, the modules); on builds with the GIL also freeze again as the
            clients grow in number, and collect in full once many have left.  Gateway processes
            do the same for their own clients.  A
            choice for the whole process: ``paratick serve`` makes it; the default leaves the
            collector alone, for processes that start and stop many servers.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    snapshot_rate: float = 20.0
    players: int = 1024
    npcs: int = 1000
    backend: str = "threads"
    workers: int | None = None
    kernel: str = "python"
    pin: bool = True
    max_frame: int = _RULES.max_frame
    input_rate: float = _RULES.input_rate
    input_burst: float = _RULES.input_burst
    max_strikes: int = _RULES.max_strikes
    hello_timeout: float = _RULES.hello_timeout
    idle_timeout: float = _RULES.idle_timeout
    control_rate: float = _CONTROL.rate
    control_burst: float = _CONTROL.burst
    write_stall_timeout: float = _TRANSPORT.write_stall_timeout
    send_buffer: int | None = SEND_BUFFER
    max_per_address: int = 1100
    max_connections: int = 4096
    send_queue: int = 4
    grace: float = 10.0
    origins: tuple[str, ...] = field(default=())
    certfile: str | None = None
    keyfile: str | None = None
    public_stats: bool = False
    gateways: int = 0
    gateway_backend: str = "threads"
    loop: str = "auto"
    tick_on: str = "auto"
    max_spectators: int = spectators.MAX_SPECTATORS
    bus: str | None = None
    bus_world: str | None = None
    local_nodes: int | None = None
    freeze_objects: bool = False

    def __post_init__(self) -> None:
        for name in ("snapshot_rate", "grace"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("players", "max_per_address", "max_connections", "send_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.npcs < 0:
            raise ValueError("npcs must be >= 0")
        if self.max_spectators < 0:
            raise ValueError("max_spectators must be >= 0")
        if not 0 <= self.gateways <= MAX_GATEWAYS:
            raise ValueError(f"gateways must be in 0..{MAX_GATEWAYS}, got {self.gateways}")
        if self.gateway_backend not in GATEWAY_BACKENDS:
            raise ValueError(f"gateway_backend must be one of {', '.join(GATEWAY_BACKENDS)}, "
                             f"got {self.gateway_backend!r}")
        loops.resolve(self.loop)  # ValueError: unknown, or uvloop where it does not install
        if self.tick_on not in TICK_ON:
            raise ValueError(f"tick_on must be one of {', '.join(TICK_ON)}, got {self.tick_on!r}")
        if self.tick_on == "loop" and self.backend != "inline":
            raise ValueError("ticking on the event loop needs the inline backend (the other "
                             "backends wait for their workers during a tick, which would stall "
                             "the loop)")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("TLS needs both a certificate file and a key file")
        if self.backend != "nodes" and (self.bus or self.bus_world or self.local_nodes is not None):
            raise ValueError("bus, bus_world and local_nodes need backend 'nodes'")
        self.connection_limits()  # validates the connection rules
        self.transport_limits(self.max_connections, self.max_per_address)

    def check_world(self, tick_rate: float) -> None:
        """Refuse settings that cannot hold with a world ticking at ``tick_rate`` Hz.

        Raises:
            ValueError: more snapshots a second than ticks (a client gets at most one a tick).
        """
        if self.snapshot_rate > tick_rate:
            raise ValueError(f"snapshot rate {self.snapshot_rate:g} Hz exceeds the tick rate "
                             f"{tick_rate:g} Hz: a client gets at most one snapshot per tick")

    def ticks_on_loop(self) -> bool:
        """Whether ticks run on the hub's event loop: asked for, or ``auto`` with the inline
        backend (:mod:`server.ticker` says why); the other backends' steps wait for their
        workers, so they tick on a thread of their own."""
        if self.tick_on != "auto":
            return self.tick_on == "loop"
        return self.backend == "inline"

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

    def websocket_origins(self) -> list[str | None] | None:
        """websockets' ``origins``: None checks nothing; None in the list admits no Origin."""
        if not self.origins and self.loopback:
            return None
        return [None, *self.origins]

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.certfile is None or self.keyfile is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.certfile, self.keyfile)
        return ctx


#: Where gateways run (:attr:`ServerSettings.gateway_backend`).
GATEWAY_BACKENDS = ("threads", "processes")
#: Where ticks run (:attr:`ServerSettings.tick_on`).
TICK_ON = ("auto", "thread", "loop")


def stats_allowed(settings: ServerSettings, connection: Any) -> bool:
    """Whether ``/stats`` and ``/metrics`` answer this HTTP client: loopback clients, or
    everyone when the server is bound to loopback or ``public_stats`` is set."""
    if settings.loopback or settings.public_stats:
        return True
    peer = connection.remote_address[0] if connection.remote_address else ""
    return is_loopback(str(peer))


def http_answer(settings: ServerSettings, connection: Any, request: Any,
                ) -> tuple[str | None, Any]:
    """What a gateway answers to an HTTP request without the hub: ``(None, response)`` (the live
    page, 404, 403 for statistics asked from outside; a None response lets a websocket handshake
    go on), or ``(path, None)``: the hub's figures at ``path`` (``/stats``, ``/metrics``), to
    answer with :func:`respond_document`."""
    path = request.path.split("?", 1)[0]
    if path not in ("/stats", "/metrics"):
        return None, respond_static(connection, request, path)
    if not stats_allowed(settings, connection):
        return None, connection.respond(HTTPStatus.FORBIDDEN,
                                        "statistics are served to loopback clients only\n")
    return path, None


def respond_document(connection: Any, status: int, body: str, ctype: str) -> Any:
    """An HTTP response of ``body`` with its content type."""
    resp = connection.respond(HTTPStatus(status), body)
    del resp.headers["Content-Type"]
    resp.headers["Content-Type"] = ctype
    return resp


def respond_static(connection: Any, request: Any, path: str) -> Any:
    """A plain GET of the live page's files (or 404); None for a websocket handshake."""
    if _is_upgrade(request):
        return None  # continue with the websocket handshake
    found = STATIC.get(path)
    if found is None:
        return connection.respond(HTTPStatus.NOT_FOUND,
                                  "not found: this server answers /, /stats, /metrics and "
                                  "websocket clients\n")
    body, ctype = found
    resp = connection.respond(HTTPStatus.OK, body)
    del resp.headers["Content-Type"]
    resp.headers["Content-Type"] = ctype
    for name, value in STATIC_HEADERS.items():
        resp.headers[name] = value
    return resp


def _is_upgrade(request: Any) -> bool:
    """Whether an HTTP request asks for a websocket (``Upgrade: websocket``).  A request object
    without headers (as unit tests build) counts as one: only plain GETs get static answers."""
    headers = getattr(request, "headers", None)
    if headers is None:
        return True
    return "websocket" in str(headers.get("Upgrade", "")).lower()


def is_loopback(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
