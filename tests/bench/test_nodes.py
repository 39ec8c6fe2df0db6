"""``paratick bench nodes``: the aggregation on literal runs, then a smoke run of a few seconds
(never the benchmark at size)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.errors import BenchError
from bench.nodes import aggregate, parse_workers, summary
from server.cli import main


def runs() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for backend, rates, p50 in [("processes", [100.0, 120.0, 110.0], 0.5),
                                ("nodes", [50.0, 60.0, 55.0], 2.0)]:
        for rate in rates:
            out.append({"backend": backend, "workers": 2, "ticks_per_s": rate,
                        "exchange_p50_ms": p50, "exchange_p99_ms": p50 * 4, "digest": "d"})
    return out


def test_cells_aggregate_to_medians_and_ratios() -> None:
    (row,) = aggregate(runs())
    assert row["workers"] == 2
    assert row["processes"]["ticks_per_s"] == {"median": 110.0, "min": 100.0, "max": 120.0,
                                               "n": 3}
    assert row["nodes_over_processes"]["ticks_per_s"] == pytest.approx(0.5)
    assert row["nodes_over_processes"]["exchange_p50_ms"] == pytest.approx(4.0)
    text = summary({"params": {"entities": 1, "regions": "2x2", "ticks": 3, "repeats": 3},
                    "aggregate": [row], "digests": ["d"]})
    assert "x0.50" in text and "x4.00" in text and "d in every run" in text


def test_worker_lists_are_checked() -> None:
    assert parse_workers("1,2,4") == [1, 2, 4]
    for bad in ("", "0,2", "two"):
        with pytest.raises(BenchError):
            parse_workers(bad)


def test_a_smoke_run_writes_its_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "nodes", "--workers", "1,2", "--ticks", "5", "--entities", "200",
               "--regions", "2x2", "--repeats", "1", "--out", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    (path,) = tmp_path.glob("nodes-*.json")
    doc = json.loads(path.read_text())
    assert len(doc["runs"]) == 4 and len(doc["digests"]) == 1
    assert {(r["backend"], r["workers"]) for r in doc["runs"]} == {
        ("processes", 1), ("nodes", 1), ("processes", 2), ("nodes", 2)}
    assert all(r["ticks_per_s"] > 0 and r["exchange_p50_ms"] is not None for r in doc["runs"])
    assert doc["environment"]["git"] is not None
    assert "nodes/proc" in out


def test_a_killed_node_is_reported_and_the_digest_holds(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "nodes", "--workers", "2", "--ticks", "12", "--entities", "200",
               "--regions", "2x2", "--repeats", "1", "--kill-at", "6", "--out", str(tmp_path),
               "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    (path,) = tmp_path.glob("nodes-*.json")
    doc = json.loads(path.read_text())
    (kill,) = doc["kills"]
    assert kill["workers"] == 2 and kill["recoveries"] == 1 and kill["noticed_at_tick"] == 6
    assert kill["pause_s"] > 0 and kill["replayed"] == 6 - kill["checkpoint"]
    assert len(doc["digests"]) == 1  # the run that lost a node ends where the others do
    assert "node killed before tick 6: noticed in that tick" in out


def test_kill_at_must_fall_within_the_run() -> None:
    for bad in ("0", "12"):
        assert main(["bench", "nodes", "--workers", "2", "--ticks", "12", "--kill-at", bad,
                     "--quiet"]) == 2
