"""``paratick run``: tick a sharded world on one backend and print MSPT, GIL state and the digest.

The same options on every backend give the same digest, the one ``paratick sim`` prints for the
same world options (``--check`` also ticks the single-thread reference :class:`sim.world.World`
and compares).  Players get the scripted inputs of :func:`sim.scripted.scripted_inputs` (as in
``paratick sim``), so a run is a pure function of its options.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from server.cli import add_world_arguments, alias
from sim.kernels import KERNELS

HELP = ("tick a sharded world on inline/threads/interpreters/processes workers or NATS nodes; "
        "print MSPT + digest")
DESCRIPTION = """\
Tick a world split into regions on parallel workers (threads, subinterpreters with one GIL each,
or processes; inline ticks them in this thread), paced at --tick-rate, and print the tick rate
reached, MSPT percentiles per shard and per worker, the GIL state inside each worker and the
final digest.  The same options give the same digest on every backend, the one `paratick sim`
prints for the same world options; --check ticks that reference too and compares.

--backend nodes runs each worker as a node process (`paratick node`) that exchanges borders with
the others over NATS: with no --bus, a private nats-server on a free loopback port and
--workers local nodes; with --bus, that server, and --local-nodes of the nodes started here (the
rest join from other machines with `paratick node --bus URL --world NAME`).  A lost node is
replaced and the world goes on from its last checkpoint; a lost bus stops the world (exit
status 1, one line saying so), whether or not the NATS server comes back.

