"""``paratick bench capacity``: the largest world each configuration holds at 30 Hz.

Theory of operation
-------------------
A *configuration* is (build, backend, workers, kernel).  A *probe* asks whether it holds a world
of ``n`` entities at 30 Hz.  Each probe is a fresh interpreter of the build
(``python -m bench.capacity --probe SPEC``), pinned to the first W usable CPUs before any worker
starts (:func:`bench.cell.pin`, as every scaling cell is), which:

1. spawns ``n`` entities on a square world whose side grows with ``n`` so the density stays that
   of arena-20k (20,000 entities on 2048x2048; :func:`world_side`), 4x4 regions, radius 4,
   seed 1, and starts a :class:`server.runtime.Runtime` on the backend;
2. runs a few untimed warm-up ticks, flat out;
3. ticks paced at 30 Hz by the runtime's own :class:`~server.runtime.TickScheduler` (the one
   ``paratick run --tick-rate`` uses, overload policy ``dilate``) for ``seconds`` x 30 ticks, timing
   every ``Runtime.step`` as its caller sees it.  The runtime runs as the server runs it, shard
   checkpoints included (every ``CHECKPOINT_EVERY`` = 32 ticks, ~1.1 s, each taken after the
   worker reports its tick), so a probe of 1.1 s or more always contains at least one checkpoint:
   it counts in a tick's time only where it delays the next tick;
4. prints one JSON object: the tick times, how many ticks ran, the scheduler's counters (a tick
   that ends after the next tick's deadline makes that tick start late: the scheduler rebases and
   the world clock dilates), each worker's GIL state and the process tree's peak memory.

A probe **holds** (:func:`bench.summary.capacity_verdict`) when every planned tick ran, the p99
of the tick times is within the 33.3 ms budget, and no tick ended after the next one was due
(zero late ticks: every tick started on its deadline, the world clock never dilated).  A probe
that has already failed stops after one second of timed ticks instead of finishing (the verdict
cannot change), and no probe runs longer than 1.5x its planned seconds.  A no-GIL build whose
workers report the GIL on makes the probe, and so the configuration, **INVALID** (as in
``bench scaling``); its search stops there.

For each configuration :func:`bench.load.bounded_search` finds the largest ``n`` that holds:
doubling from ``--start`` while probes hold (halving while they fail), then bisecting, at most
``--max-probes`` probes.  Configurations run one after another; the search is adaptive, so
probes cannot be interleaved across configurations the way scaling repeats are.  A run ends
early on Ctrl-C (SIGINT) or, with ``--time-budget``, before the first probe that would start
after the budget is spent; either way what ran is saved, and a configuration whose search was
cut short reports the largest world its probes held as a bound from below.  The report
(:mod:`bench.summary`) recomputes every verdict from the raw tick times and gives, per
configuration, the entities held, entity-updates/s at that size (entities x 30) and the ratio to
the best valid single-worker configuration of the same kernel in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import schema
from bench.builds import ALL_BUILDS, Build, find_venvs, make_build, repo_root, run_group
from bench.errors import CellError, SetupError
from bench.load import bounded_search, positive_float
from bench.scaling import ARENA_20K
from bench.summary import capacity_headlines, capacity_table, capacity_verdict
from server.cli import alias
from server.host import usable_cores, usable_cpus
from server.runtime import BACKENDS
from server.runtime.worker import CHECKPOINT_EVERY
from sim.kernels import KERNELS

DESCRIPTION = """\
The largest world each build x backend x workers x kernel holds at 30 Hz on this machine.  A
world of N entities keeps arena-20k's density (20,000 on 2048 x 2048; --density for another): its
side is 2048 x sqrt(N / 20000).  Each probe is a fresh interpreter of the build pinned to W cores:
it spawns the world, starts the runtime, runs a few untimed ticks, then --seconds of ticks paced
at 30 Hz by the runtime's tick scheduler (as `paratick run --tick-rate 30` paces them).  A probe
holds when every planned tick ran, the p99 tick time (MSPT) is within 33.3 ms, and no tick ended
after the next tick was due (no late tick: every tick started on its deadline and the world clock
never dilated).  A probe that has failed stops after 1 s.  A no-GIL build whose workers report the
GIL on is INVALID, and its search stops.

