"""``paratick info`` reports the build and GIL state the interpreter really has."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from server import cli, cmd_info
from server.host import usable_cores

REPO = Path(__file__).resolve().parents[2]


def _info(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``paratick info`` in a fresh process of this interpreter, on this checkout's code."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), full_env.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-m", "server.cli", "info", *args], env=full_env,
                          capture_output=True, text=True, timeout=60, check=True)


@pytest.fixture(scope="module")
def info() -> dict[str, Any]:
    env = {"PYTHON_GIL": ""} if "PYTHON_GIL" in os.environ else None
    return dict(json.loads(_info("--json", env=env).stdout))


def test_build_matches_sysconfig(info: dict[str, Any], free_threaded: bool) -> None:
    assert info["py_gil_disabled"] is free_threaded
    assert info["build"] == ("free-threaded" if free_threaded else "default (GIL)")
    assert info["version"] == platform.python_version()
    assert info["implementation"] == sys.implementation.name


def test_gil_state_matches_build(info: dict[str, Any], free_threaded: bool) -> None:
    # A GIL build always has the GIL; a free-threaded one must keep it off even after importing
    # msgpack and numpy (which `info` imports on purpose: either could re-enable it).
    assert info["gil_enabled"] is (not free_threaded)


def test_reports_gil_state_not_build(free_threaded: bool) -> None:
    # PYTHON_GIL=1 turns the GIL on in a free-threaded process (a GIL build ignores it): `info`
    # must report the state at run time, not what the build would suggest.
    forced = json.loads(_info("--json", env={"PYTHON_GIL": "1"}).stdout)
    assert forced["py_gil_disabled"] is free_threaded
    assert forced["gil_enabled"] is True


def test_interpreter_and_cores(info: dict[str, Any]) -> None:
    assert os.path.samefile(info["executable"], sys.executable)
    assert info["cores"] == usable_cores() >= 1
    assert set(info["libraries"]) == set(cmd_info.LIBRARIES)
    assert info["libraries"]["msgpack"] is not None


def test_text_output_agrees_with_json(info: dict[str, Any], free_threaded: bool) -> None:
    # Each line is a label padded to 13 columns, then the value.
    lines = {line[:13].strip(): line[13:] for line in _info().stdout.splitlines()}
    assert lines["GIL enabled"] == str(info["gil_enabled"])
    assert lines["build"].startswith(info["build"])
    assert f"Py_GIL_DISABLED={int(free_threaded)}" in lines["build"]


def test_cli_lists_info(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "info" in capsys.readouterr().out
