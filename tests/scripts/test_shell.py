"""The shell scripts under scripts/: each parses, and the two that carry the benchmarks to a
borrowed machine refuse to run without their arguments (before touching any file)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.sh")))
def test_every_shell_script_parses(script: str) -> None:
    done = subprocess.run(["bash", "-n", str(SCRIPTS / script)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("script", "usage"), [
    ("pack_pythons.sh", "usage: scripts/pack_pythons.sh OUT.tar.xz"),
    ("bench_borrowed.sh", "usage: bench_borrowed.sh PYTHONS.tar.xz OUTDIR [BUDGET_S] [NOTE]"),
])
def test_without_arguments_a_script_says_its_usage(tmp_path: Path, script: str,
                                                   usage: str) -> None:
    done = subprocess.run(["bash", str(SCRIPTS / script)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=30)
    assert done.returncode != 0
    assert usage in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing made, no venv replaced
