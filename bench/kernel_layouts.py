"""Which data layout should the pure-Python kernel use?  Column lists vs ``__slots__`` vs arrays.

The python kernel's tick is two loops: an integration pass that reads and writes every entity's
position and velocity, and a contact pass that reads positions of candidate pairs by index.
This script runs both patterns on three layouts of the same 20,000 entities:

* ``columns`` -- one ``list`` of floats per field (struct of arrays; what the kernel uses);
* ``slots`` -- one ``__slots__`` object per entity (array of structs);
* ``array`` -- one ``array('d')`` per field (flat, unboxed storage; boxing on every read).

Run it under each interpreter; results for every interpreter accumulate in one JSON file::

    python -m bench.kernel_layouts [--quick]

writes ``bench/results/kernel-layouts-<host>.json`` keyed by interpreter build.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import sysconfig
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
N = 20_000
#: Candidate pairs per entity in arena-20k (measured: ~1.5 per entity with the half stencil).
PAIRS_PER_ENTITY = 1.5
DAMP = 1.0 - 0.5 / 30
DT = 1.0 / 30


class Ent:
    __slots__ = ("vx", "vy", "x", "y")

    def __init__(self, x: float, y: float, vx: float, vy: float) -> None:
        self.x = x
        self.y = y
        self.vx = vx
        self.vy = vy


def _data(seed: int = 1) -> tuple[list[float], list[float], list[float], list[float],
                                  list[tuple[int, int]]]:
    rnd = random.Random(seed)
    xs = [rnd.uniform(0, 2048) for _ in range(N)]
    ys = [rnd.uniform(0, 2048) for _ in range(N)]
    vxs = [rnd.uniform(-60, 60) for _ in range(N)]
    vys = [rnd.uniform(-60, 60) for _ in range(N)]
    pairs = [(rnd.randrange(N), rnd.randrange(N)) for _ in range(int(N * PAIRS_PER_ENTITY))]
    return xs, ys, vxs, vys, pairs


def run_columns(cols: Any, pairs: list[tuple[int, int]]) -> float:
    xs, ys, vxs, vys = cols
    acc = 0.0
    for i, j in pairs:
        dx = xs[j] - xs[i]
        dy = ys[j] - ys[i]
        acc += dx * dx + dy * dy
    for i, x, y, vx, vy in zip(range(N), xs, ys, vxs, vys, strict=True):
        vx = vx * DAMP
        vy = vy * DAMP
        xs[i] = x + vx * DT
        ys[i] = y + vy * DT
        vxs[i] = vx
        vys[i] = vy
    return acc


def run_slots(ents: list[Ent], pairs: list[tuple[int, int]]) -> float:
    acc = 0.0
    for i, j in pairs:
        a = ents[i]
        b = ents[j]
        dx = b.x - a.x
        dy = b.y - a.y
        acc += dx * dx + dy * dy
    for e in ents:
        vx = e.vx * DAMP
        vy = e.vy * DAMP
        e.x += vx * DT
        e.y += vy * DT
        e.vx = vx
        e.vy = vy
    return acc


LAYOUTS: dict[str, tuple[Callable[[Any], Any], Callable[[Any, list[tuple[int, int]]], float]]] = {
    "columns": (lambda d: [list(c) for c in d], run_columns),
    "slots": (lambda d: [Ent(*t) for t in zip(*d, strict=True)], run_slots),
    "array": (lambda d: [array("d", c) for c in d], run_columns),
}


def interpreter() -> dict[str, Any]:
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    return {"version": platform.python_version(), "executable": sys.executable,
            "free_threaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
            "gil_enabled": bool(gil), "machine": platform.machine(),
            "cpu": platform.processor(), "host": platform.node()}


def measure(repeats: int) -> dict[str, dict[str, float]]:
    xs, ys, vxs, vys, pairs = _data()
    out: dict[str, dict[str, float]] = {}
    for name, (make, fn) in LAYOUTS.items():
        state = make((xs, ys, vxs, vys))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(state, pairs)
            times.append(time.perf_counter() - t0)
        out[name] = {"median_s": statistics.median(times), "min_s": min(times),
                     "max_s": max(times),
                     "m_entity_updates_per_s": N / statistics.median(times) / 1e6}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 repeats instead of 9")
    args = ap.parse_args(argv)
    info = interpreter()
    res = measure(3 if args.quick else 9)
    label = f"{info['version']}{'t' if info['free_threaded'] else ''}"
    print(f"{'layout':<9} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'M upd/s':>8}   ({label}, "
          f"GIL {'on' if info['gil_enabled'] else 'off'})")
    best = min(res, key=lambda k: res[k]["median_s"])
    for name, r in res.items():
        print(f"{name:<9} {r['median_s'] * 1e3:10.2f} {r['min_s'] * 1e3:8.2f} "
              f"{r['max_s'] * 1e3:8.2f} {r['m_entity_updates_per_s']:8.3f}"
              f"{'   <- fastest' if name == best else ''}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"kernel-layouts-{info['host'] or 'unknown'}.json"
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            data = {}
    data[label] = {"interpreter": info, "quick": args.quick, "entities": N,
                   "pairs_per_entity": PAIRS_PER_ENTITY, "layouts": res, "fastest": best,
                   "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
