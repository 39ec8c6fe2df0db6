"""server.runtime.interp on an interpreter whose stdlib has no ``test`` package.

Debian's python3.13 and slim containers ship without the test suite; 3.13's ``_interpqueues``
imports ``test.support.interpreters.queues`` for its QueueEmpty class on the first empty get.
A ``test`` package that refuses to import, first on PYTHONPATH, reproduces that in the main
interpreter and in every subinterpreter the run creates.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.runtime import interp

ROOT = Path(__file__).resolve().parents[3]


def run_digest(backend: str, pythonpath: list[Path]) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath)}
    proc = subprocess.run(
        [sys.executable, "-m", "server.cli", "run", "--backend", backend, "--workers",
         "1" if backend == "inline" else "2", "--ticks", "3", "--entities", "300"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("digest ")]
    return line.split()[1]


@pytest.mark.skipif(not interp.available(), reason="this build has no subinterpreters")
def test_interpreters_backend_runs_without_the_test_suite(tmp_path: Path) -> None:
    fake = tmp_path / "test"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('test suite stripped (simulated)')\n")
    check = subprocess.run([sys.executable, "-c", "import test.support"], env={
        **os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True)
    assert "stripped" in check.stderr  # the stand-in really hides the stdlib's test package
    stripped = run_digest("interpreters", [tmp_path, ROOT])
    assert stripped == run_digest("inline", [ROOT])


class _FlakyInterpreters:
    """Stands in for ``_interpreters``: creation fails ``fails`` times, as CPython 3.13's does
    now and then while another interpreter starts or finishes."""

    class InterpreterError(Exception):
        pass

    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.calls = 0

    def create(self) -> int:
        self.calls += 1
        if self.calls <= self.fails:
            raise self.InterpreterError("interpreter creation failed")
        return 7


@pytest.mark.parametrize("fails", [1, interp.CREATE_TRIES - 1])
def test_a_failed_interpreter_creation_is_tried_again(monkeypatch: pytest.MonkeyPatch,
                                                      fails: int) -> None:
    fake = _FlakyInterpreters(fails)
    monkeypatch.setattr(interp, "_interpreters", fake)
    monkeypatch.setattr(interp, "_queues", object())
    assert interp.create() == 7
    assert fake.calls == fails + 1


def test_interpreter_creation_gives_up_after_its_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FlakyInterpreters(interp.CREATE_TRIES)
    monkeypatch.setattr(interp, "_interpreters", fake)
    monkeypatch.setattr(interp, "_queues", object())
    with pytest.raises(fake.InterpreterError):
        interp.create()
    assert fake.calls == interp.CREATE_TRIES
