"""``paratick bench spectators``: the A/B order and the aggregation on literal rounds, then a
smoke run of a few seconds (never the full benchmark)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.spectators import aggregate, order, summary


def test_rounds_alternate_a_b_b_a() -> None:
    assert order(1) == [False, True]
    assert order(3) == [False, True, True, False, False, True]
    assert order(4).count(True) == 4
    with pytest.raises(BenchError):
        order(0)


def rounds(pairs: list[tuple[float, float]], key: str = "p50") -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for a, b in pairs:
        out.append({"spectators": 0, "p50": a, "p99": a * 3})
        out.append({"spectators": 10, "p50": b, "p99": b * 3})
    return out


def test_ratios_are_per_pair_with_median_min_max() -> None:
    agg = aggregate(rounds([(2.0, 2.0), (2.0, 2.2), (4.0, 3.6)]))
    assert agg["pairs"] == 3
    p50 = agg["p50"]
    assert p50["ratio"] == {"median": 1.0, "min": 0.9, "max": pytest.approx(1.1), "n": 3}
    assert p50["without"]["median"] == 2.0 and p50["with"]["median"] == 2.2
    low, high = p50["ratio_ci"]
    assert low <= 1.1 and high >= 1.0
    assert agg["p99"]["ratio"]["median"] == pytest.approx(1.0)


def test_missing_figures_drop_their_pair_only() -> None:
    runs = rounds([(2.0, 2.0), (2.0, 3.0)])
    runs[0]["p50"] = None  # an empty window on the server's side
    agg = aggregate(runs)
    assert agg["p50"]["ratio"]["n"] == 1 and agg["p50"]["ratio"]["median"] == 1.5
    assert agg["p50"]["ratio_ci"] is None  # one pair: no interval
    assert agg["p99"]["ratio"]["n"] == 2


def test_the_summary_prints_both_percentiles() -> None:
    section = {"aggregate": aggregate(rounds([(2.0, 2.0), (2.0, 2.2)])),
               "params": {"spectators": 10, "npcs": 2000, "backend": "threads"}}
    text = summary(section)
    assert "10 spectators" in text and "p50" in text and "p99" in text and "CI" in text


def test_a_smoke_run_writes_its_json(tmp_path: Path) -> None:
    """One round of each kind, a second each: the plumbing works (the figures mean nothing)."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    res = subprocess.run(
        [sys.executable, "-m", "server.cli", "bench", "spectators", "--rounds", "1",
         "--spectators", "2", "--settle", "0.5", "--window", "1", "--npcs", "100",
         "--backend", "inline", "--quiet", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    (path,) = tmp_path.glob("spectators-*.json")
    doc = json.loads(path.read_text())
    assert [r["spectators"] for r in doc["runs"]] == [0, 2]
    assert doc["runs"][1]["views"] >= 1 and doc["runs"][1]["errors"] == []
    assert doc["runs"][0]["p50"] is not None and doc["server_tracebacks"] == 0
    assert doc["aggregate"]["pairs"] == 1 and "environment" in doc
    assert "spectators" in res.stdout and str(path) in res.stdout
