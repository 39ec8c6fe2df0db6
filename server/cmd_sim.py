"""``paratick sim``: tick a world headless in this thread and report its speed and final digest.

The world is :class:`sim.world.World` (every region ticked in turn in one thread: the reference
the parallel runtime is checked against), so the digest printed here is the one every backend
must reproduce for the same options: ``paratick run`` takes the same world options with the
same defaults (arena-20k).  Players, if any, are driven by :func:`sim.scripted.scripted_inputs`,
a pure function of (seed, player id, tick), so runs are repeatable byte for byte.

Exit status: 0 on success, 2 when the options describe a world that cannot run (the message
says which option and why; no traceback).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from server.cli import add_world_arguments
from server.host import interpreter
from sim.config import WorldConfig, parse_grid
from sim.errors import SimError
from sim.kernels import KERNELS
from sim.scripted import scripted_inputs

HELP = "tick a world headless; print ticks/s, entity-updates/s and the final digest"
DESCRIPTION = """\
Tick a world of N entities split into RXxRY regions for T ticks in this thread (the reference
for every parallel backend) and print ticks/s, entity-updates/s (entities x ticks / s), the
final state digest, and the interpreter with its GIL state.  Same options, same digest: `paratick
run` with the same world options reaches the same one on every backend.

The defaults are arena-20k (20,000 entities, 4x4 regions, a 2048 x 2048 world, seed 1), the
workload every benchmark measures; `paratick serve` defaults to a smaller world meant for play.
Ticks run as fast as they can; --tick-rate sets the length of a tick (1/HZ of game time)."""

#: Seconds between progress lines on stderr (long runs only; a run shorter than this is silent).
PROGRESS_EVERY_S = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    w = parser.add_argument_group("world")
    add_world_arguments(w)
    w.add_argument("--tick-rate", type=float, default=30.0, metavar="HZ",
                   help="ticks per second of game time: each tick advances 1/HZ s (default 30; "
                        "sim itself ticks as fast as it can)")
    w.add_argument("--kernel", default="python", choices=KERNELS,
                   help="tick kernel (default python)")
    r = parser.add_argument_group("run")
    r.add_argument("--ticks", type=int, default=300, metavar="T",
                   help="timed ticks (default 300, ten seconds of game time at 30 Hz)")
    r.add_argument("--warmup", type=int, default=5, metavar="W",
                   help="untimed ticks before timing (default 5); they count in the digest")
    r.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    r.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def _fail(msg: str) -> int:
    print(f"paratick sim: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from server.host import tune
    from sim.world import World, spawn

    if args.ticks < 0 or args.warmup < 0:
        return _fail(f"--ticks and --warmup must be >= 0, got {args.ticks} and {args.warmup}")
    tune()  # as run and serve do
    try:
        rx, ry = parse_grid(args.regions)
        config = WorldConfig(width=args.world_size, height=args.world_size, regions_x=rx,
                             regions_y=ry, tick_rate=args.tick_rate, seed=args.seed)
        world = World(config, spawn(config, args.entities, players=args.players),
                      kernel=args.kernel)
    except SimError as exc:
        return _fail(str(exc))
    seed, players = args.seed, args.players
    for _ in range(args.warmup):
        world.step(scripted_inputs(seed, players, world.tick))
    t0 = last = time.perf_counter()
    for k in range(args.ticks):
        world.step(scripted_inputs(seed, players, world.tick))
        now = time.perf_counter()
        if now - last >= PROGRESS_EVERY_S and not (args.json or args.quiet):
            last = now
            print(f"  tick {k + 1}/{args.ticks}  {(k + 1) / (now - t0):.1f} ticks/s",
                  file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - t0
    tps = args.ticks / elapsed if elapsed > 0 else 0.0
    result = {"entities": len(world), "regions": f"{rx}x{ry}", "kernel": args.kernel,
              "world_size": args.world_size, "tick_rate": args.tick_rate,
              "seed": seed, "players": players, "warmup": args.warmup, "ticks": args.ticks,
              "tick": world.tick, "seconds": elapsed, "ticks_per_s": tps,
              "entity_updates_per_s": tps * len(world), "digest": world.digest(),
              "interpreter": interpreter()}
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    it = result["interpreter"]
    print(f"world        {len(world)} entities ({players} players), {rx}x{ry} regions, "
          f"{args.world_size:g} x {args.world_size:g} at {args.tick_rate:g} Hz, seed {seed}, "
          f"kernel {args.kernel}")
    print(f"ticks        {args.ticks} timed (+{args.warmup} warm-up) in {elapsed:.3f} s")
    print(f"ticks/s      {tps:.1f}")
    print(f"updates/s    {tps * len(world) / 1e6:.3f} M entity-updates/s")
    print(f"digest       {result['digest']} (tick {world.tick})")
    print(f"interpreter  CPython {it['version']}"
          f"{' free-threaded' if it['free_threaded'] else ''}, "
          f"GIL {'enabled' if it['gil_enabled'] else 'disabled'}")
    return 0