Per configuration a bounded search doubles from --start while probes hold (halving while they
fail), then bisects, at most --max-probes probes.  The table gives the entities held (">=" when no
larger world failed), entity-updates/s at that size (entities x 30), and the ratio to the best
single-worker configuration of the same kernel in this run.  The default matrix (gil, ft; inline
and every parallel backend the kernel can use; 1 worker and all usable cores; python and numpy
kernels) takes about 12 minutes on 2 cores; --quick at most 3.  results.json, report.md and
capacity.png go to --out."""

#: The target: 30 Hz, the usual action-game server tick (``WorldConfig.tick_rate`` agrees).
TICK_RATE = 30.0
#: A tick must fit in its period; p99 above it means the server visibly stutters.
MSPT_BUDGET_MS = 1000.0 / TICK_RATE
#: Late ticks allowed per probe: none.  "Held" means every tick started on its deadline.
MAX_LATE_TICKS = 0
#: arena-20k's density in entities per 1,000,000 square units (20,000 on 2048 x 2048 = 4,768.4).
ARENA_DENSITY = ARENA_20K["entities"] / (ARENA_20K["width"] * ARENA_20K["height"]) * 1e6
#: Smallest world side: with 4x4 regions at 30 Hz a region must be wider than one step (4 units)
#: plus the 9-unit ghost band (``WorldConfig`` refuses less); only worlds of under ~20 entities
#: at arena density are this small, and they keep this side (a higher density).
MIN_SIDE = 64.0
#: Seconds of timed ticks per probe: 90 ticks at 30 Hz, enough for a p99 and for one slow tick
#: in three seconds to show (>= 1 s of timed ticks per measurement, for a stable p99).
SECONDS = 3.0
#: Untimed flat-out ticks before the paced ones (imports, caches, the first border exchange),
#: stopped early after WARMUP_MAX_S so an oversized world does not spend long warming up.
WARMUP_TICKS = 5
WARMUP_MAX_S = 1.0
#: A probe that has failed stops after this many seconds of timed ticks; one that is slow but
#: not yet failed stops at WALL_SLACK x its planned seconds (and fails: ticks are missing).
FAIL_FAST_S = 1.0
WALL_SLACK = 1.5
#: Probes per configuration: doubling/halving brackets the answer in 2-3 probes, the rest
#: bisect (6 probes: about 12 % resolution), and 24 configurations stay within ~12 minutes here.
MAX_PROBES = 6
#: First world tried per kernel: the python kernel ticks arena-20k in ~23 ms on one GIL core
#: here; the numpy kernel held 200,000-450,000 entities per configuration on the 2-core VM
#: (one worker to two), so the doubling brackets every answer there within two probes and
#: leaves the rest for bisecting.
START = {"python": 20_000, "numpy": 200_000}
#: Largest world tried: 4 M rows are ~1.5 GB in the probe before the workers copy them.
LIMIT = 4_000_000


# --- the world -------------------------------------------------------------------------------


def world_side(entities: int, density: float = ARENA_DENSITY) -> float:
    """Side of the square world holding ``entities`` at ``density`` per 1,000,000 square units.

    At arena density ``side = 2048 * sqrt(entities / 20000)``; never below :data:`MIN_SIDE`.

    Raises:
        ValueError: a negative count or a density that is not a finite positive number.
    """
    if entities < 0 or not (math.isfinite(density) and density > 0):
        raise ValueError(f"need entities >= 0 and density > 0, got {entities}, {density}")
    return max(MIN_SIDE, math.sqrt(entities / density * 1e6))


def world_for(entities: int, density: float = ARENA_DENSITY) -> dict[str, Any]:
    """The probe world (schema WORLD): arena-20k's regions, radius and seed, scaled side."""
    side = world_side(entities, density)
    return {**ARENA_20K, "entities": entities, "width": side, "height": side}


