"""``paratick bench nodes``: what crossing NATS costs the lockstep, against the processes backend.

Theory of operation
-------------------
For each worker count W (``--workers``, default 1, 2 and 4) two runtimes tick the same world flat
out in this interpreter: ``processes`` (W spawned workers, a socket mesh) and ``nodes`` (W node
processes, borders and control over a private nats-server on loopback, started once for the whole
benchmark).  The cells run interleaved (``processes W=1, nodes W=1, processes W=2, ...`` once per
repeat) so that a machine that slows down during the run hurts every cell about equally.  Start-up
is not timed.  Per run:

* ticks/s: ``--ticks`` lockstep ticks divided by their wall time;
* exchange latency per tick: the runtime's *coordination* time, a tick's wall time less the
  slowest worker's own compute (its tick less its wait for borders), i.e. what the messages,
  their encoding and the barrier cost that tick; p50 and p99 over the run's ticks;
* the digest, which must be the same for every cell (same world, same ticks): a benchmark that
  got a different answer would be measuring something else.

Per cell the table shows the median over repeats with min and max, and the ratio nodes/processes
of the medians.  The figures, parameters and environment go to ``nodes-<build>.json`` in
``--out``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench import schema
from bench.errors import BenchError

BACKENDS = ("processes", "nodes")

DESCRIPTION = """\
Ticks/s and per-tick exchange latency (p50/p99 of the lockstep's coordination time: a tick's wall
time less the slowest worker's compute) of the nodes backend (node processes exchanging borders
over a private nats-server on loopback) against the processes backend (a socket mesh), for each
--workers count, flat out, cells interleaved over --repeats.  Every run's digest must match.
Writes nodes-<build>.json into --out."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", default="1,2,4", metavar="LIST",
                   help="worker (node) counts, comma-separated (default %(default)s)")
    p.add_argument("--entities", type=int, default=20_000, metavar="N",
                   help="entities in the world (default %(default)s: arena-20k)")
    p.add_argument("--regions", default="4x4", metavar="RXxRY",
                   help="region grid (default %(default)s)")
    p.add_argument("--kernel", default="python", help="tick kernel (default %(default)s)")
    p.add_argument("--ticks", type=int, default=300, help="ticks per run (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs of each cell, interleaved (default %(default)s)")
    p.add_argument("--kill-at", type=int, default=None, metavar="TICK",
                   help="also, for each count >= 2, one run on nodes that survive a loss: the "
                        "last node is killed (SIGKILL) before tick TICK; reports when the loss "
                        "was noticed, how long the world paused and whether the digest held")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    schema.add_out_argument(p)
    p.add_argument("--note", default=None, help="a line saved with the results")


