"""Interpreter discovery in scripts/toolchain.py, with fake ``which``/``run``: nothing is built."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "toolchain.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("paratick_toolchain", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


tc = _load()


class FakeMachine:
    """Interpreters by path, as the probe would report them, plus ``which`` and ``uv``."""

    def __init__(self) -> None:
        self.interps: dict[str, dict[str, Any]] = {}
        self.on_path: dict[str, str] = {}
        self.uv: dict[str, str] | None = None  # request -> path, when uv is installed
        self.calls: list[list[str]] = []

    def add(self, path: str, version: tuple[int, int, int], *, ft: bool,
            gil_enabled: bool | None = None, name: str | None = None) -> str:
        self.interps[path] = {
            "executable": path, "version": list(version), "py_gil_disabled": int(ft),
            "gil_enabled": (not ft) if gil_enabled is None else gil_enabled,
            "implementation": "cpython",
        }
        if name is not None:
            self.on_path[name] = path
        return path

    def which(self, name: str) -> str | None:
        if name == "uv":
            return "/usr/bin/uv" if self.uv is not None else None
        return self.on_path.get(name)

    def run(self, argv: Sequence[str]) -> str:
        argv = list(argv)
        self.calls.append(argv)
        if argv[:3] == ["uv", "python", "find"]:
            assert self.uv is not None
            request = argv[-1]
            if request not in self.uv:
                raise subprocess.CalledProcessError(2, argv)
            return self.uv[request] + "\n"
        if argv[0] not in self.interps:
            raise FileNotFoundError(argv[0])
        assert argv[1:3] == ["-c", tc.PROBE]
        return json.dumps(self.interps[argv[0]]) + "\n"

    def find(self, env: dict[str, str] | None = None) -> Any:
        return tc.find_pair(env or {}, which=self.which, run=self.run)


@pytest.fixture
def m() -> FakeMachine:
    return FakeMachine()


def _one_line(exc: pytest.ExceptionInfo[Exception]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------ explicit pair (environment)

def test_env_pair_wins_over_path(m: FakeMachine) -> None:
    m.add("/opt/g/python3.13", (3, 13, 5), ft=False, name="python3.13")
    m.add("/opt/f/python3.13t", (3, 13, 5), ft=True, name="python3.13t")
    g = m.add("/env/python3.14", (3, 14, 0), ft=False)
    f = m.add("/env/python3.14t", (3, 14, 0), ft=True)
    pair = m.find({"PARATICK_PYTHON_GIL": g, "PARATICK_PYTHON_FT": f})
    assert (pair.source, pair.gil.path, pair.ft.path) == ("env", g, f)
    assert pair.gil.short == "3.14.0" and pair.ft.short == "3.14.0t"


@pytest.mark.parametrize(("given", "missing"), [("PARATICK_PYTHON_GIL", "PARATICK_PYTHON_FT"),
                                                ("PARATICK_PYTHON_FT", "PARATICK_PYTHON_GIL")])
def test_env_pair_needs_both(m: FakeMachine, given: str, missing: str) -> None:
    m.add("/opt/g/python3.13", (3, 13, 5), ft=False, name="python3.13")
    m.add("/opt/f/python3.13t", (3, 13, 5), ft=True, name="python3.13t")
    with pytest.raises(tc.ToolchainError) as exc:
        m.find({given: "/env/python"})
    assert f"set {missing}" in _one_line(exc)
    assert m.calls == []  # an explicit mistake is reported, never replaced by a PATH pair


def test_env_path_that_is_not_python(m: FakeMachine) -> None:
    f = m.add("/env/python3.13t", (3, 13, 5), ft=True)
    with pytest.raises(tc.ToolchainError) as exc:
        m.find({"PARATICK_PYTHON_GIL": "/nope/python", "PARATICK_PYTHON_FT": f})
    assert "/nope/python does not run as a Python interpreter" in _one_line(exc)


def test_env_gil_build_given_as_ft(m: FakeMachine) -> None:
    g = m.add("/env/python3.13", (3, 13, 5), ft=False)
    g2 = m.add("/env/other/python3.13", (3, 13, 5), ft=False)
    with pytest.raises(tc.ToolchainError) as exc:
        m.find({"PARATICK_PYTHON_GIL": g, "PARATICK_PYTHON_FT": g2})
    msg = _one_line(exc)
    assert g2 in msg and "GIL build" in msg and "PARATICK_PYTHON_FT" in msg


def test_env_ft_build_given_as_gil(m: FakeMachine) -> None:
    f = m.add("/env/python3.13t", (3, 13, 5), ft=True)
    with pytest.raises(tc.ToolchainError) as exc:
        m.find({"PARATICK_PYTHON_GIL": f, "PARATICK_PYTHON_FT": f})
    assert "PARATICK_PYTHON_GIL" in _one_line(exc)


def test_env_ft_with_gil_enabled(m: FakeMachine) -> None:
    g = m.add("/env/python3.13", (3, 13, 5), ft=False)
    f = m.add("/env/python3.13t", (3, 13, 5), ft=True, gil_enabled=True)
    with pytest.raises(tc.ToolchainError) as exc:
        m.find({"PARATICK_PYTHON_GIL": g, "PARATICK_PYTHON_FT": f})
    assert "GIL enabled" in _one_line(exc) and "PYTHON_GIL" in str(exc.value)


def test_env_versions_must_match(m: FakeMachine) -> None:
    g = m.add("/env/python3.13", (3, 13, 4), ft=False)
    f = m.add("/env/python3.13t", (3, 13, 5), ft=True)
    with pytest.raises(tc.ToolchainError) as exc:
        m.find({"PARATICK_PYTHON_GIL": g, "PARATICK_PYTHON_FT": f})
    msg = _one_line(exc)
    assert "version mismatch" in msg and "3.13.4" in msg and "3.13.5t" in msg


def test_env_too_old(m: FakeMachine) -> None:
    g = m.add("/env/python3.12", (3, 12, 9), ft=False)
    f = m.add("/env/python3.12t", (3, 12, 9), ft=True)
    with pytest.raises(tc.ToolchainError, match=r"needs CPython 3\.13 or newer"):
        m.find({"PARATICK_PYTHON_GIL": g, "PARATICK_PYTHON_FT": f})


# ------------------------------------------------------------------------------- PATH and uv

def test_path_pair_found(m: FakeMachine) -> None:
    g = m.add("/usr/bin/python3.13", (3, 13, 5), ft=False, name="python3.13")
    f = m.add("/usr/bin/python3.13t", (3, 13, 5), ft=True, name="python3.13t")
    pair = m.find()
    assert (pair.source, pair.gil.path, pair.ft.path) == ("path", g, f)


def test_path_prefers_314_over_313(m: FakeMachine) -> None:
    m.add("/usr/bin/python3.13", (3, 13, 5), ft=False, name="python3.13")
    m.add("/usr/bin/python3.13t", (3, 13, 5), ft=True, name="python3.13t")
    m.add("/usr/bin/python3.14", (3, 14, 1), ft=False, name="python3.14")
    m.add("/usr/bin/python3.14t", (3, 14, 1), ft=True, name="python3.14t")
    assert m.find().gil.version == (3, 14, 1)


def test_path_half_pair_is_not_a_pair(m: FakeMachine) -> None:
    m.add("/usr/bin/python3.14", (3, 14, 1), ft=False, name="python3.14")
    m.add("/usr/bin/python3.13", (3, 13, 5), ft=False, name="python3.13")
    m.add("/usr/bin/python3.13t", (3, 13, 5), ft=True, name="python3.13t")
    assert m.find().gil.version == (3, 13, 5)


def test_path_mismatch_is_skipped_not_fatal(
    m: FakeMachine, capsys: pytest.CaptureFixture[str]
) -> None:
    # A broken PATH pair is the machine's business, not the user's setting: say so, move on.
    m.add("/usr/bin/python3.14", (3, 14, 0), ft=False, name="python3.14")
    m.add("/usr/bin/python3.14t", (3, 14, 1), ft=True, name="python3.14t")
    m.add("/usr/bin/python3.13", (3, 13, 5), ft=False, name="python3.13")
    m.add("/usr/bin/python3.13t", (3, 13, 5), ft=True, name="python3.13t")
    assert m.find().gil.version == (3, 13, 5)
    assert "skipping PATH pair python3.14/python3.14t: version mismatch" in capsys.readouterr().err


def test_nothing_found(m: FakeMachine) -> None:
    m.add("/usr/bin/python3.13", (3, 13, 5), ft=False, name="python3.13")
    assert m.find() is None


def test_uv_fallback(m: FakeMachine) -> None:
    m.add("/usr/bin/python3.13", (3, 13, 5), ft=False, name="python3.13")  # no 3.13t on PATH
    g = m.add("/uv/cpython-3.13.9/bin/python3.13", (3, 13, 9), ft=False)
    f = m.add("/uv/cpython-3.13.9t/bin/python3.13t", (3, 13, 9), ft=True)
    m.uv = {"3.13": g, "3.13t": f}
    pair = m.find()
    assert (pair.source, pair.gil.path, pair.ft.path) == ("uv", g, f)
    assert ["uv", "python", "find", "--no-project", "3.14"] in m.calls


def test_uv_prefers_314(m: FakeMachine) -> None:
    m.uv = {
        "3.13": m.add("/uv/313/python3.13", (3, 13, 9), ft=False),
        "3.13t": m.add("/uv/313t/python3.13t", (3, 13, 9), ft=True),
        "3.14": m.add("/uv/314/python3.14", (3, 14, 2), ft=False),
        "3.14t": m.add("/uv/314t/python3.14t", (3, 14, 2), ft=True),
    }
    assert m.find().ft.path == "/uv/314t/python3.14t"


def test_uv_without_pair(m: FakeMachine) -> None:
    m.uv = {"3.13": m.add("/uv/313/python3.13", (3, 13, 9), ft=False)}
    assert m.find() is None


def test_path_wins_over_uv(m: FakeMachine) -> None:
    m.add("/usr/bin/python3.13", (3, 13, 5), ft=False, name="python3.13")
    m.add("/usr/bin/python3.13t", (3, 13, 5), ft=True, name="python3.13t")
    m.uv = {"3.14": m.add("/uv/314/python3.14", (3, 14, 2), ft=False),
            "3.14t": m.add("/uv/314t/python3.14t", (3, 14, 2), ft=True)}
    assert m.find().source == "path"
    assert not any(c[0] == "uv" for c in m.calls)


# ------------------------------------------------------------------------------ cached builds

def _cached(m: FakeMachine, cache: Path, version: str, *, complete: bool = True,
            ft_gil: bool | None = None) -> None:
    short = ".".join(version.split(".")[:2])
    vt = tuple(int(x) for x in version.split("."))
    for suffix, ft in (("", False), ("t", True)):
        prefix = cache / "cpython" / f"{version}{suffix}"
        (prefix / "bin").mkdir(parents=True)
        if complete:
            (prefix / ".complete").write_text(version + "\n")
        m.add(str(prefix / "bin" / f"python{short}{suffix}"), vt, ft=ft,  # type: ignore[arg-type]
              gil_enabled=ft_gil if ft else None)


def test_cached_pair_none_without_cache(m: FakeMachine, tmp_path: Path) -> None:
    assert tc.cached_pair(tmp_path, run=m.run) is None


def test_cached_pair_newest_complete(m: FakeMachine, tmp_path: Path) -> None:
    _cached(m, tmp_path, "3.13.9")
    _cached(m, tmp_path, "3.13.15")
    _cached(m, tmp_path, "3.13.20", complete=False)  # an interrupted build is not used
    pair = tc.cached_pair(tmp_path, run=m.run)
    assert pair.source == "cache"
    assert (pair.gil.short, pair.ft.short) == ("3.13.15", "3.13.15t")
    assert pair.ft.path == str(tmp_path / "cpython" / "3.13.15t" / "bin" / "python3.13t")


def test_cached_pair_needs_both_builds(m: FakeMachine, tmp_path: Path) -> None:
    _cached(m, tmp_path, "3.13.15")
    (tmp_path / "cpython" / "3.13.15t" / ".complete").unlink()
    assert tc.cached_pair(tmp_path, run=m.run) is None


def test_cached_pair_broken_says_what_to_delete(m: FakeMachine, tmp_path: Path) -> None:
    _cached(m, tmp_path, "3.13.15", ft_gil=True)
    with pytest.raises(tc.ToolchainError) as exc:
        tc.cached_pair(tmp_path, run=m.run)
    assert f"delete {tmp_path / 'cpython' / '3.13.15'}" in _one_line(exc)


def test_cache_root_outside_repo() -> None:
    assert tc.cache_root({"PARATICK_CACHE": "/c"}) == Path("/c")
    assert tc.cache_root({"XDG_CACHE_HOME": "/x"}) == Path("/x/paratick")
    assert tc.REPO not in tc.cache_root({}).parents


# --------------------------------------------------------------------------- apt sources parsing

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
\t
Types: deb-src
URIs: http://src-only.example/debian
Suites: bookworm

Types: deb deb-src
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm

Types: deb
URIs: http://first.example/debian
 http://continued.example/debian
Suites: bookworm
"""

