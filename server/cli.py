"""The ``paratick`` command line: one entry point, one module per command, declared in one place.

The commands are the ``paratick.commands`` entry-point group of ``pyproject.toml`` (``name =
"module"``).  This front door reads the group, imports each module and wires it into argparse;
it names no command itself, so ``server/`` never imports ``bench/`` or ``clients/`` (the import
test in ``tests/test_imports.py`` holds it to that) and adding a command touches
``pyproject.toml`` and the command's own module only.

A command module exposes ``HELP`` (one line), optionally ``DESCRIPTION``, ``add_arguments(parser)``
and ``run(args) -> int``.  Modules keep their top-level imports light (numpy, websockets and
matplotlib are imported inside ``run``) so that ``paratick --help`` stays instant.

The group is read from the installed distribution's metadata; a checkout run without being
installed (``PYTHONPATH=. python -m server.cli``, as the device kit does) reads the same table
from its own ``pyproject.toml``.  Bare ``paratick`` prints the help and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module, metadata
from pathlib import Path
from types import ModuleType

#: The entry-point group listing every ``paratick`` command.
GROUP = "paratick.commands"
#: Where a source checkout declares the group (used when no installed metadata has it).
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

DESCRIPTION = """\
paratick ticks a sharded game world in parallel on free threads, subinterpreters or processes,
serves it to websocket bots, and measures tick-rate scaling per core on GIL and free-threaded
CPython builds.  Every command runs with no options; `paratick COMMAND --help` explains each."""


class NoCommands(RuntimeError):
    """Neither the installed metadata nor a checkout's pyproject.toml declares any command."""


def declared(pyproject: Path = PYPROJECT) -> dict[str, str]:
    """Command name -> module, as the ``paratick.commands`` group declares them, by name
    (installed metadata does not keep the declaration order, so neither source uses it).

    Raises:
        NoCommands: paratick is neither installed nor run from a checkout.
    """
    found: dict[str, str] = {}
    for ep in metadata.entry_points(group=GROUP):
        found.setdefault(ep.name, ep.value)
    if not found and pyproject.is_file():
        import tomllib

        with pyproject.open("rb") as f:
            table = tomllib.load(f).get("project", {}).get("entry-points", {}).get(GROUP, {})
        found = {str(k): str(v) for k, v in table.items()}
    if not found:
        raise NoCommands(f"no {GROUP!r} entry points: install paratick (pip install -e .) or "
                         f"run it from its source checkout")
    return dict(sorted(found.items()))


def build_parser(commands: dict[str, str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paratick", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, modname in (commands if commands is not None else declared()).items():
        mod: ModuleType = import_module(modname)
        p = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not args_in:
        parser.print_help()
        return 2
    args = parser.parse_args(args_in)
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print("paratick: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