The world defaults are arena-20k (20,000 entities, 4x4 regions, a 2048 x 2048 world, seed 1),
as for `paratick sim` and the benchmarks; `paratick serve` defaults to a smaller world meant for
play.  Exit status: 0, 1 when a worker failed or the digests differ, 2 for a bad option."""

#: Seconds between progress lines on stderr (long runs only).
PROGRESS_EVERY = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from server.runtime.runtime import BACKENDS

    w = parser.add_argument_group("world")
    add_world_arguments(w, grid_example="8x2")
    g = parser.add_argument_group("runtime")
    g.add_argument("--backend", choices=(*BACKENDS, "nodes"), default="threads",
                   help="where the workers run (default threads; nodes: node processes that "
                        "exchange borders over NATS)")
    g.add_argument("--workers", type=int, default=None, metavar="W",
                   help="worker count (default: usable cores, capped at the region count)")
    g.add_argument("--kernel", choices=KERNELS, default="python",
                   help="tick kernel (default python; numpy cannot run with --backend "
                        "interpreters)")
    b = parser.add_argument_group("nodes (--backend nodes)")
    b.add_argument("--bus", default=None, metavar="URL",
                   help="NATS server of the nodes, nats://HOST:PORT (default: start a private "
                        "nats-server on a free loopback port)")
    b.add_argument("--world", default=None, metavar="NAME",
                   help="the world's name on the bus (default paratick with --bus)")
    b.add_argument("--local-nodes", type=int, default=None, metavar="K",
                   help="node processes to start here (default: one per worker); the others "
                        "join with `paratick node`")
    r = parser.add_argument_group("run")
    r.add_argument("--ticks", type=int, default=300, metavar="T",
                   help="ticks to run (default 300)")
    pace = r.add_mutually_exclusive_group()
    rate = pace.add_argument("--tick-rate", type=float, default=30.0, metavar="HZ",
                             help="ticks per second: the pace, and each tick advances 1/HZ s of "
                                  "game time (default 30)")
    alias(pace, "--rate", of=rate)
    pace.add_argument("--flat-out", action="store_true",
                      help="no pacing: tick as fast as possible (ticks of 1/30 s)")
    r.add_argument("--overload", choices=("dilate", "catch-up"), default="dilate",
                   help="when ticks overrun: slow the world clock (dilate, the default) or "
                        "catch up (bounded)")
    r.add_argument("--tick-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="watchdog: seconds a worker may take for one tick (default 30)")
    r.add_argument("--no-pin", action="store_true",
                   help="leave worker placement to the OS; by default, where every worker has a "
                        "core of its own, worker W is pinned to the W-th usable core (and kept "
                        "from preempting the coordinator on wake-up), which removes ticks lost "
                        "to two workers sharing a core; with --backend threads the thread that "
                        "coordinates ticks worker 0 itself and is kept on the first core")
    r.add_argument("--check", action="store_true",
                   help="also tick the single-thread reference World and compare digests")
    r.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    r.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def node_option_error(backend: str, bus: str | None, world: str | None,
                      local_nodes: int | None, workers: int | None, *,
                      world_flag: str = "--world") -> str | None:
    """What is wrong with the nodes options (``--bus``, the world name's ``world_flag``,
    ``--local-nodes``) given with ``backend``, or None; ``paratick serve`` checks the same."""
    if backend != "nodes" and (bus or world or local_nodes is not None):
        return f"--bus, {world_flag} and --local-nodes need --backend nodes"
    if local_nodes is not None and local_nodes < 0:
        return f"--local-nodes must be >= 0, got {local_nodes}"
    if backend == "nodes" and bus is None and local_nodes not in (None, workers):
        return "--local-nodes needs --bus: a private bus has only local nodes"
    return None


def _fail(msg: str) -> int:
    print(f"paratick run: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from server.clock import MonotonicClock
    from server.host import free_threaded, tune
    from server.runtime import (
        BackendUnavailable,
        Runtime,
        RuntimeConfigError,
        RuntimeFault,
        TickScheduler,
    )
    from server.runtime.bus import BusError, BusUnreachable
    from server.runtime.errors import MessageError
    from server.runtime.natsd import NatsdError
    from server.runtime.recovery import ResilientNodes
    from server.runtime.scheduler import run as run_paced
    from sim.config import WorldConfig, parse_grid
    from sim.errors import SimError
    from sim.scripted import scripted_inputs
    from sim.world import World, spawn

    if args.ticks < 1:
        return _fail(f"--ticks must be >= 1, got {args.ticks}")
    bad = node_option_error(args.backend, args.bus, args.world, args.local_nodes, args.workers)
    if bad:
        return _fail(bad)
    if args.entities < 0 or not 0 <= args.players <= args.entities:
        return _fail("need 0 <= --players <= --entities")
    tune()
    try:
        rx, ry = parse_grid(args.regions)
        config = WorldConfig(width=args.world_size, height=args.world_size, regions_x=rx,
                             regions_y=ry, tick_rate=args.tick_rate, seed=args.seed)
        rows = spawn(config, args.entities, players=args.players)
        sched = TickScheduler(rate=args.tick_rate, flat_out=args.flat_out,
                              overload=args.overload)
        started = time.perf_counter()
        rt: Runtime | ResilientNodes
        if args.backend == "nodes":  # survives a lost node (server/runtime/recovery.py)
            rt = ResilientNodes(config, rows, bus=args.bus, world=args.world,
                                local_nodes=args.local_nodes, workers=args.workers,
                                kernel=args.kernel, tick_timeout=args.tick_timeout)
        else:
            rt = Runtime(config, rows, backend=args.backend, workers=args.workers,
                         kernel=args.kernel, tick_timeout=args.tick_timeout,
                         pin=not args.no_pin)
    except (SimError, RuntimeConfigError, BackendUnavailable, MessageError) as exc:
        return _fail(str(exc).splitlines()[0])  # the options' fault
    except (BusUnreachable, NatsdError) as exc:  # no bus: one line, no traceback
        print(f"paratick run: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except RuntimeFault as exc:  # a worker failed to start
        print(f"paratick run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    startup = time.perf_counter() - started
    clock = MonotonicClock()
    last = [clock.now()]
    t_run = clock.now()

    def progress(i: int) -> None:
        now = clock.now()
        if not args.quiet and now - last[0] >= PROGRESS_EVERY:
            last[0] = now
            m = rt.metrics()
            print(f"  tick {i + 1}/{args.ticks}  {m.ticks_per_s:.1f} ticks/s  "
                  f"mspt p50 {m.step['p50']:.2f} ms", file=sys.stderr, flush=True)

    try:
        with rt:
            tick = [0]

            def step() -> None:
                rt.step(scripted_inputs(args.seed, args.players, tick[0]))
                tick[0] += 1

            stats = run_paced(step, sched, clock, args.ticks, progress)
            wall = clock.now() - t_run
            digest = rt.digest()
            metrics = rt.metrics(scheduler=stats.to_dict()).to_dict()
    except BusError as exc:  # the bus went away while the world ran: one line, no traceback
        print(f"paratick run: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except RuntimeFault as exc:
        print(f"paratick run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    ref = None
    if args.check:
        world = World(config, rows, kernel=args.kernel)
        for t in range(args.ticks):
            world.step(scripted_inputs(args.seed, args.players, t))
        ref = world.digest()
    doc: dict[str, Any] = {
        "backend": args.backend, "workers": rt.workers, "kernel": args.kernel,
        "python": sys.version.split()[0],
        "free_threaded": free_threaded(),
        "config": config.to_dict(), "entities": args.entities, "players": args.players,
        "ticks": args.ticks, "rate": None if args.flat_out else args.tick_rate,
        "startup_s": startup, "wall_s": wall, "ticks_per_s": args.ticks / wall if wall else None,
        "digest": digest, "reference_digest": ref, "metrics": metrics}
    if isinstance(rt, ResilientNodes):
        doc["nodes"] = rt.nodes
        doc["recoveries"] = [{k: v for k, v in r.items() if k != "owners"}
                             for r in rt.recoveries]
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        _print_text(doc)
    return 1 if ref is not None and ref != digest else 0


def _ms(x: float | None) -> str:
    return "     -" if x is None else f"{x:6.2f}"


def _print_text(doc: dict[str, Any]) -> None:
    m = doc["metrics"]
    gil = " ".join("on" if g else "off" for g in m["worker_gil"])
    build = "free-threaded" if doc["free_threaded"] else "GIL build"
    pace = "flat out" if doc["rate"] is None else f"target {doc['rate']:g} Hz"
    print(f"backend {doc['backend']}  workers {doc['workers']}  kernel {doc['kernel']}  "
          f"python {doc['python']} ({build})")
    own = "  (each subinterpreter has its own GIL)" if doc["backend"] == "interpreters" \
        and not doc["free_threaded"] else ""
    print(f"GIL inside workers: {gil}{own}")
    cpus = [w.get("cpu") for w in m["workers"]]
    if any(c is not None for c in cpus):
        print("workers pinned to cores " + ", ".join(map(str, cpus)))
    print(f"{doc['ticks']} ticks, {doc['entities']} entities, regions "
          f"{doc['config']['regions_x']}x{doc['config']['regions_y']}: {doc['wall_s']:.2f} s "
          f"-> {doc['ticks_per_s']:.1f} ticks/s ({pace}; start-up {doc['startup_s']:.2f} s)")
    s = m.get("scheduler") or {}
    if doc["rate"] is not None:
        print(f"deadline misses {s.get('deadline_misses', 0)}  dilation {s.get('dilation', 1):.2f}"
              f" (min {s.get('min_dilation', 1):.2f})  skipped {s.get('skipped', 0)}")
    st = m["mspt"]
    print(f"tick MSPT (coordinator)  p50 {_ms(st['p50'])}  p95 {_ms(st['p95'])}  "
          f"p99 {_ms(st['p99'])}  max {_ms(st['max'])}")
    co = m.get("coordination_ms") or {}
    if co.get("n"):
        ticks = max(1, doc["ticks"])
        sent = sum(w["channel"].get("messages_sent", 0) for w in m["workers"])
        sent_b = sum(w["channel"].get("bytes_sent", 0) for w in m["workers"])
        # threads hand message objects over: nothing is encoded, so no bytes to count
        carried = (f"{sent_b / ticks / 1e3:.1f} kB" if sent_b or doc["backend"] != "threads"
                   else "handed over in memory, not encoded")
        print(f"lockstep coordination    p50 {_ms(co['p50'])}  p95 {_ms(co['p95'])}  "
              f"p99 {_ms(co['p99'])}  max {_ms(co['max'])}  (tick less the slowest worker's "
              f"compute, ticks right after a shard checkpoint left out; {sent / ticks:.1f} "
              f"messages sent by workers per tick, {carried})")
    print("region worker entities   p50    p95    p99    max   (advance ms, last "
          f"{m['shards'][0]['mspt']['n']} ticks)")
    for sh in m["shards"]:
        q = sh["mspt"]
        print(f"{sh['region']:6d} {sh['worker']:6d} {sh['entities']:8d} {_ms(q['p50'])} "
              f"{_ms(q['p95'])} {_ms(q['p99'])} {_ms(q['max'])}")
    print("worker   tick p50  p99   wait p50  msgs sent  bytes sent  cmsgpack")
    for w in m["workers"]:
        q, b, ch = w["mspt"], w["border_wait_ms"], w["channel"]
        print(f"{w['worker']:6d}  {_ms(q['p50'])} {_ms(q['p99'])}  {_ms(b['p50'])}  "
              f"{ch.get('messages_sent', 0):9d}  {ch.get('bytes_sent', 0):10d}  "
              f"{'yes' if w['cmsgpack'] else 'no (pure-Python fallback)'}")
    for r in doc.get("recoveries", ()):
        print(f"recovered at tick {r['tick']}: lost node {r['lost']} ({r['reason']}); restarted "
              f"from the checkpoint of tick {r['checkpoint']}, replayed {r['replayed']} ticks, "
              f"paused {r['pause_s']:.2f} s")
    print(f"digest {doc['digest']}" + ("" if doc["reference_digest"] is None else
          ("  (matches the reference World)" if doc["reference_digest"] == doc["digest"]
           else f"  MISMATCH: reference {doc['reference_digest']}")))
