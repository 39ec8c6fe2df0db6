"""``paratick serve``: run the websocket game server until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import ssl
import sys
from typing import Any

HELP = "run the websocket game server (default ws://127.0.0.1:8765, /stats and /metrics on it)"
DESCRIPTION = """\
Serve a sharded world over websockets.  Clients speak paratick.msgpack.v1 (binary) or
paratick.json.v1 (text); GET /stats returns JSON statistics and GET /metrics Prometheus text on
the same port, and GET / a live page that watches the world tick (open it in a browser).
SIGINT/SIGTERM close every client (bye, close 1001; clients that do not read are cut off after
2 s), stop the workers and print the final statistics.  Player entities are pre-spawned
(--players) and lent one per session; spectators (the live page) are capped by --max-spectators.

The world defaults to one meant for play: 2x2 regions (--regions auto: one per worker) holding
the 1024 player entities plus 1000 NPCs.  `paratick sim` and `paratick run` default to arena-20k
(20,000 entities, 4x4 regions), the workload the benchmarks measure; the options mean the same
in all three.

Every client is bounded: messages per second, pings per second, bytes per frame, time to say
hello, time without a message, unread output; one client never slows the others.  Bound to an
address other than loopback, the server says what is exposed: browser origins (--origin), TLS
(--certfile/--keyfile) and who may read /stats and /metrics (--public-stats).

--backend nodes runs each worker as a node process that exchanges borders with the others over
NATS: with no --bus, a private nats-server on a free loopback port and --workers local nodes;
with --bus, that server, --bus-world as the world's name on it and --local-nodes of the nodes
started here (the rest join from other machines with `paratick node --bus URL --world NAME`
before the server starts listening).  A lost node is replaced and the world goes on from its
last checkpoint; a lost bus stops the server (exit status 1).

