"""Tick-rate scaling per core: the matrix, the interleaved runs, and what each cell means.

Theory of operation
-------------------
A *cell* is (workload, build, backend, kernel, workers).  The ``arena`` workload is arena-20k
(20,000 entities, 2048x2048, radius 4, 4x4 regions, seed 1) ticked flat out through
:class:`server.runtime.Runtime`; the ``reference`` workload is :mod:`bench.ceiling`'s
embarrassingly parallel loop on the same kind of workers: a yardstick for how well this
interpreter and machine scale pure-Python work, not an upper bound on the tick loop (results
written before it was renamed call it ``ceiling``; :mod:`bench.cell` still does).  Every (cell,
repeat) runs in a fresh subprocess of the build's interpreter (:mod:`bench.cell`), pinned to the
first W usable CPUs, and the repeats are interleaved round by round
(:func:`bench.stats.interleave`) so drift on a shared machine is spread over every cell.

:func:`bench.summary.aggregate` turns the raw runs into the figures the tables show (speedups,
efficiency, the ratio to the reference loop, 95 % intervals, and each cell's status: ok,
INVALID, ERROR or NOT RUN; see there); it is pure, and the report recomputes it from
``results.json`` rather than trusting stored summaries.

A run that stops early keeps what it measured: the runs done so far are aggregated and saved,
and the section records why and how many of the planned runs finished.  Because repeats are
interleaved by round, an early stop leaves every cell with the same number of repeats, give or
take one.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import schema, stats
from bench.builds import ALL_BUILDS, Build, find_venvs, make_build, repo_root, run_group
from bench.errors import CellError, SetupError
from bench.summary import aggregate, headlines, is_reference, scaling_table
from server.cli import alias
from server.host import usable_cores, usable_cpus
from server.runtime import BACKENDS
from sim.kernels import KERNELS

DESCRIPTION = """\
Ticks/s against the worker count for each interpreter build (3.13 with the GIL, 3.13t
free-threaded, 3.13t with PYTHON_GIL=1) and backend (inline, threads, subinterpreters, processes)
on arena-20k: 20,000 entities in a 2048 x 2048 world, 4x4 regions, seed 1, ticked flat out.
Each (cell, repeat) runs in a fresh interpreter pinned to W cores, and the repeats are interleaved
round by round so that drift on a shared machine hits every cell alike.  The REFERENCE rows run
an embarrassingly parallel loop on the same kind of workers: how well this interpreter and
machine scale compute-only Python (a yardstick, not an upper bound: the tick loop can beat it).

