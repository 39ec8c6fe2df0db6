"""The shell scripts under scripts/: each parses; the two that carry the benchmarks to a
borrowed machine refuse to run without their arguments (before touching any file); the
interpreters pack_pythons.sh packs run, unpacked elsewhere, what the benchmarks import."""

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


def test_packed_interpreters_run_what_the_benchmarks_import(tmp_path: Path) -> None:
    """pack_pythons.sh's archive, unpacked elsewhere, imports every package the benchmarks
    load -- numpy's bundled OpenBLAS included, which stripping once broke -- and the
    free-threaded interpreter keeps its GIL off with them loaded."""
    import os

    cache = Path(os.environ.get("PARATICK_CACHE") or Path.home() / ".cache" / "paratick")
    if not any((cache / "cpython").glob("3.*t")):
        pytest.skip(f"no interpreters built by make setup in {cache / 'cpython'} to pack")
    archive = tmp_path / "pythons.tar.xz"
    done = subprocess.run(["bash", str(SCRIPTS / "pack_pythons.sh"), str(archive)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-C", str(unpacked), "-xJf", str(archive)], check=True, timeout=300)
    probe = ("import sys, numpy, msgpack, websockets, prometheus_client; "
             "numpy.zeros(3).sum(); print(sys._is_gil_enabled())")
    gil = subprocess.run([str(unpacked / "gil/bin/python3"), "-c", probe], capture_output=True,
                         text=True, timeout=120)
    ft = subprocess.run([str(unpacked / "ft/bin/python3"), "-c", probe], capture_output=True,
                        text=True, timeout=120)
    assert (gil.stdout.strip(), ft.stdout.strip()) == ("True", "False"), gil.stderr + ft.stderr
    # the GIL build's event loop and bots client travel where its venv has them, and load
    venv = sorted((SCRIPTS.parent / ".venv" / "gil" / "lib").glob("python3.*/site-packages"))
    packed = sorted((unpacked / "gil" / "lib").glob("python3.*/site-packages"))
    extra = [m for m in ("uvloop", "picows") if venv and (venv[0] / m).is_dir()]
    assert all((packed[0] / m).is_dir() for m in extra)
    if extra:
        done = subprocess.run([str(unpacked / "gil/bin/python3"), "-c",
                               f"import {', '.join(extra)}"], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
