"""``paratick bench``: every benchmark is a subcommand; a BenchError is one line and status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import cli as bench_cli
from server.cli import main


def test_every_bench_subcommand_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert list(bench_cli.SUBCOMMANDS) == ["scaling", "load", "capacity", "claims", "kernels",
                                           "snapshots", "report", "soak", "spectators", "nodes"]
    for name in bench_cli.SUBCOMMANDS:
        assert f"    {name} " in out, name


def test_a_bench_error_is_one_line_and_exit_2(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "report", str(tmp_path)]) == 2  # no results.json there
    err = capsys.readouterr().err
    assert err.startswith("paratick bench report: ") and len(err.strip().splitlines()) == 1
