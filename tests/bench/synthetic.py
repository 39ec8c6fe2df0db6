"""Synthetic results for bench tests: small, deterministic, built through the real schema."""

from __future__ import annotations

from typing import Any

from bench import schema

BUILDS = [
    {"name": "gil", "label": "3.13 GIL", "python": "/x/gil/python", "env": {},
     "expects_gil": True},
    {"name": "ft", "label": "3.13t free-threaded", "python": "/x/ft/python", "env": {},
     "expects_gil": False},
]


def run(rnd: int, rate: float, *, gil: list[bool], digest: str | None = "d1",
        ok: bool = True) -> dict[str, Any]:
    return {"round": rnd, "ok": ok, "error": None if ok else "boom",
            "ticks_per_s": rate if ok else None,
            "entity_updates_per_s": rate * 20_000 if ok else None,
            "tick_ms": [1000.0 / rate] * 4 if ok else [], "worker_gil": gil,
            "gil_enabled": gil[0] if gil else None, "peak_rss": 50 * 2**20 if ok else None,
            "digest": digest if ok else None, "startup_s": 0.5 if ok else None,
            "runtime_metrics": {} if ok else None}


def cell(workload: str, build: str, backend: str, workers: int, rates: list[float],
         gil: bool, **kw: Any) -> dict[str, Any]:
    return {"workload": workload, "build": build, "backend": backend, "kernel": "python",
            "workers": workers,
            "runs": [run(i, r, gil=[gil] * workers,
                         digest=None if workload == "ceiling" else kw.get("digest", "d1"))
                     for i, r in enumerate(rates)]}


def section(cells: list[dict[str, Any]]) -> dict[str, Any]:
    return {"created": "2026-11-25T19:00:00+00:00", "command": ["paratick", "bench", "scaling"],
            "environment": {"machine": {"cpu_model": "Test CPU", "usable_cores": 2,
                                        "cpu_count": 2, "kernel": "Linux 6", "hostname": "h",
                                        "date": "2026-11-25"},
                            "git": {"commit": "abc", "branch": "bench", "dirty": False},
                            "interpreters": {}},
            "params": {"world": {"entities": 20_000, "width": 2048.0, "height": 2048.0,
                                 "regions_x": 4, "regions_y": 4, "radius": 4.0, "seed": 1},
                       "ticks": 4, "warmup": 1, "repeats": 3, "ceiling_iters": 1000,
                       "quick": True},
            "builds": BUILDS, "cells": cells,
            "order": [[r, i] for r in range(3) for i in range(len(cells))]}


def standard_cells() -> list[dict[str, Any]]:
    """GIL threads flat (~1x), ft threads scaling 1.8x, ft 10% slower single-threaded."""
    return [
        cell("arena", "gil", "threads", 1, [10.0, 9.0, 11.0], True),
        cell("arena", "gil", "threads", 2, [10.0, 10.5, 9.5], True),
        cell("arena", "ft", "threads", 1, [9.0, 8.0, 10.0], False),
        cell("arena", "ft", "threads", 2, [16.2, 15.0, 17.0], False),
        cell("ceiling", "ft", "threads", 1, [4.0, 4.0, 4.0], False),
        cell("ceiling", "ft", "threads", 2, [8.0, 8.0, 8.0], False),
    ]


def scaling_doc() -> dict[str, Any]:
    doc = schema.empty()
    doc["scaling"] = section(standard_cells())
    return schema.validate(doc)