# --- one probe, inside the build's interpreter --------------------------------------------------


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one probe described by ``spec`` in this process (see the module docstring)."""
    from bench.cell import memory, pin
    from server.clock import MonotonicClock
    from server.host import gil_enabled, tune
    from server.runtime import Runtime, TickScheduler
    from sim.config import WorldConfig
    from sim.world import spawn

    cpus = pin(spec.get("cpus"))
    tuned = tune()  # as paratick run and serve do
    w = spec["world"]
    config = WorldConfig(width=w["width"], height=w["height"], regions_x=w["regions_x"],
                         regions_y=w["regions_y"], radius=w["radius"], seed=w["seed"],
                         tick_rate=spec["rate"])
    rows = spawn(config, w["entities"])
    clock = MonotonicClock()
    t_build = clock.now()
    with Runtime(config, rows, backend=spec["backend"], workers=spec["workers"],
                 kernel=spec["kernel"], validate=False) as rt:  # rows of spawn(): valid
        startup_s = clock.now() - t_build
        del rows
        t_warm = clock.now()
        for _ in range(spec["warmup"]):
            rt.step()
            if clock.now() - t_warm > WARMUP_MAX_S:
                break
        sched = TickScheduler(rate=spec["rate"])
        planned, max_late = spec["ticks"], spec["max_late"]
        tick_ms: list[float] = []
        lag_ms = 0.0
        t0 = clock.now()
        sched.start(t0)
        while len(tick_ms) < planned:
            clock.sleep(sched.delay(clock.now()))
            a = clock.now()
            lag_ms = max(lag_ms, (a - sched.due()) * 1e3)
            sched.begin(a)
            rt.step()
            b = clock.now()
            sched.end(b)
            tick_ms.append((b - a) * 1e3)
            if b - t0 > spec["seconds"] * WALL_SLACK:
                break
            if sched.stats.rebases > max_late and b - t0 >= FAIL_FAST_S:
                break
        timed_s = clock.now() - t0
        mem = memory()  # before close: every worker still alive
        worker_gil = [bool(g) for g in rt.worker_gil()]
        scheduler = sched.stats.to_dict()
        metrics = rt.metrics(scheduler=scheduler).to_dict()
    return {"ok": True, "cpus": cpus, "gil_enabled": gil_enabled(), "worker_gil": worker_gil,
            "python": sys.version.split()[0], "startup_s": startup_s, "timed_s": timed_s,
            "ticks_planned": planned, "ticks_run": len(tick_ms), "tick_ms": tick_ms,
            "late_ticks": scheduler["rebases"], "deadline_misses": scheduler["deadline_misses"],
            "min_dilation": scheduler["min_dilation"], "start_lag_ms_max": lag_ms,
            "peak_rss": int(mem["peak_rss"]), "runtime_metrics": metrics, **tuned}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity",
                                     description="one capacity probe (bench capacity runs these)")
    parser.add_argument("--probe", required=True, help="the probe as a JSON object")
    args = parser.parse_args(argv)
    try:
        result = measure(json.loads(args.probe))
    except Exception as exc:  # report any failure as data: the driver records an ERROR probe
        json.dump({"ok": False, "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc(limit=6)}, sys.stdout)
        sys.stdout.write("\n")
        return 2
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


# --- the driver ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What to measure; the defaults are the full run (about 12 minutes on the 2-core box)."""

    builds: tuple[Build, ...]
    #: None: per kernel, inline plus every parallel backend that can run it
    backends: tuple[str, ...] | None = None
    workers: tuple[int, ...] = (1, 2)
    kernels: tuple[str, ...] = ("python", "numpy")
    #: first world of every search; None: :data:`START` per kernel
    start: int | None = None
    limit: int = LIMIT
    max_probes: int = MAX_PROBES
    seconds: float = SECONDS
    density: float = ARENA_DENSITY
    warmup: int = WARMUP_TICKS
    rate: float = TICK_RATE
    max_late: int = MAX_LATE_TICKS
    quick: bool = False
    #: per-probe subprocess timeout on top of a size-dependent allowance (spawning 1 M
    #: entities takes ~3 s on the GIL build here, 2x that free-threaded)
    timeout_s: float = 120.0
    #: seconds after which no probe starts (None: no limit)
    time_budget_s: float | None = None

    def start_for(self, kernel: str) -> int:
        return self.start if self.start is not None else START.get(kernel, 20_000)


def configs_for(plan: Plan) -> list[dict[str, Any]]:
    """The configurations of ``plan`` in table order (kernel, build, backend, workers).

    Combinations that cannot exist are skipped, not failed: ``inline`` has one worker; numpy
    does not load in subinterpreters; more workers than the 16 regions would idle.
    """
    regions = ARENA_20K["regions_x"] * ARENA_20K["regions_y"]
    out: list[dict[str, Any]] = []
    for kernel in plan.kernels:
        for build in plan.builds:
            for backend in plan.backends or BACKENDS:
                if kernel == "numpy" and backend == "interpreters":
                    continue
                for w in plan.workers:
                    if (backend == "inline" and w != 1) or w > regions:
                        continue
                    out.append({"build": build.name, "backend": backend, "kernel": kernel,
                                "workers": w})
    return out


