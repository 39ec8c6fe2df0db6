"""bench.env: what a results file says about the machine and each interpreter."""

from __future__ import annotations

import os
import sys
import sysconfig

import pytest

from bench import env
from bench.builds import make_build, repo_root


def test_interpreter_info_describes_this_interpreter() -> None:
    info = env.interpreter_info()
    assert info["executable"] == sys.executable
    assert info["py_gil_disabled"] == bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    assert info["gil_enabled"] == sys._is_gil_enabled()
    assert info["packages"]["msgpack"] is not None


def test_probe_runs_another_interpreter_with_its_environment() -> None:
    build = make_build("current", None)
    root = repo_root()
    info = env.probe(build.python, {**build.environ(root), "PYTHON_GIL": "1"}, cwd=str(root))
    assert info["python_gil_env"] == "1"
    assert info["gil_enabled"] is True  # forced on, whichever build this is


def test_capture_has_machine_git_and_interpreters() -> None:
    cap = env.capture(repo_root(), {"x": {"version": "3.13"}})
    m = cap["machine"]
    assert m["usable_cores"] == len(os.sched_getaffinity(0)) and m["cpu_model"]
    assert m["kernel"].startswith(os.uname().sysname)
    assert cap["git"]["commit"] is None or len(cap["git"]["commit"]) == 40
    assert cap["interpreters"] == {"x": {"version": "3.13"}}


@pytest.mark.parametrize(("text", "cpus"), [("1600000 100000\n", 16.0), ("50000 100000", 0.5),
                                            ("max 100000\n", None), ("garbage", None),
                                            ("1 0", None)])
def test_cpu_quota_reads_cgroup_v2_cpu_max(text: str, cpus: float | None) -> None:
    assert env.cpu_quota(text) == cpus