def parse_workers(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BenchError(f"--workers takes counts like 1,2,4, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise BenchError(f"--workers takes counts >= 1, got {text!r}")
    return counts


# ---- one run --------------------------------------------------------------------------------
def one_run(backend: str, workers: int, *, config: Any, rows: Sequence[Any], ticks: int,
            kernel: str, bus: str, world: str) -> dict[str, Any]:
    """Tick ``ticks`` flat out on ``backend``; ticks/s, coordination p50/p99, digest."""
    from server.runtime import Runtime
    from server.runtime.driver import NodesRuntime

    window = max(ticks, 1)
    if backend == "nodes":
        rt: Runtime = NodesRuntime(config, rows, bus=bus, world=world, workers=workers,
                                   kernel=kernel, metrics_window=window)
    else:
        rt = Runtime(config, rows, backend=backend, workers=workers, kernel=kernel,
                     metrics_window=window)
    with rt:
        t0 = time.perf_counter()
        for _ in range(ticks):
            rt.step()
        wall = time.perf_counter() - t0
        metrics = rt.metrics().to_dict()
        digest = rt.digest()
    co = metrics.get("coordination_ms") or {}
    return {"backend": backend, "workers": rt.workers, "ticks": ticks, "wall_s": wall,
            "ticks_per_s": ticks / wall if wall > 0 else None,
            "exchange_p50_ms": co.get("p50"), "exchange_p99_ms": co.get("p99"),
            "step_p50_ms": metrics["mspt"]["p50"], "digest": digest}


def kill_run(workers: int, *, config: Any, rows: Sequence[Any], ticks: int, kill_at: int,
             kernel: str, bus: str, world: str) -> dict[str, Any]:
    """Tick ``ticks`` on nodes that survive a loss, killing the last node before ``kill_at``."""
    import os
    import signal

    from server.runtime.recovery import ResilientNodes

    with ResilientNodes(config, rows, bus=bus, world=world, workers=workers,
                        kernel=kernel) as rt:
        for t in range(ticks):
            if t == kill_at:
                os.kill(rt.worker_pids()[-1], signal.SIGKILL)
            rt.step()
        digest = rt.digest()
        recs = list(rt.recoveries)
    rec = recs[0] if recs else {}
    return {"workers": workers, "ticks": ticks, "kill_at": kill_at, "recoveries": len(recs),
            "noticed_at_tick": rec.get("tick"), "detect_s": rec.get("detect_s"),
            "pause_s": rec.get("pause_s"), "checkpoint": rec.get("checkpoint"),
            "replayed": rec.get("replayed"), "digest": digest}


# ---- aggregation (pure) ------------------------------------------------------------------------
def aggregate(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per worker count: each backend's median [min, max] of ticks/s and exchange p50/p99, and
    the nodes/processes ratio of the medians."""
    from bench import stats

    out: list[dict[str, Any]] = []
    for w in sorted({int(r["workers"]) for r in runs}):
        row: dict[str, Any] = {"workers": w}
        for backend in BACKENDS:
            mine = [r for r in runs if r["workers"] == w and r["backend"] == backend]
            row[backend] = {key: (stats.summarise([r[key] for r in mine]).to_dict()
                                  if mine and all(r[key] is not None for r in mine) else None)
                            for key in ("ticks_per_s", "exchange_p50_ms", "exchange_p99_ms")}
        ratios: dict[str, float | None] = {}
        for key in ("ticks_per_s", "exchange_p50_ms", "exchange_p99_ms"):
            a, b = row["processes"][key], row["nodes"][key]
            ratios[key] = b["median"] / a["median"] if a and b and a["median"] else None
        row["nodes_over_processes"] = ratios
        out.append(row)
    return out


def summary(section: Mapping[str, Any]) -> str:
    p = section["params"]
    lines = [f"nodes (NATS on loopback) vs processes: {p['entities']} entities, {p['regions']} "
             f"regions, {p['ticks']} ticks flat out, median [min-max] of {p['repeats']} runs",
             f"{'W':>2} {'backend':10}{'ticks/s':>24}{'exchange p50 ms':>24}"
             f"{'exchange p99 ms':>24}"]

    def cell(s: Any, digits: int) -> str:
        if not s:
            return "-"
        return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"

    for row in section["aggregate"]:
        for backend in BACKENDS:
            e = row[backend]
            lines.append(f"{row['workers']:>2} {backend:10}{cell(e['ticks_per_s'], 1):>24}"
                         f"{cell(e['exchange_p50_ms'], 2):>24}"
                         f"{cell(e['exchange_p99_ms'], 2):>24}")
        r = row["nodes_over_processes"]

        def ratio(x: float | None) -> str:
            return "-" if x is None else f"x{x:.2f}"

        lines.append(f"{'':>2} {'nodes/proc':10}{ratio(r['ticks_per_s']):>24}"
                     f"{ratio(r['exchange_p50_ms']):>24}{ratio(r['exchange_p99_ms']):>24}")
    for k in section.get("kills") or []:
        if k["noticed_at_tick"] is None:
            lines.append(f"W={k['workers']}: node killed before tick {k['kill_at']}: no loss "
                         "noticed")
            continue
        late = k["noticed_at_tick"] - k["kill_at"]
        lines.append(
            f"W={k['workers']}: node killed before tick {k['kill_at']}: noticed "
            f"{'in that tick' if late == 0 else f'{late} ticks later'} "
            f"({k['detect_s'] * 1e3:.0f} ms into it); the world paused {k['pause_s']:.2f} s "
            f"(restart from the checkpoint at tick {k['checkpoint']}, {k['replayed']} ticks "
            "replayed)")
    digests = section["digests"]
    lines.append("digest " + (digests[0] + " in every run" if len(digests) == 1
                              else "MISMATCH: " + ", ".join(digests)))
    return "\n".join(lines)


# ---- the run --------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    from bench import env, schema, stats
    from bench.builds import repo_root
    from server.runtime import natsd
    from sim.config import WorldConfig, parse_grid
    from sim.errors import SimError
    from sim.world import spawn

    counts = parse_workers(args.workers)
    if args.ticks < 1 or args.repeats < 1 or args.entities < 0:
        raise BenchError("--ticks and --repeats must be >= 1, --entities >= 0")
    if args.kill_at is not None and not 0 < args.kill_at < args.ticks:
        raise BenchError(f"--kill-at must be within the run: 1..{args.ticks - 1}")
    try:
        rx, ry = parse_grid(args.regions)
        config = WorldConfig(width=2048.0, height=2048.0, regions_x=rx, regions_y=ry, seed=1)
    except SimError as exc:
        raise BenchError(str(exc)) from exc
    rows = spawn(config, args.entities)
    cells = [(w, b) for w in counts for b in BACKENDS]
    runs: list[dict[str, Any]] = []
    kills: list[dict[str, Any]] = []

    def say(text: str) -> None:
        if not args.quiet:
            print(f"nodes: {text}", file=sys.stderr, flush=True)

    try:
        bus_cm = natsd.local_server()
        bus = bus_cm.__enter__()
    except natsd.NatsdError as exc:
        raise BenchError(str(exc).splitlines()[0]) from exc
    try:
        for i, (r, (w, backend)) in enumerate(stats.interleave(cells, args.repeats)):
            res = one_run(backend, w, config=config, rows=rows, ticks=args.ticks,
                          kernel=args.kernel, bus=bus, world=f"bench{i}")
            res["repeat"] = r
            runs.append(res)
            say(f"{i + 1}/{len(cells) * args.repeats}: {backend} W={w}: "
                f"{res['ticks_per_s']:.1f} ticks/s, exchange p50 {res['exchange_p50_ms']} ms")
        for w in counts if args.kill_at is not None else []:
            if w < 2:
                continue
            say(f"nodes W={w}: killing a node before tick {args.kill_at} ...")
            kills.append(kill_run(w, config=config, rows=rows, ticks=args.ticks,
                                  kill_at=args.kill_at, kernel=args.kernel, bus=bus,
                                  world=f"kill{w}"))
    finally:
        bus_cm.__exit__(None, None, None)
    section = {"created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
               "command": ["paratick", "bench", "nodes", *sys.argv[3:]],
               "environment": env.capture(repo_root()),
               "params": {"workers": counts, "entities": args.entities, "regions": args.regions,
                          "kernel": args.kernel, "ticks": args.ticks, "repeats": args.repeats,
                          "bus": "private nats-server on loopback", "kill_at": args.kill_at},
               "note": args.note, "runs": runs, "aggregate": aggregate(runs), "kills": kills,
               "digests": sorted({r["digest"] for r in [*runs, *kills]})}
    path = schema.write_json(args.out or schema.results_dir(),
                             f"nodes-{env.build_label()}.json", section)
    print(summary(section))
    print(path)
    return 0 if len(section["digests"]) == 1 else 1