def spec_for(config: dict[str, Any], entities: int, plan: Plan,
             cpus: Sequence[int]) -> dict[str, Any]:
    return {"backend": config["backend"], "workers": config["workers"],
            "kernel": config["kernel"], "cpus": list(cpus[: config["workers"]]),
            "world": world_for(entities, plan.density), "rate": plan.rate,
            "ticks": max(1, round(plan.seconds * plan.rate)), "seconds": plan.seconds,
            "warmup": plan.warmup, "max_late": plan.max_late}


def run_probe(build: Build, spec: dict[str, Any], root: Path, timeout_s: float,
              ) -> dict[str, Any]:
    """One probe in a fresh interpreter of ``build``; returns its record (schema PROBE).

    A probe that cannot run (timeout, crash, no JSON) becomes an ``ok: false`` record, never an
    exception: in a search it counts as "does not hold".
    """
    world = spec["world"]
    rec: dict[str, Any] = {"entities": world["entities"], "side": world["width"],
                           "ticks_planned": spec["ticks"]}
    cmd = [build.python, "-m", "bench.capacity", "--probe", json.dumps(spec)]
    try:
        code, out, err = run_group(cmd, env=build.environ(root), cwd=root, timeout=timeout_s)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if not lines:
            raise CellError(f"exit {code}, no result: {(err or out).strip()[-400:]}")
        res: dict[str, Any] = json.loads(lines[-1])
    except (CellError, ValueError) as exc:
        res = {"ok": False, "error": str(exc)}
    keep = ("ok", "error", "ticks_run", "timed_s", "tick_ms", "late_ticks", "deadline_misses",
            "min_dilation", "start_lag_ms_max", "worker_gil", "gil_enabled", "peak_rss",
            "startup_s", "runtime_metrics")
    rec.update({k: res.get(k) for k in keep})
    rec["ok"] = bool(rec["ok"])
    rec["tick_ms"] = list(rec["tick_ms"] or [])
    rec["worker_gil"] = [bool(g) for g in rec["worker_gil"] or []]
    rec["ticks_run"] = int(rec["ticks_run"] or 0)
    return rec


def probe_timeout(plan: Plan, entities: int) -> float:
    """Generous: start-up grows with the world (spawn, partition, shipping rows to workers)."""
    return plan.timeout_s + plan.seconds * 3 + entities * 3e-5


class _Invalid(Exception):
    """A probe's GIL state contradicts its build: the configuration's search stops."""


class _BudgetSpent(Exception):
    """The run's time budget is spent: no probe starts any more."""


