"""The ``paratick`` front door: commands come from the ``paratick.commands`` entry points only."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import import_module, metadata
from pathlib import Path

import pytest

from server import cli

REPO = Path(__file__).resolve().parents[2]


def _pyproject_commands() -> dict[str, str]:
    with (REPO / "pyproject.toml").open("rb") as f:
        return dict(tomllib.load(f)["project"]["entry-points"][cli.GROUP])


def test_installed_commands_are_the_ones_pyproject_declares() -> None:
    # Fails when the venv's metadata is stale: reinstall (make setup, or pip install -e .).
    installed = {ep.name: ep.value for ep in metadata.entry_points(group=cli.GROUP)}
    assert installed == _pyproject_commands()
    assert list(cli.declared()) == sorted(installed)


def test_every_command_module_has_the_interface() -> None:
    assert set(cli.declared()) == {"bench", "bots", "info", "node", "run", "serve", "sim"}
    for name, modname in cli.declared().items():
        mod = import_module(modname)
        assert isinstance(mod.HELP, str) and mod.HELP, name
        assert callable(mod.add_arguments) and callable(mod.run), name


def test_a_checkout_that_is_not_installed_reads_its_pyproject(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cli.metadata, "entry_points", lambda **kw: [])
    assert cli.declared() == dict(sorted(_pyproject_commands().items()))
    with pytest.raises(cli.NoCommands, match="install paratick"):
        cli.declared(tmp_path / "pyproject.toml")


def test_bare_paratick_prints_the_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: paratick")
    for name in cli.declared():
        assert f"    {name} " in out


def test_help_is_quick_to_build() -> None:
    """``paratick --help`` imports every command module; none may import its heavy libraries at
    module level (numpy, websockets, matplotlib are imported inside ``run``)."""
    code = ("import sys, contextlib, io\n"
            "from server.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    main(['--help'])\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'numpy', 'websockets', 'matplotlib', 'prometheus_client'}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=True)
    assert proc.stdout.strip() == "[]"