ONE_LINE = """\
# deb http://commented.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb [arch=amd64 trusted=yes signed-by=/k.gpg] https://other.example/debian bookworm main
deb http://plain.example/debian bookworm main # trailing comment
"""


def test_parse_deb822() -> None:
    # A field may continue on indented lines (deb822), here a second URI.
    assert tc.parse_sources(DEB822, deb822=True) == [
        "http://mirror.example/debian", "http://mirror.example/debian-security",
        "http://first.example/debian", "http://continued.example/debian"]


def test_parse_one_line() -> None:
    # The options block may hold several space-separated options.
    assert tc.parse_sources(ONE_LINE, deb822=False) == [
        "https://other.example/debian", "http://plain.example/debian"]


def _apt_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "sources.list.d").mkdir()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_mirror_from_deb822_skips_security(tmp_path: Path) -> None:
    security = ("Types: deb\nURIs: http://mirror.example/debian-security\n"
                "Suites: bookworm-security\n")
    apt = _apt_dir(tmp_path, {"sources.list.d/debian.sources": security})
    with pytest.raises(tc.ToolchainError, match="no Debian mirror"):
        tc.mirror_uri(apt)
    (apt / "sources.list.d" / "debian.sources").write_text(DEB822)
    assert tc.mirror_uri(apt) == "http://mirror.example/debian"


