"""``paratick info``: which interpreter this is, its build, and whether the GIL is on."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from typing import Any

from server.host import (
    free_threaded,
    gil_enabled,
    import_extensions,
    package_versions,
    usable_cores,
)

HELP = "print the interpreter, its build (GIL or free-threaded), GIL state, cores, library versions"

LIBRARIES = ("paratick", "websockets", "msgpack", "numpy", "aiomqtt")


def collect() -> dict[str, Any]:
    """What ``paratick info`` prints, as a dict (after loading the extensions paratick uses:
    one without free-threading support re-enables the GIL when imported)."""
    versions = package_versions(LIBRARIES)
    import_extensions()
    ft = free_threaded()
    return {
        "executable": sys.executable,
        "version": platform.python_version(),
        "implementation": sys.implementation.name,
        "build": "free-threaded" if ft else "default (GIL)",
        "py_gil_disabled": ft,
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
