"""The arena-20k benchmark: entity-updates per second of each kernel on one core.

Workload (issue 3): 20,000 entities, 2048 x 2048, radius 4, 4 x 4 regions, seed 1, ticked by
:class:`sim.world.World` in this thread.  Kernels: ``naive`` (bench/naive.py, the baseline the
issue's 0.13 M figure describes, unsharded), ``python``, ``numpy`` (the 16 regions ticked as
one :class:`~sim.kernels.numpy.NumpyGroup`, what a thread owning them runs) and
``numpy-regions`` (one numpy shard per region, the earlier layout, for comparison).
Each kernel runs a few warm-up ticks, then timed batches interleaved round by round (naive,
python, numpy, naive, ...) so drift on a shared machine hits every kernel alike; the table
shows the median with min and max, and the speed-up over ``naive`` as the median of the ratios
measured within each round, with their interquartile range (on a noisy machine single rounds
range widely; the median of 15 rounds is what to compare).
Run it once per interpreter::

    python -m bench.sim_kernels [--quick] [--rounds N]

and find the JSON (environment included) in ``bench/results/sim-kernels-<host>-<build>.json``.
The numpy kernel cannot load on every build; it is then reported as unavailable.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.stats import percentile
from sim.config import WorldConfig
from sim.errors import SimError
from sim.world import World, spawn

RESULTS = Path(__file__).resolve().parent / "results"
ENTITIES = 20_000
GRID = (4, 4)
SEED = 1
#: (ticks per timed batch, rounds) per kernel: batches of about a second in full mode.
FULL = {"naive": (5, 15), "python": (10, 15), "numpy": (150, 15), "numpy-regions": (60, 15)}
QUICK = {"naive": (1, 5), "python": (2, 5), "numpy": (20, 5), "numpy-regions": (10, 5)}
WARMUP = 2


def environment() -> dict[str, Any]:
    try:
        from server.cmd_info import collect
        env: dict[str, Any] = collect()
    except ImportError:
        env = {"version": platform.python_version(), "executable": sys.executable}
    try:
        env["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            cwd=Path(__file__).parent, check=False).stdout.strip() or None
    except OSError:
        env["commit"] = None
    env["host"] = platform.node()
    return env


def make_world(kernel: str, entities: int) -> Any:
    """A warmed-up arena world ticked by ``kernel`` (raises SimError if it cannot load here)."""
    config = WorldConfig(regions_x=GRID[0], regions_y=GRID[1], seed=SEED)
    rows = spawn(config, entities)
    world: Any
    if kernel == "naive":
        from bench.naive import NaiveWorld
        world = NaiveWorld(config, rows)
    elif kernel == "numpy-regions":
        world = World(config, rows, kernel="numpy", per_region=True)
    else:
        world = World(config, rows, kernel=kernel)
    for _ in range(WARMUP):
        world.step()
    return world


def bench_kernels(kernels: list[str], plan: dict[str, tuple[int, int]], entities: int,
                  rounds: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Time every kernel with interleaved repeats (A B C A B C ...).

    Interleaving makes drift on a shared machine hit every kernel alike; each kernel's ratio to
    ``naive`` is the median of the ratios measured in the same round.  ``rounds`` overrides
    the plan's; ``progress(done, total)`` is called after every round.
    """
    results: dict[str, Any] = {}
    worlds: dict[str, Any] = {}
    for kernel in kernels:
        try:
            worlds[kernel] = make_world(kernel, entities)
        except SimError as exc:  # e.g. numpy unavailable on this interpreter
            results[kernel] = {"unavailable": str(exc)}
    samples: dict[str, list[float]] = {k: [] for k in worlds}
    if rounds is None:
        rounds = max((plan[k][1] for k in worlds), default=0)
    for done in range(1, rounds + 1):
        for kernel, world in worlds.items():
            ticks = plan[kernel][0]
            t0 = time.perf_counter()
            for _ in range(ticks):
                world.step()
            samples[kernel].append(entities * ticks / (time.perf_counter() - t0))
        if progress is not None:
            progress(done, rounds)
    base = samples.get("naive")
    for kernel, rates in samples.items():
        ratios = [r / b for r, b in zip(rates, base, strict=True)] if base else []
        results[kernel] = {
            "ticks_per_batch": plan[kernel][0], "repeats": rounds,
            "median": statistics.median(rates), "min": min(rates), "max": max(rates),
            "samples": rates, "vs_naive": statistics.median(ratios) if ratios else None,
            "vs_naive_iqr": ([percentile(ratios, 25), percentile(ratios, 75)]
                             if ratios else None)}
    return {k: results[k] for k in kernels}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short batches (a smoke run)")
    ap.add_argument("--kernels", default=",".join(FULL),
                    help=f"comma-separated kernels (default {','.join(FULL)})")
    ap.add_argument("--rounds", type=int, default=None,
                    help="interleaved rounds (default 15; --quick 5)")
    ap.add_argument("--entities", type=int, default=ENTITIES,
                    help=f"entities in the arena (default {ENTITIES}, the arena-20k workload)")
    ap.add_argument("--out", type=Path, default=RESULTS,
                    help="folder for the JSON results (default bench/results)")
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else FULL
    env = environment()
    build = "3.13t" if env.get("py_gil_disabled") else "3.13"
    kernels = args.kernels.split(",")
    unknown = [k for k in kernels if k not in FULL]
    if unknown:
        ap.error(f"unknown kernel(s) {', '.join(unknown)}; choose from {', '.join(FULL)}")
    if args.rounds is not None and args.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {args.rounds}")

    def progress(done: int, total: int) -> None:
        print(f"  round {done}/{total}", file=sys.stderr, flush=True)

    results = bench_kernels(kernels, plan, args.entities, args.rounds, progress)
    print(f"arena-20k: {args.entities} entities, {GRID[0]}x{GRID[1]} regions, seed {SEED}; "
          f"CPython {env.get('version')} {env.get('build', '')}, "
          f"GIL {'on' if env.get('gil_enabled', True) else 'off'}"
          f"{' (quick)' if args.quick else ''}")
    print(f"{'kernel':<13} {'median':>9} {'min':>9} {'max':>9}  {'vs naive':>8} "
          f"{'(IQR)':>15}   (M entity-updates/s)")
    for kernel, r in results.items():
        if "unavailable" in r:
            print(f"{kernel:<13} unavailable: {r['unavailable']}")
            continue
        ratio = f"{r['vs_naive']:7.2f}x" if r["vs_naive"] else "       -"
        if r["vs_naive_iqr"]:
            q1, q3 = r["vs_naive_iqr"]
            ratio += f" {f'[{q1:.2f}-{q3:.2f}]':>15}"
        print(f"{kernel:<13} {r['median'] / 1e6:9.3f} {r['min'] / 1e6:9.3f} "
              f"{r['max'] / 1e6:9.3f}  {ratio}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"sim-kernels-{env['host'] or 'unknown'}-{build}.json"
    path.write_text(json.dumps({
        "workload": {"name": "arena-20k", "entities": args.entities, "regions": list(GRID),
                     "seed": SEED, "width": 2048, "height": 2048, "radius": 4},
        "quick": args.quick, "unit": "entity-updates/s", "when": time.strftime("%FT%T%z"),
        "environment": env, "kernels": results}, indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
