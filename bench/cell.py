"""One benchmark cell, measured in a fresh interpreter: ``python -m bench.cell --spec JSON``.

The scaling driver starts one of these per (cell, repeat) with the interpreter and environment
of the build under test, so no state (warm caches, imported modules, a GIL re-enabled by
an earlier import) leaks between cells.  The cell:

1. pins itself to the CPUs in ``spec["cpus"]`` with :func:`os.sched_setaffinity` *before*
   creating any worker, so every thread it starts and every process it spawns inherits the mask
   (W workers really run on W cores; the coordinator shares them);
2. builds the workload (``arena``: a :class:`server.runtime.Runtime` over a spawned world;
   ``ceiling``: see :mod:`bench.ceiling`), runs ``warmup`` untimed ticks, then times ``ticks``
   flat-out ticks (no sleeping between ticks), takes the world digest there (the tick every
   cell reaches), and goes on timing ticks until at least ``min_seconds`` were measured, so a
   fast cell is not judged on a few milliseconds;
3. prints one JSON object on stdout: rates, per-tick wall times (MSPT as the caller of
   ``Runtime.step`` sees it), the runtime's own metrics, the GIL state inside every worker, the
   world digest (identical across backends and worker counts by design, which the driver
   checks) and the peak resident memory of the whole process tree.

Exit status 0 with ``"ok": true``, or 2 with ``"ok": false`` and an ``"error"`` string.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from server.host import gil_enabled, tune, usable_cpus

#: Timed ticks a repeat may add to reach ``min_seconds`` (a bound, not a target).
MAX_EXTRA_TICKS = 10_000
#: Per-tick wall times are kept raw up to this many ticks (enough for a p99 over a full run;
#: beyond it the driver would have to trust a summary, which it never needs at our tick counts).
MAX_RAW_TICKS = 100_000


def pin(cpus: list[int] | None) -> list[int] | None:
    """Restrict this process (and so its future threads and children) to ``cpus``."""
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
    return usable_cpus()


def _descendants(pid: int) -> list[int]:
    """pid and every live descendant, from /proc/<pid>/task/*/children (Linux)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                try:
                    todo.extend(int(c) for c in (task / "children").read_text().split())
                except OSError:
                    continue
        except OSError:
            continue
    return out


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def memory() -> dict[str, int]:
    """Peak resident memory of the whole run, all processes counted, in bytes.

    ``tree_hwm`` sums each live process's own peak (VmHWM) over this process and its
    descendants: an upper bound on the peak of the sum, exact when all peaks coincide (they do
    for a steady tick loop).  ``rusage`` adds ``ru_maxrss`` of this process and of the largest
    waited-for child (what ``getrusage`` can say).  ``peak_rss`` is the larger of the two.
    """
    pids = _descendants(os.getpid())
    hwm = sum(_status_kib(p, "VmHWM") for p in pids) * 1024
    rss = sum(_status_kib(p, "VmRSS") for p in pids) * 1024
    ru = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
          + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) * 1024
    return {"peak_rss": max(hwm, ru), "tree_hwm": hwm, "tree_rss": rss, "rusage": ru,
            "processes": len(pids)}


def run_arena(spec: dict[str, Any]) -> dict[str, Any]:
    from server.runtime import Runtime
    from sim.config import WorldConfig
    from sim.world import spawn

    w = spec["world"]
    config = WorldConfig(width=w["width"], height=w["height"], regions_x=w["regions_x"],
                         regions_y=w["regions_y"], radius=w["radius"], seed=w["seed"])
    rows = spawn(config, w["entities"])
    clock = time.perf_counter
    t_build = clock()
    with Runtime(config, rows, backend=spec["backend"], workers=spec["workers"],
                 kernel=spec["kernel"]) as rt:
        startup_s = clock() - t_build
        for _ in range(spec["warmup"]):
            rt.step()
        times: list[float] = []
        t0 = clock()
        for _ in range(spec["ticks"]):
            a = clock()
            rt.step()
            times.append(clock() - a)
        elapsed = clock() - t0
        # The digest at the fixed tick every cell reaches (the driver compares them), then more
        # timed ticks until the repeat has measured at least min_seconds (bounded).
        digest_tick, digest = rt.tick, rt.digest()
        min_s = float(spec.get("min_seconds", 0.0))
        extra = 0
        while elapsed < min_s and extra < MAX_EXTRA_TICKS:
            a = clock()
            rt.step()
            took = clock() - a
            times.append(took)
            elapsed += took
            extra += 1
        mem = memory()  # before close: every worker still alive
        worker_gil = [bool(g) for g in rt.worker_gil()]
        metrics_dict = rt.metrics().to_dict()
        result = {
            "tick": digest_tick,
            "digest": digest,
            "runtime_metrics": metrics_dict,
        }
    ticks = spec["ticks"] + extra
    result.update({
        "timed_ticks": ticks,
        "elapsed_s": elapsed,
        "startup_s": startup_s,
        "ticks_per_s": ticks / elapsed,
        "entity_updates_per_s": ticks * w["entities"] / elapsed,
        "tick_ms": [t * 1000.0 for t in times[:MAX_RAW_TICKS]],
        "worker_gil": worker_gil,
        "memory": mem,
    })
    return result


def run_ceiling(spec: dict[str, Any]) -> dict[str, Any]:
    from bench import ceiling

    backend, workers = spec["backend"], spec["workers"]
    # Strong scaling, like the tick loop (a fixed world split over W workers): a fixed total of
    # ``iters`` iterations per "tick", split evenly over the workers.
    per_worker = max(1, spec["iters"] // workers)
    ceiling.run(backend, workers, max(1, per_worker // 10))  # warm-up, untimed
    elapsed = ceiling.run(backend, workers, per_worker)
    mem = memory()
    return {
        "elapsed_s": elapsed,
        "startup_s": 0.0,
        # One "tick" = the whole fixed amount of work, so ticks/s compares with the arena's.
        "ticks_per_s": 1.0 / elapsed,
        "iterations_per_s": workers * per_worker / elapsed,
        "tick_ms": [elapsed * 1000.0],
        # Same binary and environment in every worker; threads share this interpreter's state.
        "worker_gil": [gil_enabled()] * workers,
        "memory": mem,
        "digest": None,
    }


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one cell described by ``spec`` in this process; see the module docstring."""
    cpus = pin(spec.get("cpus"))
    tuned = tune()  # as paratick run and serve do
    if spec["workload"] == "arena":
        result = run_arena(spec)
    elif spec["workload"] == "ceiling":
        result = run_ceiling(spec)
    else:
        raise ValueError(f"unknown workload {spec['workload']!r}")
    result.update({"ok": True, "cpus": cpus, "gil_enabled": gil_enabled(),
                   **tuned,
                   "python": sys.version.split()[0], "executable": sys.executable})
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cell", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", required=True, help="the cell as a JSON object")
    args = parser.parse_args(argv)
    try:
        result = measure(json.loads(args.spec))
    except Exception as exc:  # report any failure as data: the driver marks the cell ERROR
        tb = traceback.format_exc(limit=6)
        json.dump({"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": tb},
                  sys.stdout)
        sys.stdout.write("\n")
        return 2
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
