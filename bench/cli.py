"""``paratick bench``: one subcommand per benchmark, each a module of this package.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args)`` like the top-level
commands, and its ``DESCRIPTION`` (plain text, not the docstring, which is written for readers of
the code) is its ``--help`` text; heavy imports (matplotlib) stay inside ``run``.  A
:class:`~bench.errors.BenchError` from ``run`` (bad options, a results file that does not
validate, a cell that cannot start) becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from bench import (
    capacity,
    claims,
    load,
    nodes,
    report,
    scaling,
    sim_kernels,
    snapshots,
    soak,
    spectators,
)
from bench.errors import BenchError

HELP = "measure tick-rate scaling, load capacity, kernel and snapshot costs, and common claims"

DESCRIPTION = """\
Benchmarks whose figures you can trust: every cell runs in a fresh interpreter pinned to W cores,
repeats are interleaved, medians come with min/max, speedups are ratios from the same run, and the
environment (CPU, interpreter builds, GIL state per worker, git commit) is saved with the figures.

  paratick bench scaling [--quick]   ticks/s vs workers: GIL vs free-threaded vs PYTHON_GIL=1,
                                     threads / subinterpreters / processes, plus a CEILING row
  paratick bench load                server + bots: largest world and bot count holding 30 Hz
  paratick bench capacity [--quick]  largest world each build x backend x workers x kernel
                                     holds at 30 Hz (p99 MSPT <= 33.3 ms, no late tick)
  paratick bench claims              start-up, memory, message cost, free-threading overhead
  paratick bench kernels             arena-20k entity-updates/s of each kernel on one core
  paratick bench snapshots           microseconds per client snapshot (the cost behind load)
  paratick bench report DIR          rebuild report.md and plots from DIR/results.json
  paratick bench soak                a ping flood, then 10 minutes of churn and hostile
                                     clients: snapshot rate, welcome time, memory, errors
  paratick bench spectators          tick MSPT with 0 vs 10 spectators (the live page),
                                     interleaved A/B rounds, median ratio with spread
  paratick bench nodes               ticks/s and per-tick exchange latency of nodes over NATS
                                     vs the processes backend, 1, 2 and 4 workers

Results go to --out: by default bench/results/<date>-<host>/ in a source checkout, and
paratick-results/<date>-<host>/ in the current directory where paratick is installed
(results.json, report.md, PNG plots; kernels and snapshots, which run once per interpreter, write
one JSON file per build there)."""

#: subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[ModuleType, str]] = {
    "scaling": (scaling, "tick-rate scaling per core across builds and backends"),
    "load": (load, "server + bots: largest load that holds the tick rate"),
    "capacity": (capacity, "largest world each configuration holds at 30 Hz"),
    "claims": (claims, "check common claims about subinterpreters and free threading"),
    "kernels": (sim_kernels, "entity-updates/s of each tick kernel on one core (arena-20k)"),
    "snapshots": (snapshots, "microseconds per client snapshot, msgpack C vs pure Python"),
    "report": (report, "rebuild report.md and plots from a results folder"),
    "soak": (soak, "a ping flood, then minutes of churn and hostile clients"),
    "spectators": (spectators, "tick cost of spectators: MSPT with 0 vs 10 of them"),
    "nodes": (nodes, "nodes over NATS vs processes: ticks/s and exchange latency p50/p99"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", metavar="SUBCOMMAND", required=True)
    for name, (mod, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=getattr(mod, "DESCRIPTION", help_),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_bench_module=mod)


def run(args: argparse.Namespace) -> int:
    try:
        return int(args._bench_module.run(args) or 0)
    except BenchError as exc:
        print(f"paratick bench {args.bench_command}: {exc}", file=sys.stderr)
        return 2
