"""The interpreter builds a benchmark compares, found from the venvs that setup made.

Three builds from two binaries:

* ``gil``    -- ``.venv/gil/bin/python``: the default CPython build (one GIL).
* ``ft``     -- ``.venv/ft/bin/python``: the free-threaded build (``Py_GIL_DISABLED``); the GIL is
  off unless an extension re-enables it, which the cells detect and report.  ``PYTHON_GIL`` is
  removed from its environment, never set to 0, so such a re-enable is seen rather than hidden.
* ``ft-gil`` -- the same free-threaded binary with ``PYTHON_GIL=1``: isolates the cost of the
  free-threaded build's machinery from the GIL itself.

The venvs are looked up in ``--venvs DIR``, else ``$PARATICK_VENVS``, else ``<repo>/.venv``,
else the ``.venv`` of the main git worktree (helpers' worktrees share it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import CellError, SetupError

ALL_BUILDS = ("gil", "ft", "ft-gil")

#: Label shown in tables and plots per build.
LABELS = {"gil": "3.13 GIL", "ft": "3.13t free-threaded", "ft-gil": "3.13t PYTHON_GIL=1",
          "current": "current interpreter"}


@dataclass(frozen=True)
class Build:
    """One interpreter configuration: a binary plus environment overrides."""

    name: str
    python: str
    env: dict[str, str] = field(default_factory=dict)
    #: whether the GIL must be on in every worker; a worker disagreeing makes the cell INVALID
    expects_gil: bool = True
    #: environment variables to remove (PYTHON_GIL for the ft build)
    unset: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name)

    def environ(self, root: Path) -> dict[str, str]:
        """The full environment for a child of this build, with the repo importable."""
        env = {k: v for k, v in os.environ.items() if k not in self.unset}
        env.update(self.env)
        pp = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(root) + (os.pathsep + pp if pp else "")
        return env

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "python": self.python,
                "env": dict(self.env), "expects_gil": self.expects_gil}


def repo_root() -> Path:
    """The repository this bench package belongs to."""
    return Path(__file__).resolve().parent.parent


def find_venvs(root: Path, explicit: str | None = None) -> Path | None:
    """The folder holding ``gil/`` and ``ft/`` venvs, or None (see module docstring)."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    if os.environ.get("PARATICK_VENVS"):
        candidates.append(Path(os.environ["PARATICK_VENVS"]))
    candidates.append(root / ".venv")
    try:
        common = subprocess.run(["git", "rev-parse", "--path-format=absolute",
                                 "--git-common-dir"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=False).stdout.strip()
        if common:
            candidates.append(Path(common).parent / ".venv")
    except (OSError, subprocess.TimeoutExpired):
        pass
    for c in candidates:
        if (c / "gil" / "bin" / "python").exists() or (c / "ft" / "bin" / "python").exists():
            return c
    return None


def make_build(name: str, venvs: Path | None) -> Build:
    """The :class:`Build` called ``name`` (``current`` = this very interpreter).

    Raises:
        SetupError: the venv that build needs is missing.
    """
    if name == "current":
        from server.host import free_threaded

        ft = free_threaded()
        forced = os.environ.get("PYTHON_GIL") == "1"
        return Build("current", sys.executable, {}, expects_gil=not ft or forced)
    if name not in ALL_BUILDS:
        raise SetupError(f"unknown build {name!r}; expected one of {(*ALL_BUILDS, 'current')}")
    venv = "gil" if name == "gil" else "ft"
    if venvs is None:
        raise SetupError("no venvs found (looked for .venv/gil and .venv/ft); run setup or "
                         "pass --venvs DIR, or use --builds current")
    python = venvs / venv / "bin" / "python"
    if not python.exists():
        raise SetupError(f"build {name!r} needs {python}, which does not exist")
    if name == "gil":
        return Build("gil", str(python), {}, expects_gil=True, unset=("PYTHON_GIL",))
    if name == "ft":
        return Build("ft", str(python), {}, expects_gil=False, unset=("PYTHON_GIL",))
    return Build("ft-gil", str(python), {"PYTHON_GIL": "1"}, expects_gil=True)


def run_group(cmd: list[str], *, env: dict[str, str], cwd: Path, timeout: float,
              ) -> tuple[int, str, str]:
    """Run ``cmd`` in its own session and return (exit code, stdout, stderr).

    On a timeout the whole process group is killed (worker processes, a bot fleet spread over
    several processes), so a stuck run never leaves load behind that would skew the runs after it.

    Raises:
        CellError: the command could not start or timed out.
    """
    try:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    except OSError as exc:
        raise CellError(f"cannot start {cmd[0]}: {exc}") from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise CellError(f"{' '.join(cmd[-12:])} timed out after {timeout:.0f} s") from exc
    except BaseException:
        # Ctrl-C or another signal in the driver: take the run's whole group down with us.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out, err