def search(plan: Plan, config: dict[str, Any], build: Build, *, root: Path,
           cpus: Sequence[int], params: dict[str, Any],
           progress: Callable[[str], None] = lambda _: None,
           probe: Callable[[Build, dict[str, Any], Path, float], dict[str, Any]] = run_probe,
           probes: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The bounded search of one configuration; returns its probe records in run order,
    appended to ``probes`` as they come (so a search cut short keeps the ones that ran)."""
    probes = [] if probes is None else probes
    label = f"{build.name} {config['backend']} x{config['workers']} {config['kernel']}"

    def holds(n: int) -> bool:
        progress(f"capacity: {label}: {n:,} entities (probe {len(probes) + 1}/"
                 f"{plan.max_probes}) ...")
        rec = probe(build, spec_for(config, n, plan, cpus), root, probe_timeout(plan, n))
        probes.append(rec)
        verdict, why = capacity_verdict(rec, expects_gil=build.expects_gil, params=params)
        p99 = _p99(rec)
        figures = (f"p99 {p99:.1f} ms, {rec['late_ticks']} late, "
                   f"{rec['ticks_run']}/{rec['ticks_planned']} ticks"
                   if p99 is not None else "no ticks")
        progress(f"      -> {verdict} ({figures})" + (f": {'; '.join(why)}" if why else ""))
        if verdict == "INVALID":
            raise _Invalid
        return verdict == "held"

    with contextlib.suppress(_Invalid):
        bounded_search(holds, start=plan.start_for(config["kernel"]), limit=plan.limit,
                       max_probes=plan.max_probes)
    return probes


def _p99(rec: dict[str, Any]) -> float | None:
    from bench import stats

    return stats.percentile(rec["tick_ms"], 99) if rec["tick_ms"] else None


def params_of(plan: Plan) -> dict[str, Any]:
    """The section's params (schema CAPACITY.params)."""
    return {"rate": plan.rate, "mspt_budget_ms": 1000.0 / plan.rate,
            "max_late_ticks": plan.max_late, "seconds": plan.seconds,
            "ticks": max(1, round(plan.seconds * plan.rate)), "warmup": plan.warmup,
            "density": plan.density,
            "world": {k: ARENA_20K[k] for k in ("regions_x", "regions_y", "radius", "seed")},
            "checkpoint_every": CHECKPOINT_EVERY,
            "start": {k: plan.start_for(k) for k in plan.kernels}, "limit": plan.limit,
            "max_probes": plan.max_probes, "quick": plan.quick,
            "time_budget_s": plan.time_budget_s}


def execute(plan: Plan, *, root: Path | None = None,
            progress: Callable[[str], None] = lambda _: None,
            probe: Callable[[Build, dict[str, Any], Path, float], dict[str, Any]] = run_probe,
            clock: Callable[[], float] = time.monotonic,
            ) -> tuple[list[dict[str, Any]], str | None]:
    """Search every configuration; returns (configurations with their probes, why the run
    stopped early or None).  Ctrl-C, or a probe that would start after ``plan.time_budget_s``,
    ends the run, keeping every probe that finished (a search cut short keeps its own);
    configurations never reached have no probes (NOT RUN)."""
    root = root or repo_root()
    builds = {b.name: b for b in plan.builds}
    cpus = usable_cpus() or [0]
    params = params_of(plan)
    configs = configs_for(plan)
    for c in configs:
        c["probes"] = []
    budget = plan.time_budget_s
    t0 = clock()

    def budgeted(build: Build, spec: dict[str, Any], where: Path, timeout: float,
                 ) -> dict[str, Any]:
        if budget is not None and clock() - t0 >= budget:
            raise _BudgetSpent
        return probe(build, spec, where, timeout)

    stopped: str | None = None
    for i, c in enumerate(configs):
        progress(f"capacity: configuration {i + 1}/{len(configs)}")
        where = f"configuration {i + 1} of {len(configs)}"
        try:
            search(plan, c, builds[c["build"]], root=root, cpus=cpus, params=params,
                   progress=progress, probe=budgeted, probes=c["probes"])
        except KeyboardInterrupt:
            stopped = f"interrupted (Ctrl-C) in {where}"
            break
        except _BudgetSpent:
            stopped = f"time budget of {budget:g} s spent in {where}"
            break
    return configs, stopped


def build_section(plan: Plan, configs: list[dict[str, Any]], environment: dict[str, Any],
                  command: Sequence[str], *, stopped: str | None = None,
                  note: str | None = None) -> dict[str, Any]:
    """The ``capacity`` section of results.json (schema CAPACITY)."""
    return {"created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "command": list(command), "environment": environment, "params": params_of(plan),
            "builds": [b.to_dict() for b in plan.builds], "configs": configs,
            "stopped_early": stopped, "note": note}


# --- command line ----------------------------------------------------------------------------


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}")
    return value


def _workers(text: str) -> tuple[int, ...]:
    counts = tuple(sorted({_positive_int(x) for x in _csv(text)}))
    if not counts:
        raise argparse.ArgumentTypeError("expected worker counts such as 1,2")
    return counts


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="small matrix: gil+ft, threads+processes at 1 and 2 workers, numpy "
                        "kernel, 3 probes of 2 s (<= 3 minutes on 2 cores)")
    p.add_argument("--builds", type=_csv, default=None,
                   help=f"comma list of {', '.join((*ALL_BUILDS, 'current'))} (default gil,ft)")
    backend = p.add_argument("--backend", dest="backends", type=_csv, default=None,
                             help=f"one or a comma list of {', '.join(BACKENDS)} (default: "
                                  "inline plus every parallel backend that can run the kernel; "
                                  "numpy never with interpreters)")
    alias(p, "--backends", of=backend)
    p.add_argument("--workers", type=_workers, default=None,
                   help="comma list of worker counts (default: 1 and the usable cores)")
    kernel = p.add_argument("--kernel", dest="kernels", type=_csv, default=None,
                            help="one or a comma list of python, numpy (default both)")
    alias(p, "--kernels", of=kernel)
    p.add_argument("--start", type=_positive_int, default=None, metavar="N",
                   help="first world size of every search (default: "
                        + ", ".join(f"{k} {v:,}" for k, v in START.items())
                        + "); doubled while probes hold, halved while they fail")
    p.add_argument("--limit", type=_positive_int, default=LIMIT, metavar="N",
                   help="largest world tried (default %(default)s)")
    p.add_argument("--max-probes", type=_positive_int, default=None, metavar="N",
                   help=f"probes per configuration (default {MAX_PROBES}; 3 with --quick)")
    p.add_argument("--seconds", type=positive_float, default=None, metavar="S",
                   help=f"timed seconds of paced 30 Hz ticks per probe (default {SECONDS:g}; "
                        "2 with --quick)")
    p.add_argument("--density", type=positive_float, default=ARENA_DENSITY, metavar="D",
                   help=f"entities per 1,000,000 square units (default {ARENA_DENSITY:.1f}, "
                        "arena-20k's: 20,000 on 2048x2048); the world's side grows with the "
                        "entity count")
    p.add_argument("--time-budget", type=positive_float, default=None, metavar="SECONDS",
                   help="start no probe after SECONDS; what was measured is saved, and a search "
                        "cut short gives the largest world it held as a bound from below "
                        "(Ctrl-C does the same)")
    p.add_argument("--note", default=None, help="a line about the machine for the report")
    p.add_argument("--venvs", default=None, help="folder holding gil/ and ft/ venvs")
    schema.add_out_argument(p, quick=True)
    p.add_argument("--no-plots", action="store_true", help="write report.md without PNGs")


