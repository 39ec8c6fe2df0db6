"""Session-wide checks for every test run.

The GIL guard: on a free-threaded build (``Py_GIL_DISABLED=1``) CPython silently re-enables the GIL
when it imports an extension module that does not declare free-threading support (PEP 703; the
module's ``Py_mod_gil`` slot), and only says so in a RuntimeWarning.  A test run that passes with
the GIL back on proves nothing about free threading, so at the end of the session the run fails if
``sys._is_gil_enabled()`` is True, naming the modules CPython warned about where it did.
"""

from __future__ import annotations

import re
import sys
import sysconfig
import warnings

import pytest

pytest_plugins = ["pytester"]

#: True on a free-threaded build, whatever the GIL's state at run time.
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

# CPython 3.13's warning reads: "The global interpreter lock (GIL) has been enabled to load module
# 'name', which has not declared that it can run safely without the GIL. ..."
_GIL_WARNING = re.compile(r"GIL\) has been enabled to load module '([^']+)'")

#: Modules CPython re-enabled the GIL for during this session (from its RuntimeWarning).
_gil_modules: list[str] = []


def gil_enabled() -> bool:
    """Whether the GIL is enabled now (always True on builds without ``sys._is_gil_enabled``)."""
    fn = getattr(sys, "_is_gil_enabled", None)
    return True if fn is None else bool(fn())


def gil_problem(*, free_threaded: bool, gil_enabled: bool, modules: list[str]) -> str | None:
    """The message that fails the session, or None when the GIL state is as the build promises.

    Args:
        free_threaded: the interpreter is a free-threaded build.
        gil_enabled: the GIL is enabled at the end of the session.
        modules: modules CPython reported re-enabling the GIL for (may be empty, e.g. when the
            GIL was enabled by ``PYTHON_GIL=1`` or ``-X gil=1``).
    """
    if not (free_threaded and gil_enabled):
        return None
    cause = (f"extension module(s) without free-threading support: {', '.join(modules)}"
             if modules else "no module warning was seen; is PYTHON_GIL=1 or -X gil=1 set?")
    return ("free-threaded build but the GIL is enabled at the end of the test session "
            f"({cause}); the run does not test free threading")


def gil_modules_in(message: str) -> list[str]:
    """Module names in CPython's "GIL has been enabled to load module" warning text."""
    return _GIL_WARNING.findall(message)


@pytest.fixture(scope="session")
def free_threaded() -> bool:
    """Whether this interpreter is a free-threaded build (``Py_GIL_DISABLED=1``)."""
    return FREE_THREADED


def pytest_warning_recorded(
    warning_message: warnings.WarningMessage, when: str, nodeid: str, location: object
) -> None:
    _gil_modules.extend(gil_modules_in(str(warning_message.message)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    msg = gil_problem(free_threaded=FREE_THREADED, gil_enabled=gil_enabled(),
                      modules=sorted(set(_gil_modules)))
    if msg is None:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "GIL check failed", red=True, bold=True)
        reporter.write_line(msg)
    else:
        print(f"GIL check failed: {msg}", file=sys.stderr)
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
