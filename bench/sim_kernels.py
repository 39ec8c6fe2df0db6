"""The arena-20k benchmark: entity-updates per second of each kernel on one core.

Workload (issue 3): 20,000 entities, 2048 x 2048, radius 4, 4 x 4 regions, seed 1, ticked by
:class:`sim.world.World` in this thread.  Kernels: ``naive`` (bench/naive.py, the baseline the
issue's 0.13 M figure describes, unsharded), ``python`` and ``numpy``.  Each kernel runs a few
warm-up ticks, then ``repeats`` timed batches; the table shows the median with min and max and
the speed-up over ``naive`` measured in the same run.  Run it once per interpreter::

    python -m bench.sim_kernels [--quick]

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
from pathlib import Path
from typing import Any

from sim.config import WorldConfig
from sim.errors import SimError
from sim.world import World, spawn

RESULTS = Path(__file__).resolve().parent / "results"
ENTITIES = 20_000
GRID = (4, 4)
SEED = 1
#: (ticks per timed batch, repeats) per kernel: batches of about a second in full mode.
FULL = {"naive": (5, 5), "python": (10, 7), "numpy": (60, 7)}
QUICK = {"naive": (1, 5), "python": (2, 5), "numpy": (10, 5)}
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


def bench_kernel(kernel: str, ticks: int, repeats: int) -> dict[str, Any]:
    config = WorldConfig(regions_x=GRID[0], regions_y=GRID[1], seed=SEED)
    rows = spawn(config, ENTITIES)
    world: Any
    if kernel == "naive":
        from bench.naive import NaiveWorld
        world = NaiveWorld(config, rows)
    else:
        world = World(config, rows, kernel=kernel)
    for _ in range(WARMUP):
        world.step()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(ticks):
            world.step()
        rates.append(ENTITIES * ticks / (time.perf_counter() - t0))
    return {"ticks_per_batch": ticks, "repeats": repeats,
            "median": statistics.median(rates), "min": min(rates), "max": max(rates),
            "samples": rates}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short batches (a smoke run)")
    ap.add_argument("--kernels", default="naive,python,numpy",
                    help="comma-separated kernels (default naive,python,numpy)")
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else FULL
    env = environment()
    build = "3.13t" if env.get("py_gil_disabled") else "3.13"
    results: dict[str, Any] = {}
    for kernel in args.kernels.split(","):
        ticks, repeats = plan[kernel]
        try:
            results[kernel] = bench_kernel(kernel, ticks, repeats)
        except SimError as exc:  # e.g. numpy unavailable on this interpreter
            results[kernel] = {"unavailable": str(exc)}
    base = results.get("naive", {}).get("median")
    print(f"arena-20k: {ENTITIES} entities, {GRID[0]}x{GRID[1]} regions, seed {SEED}; "
          f"CPython {env.get('version')} {env.get('build', '')}, "
          f"GIL {'on' if env.get('gil_enabled', True) else 'off'}"
          f"{' (quick)' if args.quick else ''}")
    print(f"{'kernel':<8} {'median':>9} {'min':>9} {'max':>9}  {'vs naive':>8}   "
          "(M entity-updates/s)")
    for kernel, r in results.items():
        if "unavailable" in r:
            print(f"{kernel:<8} unavailable: {r['unavailable']}")
            continue
        ratio = f"{r['median'] / base:7.2f}x" if base else "       -"
        r["vs_naive"] = r["median"] / base if base else None
        print(f"{kernel:<8} {r['median'] / 1e6:9.3f} {r['min'] / 1e6:9.3f} "
              f"{r['max'] / 1e6:9.3f}  {ratio}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"sim-kernels-{env['host'] or 'unknown'}-{build}.json"
    path.write_text(json.dumps({
        "workload": {"name": "arena-20k", "entities": ENTITIES, "regions": list(GRID),
                     "seed": SEED, "width": 2048, "height": 2048, "radius": 4},
        "quick": args.quick, "unit": "entity-updates/s", "when": time.strftime("%FT%T%z"),
        "environment": env, "kernels": results}, indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
