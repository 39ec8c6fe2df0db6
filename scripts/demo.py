"""``make demo``: tick the same sharded world on the GIL and the free-threaded interpreter.

The driver (run under any paratick venv) starts one child process per interpreter with
``--measure``; each child ticks the world once per available mode and prints one JSON line; the
driver prints a table side by side and checks that every run reached the same world digest (the
simulation is deterministic, so any difference is a bug, whatever the interpreter or backend).

Modes:
    world    :class:`sim.world.World`, all regions ticked in the calling thread: the reference.
    threads  ``server.runtime.Runtime(backend="threads")``, one worker per usable core.

To add a mode, add a function to ``MODES`` taking (config, rows, ticks) and returning
(digest, workers).
These are quick smoke figures on a shared machine, not benchmarks: ``bench/`` measures properly.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

#: 4x4 regions: enough shards for a few workers, and every shard has neighbours on all sides.
GRID = (4, 4)
#: Entities in the world: about 250 per region, so a tick costs milliseconds, not microseconds.
ENTITIES = 4000
#: Ticks per run: 3 s of game time at 30 Hz; a run takes about 1-2 s on one core.
TICKS = 90


def _world(config: Any, rows: list[Any], ticks: int) -> tuple[str, int]:
    from sim.world import World

    world = World(config, rows)
    for _ in range(ticks):
        world.step()
    return world.digest(), 1


def _threads(config: Any, rows: list[Any], ticks: int) -> tuple[str, int]:
    from server.runtime import Runtime

    with Runtime(config, rows, backend="threads") as rt:
        workers = len(rt.worker_gil())
        for _ in range(ticks):
            rt.step()
        return str(rt.digest()), workers


#: mode -> function returning (digest, workers).
MODES: dict[str, Callable[[Any, list[Any], int], tuple[str, int]]] = {
    "world": _world,
    "threads": _threads,
}


def measure(ticks: int) -> dict[str, Any]:
    """Run every available mode under this interpreter; the result is one JSON-ready dict."""
    from server import host
    from sim.config import WorldConfig
    from sim.world import spawn

    config = WorldConfig(regions_x=GRID[0], regions_y=GRID[1])
    rows = spawn(config, ENTITIES)
    runs: list[dict[str, Any]] = []
    for mode, fn in MODES.items():
        t0 = time.perf_counter()
        digest, workers = fn(config, rows, ticks)
        seconds = time.perf_counter() - t0
        runs.append({"mode": mode, "workers": workers, "ticks": ticks, "seconds": seconds,
                     "ticks_per_s": ticks / seconds, "digest": digest})
    return {"python": sys.version.split()[0], "executable": sys.executable,
            "free_threaded": host.free_threaded(), "gil_enabled": host.gil_enabled(),
            "runs": runs}


def drive(pythons: Sequence[tuple[str, str]], ticks: int) -> int:
    """Measure under each (label, python) and print the comparison; non-zero on a mismatch."""
    from server.host import usable_cores

    cores = usable_cores()
    print(f"paratick demo: {ENTITIES} entities, {GRID[0]}x{GRID[1]} regions, {ticks} ticks, "
          f"{cores} usable cores")
    results: list[tuple[str, dict[str, Any]]] = []
    for label, python in pythons:
        proc = subprocess.run([python, __file__, "--measure", "--ticks", str(ticks)],
                              capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            print(f"demo: the {label} run failed (exit {proc.returncode}):\n{proc.stderr}",
                  file=sys.stderr)
            return 1
        results.append((label, json.loads(proc.stdout.splitlines()[-1])))

    print(f"{'interpreter':<14} {'build':<14} {'GIL':<5} {'mode':<8} {'workers':>7} "
          f"{'ticks/s':>9}  digest")
    digests = set()
    for label, res in results:
        build = f"{res['python']}{'t' if res['free_threaded'] else ''}"
        gil = "on" if res["gil_enabled"] else "off"
        for run in res["runs"]:
            digests.add(run["digest"])
            print(f"{label:<14} {build:<14} {gil:<5} {run['mode']:<8} {run['workers']:>7} "
                  f"{run['ticks_per_s']:>9.1f}  {run['digest']}")
    if len(digests) != 1:
        print(f"demo: FAIL: runs disagree on the final world ({len(digests)} digests)")
        return 1
    print("demo: every run reached the same world (digests equal). Single quick runs on a shared "
          "machine: see bench/ for measured scaling.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--python", action="append", default=[], metavar="LABEL=PATH",
                    help="an interpreter to compare (repeatable)")
    ap.add_argument("--ticks", type=int, default=TICKS, help=f"ticks per run (default {TICKS})")
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))  # this checkout's code, whichever venv runs the script
    if args.measure:
        print(json.dumps(measure(args.ticks)))
        return 0
    pythons: list[tuple[str, str]] = []
    for spec in args.python:
        label, _, path = spec.rpartition("=")
        pythons.append((label or path, path))
    if not pythons:
        ap.error("give at least one --python LABEL=PATH")
    return drive(pythons, args.ticks)


if __name__ == "__main__":
    sys.exit(main())
