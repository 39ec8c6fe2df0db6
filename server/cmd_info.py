"""``paratick info``: which interpreter this is, its build, and whether the GIL is on."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import sysconfig
from importlib import metadata
from typing import Any

HELP = "print the interpreter, its build (GIL or free-threaded), GIL state, cores, library versions"

LIBRARIES = ("paratick", "websockets", "msgpack", "numpy", "aiomqtt")


def usable_cores() -> int:
    """Cores this process may run on (affinity-aware; what ``--workers`` defaults to)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def gil_enabled() -> bool:
    """Whether the GIL is enabled *now* (an extension can re-enable it at import time)."""
    fn = getattr(sys, "_is_gil_enabled", None)
    return True if fn is None else bool(fn())


def collect() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    # Import the extensions paratick uses so that the GIL state reflects them (an extension
    # without free-threading support re-enables the GIL when imported).
    for mod in ("msgpack", "numpy"):
        with contextlib.suppress(ImportError):
            __import__(mod)
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    return {
        "executable": sys.executable,
        "version": platform.python_version(),
        "implementation": sys.implementation.name,
        "build": "free-threaded" if free_threaded else "default (GIL)",
        "py_gil_disabled": free_threaded,
        "gil_enabled": gil_enabled(),
        "cores": usable_cores(),
        "cpu": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "libraries": versions,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"interpreter  {info['executable']}")
    print(f"version      {info['implementation']} {info['version']}")
    print(f"build        {info['build']} (Py_GIL_DISABLED={int(info['py_gil_disabled'])})")
    print(f"GIL enabled  {info['gil_enabled']}")
    print(f"cores        {info['cores']} usable")
    print(f"platform     {info['platform']}")
    libs = ", ".join(f"{k} {v or 'missing'}" for k, v in info["libraries"].items())
    print(f"libraries    {libs}")
    return 0