def test_mirror_from_one_line_list(tmp_path: Path) -> None:
    apt = _apt_dir(tmp_path, {
        "sources.list": "deb http://security.example/debian-security bookworm-security main\n"
                        "deb http://mirror.example/debian/ bookworm main\n",
        "sources.list.d/extra.list": "deb https://packages.example/apt stable main\n",
    })
    assert tc.mirror_uri(apt) == "http://mirror.example/debian"


def test_mirror_ignores_disabled_files(tmp_path: Path) -> None:
    apt = _apt_dir(tmp_path, {
        "sources.list.d/old.list.disabled": "deb http://old.example/debian bookworm main\n"})
    with pytest.raises(tc.ToolchainError):
        tc.mirror_uri(apt)


# ------------------------------------------------------------------------------ build helpers

def test_missing_build_deps_in_order() -> None:
    def installed(package: str) -> bool:
        return package not in ("zlib1g-dev", "build-essential")

    assert tc.missing_build_deps(installed) == ["build-essential", "zlib1g-dev"]


def test_missing_build_deps_without_dpkg() -> None:
    def no_dpkg(package: str) -> bool:
        raise FileNotFoundError("dpkg-query")

    with pytest.raises(tc.ToolchainError, match="PARATICK_PYTHON_GIL"):
        tc.missing_build_deps(no_dpkg)