Exit status: 0 after SIGINT/SIGTERM or --duration, 1 when the world stopped or could not start
(a worker failed, no bus), 2 for a bad option."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from server.cli import alias
    from server.loops import LOOPS
    from server.runtime import BACKENDS
    from server.spectators import MAX_SPECTATORS
    from sim.kernels import KERNELS

    g = p.add_argument_group("network")
    g.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    g.add_argument("--port", type=int, default=8765,
                   help="TCP port, 0 for any free one (default %(default)s)")
    g.add_argument("--origin", action="append", default=[], metavar="URL",
                   help="browser origin allowed to connect, e.g. https://game.example "
                        "(repeatable; default: any origin on loopback, none elsewhere)")
    g.add_argument("--certfile", default=None,
                   help="PEM certificate chain: serve wss:// (needs --keyfile)")
    g.add_argument("--keyfile", default=None, help="PEM private key for --certfile")
    g.add_argument("--public-stats", action="store_true",
                   help="answer /stats and /metrics to every address, not only loopback "
                        "(matters only with a non-loopback --host)")
    w = p.add_argument_group("world")
    w.add_argument("--tick-rate", type=float, default=30.0, metavar="HZ",
                   help="ticks per second; each tick advances 1/HZ s of game time "
                        "(default %(default)g)")
    w.add_argument("--snapshot-rate", type=float, default=20.0,
                   help="snapshots/s per client, each sent on the tick that applies one of "
                        "the client's inputs where the rate allows (default %(default)s)")
    size = w.add_argument("--world-size", type=float, default=2048.0, metavar="W",
                          help="world width and height in world units (default %(default)g)")
    alias(w, "--world", of=size)
    w.add_argument("--regions", default="2x2", metavar="RXxRY",
                   help="region grid, e.g. 4x4, or auto: one region per worker, as square a "
                        "grid as the count allows (2x1 on 2 cores, 4x4 on 16; 2x2 with "
                        "--backend nodes) (default %(default)s)")
    count = w.add_mutually_exclusive_group()
    count.add_argument("--entities", type=int, default=None, metavar="N",
                       help="entities in the world, players included (default: --players + "
                            "1000 NPCs, 2024)")
    count.add_argument("--npcs", type=int, default=None, metavar="N",
                       help="NPC entities, instead of --entities: the world holds N + --players "
                            "(default 1000)")
    w.add_argument("--players", type=int, default=1024, metavar="P",
                   help="player entities pre-spawned = most simultaneous sessions "
                        "(default %(default)s)")
    w.add_argument("--view-radius", type=float, default=128.0,
                   help="area-of-interest radius, <= region size (default %(default)s)")
    w.add_argument("--seed", type=int, default=1, help="world seed (default %(default)s)")
    r = p.add_argument_group("runtime")
    r.add_argument("--gateways", type=int, default=None,
                   help="event loops serving clients, each on its own thread (or process: "
                        "--gateway-backend), all on one port "
                        "(default: one per core, up to 8, on a free-threaded build; 0 on a GIL "
                        "build: every client on the main event loop)")
    r.add_argument("--gateway-backend", default="threads", choices=("threads", "processes"),
                   help="where gateways run: threads (in parallel on a free-threaded build) or "
                        "processes (in parallel on any build; inputs and frames cross a local "
                        "socket; default %(default)s)")
    r.add_argument("--tick-on", default="auto", choices=("auto", "thread", "loop"),
                   help="where ticks run: loop (timer callbacks of the main event loop; inline "
                        "backend only) or thread (a ticker thread of its own); auto: loop with "
                        "--backend inline, thread with the others, whose ticks wait for their "
                        "workers (default %(default)s)")
    r.add_argument("--loop", default="auto", choices=LOOPS,
                   help="event loop of the loops serving clients: uvloop (its loop in C; GIL "
                        "builds only) or asyncio's own; auto: uvloop where it is installed "
                        "(default %(default)s)")
    r.add_argument("--backend", default="threads",
                   choices=(*BACKENDS, "nodes"),
                   help="where the workers run (default %(default)s; nodes: node processes "
                        "that exchange borders over NATS)")
    r.add_argument("--workers", type=int, default=None, metavar="W",
                   help="worker count (default: usable cores, capped at the region count)")
    r.add_argument("--kernel", default="auto", choices=("auto", *KERNELS),
                   help="tick kernel; auto (the default) is numpy, or python with --backend "
                        "interpreters, where numpy does not load")
    r.add_argument("--no-pin", action="store_true",
                   help="leave worker placement to the OS; by default, where every worker has "
                        "a core of its own, worker W is pinned to the W-th usable core (with "
                        "--backend threads, worker 0 is the ticker's own thread)")
    b = p.add_argument_group("nodes (--backend nodes)")
    b.add_argument("--bus", default=None, metavar="URL",
                   help="NATS server of the nodes, nats://HOST:PORT (default: start a private "
                        "nats-server on a free loopback port)")
    b.add_argument("--bus-world", default=None, metavar="NAME",
                   help="the world's name on the bus, the --world its nodes give to `paratick "
                        "node` (default paratick with --bus)")
    b.add_argument("--local-nodes", type=int, default=None, metavar="K",
                   help="node processes to start here (default: one per worker); the others "
                        "join with `paratick node`")
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-frame", type=int, default=4096,
                     help="largest client frame in bytes; larger closes 1009 (default %(default)s)")
    lim.add_argument("--input-rate", type=float, default=60.0,
                     help="messages/s per connection (default %(default)s)")
    lim.add_argument("--input-burst", type=float, default=10.0,
                     help="token-bucket burst (default %(default)s)")
    lim.add_argument("--max-per-address", type=int, default=1100,
                     help="connections per IP address (default %(default)s; lowered to what "
                          "the descriptor limit allows)")
    lim.add_argument("--max-connections", type=int, default=4096,
                     help="connections in total (default %(default)s; lowered to what the "
                          "descriptor limit allows)")
    lim.add_argument("--hello-timeout", type=float, default=10.0,
                     help="seconds from connecting to hello before close 1008 "
                          "(default %(default)s)")
    lim.add_argument("--idle-timeout", type=float, default=120.0,
                     help="seconds without a message from a client before close 1008 "
                          "(default %(default)s)")
    lim.add_argument("--control-rate", type=float, default=4.0,
                     help="pings and pongs per second per connection; more closes 1008 "
                          "(default %(default)s)")
    lim.add_argument("--control-burst", type=float, default=16.0,
                     help="control-frame burst (default %(default)s)")
    lim.add_argument("--write-stall-timeout", type=float, default=10.0,
                     help="seconds a client may leave its output unread before it is "
                          "disconnected (default %(default)s)")
    lim.add_argument("--send-buffer", type=int, default=256 * 1024, metavar="BYTES",
                     help="kernel send buffer per client socket; 0 lets the kernel size it "
                          "(default %(default)s)")
    lim.add_argument("--send-queue", type=int, default=4,
                     help="unsent snapshots kept per client (default %(default)s)")
    lim.add_argument("--grace", type=float, default=10.0,
                     help="seconds a dropped session keeps its entity (default %(default)s)")
    lim.add_argument("--max-spectators", type=int, default=MAX_SPECTATORS, metavar="N",
                     help="spectators watching the live page (GET /) at once; more are "
                          "refused with close 1013, 0 refuses all (default %(default)s)")
    from server.mqtt import add_mqtt_arguments

    add_mqtt_arguments(p)
    p.add_argument("--duration", type=float, default=None,
                   help="stop after this many seconds (default: run until interrupted)")


