"""The ``paratick`` command line as a user meets it: one vocabulary, plain help, one-line errors.

* README.md's table "Options every command shares" is read and checked against the parsers both
  ways: every command the table names has the flag, visible in ``--help``, with the table's
  default; every command with the flag visible is named in the table.
* Older spellings still parse to the same option.
* No ``--help`` (of ``paratick``, of each command, of each ``paratick bench`` subcommand) shows
  Sphinx or reStructuredText markup.
* A bad argument is one line on stderr and exit status 2, whether argparse or the command finds it.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from server import cli

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Options every command shares"
#: A table cell's list of commands: "sim", "bench load", or several joined by ", ".
_COMMAND = r"(?:bench [a-z]+|[a-z]+)"
_ENTRY = re.compile(rf"({_COMMAND}(?:, {_COMMAND})*) (.+)")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def all_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser by name, ``bench X`` for each benchmark."""
    out: dict[str, argparse.ArgumentParser] = {}
    for name, parser in _subparsers(cli.build_parser()).items():
        out[name] = parser
        for sub, subparser in _subparsers(parser).items():
            out[f"{name} {sub}"] = subparser
    return out


PARSERS = all_parsers()


def visible(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Option string -> action, for the options ``--help`` lists."""
    return {s: a for a in parser._actions if a.help != argparse.SUPPRESS
            for s in a.option_strings}


def read_table(text: str) -> dict[str, dict[str, str]]:
    """flag -> {command: default cell}, from the README section's table."""
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    table: dict[str, dict[str, str]] = {}
    for line in section.splitlines():
        if not line.startswith("| `--"):
            continue
        flag_cell, _meaning, defaults = (c.strip() for c in line.strip("|").split(" | "))
        flag = flag_cell.strip("`").split()[0]
        per_command: dict[str, str] = {}
        for entry in defaults.split("; "):
            m = _ENTRY.fullmatch(entry)
            assert m, f"README {flag}: cannot read {entry!r} (want 'COMMAND[, COMMAND] DEFAULT')"
            for command in m.group(1).split(", "):
                per_command[command] = m.group(2)
        table[flag] = per_command
    return table


def matches(default: object, cell: str) -> bool:
    """Whether a parser default is what the table says: `x` is that value (`off` a switch that
    is off); words describe a default worked out when the command runs (None in the parser)."""
    literal = re.fullmatch(r"`([^`]*)`", cell)
    if literal is None:
        return default is None
    text = literal.group(1)
    if isinstance(default, bool):
        return text == ("on" if default else "off")
    if isinstance(default, tuple | list):
        return ",".join(map(str, default)) == text
    if isinstance(default, int | float):
        try:
            return float(text) == float(default)
        except ValueError:
            return False
    return str(default) == text


TABLE = read_table(README.read_text(encoding="utf-8"))


def test_the_table_covers_the_shared_ideas() -> None:
    assert {"--entities", "--players", "--regions", "--world-size", "--tick-rate", "--backend",
            "--workers", "--kernel", "--seed", "--json", "--quiet", "--out"} <= set(TABLE)
    for flag, per_command in TABLE.items():
        unknown = set(per_command) - set(PARSERS)
        assert not unknown, f"README names commands that do not exist for {flag}: {unknown}"


@pytest.mark.parametrize("flag", sorted(TABLE))
def test_the_table_matches_the_parsers(flag: str) -> None:
    per_command = TABLE[flag]
    for command, cell in per_command.items():
        options = visible(PARSERS[command])
        assert flag in options, f"README says `paratick {command}` has {flag}; it does not"
        default = options[flag].default
        assert matches(default, cell), (
            f"paratick {command} {flag}: README says {cell}, the parser's default is {default!r}")
    for command, parser in PARSERS.items():
        if flag in visible(parser):
            assert command in per_command, (
                f"paratick {command} has {flag}: add it to README's table '{SECTION[3:]}'")


@pytest.mark.parametrize(("argv", "dest", "value"), [
    (["run", "--size", "512"], "world_size", 512.0),
    (["run", "--rate", "60"], "tick_rate", 60.0),
    (["serve", "--world", "512"], "world_size", 512.0),
    (["bench", "scaling", "--backends", "threads,processes"], "backend",
     ("threads", "processes")),
    (["bench", "scaling", "--kernels", "numpy"], "kernel", ("numpy",)),
    (["bench", "kernels", "--kernels", "naive,python"], "kernel", "naive,python"),
    (["bench", "claims", "--kernel-entities", "300"], "entities", 300),
    (["bench", "load", "--backends", "threads"], "backend", "threads"),
    (["bench", "load", "--entities-fixed", "700"], "npcs", 700),
    (["bench", "load", "--fixed-bots", "70"], "bots", 70),
    (["bench", "load", "--bots-fixed", "30"], "search_bots", 30),
    (["bench", "load", "--entities-start", "100"], "npcs_start", 100),
    (["bench", "load", "--entities-limit", "900"], "npcs_limit", 900),
])
def test_older_spellings_still_parse(argv: list[str], dest: str, value: object) -> None:
    args = cli.build_parser().parse_args(argv)
    assert getattr(args, dest) == value


def test_an_alias_leaves_the_default_alone() -> None:
    args = cli.build_parser().parse_args(["run"])
    assert args.world_size == 2048.0 and args.tick_rate == 30.0


#: Markup that belongs in docstrings for readers of the code, never in what ``--help`` prints.
MARKUP = [re.compile(p, re.M) for p in (
    r":(?:class|func|mod|meth|data|attr|exc|obj):`",
    r"``",
    r"(?i)theory of operation",
    r"^\s*([-=~^*+#])\1{2,}\s*$",  # a section underline
)]


@pytest.mark.parametrize("command", ["", *PARSERS])
def test_help_is_plain_text(command: str) -> None:
    parser = PARSERS[command] if command else cli.build_parser()
    text = parser.format_help()
    found = [m.group(0) for p in MARKUP for m in p.finditer(text)]
    assert not found, f"paratick {command} --help shows markup {found}:\n{text}"


BAD = [
    ["frobnicate"],
    ["bench"],
    ["info", "--verbose"],
    ["sim", "--entities", "many"],
    ["sim", "--kernel", "fortran"],
    ["sim", "--regions", "0x2"],
    ["sim", "--players", "5", "--entities", "3"],
    ["run", "--backend", "gpu"],
    ["run", "--tick-rate", "10", "--flat-out"],
    ["run", "--players", "5", "--entities", "2"],
    ["serve", "--world-size", "big"],
    ["serve", "--entities", "10", "--npcs", "5"],
    ["serve", "--entities", "10", "--players", "20"],
    ["serve", "--port", "99999"],
    ["bots", "--bots", "0"],
    ["bots", "--url", "http://127.0.0.1:8765"],
    ["bots", "-n"],
    ["bench", "scaling", "--workers", "0"],
    ["bench", "load", "--bots", "x"],
    ["bench", "load", "--kernel", "fortran"],
    ["bench", "kernels", "--rounds", "x"],
    ["bench", "kernels", "--kernel", "naive,fortran"],
    ["bench", "claims", "--entities", "x"],
    ["bench", "snapshots", "--repeats", "x"],
    ["bench", "report"],
    ["bench", "soak", "--flood", "x"],
]


@pytest.mark.parametrize("argv", BAD, ids=" ".join)
def test_a_bad_argument_is_one_line_and_exit_2(argv: list[str], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    if argv[:2] == ["bench", "kernels"]:
        argv = [*argv, "--out", str(tmp_path)]  # nothing may land in bench/results
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # argparse's errors end in the parser
        rc = exc.code
    captured = capsys.readouterr()
    assert rc == 2, captured
    command = " ".join(a for a in argv[:2] if not a.startswith("-")) if argv[0] == "bench" \
        else argv[0]
    prefix = "paratick: " if argv == ["frobnicate"] else f"paratick {command}: "
    assert captured.err.startswith(prefix), captured.err
    assert captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_argparse_errors_name_the_command_and_point_to_help(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "load", "--bots", "x"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == (
        "paratick bench load: error: argument --bots: invalid int value: 'x' "
        "(see paratick bench load --help)\n")


def test_bare_paratick_prints_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: paratick") and "COMMAND" in out
