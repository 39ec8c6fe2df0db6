"""The ``paratick`` command line: one entry point, one module per command, declared in one place.

The commands are the ``paratick.commands`` entry-point group of ``pyproject.toml`` (``name =
"module"``).  This front door reads the group, imports each module and wires it into argparse;
it names no command itself, so ``server/`` never imports ``bench/`` or ``clients/`` (the import
test in ``tests/test_imports.py`` holds it to that) and adding a command touches
``pyproject.toml`` and the command's own module only.

A command module exposes ``HELP`` (one line), optionally ``DESCRIPTION`` (plain text: it is the
command's ``--help``), ``add_arguments(parser)`` and ``run(args) -> int``.  Modules keep their
top-level imports light (numpy, websockets and matplotlib are imported inside ``run``) so that
``paratick --help`` stays instant.

Every command speaks one vocabulary (``--entities``, ``--players``, ``--regions``,
``--world-size``, ``--tick-rate``, ``--backend``, ``--workers``, ``--kernel``, ``--seed``,
``--json``, ``--quiet``, ``--out``): the table "Options every command shares" in README.md says
which command has which and with what default, and ``tests/test_cli.py`` holds the parsers to it.
Older spellings stay accepted through :func:`alias`, hidden from ``--help``.  A bad argument is
one line on stderr, ``paratick CMD: error: ...``, and exit status 2 (:class:`Parser`).

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
from typing import Any, NoReturn

from server.errors import ServerError

#: The entry-point group listing every ``paratick`` command.
GROUP = "paratick.commands"
#: Where a source checkout declares the group (used when no installed metadata has it).
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

DESCRIPTION = """\
paratick ticks a sharded game world in parallel on free threads, subinterpreters or processes,
serves it to websocket bots, and measures tick-rate scaling per core on GIL and free-threaded
CPython builds.  Every command runs with no options; `paratick COMMAND --help` explains each."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit status 2.

    argparse prints the whole usage block before its message; one line naming the option says it
    better.  Sub-parsers (each command, each ``paratick bench`` subcommand) inherit the class.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def alias(container: argparse._ActionsContainer, *names: str, of: argparse.Action) -> None:
    """Accept ``names`` as older spellings of the value option ``of``, hidden from ``--help``.

    The alias stores into the same destination with the same type and choices and sets no
    default of its own, so ``of``'s default stands.  Add it to the same group as ``of`` when that
    group is mutually exclusive.
    """
    typed: dict[str, Any] = {} if of.type is None else {"type": of.type}
    container.add_argument(*names, dest=of.dest, choices=of.choices, metavar=of.metavar,
                           default=argparse.SUPPRESS, help=argparse.SUPPRESS, **typed)


def add_world_arguments(group: argparse._ActionsContainer, *, grid_example: str = "3x2",
                        ) -> None:
    """The world options ``paratick sim`` and ``paratick run`` share, with arena-20k's
    defaults (one home: the digests of the two commands agree for the same options)."""
    group.add_argument("--entities", type=int, default=20_000, metavar="N",
                       help="entities in the world, players included (default 20000: arena-20k)")
    group.add_argument("--players", type=int, default=0, metavar="P",
                       help="entities 0..P-1 are players driven by scripted inputs (default 0)")
    group.add_argument("--regions", default="4x4", metavar="RXxRY",
                       help=f"region grid, e.g. 4x4, {grid_example} or 1 (default 4x4)")
    size = group.add_argument("--world-size", type=float, default=2048.0, metavar="W",
                              help="world width and height in world units (default 2048)")
    alias(group, "--size", of=size)
    group.add_argument("--seed", type=int, default=1, help="world seed (default 1)")


class NoCommands(ServerError, RuntimeError):
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
    """The ``paratick`` parser with one sub-parser per command (``commands``: name -> module,
    default :func:`declared`); each command's parser carries its module as ``_module``."""
    parser = Parser(
        prog="paratick", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, modname in (commands if commands is not None else declared()).items():
        mod: ModuleType = import_module(modname)
        p = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
        _own_errors(p)
    return parser


def _own_errors(parser: argparse.ArgumentParser) -> None:
    """Let ``parser`` and every sub-parser below it record themselves as ``_parser``, so that
    an unrecognised argument is reported by the (sub)command it was given to."""
    parser.set_defaults(_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _own_errors(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not args_in:
        parser.print_help()
        return 2
    args, extra = parser.parse_known_args(args_in)
    if extra:  # argparse would blame the top-level parser; the command's own one says it better
        args._parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print("paratick: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
