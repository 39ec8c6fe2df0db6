"""``paratick bench snapshots`` (bench.snapshots): the per-snapshot cost model behind the load
benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import env, snapshots
from server.cli import main


def test_measure_reports_every_cost_per_repeat() -> None:
    res = snapshots.measure(clients=30, repeats=2, players=40, npcs=300)
    assert res["clients"] == 30
    assert set(res["costs"]) == {"full", "lean", "loop", "delta", "encode_c",
                                 "encode_python"}
    for cost in res["costs"].values():
        assert len(cost["samples_us"]) == 2
        assert 0 < cost["min_us"] <= cost["median_us"] <= cost["max_us"]
    assert res["entities_per_snapshot"] >= 1  # a client always sees at least itself
    assert res["bytes_per_full_snapshot"] > 0
    assert 0.0 <= res["delta_share"] <= 1.0


def test_clients_are_capped_by_players() -> None:
    assert snapshots.measure(clients=500, repeats=1, players=12, npcs=50)["clients"] == 12


def test_quick_cli_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "snapshots", "--quick", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("snapshots-*.json")
    assert path.name == f"snapshots-{env.build_label()}.json"
    data = json.loads(path.read_text())
    assert data["quick"] is True and data["result"]["clients"] == 200
    out = capsys.readouterr().out
    assert "inside a subinterpreter" in out and "snapshots/s" in out


def test_bad_arguments_are_usage_errors(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "snapshots", "--clients", "0", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("paratick bench snapshots: ")
    assert not list(tmp_path.iterdir())


def test_hook_measured_inside_a_subinterpreter() -> None:
    res = snapshots.in_subinterpreter(clients=8, repeats=2, players=10, npcs=60)
    assert isinstance(res, dict), res
    assert len(res["samples_us"]) == 2 and res["median_us"] > 0
    # Which msgpack ran there is reported (1.2 falls back to pure Python in subinterpreters).
    assert res["msgpack"] in {"msgpack._cmsgpack", "msgpack.fallback"}
