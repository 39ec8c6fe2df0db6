"""``paratick bench kernels``: entity-updates per second of each tick kernel on one core.

Workload: 20,000 entities, 2048 x 2048, radius 4, 4 x 4 regions, seed 1, ticked by
:class:`sim.world.World` in this thread.  Kernels: ``naive`` (bench/naive.py, the baseline the
baseline figure of 0.13 M describes, unsharded), ``python``, ``numpy`` (the 16 regions ticked as
one :class:`~sim.kernels.numpy.NumpyGroup`, what a thread owning them runs) and
``numpy-regions`` (one numpy shard per region, the earlier layout, for comparison).
Each kernel runs a few warm-up ticks, then timed batches interleaved round by round (naive,
python, numpy, naive, ...) so drift on a shared machine hits every kernel alike; the table
shows the median with min and max, and the speed-up over ``naive`` as the median of the ratios
measured within each round, with their interquartile range (on a noisy machine single rounds
range widely; the median of 15 rounds is what to compare).
Run it once per interpreter (``.venv/gil/bin/paratick bench kernels``, then ``.venv/ft/...``);
each run writes ``sim-kernels-<version>[t].json`` (figures plus the environment record every
results file carries) into ``bench/results/<date>-<host>/`` or ``--out``.  The numpy kernel
cannot load on every build; it is then reported as unavailable.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from bench import schema
from bench.errors import SetupError
from bench.stats import percentile
from server.cli import alias
from sim.config import WorldConfig
from sim.errors import SimError
from sim.world import World, spawn

DESCRIPTION = """\
Entity-updates per second of each tick kernel on one core, in this thread, on arena-20k (20,000
entities in a 2048 x 2048 world, 4x4 regions, seed 1).  Kernels: naive (the unsharded baseline),
python, numpy (the 16 regions ticked as one group, what a thread owning them runs) and
numpy-regions (one numpy shard per region, the earlier layout, for comparison).

Each kernel runs a few warm-up ticks, then timed batches interleaved round by round (naive,
python, numpy, naive, ...) so drift on a shared machine hits every kernel alike.  The table gives
the median with min and max, and the speed-up over naive as the median of the ratios measured
within each round, with their interquartile range.  Run it once per interpreter (the GIL venv's
paratick, then the free-threaded one's); each run writes sim-kernels-<version>[t].json into --out.
A kernel that cannot load on this build (numpy on some) is reported as unavailable."""

ENTITIES = 20_000
GRID = (4, 4)
SEED = 1
#: (ticks per timed batch, rounds) per kernel: batches of about a second in full mode.
FULL = {"naive": (5, 15), "python": (10, 15), "numpy": (150, 15), "numpy-regions": (60, 15)}
QUICK = {"naive": (1, 5), "python": (2, 5), "numpy": (20, 5), "numpy-regions": (10, 5)}
WARMUP = 2


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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="short batches (a smoke run)")
    kernel = p.add_argument("--kernel", default=None,
                            help=f"one or a comma list of {', '.join(FULL)} (default: all)")
    alias(p, "--kernels", of=kernel)
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved rounds (default 15; --quick 5)")
    p.add_argument("--entities", type=int, default=ENTITIES, metavar="N",
                   help=f"entities in the world (default {ENTITIES}: arena-20k)")
    schema.add_out_argument(p, quick=True)
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args: argparse.Namespace) -> int:
    from bench import env, schema
    from bench.builds import repo_root
    from server.host import tune

    plan = QUICK if args.quick else FULL
    kernels = (args.kernel or ",".join(FULL)).split(",")
    unknown = [k for k in kernels if k not in FULL]
    if unknown:
        raise SetupError(f"unknown kernel(s) {', '.join(unknown)}; choose from {', '.join(FULL)}")
    if args.rounds is not None and args.rounds < 1:
        raise SetupError(f"--rounds must be at least 1, got {args.rounds}")
    record = env.capture(repo_root())  # its driver is this interpreter, the one measured
    tuned = tune()  # the kernels tick here, in this interpreter: as paratick run and serve do
    it = record["driver"]

    def progress(done: int, total: int) -> None:
        if not args.quiet:
            print(f"  round {done}/{total}", file=sys.stderr, flush=True)

    results = bench_kernels(kernels, plan, args.entities, args.rounds, progress)
    print(f"arena-20k: {args.entities} entities, {GRID[0]}x{GRID[1]} regions, seed {SEED}; "
          f"CPython {it['version']}{' free-threaded' if it['py_gil_disabled'] else ''}, "
          f"GIL {'on' if it['gil_enabled'] else 'off'}{' (quick)' if args.quick else ''}")
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
    out = args.out or schema.results_dir(quick=args.quick)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"sim-kernels-{env.build_label()}.json"
    path.write_text(json.dumps({
        "workload": {"name": "arena-20k", "entities": args.entities, "regions": list(GRID),
                     "seed": SEED, "width": 2048, "height": 2048, "radius": 4},
        "quick": args.quick, "unit": "entity-updates/s", "when": time.strftime("%FT%T%z"),
        "environment": record, "tuned": tuned, "kernels": results},
        indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")
    return 0
