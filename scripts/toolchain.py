#!/usr/bin/env python3
"""Provide a matched pair of CPython interpreters (GIL and free-threaded) and one venv for each.

Theory of operation
-------------------
paratick compares two builds of the *same* CPython version: one with the GIL and one built with
``--disable-gil`` (PEP 703).  Comparing two different versions would measure the version change, so
a pair is only accepted when both report the same ``sys.version_info``.

The pair is searched in this order (first hit wins):

1. ``PARATICK_PYTHON_GIL`` / ``PARATICK_PYTHON_FT``: explicit paths (both must be set).
2. Executables on ``PATH``: ``python3.14t`` + ``python3.14``, then ``python3.13t`` + ``python3.13``.
3. ``uv python find`` for the same names, where ``uv`` exists.
4. A build from source: CPython 3.13 from Debian's source package (suite ``forky``), fetched with a
   *private* ``APT_CONFIG`` whose ``deb-src`` entry reuses the mirror URI already configured on this
   machine (no host name is written in this repository and the system's apt configuration is not
   touched).  Both builds come from the same tarball and are installed into a cache outside the
   repository (``~/.cache/paratick/cpython/<version>`` and ``<version>t``).

Every candidate is probed in a subprocess and verified: the GIL build must have
``Py_GIL_DISABLED=0``; the free-threaded build must have ``Py_GIL_DISABLED=1`` and
``sys._is_gil_enabled()`` False.  A mismatch is a :class:`ToolchainError` with one readable line.

This file runs under whatever ``python3`` the machine has (3.9+, stdlib only), because it runs
before any paratick environment exists.  It is imported by the tests, so discovery is written as
pure functions over an injected environment, ``which`` and ``run``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent

#: The CPython version built from source when no pair is found.  Debian's forky suite carries it.
SOURCE_VERSION = "3.13"
#: Suites searched, in order, for the source package (the newest 3.13 wins among them).
SOURCE_SUITES = ("forky", "trixie")
#: Debian packages needed to build CPython with the modules paratick and its tests use.
BUILD_DEPS = (
    "build-essential", "pkg-config", "xz-utils", "libssl-dev", "zlib1g-dev", "libffi-dev",
    "libbz2-dev", "liblzma-dev", "libsqlite3-dev", "libreadline-dev", "uuid-dev", "libncurses-dev",
)
#: Names searched on PATH and with uv, best first.  3.14 has the public concurrent.interpreters.
PATH_PAIRS = (("python3.14", "python3.14t"), ("python3.13", "python3.13t"))

PROBE = r"""
import json, sys, sysconfig
gil = getattr(sys, "_is_gil_enabled", None)
print(json.dumps({
    "executable": sys.executable,
    "version": list(sys.version_info[:3]),
    "py_gil_disabled": int(sysconfig.get_config_var("Py_GIL_DISABLED") or 0),
    "gil_enabled": gil() if gil is not None else True,
    "implementation": sys.implementation.name,
}))
"""


class ToolchainError(Exception):
    """Setup cannot continue; the message is one line: what is missing and how to supply it."""


@dataclass(frozen=True)
class Interp:
    """A probed interpreter."""

    path: str
    version: Tuple[int, int, int]
    py_gil_disabled: bool
    gil_enabled: bool

    @property
    def short(self) -> str:
        return "%d.%d.%d%s" % (*self.version, "t" if self.py_gil_disabled else "")


@dataclass(frozen=True)
class Pair:
    gil: Interp
    ft: Interp
    source: str  # "env", "path", "uv", "cache" or "build"


Runner = Callable[[Sequence[str]], str]


def _run_capture(argv: Sequence[str]) -> str:
    """Run ``argv`` with the caller's environment and return its stdout.

    The environment is passed through on purpose: a ``PYTHON_GIL=1`` in it would also apply to the
    tests, so the probe must see it and :func:`verify_pair` reports it.
    """
    return subprocess.run(
        list(argv), check=True, capture_output=True, text=True, timeout=60).stdout


def probe(path: str, run: Runner = _run_capture) -> Interp:
    """Run ``path`` and report what build it is.

    Raises:
        ToolchainError: the path does not run as a Python interpreter.
    """
    try:
        out = run([path, "-c", PROBE])
        data = json.loads(out.strip().splitlines()[-1])
        major, minor, micro = (int(v) for v in data["version"])
        return Interp(
            path=path,
            version=(major, minor, micro),
            py_gil_disabled=bool(data["py_gil_disabled"]),
            gil_enabled=bool(data["gil_enabled"]),
        )
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, KeyError,
            TypeError) as exc:
        raise ToolchainError(f"{path} does not run as a Python interpreter ({exc})") from exc


def verify_pair(gil: Interp, ft: Interp, source: str) -> Pair:
    """Check that ``gil`` and ``ft`` are the two builds of one CPython version.

    Raises:
        ToolchainError: a build is of the wrong kind, or the versions differ.
    """
    if gil.py_gil_disabled:
        raise ToolchainError(
            f"{gil.path} is a free-threaded build (Py_GIL_DISABLED=1) but was given as the GIL "
            "build: set PARATICK_PYTHON_GIL to a default (GIL) build")
    if not ft.py_gil_disabled:
        raise ToolchainError(
            f"{ft.path} is a GIL build (Py_GIL_DISABLED=0) but was given as the free-threaded "
            "build: set PARATICK_PYTHON_FT to a python3.13t/python3.14t")
    if ft.gil_enabled:
        raise ToolchainError(
            f"{ft.path} is free-threaded but started with the GIL enabled (is PYTHON_GIL=1 set?): "
            "unset PYTHON_GIL")
    if gil.version != ft.version:
        raise ToolchainError(
            f"version mismatch: {gil.path} is {gil.short} but {ft.path} is {ft.short}; "
            "paratick compares two builds of the same version only")
    if gil.version < (3, 13, 0):
        raise ToolchainError(f"{gil.path} is {gil.short}; paratick needs CPython 3.13 or newer")
    return Pair(gil, ft, source)


def find_pair(
    env: Mapping[str, str],
    which: Callable[[str], Optional[str]] = shutil.which,
    run: Runner = _run_capture,
) -> Optional[Pair]:
    """Find an installed pair, without building anything.

    Returns ``None`` when no pair is installed (the caller then builds one).

    Raises:
        ToolchainError: an explicit pair is incomplete or wrong.  Explicit settings are never
            silently ignored: a mistake there is reported rather than papered over.
    """
    g, f = env.get("PARATICK_PYTHON_GIL"), env.get("PARATICK_PYTHON_FT")
    if g or f:
        if not (g and f):
            missing = "PARATICK_PYTHON_FT" if g else "PARATICK_PYTHON_GIL"
            raise ToolchainError(f"set {missing} too: an explicit pair needs both paths")
        return verify_pair(probe(g, run), probe(f, run), "env")

    for gil_name, ft_name in PATH_PAIRS:
        gp, fp = which(gil_name), which(ft_name)
        if gp and fp:
            try:
                return verify_pair(probe(gp, run), probe(fp, run), "path")
            except ToolchainError as exc:
                _say(f"skipping PATH pair {gil_name}/{ft_name}: {exc}")

    if which("uv"):
        for gil_name, ft_name in PATH_PAIRS:
            found = []
            for name in (gil_name.replace("python", ""), ft_name.replace("python", "")):
                try:
                    # --no-project: ignore any .python-version / requires-python of the cwd.
                    out = run(["uv", "python", "find", "--no-project", name])
                    found.append(out.strip().splitlines()[-1])
                except (OSError, subprocess.SubprocessError, IndexError):
                    break
            if len(found) == 2:
                try:
                    return verify_pair(probe(found[0], run), probe(found[1], run), "uv")
                except ToolchainError as exc:
                    _say(f"skipping uv pair {gil_name}/{ft_name}: {exc}")
    return None


# --------------------------------------------------------------------------------------------
# Building from Debian's source package
# --------------------------------------------------------------------------------------------

def cache_root(env: Mapping[str, str]) -> Path:
    base = env.get("PARATICK_CACHE") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "paratick")
    return Path(base)


def mirror_uri(sources_dir: Path = Path("/etc/apt")) -> str:
    """Return the Debian mirror URI already configured on this machine.

    Reads deb822 ``*.sources`` files and one-line ``*.list`` files; takes the first ``deb`` entry
    whose path ends in ``/debian`` (not ``debian-security``).

    Raises:
        ToolchainError: no Debian mirror is configured.
    """
    parts = sources_dir / "sources.list.d"
    files = [*sorted(parts.glob("*.sources")), sources_dir / "sources.list",
             *sorted(parts.glob("*.list"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri in parse_sources(text, deb822=path.suffix == ".sources"):
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    raise ToolchainError(
        "no Debian mirror found in /etc/apt sources: install python3.13 and python3.13t yourself "
        "and set PARATICK_PYTHON_GIL and PARATICK_PYTHON_FT")


def parse_sources(text: str, *, deb822: bool) -> List[str]:
    """URIs of ``deb`` entries in an apt sources file (either format).

    Args:
        text: the file's contents.
        deb822: True for a ``*.sources`` file (stanzas of ``Key: value`` fields separated by blank
            lines), False for a one-line ``*.list`` file (``deb [options] URI suite components``).

    Returns:
        The URIs of enabled binary (``deb``) entries, in file order; ``deb-src`` entries and
        commented-out lines are ignored.
    """
    uris: List[str] = []
    if deb822:
        # Stanzas are separated by lines that are empty or hold only whitespace.
        for stanza in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")):
            fields: Dict[str, str] = {}
            key = None
            for line in stanza.splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                if line[0] in " \t" and key is not None:  # continuation of a multi-line field
                    fields[key] += " " + line.strip()
                    continue
                if ":" not in line:
                    continue
                name, _, value = line.partition(":")
                key = name.strip().lower()
                fields[key] = value.strip()
            if ("deb" in fields.get("types", "").split()
                    and fields.get("enabled", "yes").lower() != "no"):
                uris.extend(fields.get("uris", "").split())
    else:
        for line in text.splitlines():
            # Drop comments and the optional "[key=value ...]" block, which may contain spaces.
            line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0])
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "deb":
                uris.append(parts[1])
    return uris


def _sh(argv: Sequence[str], *, log: Path, cwd: Optional[Path] = None,
        env: Optional[Mapping[str, str]] = None, what: Optional[str] = None) -> None:
    """Run ``argv`` with its output appended to ``log``.

    Raises:
        ToolchainError: the command failed; the last lines of the log are printed as progress
            lines first, so the error itself stays one line.
    """
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(argv) + "\n")
        fh.flush()
        try:
            proc = subprocess.run(list(argv), cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                  env=None if env is None else dict(env))
        except OSError as exc:
            raise ToolchainError(f"cannot run {argv[0]} ({exc})") from exc
    if proc.returncode != 0:
        for line in log.read_text(errors="replace").splitlines()[-15:]:
            _say(f"  | {line}")
        name = what or os.path.basename(argv[0]) + (" " + argv[1] if len(argv) > 1 else "")
        raise ToolchainError(f"{name} failed (exit {proc.returncode}); full log: {log}")


def fetch_source(work: Path, log: Path) -> Tuple[str, Path]:
    """Download the newest python3.13 source package; return (upstream version, orig tarball)."""
    apt = work / "apt"
    for sub in ("lists/partial", "cache/archives/partial", "etc"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    uri = mirror_uri()
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    (apt / "etc/sources.list").write_text("".join(
        f"deb-src [signed-by={keyring}] {uri} {suite} main\n" for suite in SOURCE_SUITES))
    (apt / "apt.conf").write_text(
        f'Dir::Etc::SourceList "{apt}/etc/sources.list";\n'
        'Dir::Etc::SourceParts "/nonexistent";\n'
        f'Dir::State::Lists "{apt}/lists";\n'
        f'Dir::Cache "{apt}/cache";\n')
    env = {**os.environ, "APT_CONFIG": str(apt / "apt.conf")}
    _sh(["apt-get", "update", "-q"], log=log, env=env)
    out = subprocess.run(["apt-cache", "showsrc", f"python{SOURCE_VERSION}"], env=env,
                         capture_output=True, text=True).stdout
    versions = [line.split()[1] for line in out.splitlines() if line.startswith("Version:")]
    if not versions:
        raise ToolchainError(
            f"python{SOURCE_VERSION} source not found in suites {','.join(SOURCE_SUITES)} "
            f"of {uri}: "
            "set PARATICK_PYTHON_GIL and PARATICK_PYTHON_FT to an installed pair")
    best = max(versions, key=_debver_key)
    src = work / "src"
    src.mkdir(exist_ok=True)
    _sh(["apt-get", "source", "--download-only", f"python{SOURCE_VERSION}={best}"],
        log=log, cwd=src, env=env)
    tarballs = sorted(src.glob(f"python{SOURCE_VERSION}_*.orig.tar.*"))
    if not tarballs:
        raise ToolchainError(f"apt-get source gave no orig tarball in {src}")
    upstream = best.split("-")[0].split(":")[-1]
    return upstream, tarballs[0]


def _debver_key(v: str) -> Tuple[int, ...]:
    head = v.split(":")[-1].split("-")[0].split("~")[0]
    return tuple(int(x) if x.isdigit() else 0 for x in head.replace("+", ".").split("."))


def _dpkg_installed(package: str) -> bool:
    """Whether dpkg reports ``package`` as installed (not merely known or half-removed)."""
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                          capture_output=True, text=True)
    return proc.returncode == 0 and proc.stdout.strip().endswith(" installed")


def missing_build_deps(installed: Callable[[str], bool] = _dpkg_installed) -> List[str]:
    """The packages of :data:`BUILD_DEPS` that are not installed, in :data:`BUILD_DEPS` order.

    Raises:
        ToolchainError: this is not a Debian-like system (no ``dpkg-query``).
    """
    try:
        return [p for p in BUILD_DEPS if not installed(p)]
    except FileNotFoundError as exc:
        raise ToolchainError(
            "no dpkg-query here, so CPython cannot be built from Debian's source package: "
            "install a GIL + free-threaded pair and set PARATICK_PYTHON_GIL and "
            "PARATICK_PYTHON_FT") from exc


def install_build_deps(log: Path, *, missing: Optional[List[str]] = None,
                       root: Optional[bool] = None) -> None:
    """Install the missing build dependencies with apt-get, or say exactly how to.

    Args:
        log: where apt-get's output goes.
        missing: the packages to install (default: :func:`missing_build_deps`).
        root: whether we may install (default: the effective user is root).

    Raises:
        ToolchainError: packages are missing and we are not root; the message holds the exact
            apt-get command line to run.
    """
    if missing is None:
        missing = missing_build_deps()
    if not missing:
        return
    if root is None:
        root = os.geteuid() == 0
    if not root:
        raise ToolchainError(
            "missing build dependencies; install them with "
            f"'sudo apt-get install -y {' '.join(missing)}' and rerun, or set PARATICK_PYTHON_GIL "
            "and PARATICK_PYTHON_FT to an installed pair")
    t0 = time.monotonic()
    _say(f"installing build dependencies: apt-get install -y {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _sh(["apt-get", "update", "-q"], log=log, env=env)
    _sh(["apt-get", "install", "-y", "-q", *missing], log=log, env=env)
    _say(f"installed build dependencies in {time.monotonic() - t0:.0f} s")


def _extract(tarball: Path, dest: Path) -> None:
    with tarfile.open(tarball) as tf:
        if hasattr(tarfile, "data_filter"):  # 3.12+ and security backports; default in 3.14
            tf.extractall(dest, filter="data")
        else:
            tf.extractall(dest)


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """Hold the cache lock: two concurrent ``make`` runs (or setup + build) build only once."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_pair(cache: Path, run: Runner = _run_capture) -> Pair:
    """Build both interpreters from one Debian source tarball into ``cache``.

    Both builds use the same configure flags apart from ``--disable-gil`` and no PGO/LTO
    (``--enable-optimizations`` doubles the build time), so comparisons between them are fair even
    though absolute speed is below a distribution's build.  A build already marked complete is kept.

    Args:
        cache: the cache root (interpreters go to ``cache/cpython/<version>`` and ``<version>t``).
        run: how interpreters are probed (tests inject a fake).

    Raises:
        ToolchainError: a dependency, the source or a build step is missing or failed.
    """
    done = cached_pair(cache, run)
    if done is not None:
        return done
    cache.mkdir(parents=True, exist_ok=True)
    log = cache / "build.log"
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix="paratick-cpython-") as tmp:
        work = Path(tmp)
        install_build_deps(log)
        t0 = time.monotonic()
        version, tarball = fetch_source(work, log)
        _say(f"fetched CPython {version} source ({tarball.name}) in {time.monotonic() - t0:.0f} s")
        _extract(tarball, work / "tree")
        (srcdir,) = [p for p in (work / "tree").iterdir() if p.is_dir()]
        jobs = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count() or 1)
        for suffix, flags in (("", []), ("t", ["--disable-gil"])):
            prefix = cache / "cpython" / f"{version}{suffix}"
            if (prefix / ".complete").exists():
                continue
            shutil.rmtree(prefix, ignore_errors=True)
            build = work / f"build{suffix}"
            build.mkdir()
            t0 = time.monotonic()
            _say(f"building CPython {version}{suffix} (configure {' '.join(flags) or '(default)'},"
                 f" make -j{jobs}); log: {log}")
            _sh([str(srcdir / "configure"), f"--prefix={prefix}", "--with-ensurepip=install",
                 *flags], log=log, cwd=build)
            _sh(["make", f"-j{jobs}"], log=log, cwd=build)
            _sh(["make", "install"], log=log, cwd=build)
            # Verify before marking complete, so a broken build is rebuilt rather than reused.
            short = ".".join(version.split(".")[:2])
            got = probe(str(prefix / "bin" / f"python{short}{suffix}"), run)
            if got.py_gil_disabled != bool(suffix) or got.version != _version_tuple(version):
                raise ToolchainError(
                    f"the build in {prefix} reports {got.short}, expected {version}{suffix}")
            (prefix / ".complete").write_text(version + "\n")
            _say(f"built CPython {version}{suffix} in {time.monotonic() - t0:.0f} s")
    pair = cached_pair(cache, run)
    if pair is None:
        raise ToolchainError(f"build finished but no interpreter pair found under {cache}")
    return pair