def test_build_deps_as_non_root_prints_exact_apt_line(tmp_path: Path) -> None:
    with pytest.raises(tc.ToolchainError) as exc:
        tc.install_build_deps(tmp_path / "log", missing=["libssl-dev", "uuid-dev"], root=False)
    assert "'sudo apt-get install -y libssl-dev uuid-dev'" in _one_line(exc)


def test_build_deps_nothing_missing_does_nothing(tmp_path: Path) -> None:
    tc.install_build_deps(tmp_path / "log", missing=[], root=False)
    assert not (tmp_path / "log").exists()


@pytest.mark.parametrize(("version", "key"), [("3.13.15-1", (3, 13, 15)),
                                              ("1:3.13.9-2+b1", (3, 13, 9)),
                                              ("3.13.0~rc3-1", (3, 13, 0))])
def test_debian_version_key(version: str, key: tuple[int, ...]) -> None:
    assert tc._debver_key(version) == key


def test_main_reports_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PARATICK_PYTHON_GIL", "/nope/python3.13")
    monkeypatch.delenv("PARATICK_PYTHON_FT", raising=False)
    assert tc.main(["find"]) == 2
    err = capsys.readouterr().err
    assert err == ("paratick setup: error: set PARATICK_PYTHON_FT too: "
                   "an explicit pair needs both paths\n")


# ------------------------------------------------------------------------------ venv stamps

PYPROJECT = """\
[project]
name = "paratick"
dependencies = ["msgpack>=1.2"]

[tool.ruff]
line-length = 100
"""


def test_stamp_ignores_tool_settings() -> None:
    interp = tc.Interp("/py/python3.13t", (3, 13, 5), True, False)
    base = tc.venv_stamp(interp, "test", PYPROJECT)
    assert tc.venv_stamp(interp, "test", PYPROJECT.replace("100", "120")) == base
    assert tc.venv_stamp(interp, "test", "# comment\n" + PYPROJECT) == base