def plan_from_args(args: argparse.Namespace) -> Plan:
    """A :class:`Plan` from the command line.

    Raises:
        SetupError: an unknown build, backend or kernel, more workers than usable cores, a
            start above the limit, a missing venv, or a matrix with nothing to run.
    """
    quick = bool(args.quick)
    names = args.builds or ("gil", "ft")
    for n in names:
        if n not in (*ALL_BUILDS, "current"):
            raise SetupError(f"unknown build {n!r}; expected some of "
                             f"{', '.join((*ALL_BUILDS, 'current'))}")
    backends = args.backends or (("threads", "processes") if quick else None)
    for b in backends or ():
        if b not in BACKENDS:
            raise SetupError(f"unknown backend {b!r}; expected some of {', '.join(BACKENDS)}")
    kernels = args.kernels or (("numpy",) if quick else KERNELS)
    for k in kernels:
        if k not in KERNELS:
            raise SetupError(f"unknown kernel {k!r}; expected some of {', '.join(KERNELS)}")
    cores = usable_cores()
    workers = args.workers or tuple(sorted({1, cores}))
    if max(workers) > cores:
        raise SetupError(f"{max(workers)} workers asked but only {cores} usable cores: "
                         "W workers must mean W cores")
    plan = Plan(builds=(), backends=backends, workers=workers, kernels=kernels, quick=quick,
                start=args.start, limit=args.limit,
                max_probes=args.max_probes or (3 if quick else MAX_PROBES),
                seconds=args.seconds or (2.0 if quick else SECONDS), density=args.density,
                time_budget_s=args.time_budget)
    first = max(plan.start_for(k) for k in kernels)
    if first > plan.limit:
        raise SetupError(f"--limit {plan.limit:,} is below the first world tried ({first:,})")
    venvs = find_venvs(repo_root(), args.venvs)
    plan = replace(plan, builds=tuple(make_build(n, venvs) for n in names))
    if not configs_for(plan):
        raise SetupError("nothing to run: numpy never runs in subinterpreters and inline has "
                         "one worker")
    return plan


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from bench import env, report, schema

    plan = plan_from_args(args)
    root = repo_root()
    environment = env.capture_builds(root, plan.builds)
    n = len(configs_for(plan))
    print(f"paratick bench capacity: {n} configurations, up to {plan.max_probes} probes of "
          f"{plan.seconds:g} s each at {plan.rate:g} Hz, builds {[b.name for b in plan.builds]}",
          file=sys.stderr)
    t0 = time.monotonic()
    configs, stopped = execute(plan, root=root, progress=_progress)
    section = build_section(plan, configs, environment,
                            ["paratick", "bench", "capacity", *sys.argv[3:]],
                            stopped=stopped, note=args.note)
    print(capacity_table(section))
    print("\n".join(["", *capacity_headlines(section)]))
    out = args.out or schema.results_dir(quick=plan.quick)
    path = schema.save_section(out, "capacity", section)
    written = report.write(out, plots=not args.no_plots)
    print(f"\nresults: {path}\nreport:  {', '.join(str(p) for p in written)}\n"
          f"took {time.monotonic() - t0:.0f} s", file=sys.stderr)
    if stopped:
        print(f"stopped early: {stopped}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