The table gives medians with min and max, speed-ups against one worker and against the best
single core with their 95 % bootstrap intervals, and each cell's status (ok, INVALID, ERROR or
NOT RUN); a goal is met only when the whole interval clears it.  A run stopped early
(--time-budget, Ctrl-C) keeps and saves what it measured.  results.json, report.md and the plots
go to --out."""

#: arena-20k, the standard world.
ARENA_20K: dict[str, Any] = {"entities": 20_000, "width": 2048.0, "height": 2048.0,
                             "regions_x": 4, "regions_y": 4, "radius": 4.0, "seed": 1}


@dataclass(frozen=True)
class Plan:
    """What to run; the defaults give a full run of about 8 minutes on the idle 2-core dev box
    (arena-20k: about 100 ms per tick on one core on the GIL build, 2-3x that on 3.13t; cell
    start-up 1-3 s, most of it spawning the world and starting subinterpreters)."""

    builds: tuple[Build, ...]
    backends: tuple[str, ...] = BACKENDS
    workers: tuple[int, ...] = (1, 2)
    kernels: tuple[str, ...] = ("python",)
    #: >= 5 so a median means something and one outlier cannot move it
    repeats: int = 5
    #: timed ticks per repeat: 12 ticks of 50-300 ms keep each run near 2 s of measurement,
    #: x5 repeats gives 60 tick times per cell for the MSPT percentiles
    ticks: int = 12
    #: untimed ticks first: imports, caches and the first border exchange settle
    warmup: int = 2
    #: each repeat times at least this long (more ticks after the digest's tick when the
    #: fixed count was faster), as pyperf calibrates a loop count rather than trust a short run
    min_seconds: float = 1.0
    #: reference loop iterations per repeat, split over the workers (about 0.4 s on one core
    #: here); the field keeps its first name, as does ``ceiling`` (run the reference rows)
    ceiling_iters: int = 2_000_000
    world: tuple[tuple[str, Any], ...] = tuple(ARENA_20K.items())
    ceiling: bool = True
    quick: bool = False
    #: per-run timeout; a stuck cell is an ERROR, not a hung benchmark
    timeout_s: float = 300.0
    #: stop starting new runs after this many seconds (None: run every planned repeat)
    time_budget_s: float | None = None


def cells_for(plan: Plan) -> list[dict[str, Any]]:
    """The cells of ``plan``, in table order.

    Skips combinations that cannot exist rather than reporting them as failures: ``inline`` has
    one worker by definition; numpy cannot be imported in a subinterpreter (the runtime raises
    KernelUnavailable); more workers than regions would idle.
    """
    world = dict(plan.world)
    regions = world["regions_x"] * world["regions_y"]
    out: list[dict[str, Any]] = []
    for build in plan.builds:
        for backend in plan.backends:
            for kernel in plan.kernels:
                if kernel == "numpy" and backend == "interpreters":
                    continue
                for w in plan.workers:
                    if (backend == "inline" and w != 1) or w > regions:
                        continue
                    out.append({"workload": "arena", "build": build.name, "backend": backend,
                                "kernel": kernel, "workers": w})
    if plan.ceiling:
        for build in plan.builds:
            for backend in plan.backends:
                for w in plan.workers:
                    if backend == "inline" and w != 1:
                        continue
                    out.append({"workload": "reference", "build": build.name,
                                "backend": backend, "kernel": "python", "workers": w})
    return out


#: :mod:`bench.cell`'s name for the reference loop's workload.
CELL_REFERENCE = "ceiling"


def spec_for(cell: dict[str, Any], plan: Plan, cpus: list[int]) -> dict[str, Any]:
    workload = CELL_REFERENCE if is_reference(cell) else cell["workload"]
    return {**cell, "workload": workload, "cpus": cpus[: cell["workers"]],
            "world": dict(plan.world),
            "ticks": plan.ticks, "warmup": plan.warmup, "iters": plan.ceiling_iters,
            "min_seconds": plan.min_seconds}


def run_cell(build: Build, spec: dict[str, Any], root: Path, timeout_s: float) -> dict[str, Any]:
    """Run one (cell, repeat) in a fresh interpreter of ``build``; returns the cell's JSON.

    Raises:
        CellError: the subprocess could not run, timed out, or printed no JSON.
    """
    cmd = [build.python, "-m", "bench.cell", "--spec", json.dumps(spec)]
    code, stdout, stderr = run_group(cmd, env=build.environ(root), cwd=root, timeout=timeout_s)
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (stderr or stdout).strip()[-400:]
        raise CellError(f"exit {code}, no result: {tail}")
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except ValueError as exc:
        raise CellError(f"exit {code}, unreadable result") from exc
    return result


def _run_record(rnd: int, res: dict[str, Any]) -> dict[str, Any]:
    """The raw per-repeat record stored in results.json (schema RUN)."""
    ok = bool(res.get("ok"))
    mem = res.get("memory") or {}
    return {
        "round": rnd, "ok": ok, "error": None if ok else str(res.get("error")),
        "ticks_per_s": res.get("ticks_per_s") if ok else None,
        "entity_updates_per_s": res.get("entity_updates_per_s") if ok else None,
        "tick_ms": list(res.get("tick_ms") or []) if ok else [],
        "timed_ticks": res.get("timed_ticks") if ok else None,
        "tick": res.get("tick") if ok else None,
        "worker_gil": [bool(g) for g in res.get("worker_gil") or []],
        "gil_enabled": res.get("gil_enabled"),
        "peak_rss": int(mem["peak_rss"]) if ok and "peak_rss" in mem else None,
        "digest": res.get("digest") if ok else None,
        "startup_s": res.get("startup_s") if ok else None,
        "runtime_metrics": res.get("runtime_metrics") if ok else None,
    }


def _fmt_eta(seconds: float) -> str:
    m, s = divmod(int(max(0.0, seconds)), 60)
    return f"{m}:{s:02d}"


def execute(plan: Plan, *, root: Path | None = None,
            progress: Callable[[str], None] | None = None,
            clock: Callable[[], float] = time.monotonic,
            ) -> tuple[list[dict[str, Any]], list[list[int]], str | None]:
    """Run every cell ``plan.repeats`` times, interleaved.

    Returns (cells with their runs, the order run, why the run stopped early or None).  A
    KeyboardInterrupt or a spent ``plan.time_budget_s`` ends the loop between runs (an
    interrupted run's process group is killed and the run discarded); everything measured before
    is returned, never lost.
    """
    root = root or repo_root()
    builds = {b.name: b for b in plan.builds}
    cells = cells_for(plan)
    for c in cells:
        c["runs"] = []
    cpus = usable_cpus() or [0]
    schedule = stats.interleave(list(range(len(cells))), plan.repeats)
    order: list[list[int]] = []
    stopped: str | None = None
    t_start = clock()
    for n, (rnd, idx) in enumerate(schedule):
        cell = cells[idx]
        elapsed = clock() - t_start
        if plan.time_budget_s is not None and elapsed >= plan.time_budget_s:
            stopped = (f"time budget of {plan.time_budget_s:g} s spent after {n} of "
                       f"{len(schedule)} runs")
            break
        if progress is not None:
            eta = elapsed / n * (len(schedule) - n) if n else 0.0
            bar = "#" * (20 * n // len(schedule))
            progress(f"[{bar:<20}] {n}/{len(schedule)} eta {_fmt_eta(eta)}  round {rnd + 1}: "
                     f"{cell['workload']} {cell['build']} {cell['backend']} w{cell['workers']} "
                     f"{cell['kernel']}")
        spec = spec_for({k: cell[k] for k in ("workload", "build", "backend", "kernel",
                                              "workers")}, plan, cpus)
        try:
            res = run_cell(builds[cell["build"]], spec, root, plan.timeout_s)
        except CellError as exc:
            res = {"ok": False, "error": str(exc)}
        except KeyboardInterrupt:
            stopped = f"interrupted (Ctrl-C) after {n} of {len(schedule)} runs"
            break
        cell["runs"].append(_run_record(rnd, res))
        order.append([rnd, idx])
    if progress is not None:
        progress(f"[{'#' * 20}] {len(order)}/{len(schedule)} "
                 f"{'stopped' if stopped else 'done'} in {_fmt_eta(clock() - t_start)}")
    return cells, order, stopped


def build_section(plan: Plan, cells: list[dict[str, Any]], order: list[list[int]],
                  environment: dict[str, Any], command: Sequence[str], *,
                  stopped: str | None = None, note: str | None = None) -> dict[str, Any]:
    builds = [b.to_dict() for b in plan.builds]
    for c, s in zip(cells, aggregate(cells, builds), strict=True):
        c["summary"] = s
    return {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": list(command),
        "environment": environment,
        "params": {"world": dict(plan.world), "ticks": plan.ticks, "warmup": plan.warmup,
                   "min_seconds": plan.min_seconds,
                   "repeats": plan.repeats, "reference_iters": plan.ceiling_iters,
                   "quick": plan.quick},
        "builds": builds,
        "cells": cells,
        "order": order,
        "stopped_early": stopped,
        "runs_planned": len(cells) * plan.repeats,
        "runs_done": len(order),
        "note": note,
    }


# --- command line -------------------------------------------------------------------------


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _workers(text: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in _csv(text):
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"workers must be positive integers, got {text!r}")
    return tuple(sorted(set(out)))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="smaller matrix (gil+ft; threads, interpreters), 3 repeats of 5 "
                        "ticks: about 1-2 minutes on 2 cores")
    m = p.add_argument_group("matrix (each option takes one value or a comma list)")
    m.add_argument("--builds", type=_csv, default=None,
                   help=f"{', '.join((*ALL_BUILDS, 'current'))} (default: all three, or gil,ft "
                        "with --quick)")
    backend = m.add_argument("--backend", type=_csv, default=None,
                             help=f"{', '.join(BACKENDS)} (default: all; threads,interpreters "
                                  "with --quick)")
    alias(m, "--backends", of=backend)
    m.add_argument("--workers", type=_workers, default=None, metavar="W",
                   help="worker counts, e.g. 1-2 or 1,2,4 (default: usable cores: 1..cores; "
                        "powers of two plus the core count above 4 cores)")
    kernel = m.add_argument("--kernel", type=_csv, default=("python",),
                            help=f"{', '.join(KERNELS)} (default python)")
    alias(m, "--kernels", of=kernel)
    m.add_argument("--entities", type=int, default=ARENA_20K["entities"], metavar="N",
                   help="entities in the world (default 20000: arena-20k)")
    r = p.add_argument_group("repeats")
    r.add_argument("--repeats", type=int, default=None, help="repeats per cell (default 5)")
    r.add_argument("--ticks", type=int, default=None, help="timed ticks per repeat (default 12)")
    r.add_argument("--warmup", type=int, default=None, help="untimed ticks first (default 2)")
    r.add_argument("--min-seconds", type=float, default=None, metavar="S",
                   help="each repeat times at least S seconds: after the fixed ticks (where the "
                        "digest is taken) it goes on ticking until then (default 1; 0.3 with "
                        "--quick)")
    iters = r.add_argument("--reference-iters", type=int, default=None, dest="ceiling_iters",
                           metavar="N",
                           help="reference loop iterations per repeat, split over the workers "
                                "(default 2,000,000)")
    alias(r, "--ceiling-iters", of=iters)
    r.add_argument("--no-reference", "--no-ceiling", action="store_true", dest="no_ceiling",
                   help="skip the reference-loop rows")
    r.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="start no new run after SECONDS; what was measured is saved, the "
                        "report says the run stopped early (Ctrl-C does the same)")
    o = p.add_argument_group("output")
    o.add_argument("--note", default=None,
                   help="a line about the machine for the report (e.g. 'lent 16-core box')")
    o.add_argument("--venvs", default=None, help="folder holding gil/ and ft/ venvs")
    schema.add_out_argument(o, quick=True)
    o.add_argument("--no-plots", action="store_true", help="write report.md without PNGs")
    o.add_argument("--no-save", action="store_true",
                   help="print the table only; write no results folder (for demos)")
    o.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def default_workers(cores: int) -> tuple[int, ...]:
    """1..cores on small machines; on larger ones 1, 2, 4, ... plus ``cores`` itself, so a
    32-core run measures 6 worker counts instead of 32 while keeping the curve's shape."""
    if cores <= 4:
        return tuple(range(1, cores + 1))
    out = {cores}
    w = 1
    while w < cores:
        out.add(w)
        w *= 2
    return tuple(sorted(out))


def plan_from_args(args: argparse.Namespace) -> Plan:
    root = repo_root()
    quick = bool(args.quick)
    names = args.builds or (("gil", "ft") if quick else ALL_BUILDS)
    venvs = find_venvs(root, args.venvs)
    builds = tuple(make_build(n, venvs) for n in names)
    backends = args.backend or (("threads", "interpreters") if quick else BACKENDS)
    for b in backends:
        if b not in BACKENDS:
            raise SetupError(f"unknown backend {b!r}; expected one of {BACKENDS}")
    kernels = args.kernel or ("python",)
    for k in kernels:
        if k not in KERNELS:
            raise SetupError(f"unknown kernel {k!r}; expected one of {KERNELS}")
    cores = usable_cores()
    workers = args.workers or default_workers(cores)
    if max(workers) > cores:
        raise SetupError(f"{max(workers)} workers asked but only {cores} usable cores: "
                         "W workers must mean W cores")
    world = dict(ARENA_20K)
    if args.entities is not None:
        world["entities"] = args.entities
    base = Plan(builds=builds)
    return Plan(
        builds=builds, backends=tuple(backends), workers=workers, kernels=tuple(kernels),
        repeats=args.repeats or (3 if quick else base.repeats),
        ticks=args.ticks or (5 if quick else base.ticks),
        warmup=args.warmup if args.warmup is not None else (1 if quick else base.warmup),
        min_seconds=args.min_seconds if args.min_seconds is not None
        else (0.3 if quick else base.min_seconds),
        ceiling_iters=args.ceiling_iters or (500_000 if quick else base.ceiling_iters),
        world=tuple(world.items()), ceiling=not args.no_ceiling, quick=quick,
        time_budget_s=args.time_budget)


def _progress(line: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[2K" + line[:150])
        if "done in" in line:
            sys.stderr.write("\n")
    else:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    from bench import env, report, schema

    plan = plan_from_args(args)
    root = repo_root()
    environment = env.capture_builds(root, plan.builds)
    n_cells = len(cells_for(plan))
    print(f"paratick bench scaling: {n_cells} cells x {plan.repeats} repeats, "
          f"{plan.ticks} ticks (+{plan.warmup} warm-up), "
          f"{dict(plan.world)['entities']} entities, builds {[b.name for b in plan.builds]}",
          file=sys.stderr)
    cells, order, stopped = execute(plan, root=root, progress=None if args.quiet else _progress)
    section = build_section(plan, cells, order, environment, ["paratick", "bench", "scaling",
                                                              *sys.argv[3:]],
                            stopped=stopped, note=args.note)
    print(scaling_table(section))
    print("\n".join(["", *headlines(section)]))
    if not args.no_save:
        out = args.out or schema.results_dir(quick=plan.quick)
        path = schema.save_section(out, "scaling", section)
        written = report.write(out, plots=not args.no_plots)
        print(f"\nresults: {path}\nreport:  {', '.join(str(p) for p in written)}")
    bad = [c for c in cells if c["summary"]["status"] != "ok"]
    if bad:
        print(f"{len(bad)} cell(s) INVALID, ERROR or NOT RUN: see the status column",
              file=sys.stderr)
    if stopped:
        print(f"stopped early: {stopped}", file=sys.stderr)
    return 0
