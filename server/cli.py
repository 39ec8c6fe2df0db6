"""The ``paratick`` command line: one entry point, one module per subcommand.

Each subcommand lives in its own module exposing ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; this file only wires them together, so adding a command never touches another.
Modules keep their top-level imports light (numpy, websockets, matplotlib are imported inside
``run``) so that ``paratick --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: subcommand -> module implementing it
COMMANDS: dict[str, str] = {
    "info": "server.cmd_info",
    "sim": "sim.cli",
    "run": "server.runtime.cli",
    "serve": "server.cmd_serve",
    "bots": "clients.cli",
    "bench": "bench.cli",
}

DESCRIPTION = """\
paratick ticks a sharded game world in parallel on free threads, subinterpreters or processes,
serves it to websocket bots, and measures tick-rate scaling per core on GIL and free-threaded
CPython builds.  Every command runs with no options; `paratick COMMAND --help` explains each."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paratick", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, modname in COMMANDS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name is not None and modname.startswith(exc.name):
                continue  # subcommand not present in this build
            raise
        p = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print("paratick: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