def test_stamp_follows_what_is_installed() -> None:
    interp = tc.Interp("/py/python3.13t", (3, 13, 5), True, False)
    base = tc.venv_stamp(interp, "test", PYPROJECT)
    assert tc.venv_stamp(interp, "test", PYPROJECT.replace("1.2", "1.3")) != base
    assert tc.venv_stamp(interp, "dev", PYPROJECT) != base
    newer = tc.Interp("/py/python3.13t", (3, 13, 6), True, False)
    assert tc.venv_stamp(newer, "test", PYPROJECT) != base
    moved = tc.Interp("/other/python3.13t", (3, 13, 5), True, False)
    assert tc.venv_stamp(moved, "test", PYPROJECT) != base


# ---------------------------------------------------------------------- build (no compiler run)

class FakeBuild:
    """Stands in for apt and the compiler: records commands, "installs" probe-able interpreters."""

    def __init__(self, m: FakeMachine, tmp_path: Path, *, ft_reports_gil: bool = False) -> None:
        self.m, self.ft_reports_gil = m, ft_reports_gil
        self.commands: list[tuple[list[str], Path | None]] = []
        self.fetches = 0
        src = tmp_path / "src" / "Python-3.13.15"
        src.mkdir(parents=True)
        (src / "configure").write_text("#!/bin/sh\n")
        self.tarball = tmp_path / "python3.13_3.13.15.orig.tar.xz"
        with tarfile.open(self.tarball, "w:xz") as tf:
            tf.add(src, arcname="Python-3.13.15")

    def fetch_source(self, work: Path, log: Path) -> tuple[str, Path]:
        self.fetches += 1
        return "3.13.15", self.tarball

    def sh(self, argv: Sequence[str], *, log: Path, cwd: Path | None = None,
           env: Any = None, what: str | None = None) -> None:
        self.commands.append((list(argv), cwd))
        if argv[0].endswith("configure"):
            assert Path(argv[0]).is_file()  # the extracted tree
            self.prefix = Path(argv[1].removeprefix("--prefix="))
            self.ft = "--disable-gil" in argv
        elif list(argv) == ["make", "install"]:
            name = "python3.13t" if self.ft else "python3.13"
            (self.prefix / "bin").mkdir(parents=True)
            self.m.add(str(self.prefix / "bin" / name), (3, 13, 15),
                       ft=self.ft and not self.ft_reports_gil)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(tc, "install_build_deps", lambda log: None)
        monkeypatch.setattr(tc, "fetch_source", self.fetch_source)
        monkeypatch.setattr(tc, "_sh", self.sh)


def test_build_both_from_one_tarball(
    m: FakeMachine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeBuild(m, tmp_path)
    fake.install(monkeypatch)
    cache = tmp_path / "cache"
    pair = tc.build_pair(cache, run=m.run)
    assert (pair.gil.short, pair.ft.short) == ("3.13.15", "3.13.15t")
    configures = [argv for argv, _ in fake.commands if argv[0].endswith("configure")]
    assert fake.fetches == 1 and len(configures) == 2
    assert configures[0][0] == configures[1][0]  # the same source tree
    # The same flags apart from --disable-gil (a fair comparison), and no PGO/LTO.
    assert configures[1][1:] == [f"--prefix={cache}/cpython/3.13.15t", *configures[0][2:],
                                 "--disable-gil"]
    assert not any("--enable-optimizations" in a or "--with-lto" in a for a in configures[0])
    for name in ("3.13.15", "3.13.15t"):
        assert (cache / "cpython" / name / ".complete").read_text() == "3.13.15\n"


def test_build_reuses_complete_pair(
    m: FakeMachine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeBuild(m, tmp_path)
    fake.install(monkeypatch)
    tc.build_pair(tmp_path / "cache", run=m.run)
    fake.commands.clear()
    tc.build_pair(tmp_path / "cache", run=m.run)
    assert fake.commands == [] and fake.fetches == 1


def test_build_that_is_not_free_threaded_is_not_marked_complete(
    m: FakeMachine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    FakeBuild(m, tmp_path, ft_reports_gil=True).install(monkeypatch)
    cache = tmp_path / "cache"
    with pytest.raises(tc.ToolchainError) as exc:
        tc.build_pair(cache, run=m.run)
    assert "reports 3.13.15, expected 3.13.15t" in _one_line(exc)
    assert (cache / "cpython" / "3.13.15" / ".complete").exists()
    assert not (cache / "cpython" / "3.13.15t" / ".complete").exists()