def _version_tuple(version: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def cached_pair(cache: Path, run: Runner = _run_capture) -> Optional[Pair]:
    """The newest complete pair already built under ``cache``, verified.

    Raises:
        ToolchainError: the cached pair does not run or is not a matched pair; the message says
            which folder to delete so that setup rebuilds it.
    """
    root = cache / "cpython"
    if not root.is_dir():
        return None
    done = {p.name for p in root.iterdir() if (p / ".complete").exists()}
    for name in sorted((n for n in done if not n.endswith("t")), key=_debver_key, reverse=True):
        if name + "t" in done:
            short = ".".join(name.split(".")[:2])
            try:
                return verify_pair(probe(str(root / name / "bin" / f"python{short}"), run),
                                   probe(str(root / (name + "t") / "bin" / f"python{short}t"), run),
                                   "cache")
            except ToolchainError as exc:
                raise ToolchainError(
                    f"cached interpreters are unusable ({exc}); delete {root / name} and "
                    f"{root / (name + 't')} to rebuild them") from exc
    return None


# --------------------------------------------------------------------------------------------
# Virtual environments
# --------------------------------------------------------------------------------------------

VENVS = {"gil": REPO / ".venv" / "gil", "ft": REPO / ".venv" / "ft"}


def install_inputs(pyproject: str) -> str:
    """The parts of ``pyproject.toml`` that decide what a venv installs, canonicalised.

    Only ``[build-system]``, ``[project]`` and ``[tool.setuptools]`` count: editing lint or test
    settings must not reinstall both venvs (a minute or more, during which they are unusable).
    Without ``tomllib`` (Python < 3.11) the whole file counts.
    """
    try:
        import tomllib
    except ImportError:
        return pyproject
    data = tomllib.loads(pyproject)
    return json.dumps({"build-system": data.get("build-system"), "project": data.get("project"),
                       "setuptools": data.get("tool", {}).get("setuptools")}, sort_keys=True)


def venv_stamp(interp: Interp, extras: str, pyproject: str) -> str:
    """What a venv was made from; a different stamp means the venv must be recreated."""
    h = hashlib.sha256(install_inputs(pyproject).encode())
    h.update(f"\0{interp.path}\0{interp.short}\0{extras}".encode())
    return h.hexdigest()


def ensure_venv(kind: str, interp: Interp) -> Path:
    """Create (or reuse) the venv for ``interp`` with paratick installed editable plus dev tools."""
    venv = VENVS[kind]
    stamp_file = venv / ".paratick-stamp"
    # Lint tools (mypy, ruff) only under the GIL build: mypy's compiled dependencies have no
    # free-threaded wheels.  Tests run under both.
    extras = "dev" if kind == "gil" else "test"
    stamp = venv_stamp(interp, extras, (REPO / "pyproject.toml").read_text())
    py = venv / "bin" / "python"
    if py.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        _say(f"venv {venv.relative_to(REPO)} is up to date ({interp.short})")
        return py
    t0 = time.monotonic()
    shutil.rmtree(venv, ignore_errors=True)
    _say(f"creating venv {venv.relative_to(REPO)} with {interp.short} ({interp.path})")
    log = venv.parent / f"{kind}-install.log"
    venv.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    _sh([interp.path, "-m", "venv", str(venv)], log=log)
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # numpy from source takes ~9 min on this machine and free-threaded (cp313t) wheels exist on
    # PyPI, so insist on a wheel: a missing one fails in seconds instead of compiling for minutes.
    # Applied to both venvs so they resolve the same numpy.
    extra = ["--prefer-binary", "--only-binary", "numpy"]
    _say(f"installing paratick[{extras}] (editable) into {venv.relative_to(REPO)}; log: {log}")
    _sh([*pip, *extra, "-e", f"{REPO}[{extras}]"], log=log,
        what=f"pip install into {venv.relative_to(REPO)}")
    stamp_file.write_text(stamp)
    _say(f"installed paratick into {venv.relative_to(REPO)} in {time.monotonic() - t0:.0f} s")
    return py


def _say(msg: str) -> None:
    print(f"[setup {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def setup(env: Mapping[str, str]) -> Pair:
    """Find (or build) the pair, then create or reuse ``.venv/gil`` and ``.venv/ft``.

    Idempotent: with the pair cached and the venvs stamped with the current ``pyproject.toml``,
    this only probes the two interpreters (about a second).
    """
    t0 = time.monotonic()
    cache = cache_root(env)
    with _locked(cache):
        pair = find_pair(env)
        if pair is None:
            pair = cached_pair(cache)
        if pair is None:
            _say("no GIL/free-threaded pair on PARATICK_PYTHON_*, PATH or uv: building CPython "
                 f"{SOURCE_VERSION} from Debian's source package (~10 min on 2 cores, once)")
            pair = build_pair(cache)
            pair = Pair(pair.gil, pair.ft, "build")
        _say(f"interpreters ({pair.source}): GIL {pair.gil.short} {pair.gil.path}; "
             f"free-threaded {pair.ft.short} {pair.ft.path}")
        ensure_venv("gil", pair.gil)
        ensure_venv("ft", pair.ft)
    _say(f"setup done in {time.monotonic() - t0:.1f} s")
    return pair


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="find or build the interpreter pair and create both venvs")
    sub.add_parser("find", help="print the pair that setup would use (no building), as JSON")
    sub.add_parser("build", help="build the pair from Debian's source package into the cache")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "setup":
            setup(os.environ)
        elif args.cmd == "build":
            cache = cache_root(os.environ)
            with _locked(cache):
                pair = build_pair(cache)
            print(pair.gil.path, pair.ft.path)
        else:
            found = find_pair(os.environ) or cached_pair(cache_root(os.environ))
            if found is None:
                print("null")
                return 1
            print(json.dumps({"source": found.source, "gil": found.gil.path, "ft": found.ft.path,
                              "version": found.gil.short}))
    except ToolchainError as exc:
        print(f"paratick setup: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
