"""Environment capture: everything a reader needs to judge (or reproduce) a benchmark figure.

Two halves.  :func:`interpreter_info` runs *inside* an interpreter (``python -m bench.env``
prints it as JSON) and reports that interpreter's version, build flags and GIL state;
:func:`capture` runs in the driver and adds the machine (CPU model, usable cores, kernel,
hostname), the git commit with a dirty flag, the date, and each measured interpreter's
:func:`interpreter_info` obtained by running it as a subprocess (with the same environment the
cells get, so ``PYTHON_GIL=1`` shows up as GIL enabled).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from server.host import (
    free_threaded,
    gil_enabled,
    import_extensions,
    package_versions,
    usable_cores,
    usable_cpus,
)

#: Packages whose versions change results (the kernel, the codec, the event loop and the lean
#: bots' client where they install, plotting only for reports); one that is not installed is
#: recorded as null.
PACKAGES = ("paratick", "msgpack", "numpy", "websockets", "uvloop", "picows", "matplotlib")

#: How long an interpreter may take to describe itself before we give up (cold start + imports).
PROBE_TIMEOUT_S = 60.0


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (falls back to :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def interpreter_info() -> dict[str, Any]:
    """This interpreter: version, build flags, GIL state after importing the extensions we use.

    msgpack (and numpy where present) are imported first, because a C extension that does not
    declare free-threading support re-enables the GIL at import time; reporting the GIL state
    before that would be a lie of omission.
    """
    import_extensions()
    return {
        "executable": sys.executable,
        "version": platform.python_version(),
        "implementation": sys.implementation.name,
        "py_gil_disabled": free_threaded(),
        "config_args": sysconfig.get_config_var("CONFIG_ARGS") or "",
        "gil_enabled": gil_enabled(),
        "python_gil_env": os.environ.get("PYTHON_GIL"),
        "packages": package_versions(PACKAGES),
    }


def probe(python: str, env: Mapping[str, str] | None = None, *, cwd: str | None = None,
          ) -> dict[str, Any]:
    """Run :func:`interpreter_info` in another interpreter and return its answer.

    Raises:
        SetupError: the interpreter could not be run or printed no JSON.
    """
    from bench.errors import SetupError

    try:
        proc = subprocess.run([python, "-m", "bench.env"], capture_output=True, text=True,
                              env=dict(env) if env is not None else None, cwd=cwd,
                              timeout=PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError(f"cannot run {python}: {exc}") from exc
    if proc.returncode != 0:
        raise SetupError(f"{python} -m bench.env failed: {proc.stderr.strip()[-500:]}")
    try:
        info: dict[str, Any] = json.loads(proc.stdout)
    except ValueError as exc:
        raise SetupError(f"{python} -m bench.env printed no JSON") from exc
    return info


def git_state(root: Path) -> dict[str, Any]:
    """Commit, branch and whether the tree has uncommitted changes (figures from a dirty tree
    are flagged as such in the report)."""
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": None if status is None else bool(status)}


def cpu_quota(text: str | None = None) -> float | None:
    """CPUs the cgroup lets this process use (``/sys/fs/cgroup/cpu.max``: "QUOTA PERIOD"), or
    None when unlimited or unknown.  A container can see 64 CPUs and be allowed 16: the
    affinity mask alone would overstate what "W workers = W cores" means."""
    if text is None:
        try:
            text = Path("/sys/fs/cgroup/cpu.max").read_text()
        except OSError:
            return None
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        return int(parts[0]) / int(parts[1])
    except (ValueError, ZeroDivisionError):
        return None


def machine() -> dict[str, Any]:
    """The machine: CPU, cores, cgroup CPU quota, OS kernel, hostname, and the time of
    capture (UTC)."""
    uname = platform.uname()
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "affinity": usable_cpus(),
        "cpu_quota": cpu_quota(),
        "kernel": f"{uname.system} {uname.release}",
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def build_label() -> str:
    """``3.13`` or ``3.13t``: names the result file of a benchmark run once per interpreter."""
    return f"{sys.version_info.major}.{sys.version_info.minor}{'t' if free_threaded() else ''}"


def capture_builds(root: Path, builds: Iterable[Any]) -> dict[str, Any]:
    """:func:`capture` with a :func:`probe` of every build's interpreter (``bench.builds``)."""
    return capture(root, {b.name: probe(b.python, b.environ(root), cwd=str(root))
                          for b in builds})


def capture(root: Path, interpreters: Mapping[str, dict[str, Any]] | None = None,
            ) -> dict[str, Any]:
    """The environment block of a results file.

    Args:
        root: repository root (for the git commit).
        interpreters: build name -> :func:`probe` answer for each interpreter measured.
    """
    return {"machine": machine(), "git": git_state(root), "driver": interpreter_info(),
            "interpreters": dict(interpreters or {})}


if __name__ == "__main__":
    json.dump(interpreter_info(), sys.stdout)
    sys.stdout.write("\n")
