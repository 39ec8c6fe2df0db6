"""``paratick bench``: scaling, load, claims and report subcommands.

Each subcommand module (:mod:`bench.scaling`, :mod:`bench.load`, :mod:`bench.claims`,
:mod:`bench.report`) exposes ``add_arguments`` and ``run`` like the top-level commands; heavy
imports (matplotlib) stay inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bench.errors import BenchError

HELP = "measure tick-rate scaling, load capacity and subinterpreter/free-threading claims"

DESCRIPTION = """\
Benchmarks whose figures you can trust: every cell runs in a fresh interpreter pinned to W cores,
repeats are interleaved, medians come with min/max, speedups are ratios from the same run, and the
environment (CPU, interpreter builds, GIL state per worker, git commit) is saved with the figures.

  paratick bench scaling [--quick]   ticks/s vs workers: GIL vs free-threaded vs PYTHON_GIL=1,
                                     threads / subinterpreters / processes, plus a CEILING row
  paratick bench load                server + bots: largest world and bot count holding 30 Hz
  paratick bench claims              start-up, memory, message cost, free-threading overhead
  paratick bench report DIR          rebuild report.md and plots from DIR/results.json
  paratick bench soak                a ping flood, then 10 minutes of churn and hostile
                                     clients: snapshot rate, welcome time, memory, errors

Results go to bench/results/<date>-<host>/ (results.json, report.md, PNG plots)."""

SUBCOMMANDS = {
    "scaling": ("bench.scaling", "tick-rate scaling per core across builds and backends"),
    "load": ("bench.load", "server + bots: largest load that holds the tick rate"),
    "claims": ("bench.claims", "check common claims about subinterpreters and free threading"),
    "report": ("bench.report", "rebuild report.md and plots from a results folder"),
    "soak": ("bench.soak", "a ping flood, then minutes of churn and hostile clients"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", metavar="SUBCOMMAND", required=True)
    for name, (modname, help_) in SUBCOMMANDS.items():
        mod = importlib.import_module(modname)
        p = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_bench_module=mod)


def run(args: argparse.Namespace) -> int:
    try:
        return int(args._bench_module.run(args) or 0)
    except BenchError as exc:
        print(f"paratick bench {args.bench_command}: {exc}", file=sys.stderr)
        return 2