def build(args: argparse.Namespace) -> tuple[Any, Any]:
    """The world and the settings the options describe.

    Raises:
        ValueError: an option is out of range or contradicts another (ConfigError for the
            world's).
    """
    from server.runtime.bus import check_token
    from server.runtime.cli import node_option_error
    from server.settings import ServerSettings, auto_regions, default_gateways, default_kernel
    from sim.config import WorldConfig, parse_grid

    bad = node_option_error(args.backend, args.bus, args.bus_world, args.local_nodes,
                            args.workers, world_flag="--bus-world")
    if bad:
        raise ValueError(bad)
    if args.bus_world is not None:
        check_token("world name (--bus-world)", args.bus_world)  # MessageError: a ValueError

    if args.regions == "auto":
        rx, ry = auto_regions(args.backend, args.workers, args.world_size, args.world_size,
                              args.view_radius)
    else:
        rx, ry = parse_grid(args.regions)
    world = WorldConfig(width=args.world_size, height=args.world_size, regions_x=rx,
                        regions_y=ry, tick_rate=args.tick_rate, view_radius=args.view_radius,
                        seed=args.seed)
    if args.entities is not None:  # --entities counts the players too, as in sim and run
        npcs = args.entities - args.players
        if npcs < 0:
            raise ValueError(f"--entities {args.entities} is fewer than --players "
                             f"{args.players} (the players are entities too)")
    else:
        npcs = ServerSettings.npcs if args.npcs is None else args.npcs
    settings = ServerSettings(
        host=args.host, port=args.port, snapshot_rate=args.snapshot_rate, players=args.players,
        npcs=npcs, backend=args.backend, workers=args.workers,
        kernel=default_kernel(args.backend) if args.kernel == "auto" else args.kernel,
        pin=not args.no_pin,
        max_frame=args.max_frame, input_rate=args.input_rate, input_burst=args.input_burst,
        max_per_address=args.max_per_address, max_connections=args.max_connections,
        send_queue=args.send_queue, grace=args.grace, hello_timeout=args.hello_timeout,
        idle_timeout=args.idle_timeout, control_rate=args.control_rate,
        control_burst=args.control_burst, write_stall_timeout=args.write_stall_timeout,
        send_buffer=args.send_buffer or None,
        origins=tuple(args.origin), certfile=args.certfile, keyfile=args.keyfile,
        public_stats=args.public_stats, max_spectators=args.max_spectators,
        bus=args.bus, bus_world=args.bus_world, local_nodes=args.local_nodes,
        gateways=default_gateways() if args.gateways is None else args.gateways,
        gateway_backend=args.gateway_backend, loop=args.loop, tick_on=args.tick_on,
        # The world, the workers, every module and each client's objects live long: out of
        # the collector's full scans (server.gcfreeze).
        freeze_objects=True)
    settings.check_world(world.tick_rate)
    return world, settings


