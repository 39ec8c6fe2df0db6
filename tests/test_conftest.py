"""The session-wide GIL guard in tests/conftest.py."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from tests.conftest import gil_modules_in, gil_problem

CONFTEST = Path(__file__).with_name("conftest.py")

# The text CPython 3.13 warns with (Python/import.c, _PyImport_CheckGILForModule).
WARNING = ("The global interpreter lock (GIL) has been enabled to load module 'slowext._core', "
           "which has not declared that it can run safely without the GIL. To override this "
           "behavior and keep the GIL disabled (at your own risk), run with PYTHON_GIL=0 or "
           "-Xgil=0.")


@pytest.mark.parametrize(("free_threaded", "enabled"), [(False, True), (False, False),
                                                        (True, False)])
def test_no_problem_unless_free_threaded_with_gil(free_threaded: bool, enabled: bool) -> None:
    assert gil_problem(free_threaded=free_threaded, gil_enabled=enabled, modules=[]) is None


def test_problem_names_the_modules() -> None:
    msg = gil_problem(free_threaded=True, gil_enabled=True, modules=["a._x", "b"])
    assert msg is not None
    assert "a._x, b" in msg
    assert "\n" not in msg


def test_problem_without_module_points_at_the_environment() -> None:
    msg = gil_problem(free_threaded=True, gil_enabled=True, modules=[])
    assert msg is not None and "PYTHON_GIL=1" in msg


def test_module_names_parsed_from_cpython_warning() -> None:
    assert gil_modules_in(WARNING) == ["slowext._core"]
    assert gil_modules_in("some other RuntimeWarning") == []


@pytest.mark.parametrize("python_gil", [None, "1"])
def test_session_fails_when_free_threaded_run_ends_with_gil(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, python_gil: str | None
) -> None:
    # PYTHON_GIL=1 turns the GIL on for a whole free-threaded process, exactly the state an
    # extension without free-threading support leaves behind; a GIL build accepts and ignores it.
    # (PYTHON_GIL=0 is a fatal error on a GIL build, so "unset" is the other case.)
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile("def test_passes():\n    assert 1 + 1 == 2\n")
    if python_gil is None:
        monkeypatch.delenv("PYTHON_GIL", raising=False)
    else:
        monkeypatch.setenv("PYTHON_GIL", python_gil)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    if free_threaded and python_gil == "1":
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines(["*GIL check failed*", "*the GIL is enabled at the end*"])
    else:
        assert result.ret == pytest.ExitCode.OK
        assert "GIL check failed" not in result.stdout.str()