def _gateways(n: int, backend: str = "threads") -> str:
    where = "thread" if backend == "threads" else "process"
    return "clients on the main event loop" if n == 0 else \
        f"{n} gateway {where}{'es' if n > 1 and where == 'process' else 's' if n > 1 else ''}"


def run(args: argparse.Namespace) -> int:
    from server import loops
    from server.host import tune
    from server.runtime.errors import RuntimeFault
    from sim.errors import ConfigError

    try:
        world, settings = build(args)
        from server.mqtt import mqtt_options
        mqtt = mqtt_options(args)
    except (ConfigError, ValueError) as exc:
        print(f"paratick serve: {exc}", file=sys.stderr)
        return 2
    for path in (settings.certfile, settings.keyfile):
        if path is not None and not os.access(path, os.R_OK):
            print(f"paratick serve: cannot read {path}", file=sys.stderr)
            return 2
    tune()
    try:
        final = loops.run(_serve(world, settings, mqtt, args.duration), settings.loop)
    except ssl.SSLError as exc:
        print(f"paratick serve: bad certificate or key: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is in use
        print(f"paratick serve: cannot listen on {settings.host}:{settings.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 2
    except RuntimeFault as exc:  # the world could not start (no bus, a worker failed): one line
        print(f"paratick serve: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    print(json.dumps(final, indent=1))
    return 1 if final["ticker"].get("fault") else 0


async def _serve(world: Any, settings: Any, mqtt: Any,
                 duration: float | None) -> dict[str, Any]:
    import asyncio
    import signal

    from server.app import GameServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = GameServer(world, settings)
    local, workers = settings.local_nodes, settings.workers
    if settings.bus is not None and local is not None and (workers is None or local < workers):
        from server.runtime.backends.nodes import DEFAULT_WORLD

        print(f"paratick: waiting for the nodes on {settings.bus}; start them with "
              f"`paratick node --bus {settings.bus} --world {settings.bus_world or DEFAULT_WORLD}`",
              file=sys.stderr, flush=True)
    await server.start()
    scheme = "wss" if settings.certfile else "ws"
    backend = f"{settings.backend} backend"
    if settings.backend == "nodes":
        rt = server.runtime
        backend = f"nodes backend: {rt.workers} nodes, world {rt.world!r} on {rt.bus}"
    print(f"paratick: serving {scheme}://{settings.host}:{server.port} "
          f"({world.regions_x}x{world.regions_y} regions, {backend}, "
          f"{world.tick_rate:g} Hz ticks, {settings.snapshot_rate:g} Hz snapshots, "
          f"{_gateways(settings.gateways, settings.gateway_backend)}); "
          f"stats at http{'s' if settings.certfile else ''}://{settings.host}:{server.port}"
          f"/stats, live page at http{'s' if settings.certfile else ''}://{settings.host}:"
          f"{server.port}/", file=sys.stderr, flush=True)
    publisher = None
    if mqtt:
        from server.mqtt import publish_stats

        publisher = asyncio.create_task(publish_stats(server.stats, mqtt))
    failed = asyncio.create_task(server.failed.wait())
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([failed, stopped], timeout=duration,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        failed.cancel()
        stopped.cancel()
        if publisher is not None:
            publisher.cancel()  # it publishes a retained "offline" status on its way out
            with contextlib.suppress(BaseException):
                async with asyncio.timeout(2.0):
                    await publisher
        print("paratick: shutting down", file=sys.stderr, flush=True)
        final = await server.stop()
    return final
