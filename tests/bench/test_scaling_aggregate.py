"""bench.summary.aggregate (speedups, baselines, the ceiling ratio, the invalid-cell rule), the
scaling table and headlines; bench.scaling's plan."""

from __future__ import annotations

from typing import Any

import pytest

from bench.builds import Build
from bench.scaling import Plan, cells_for, default_workers
from bench.summary import aggregate, goal_verdicts, headlines, judge
from bench.summary import scaling_table as table
from tests.bench.synthetic import BUILDS, cell, section, standard_cells


def by(cells: list[dict[str, Any]], summaries: list[dict[str, Any]], **match: Any,
       ) -> dict[str, Any]:
    hits = [s for c, s in zip(cells, summaries, strict=True)
            if all(c[k] == v for k, v in match.items())]
    assert len(hits) == 1
    return hits[0]


def test_speedups_efficiency_and_reference_ratio() -> None:
    cells = standard_cells()
    sums = aggregate(cells, BUILDS)
    ft2 = by(cells, sums, workload="arena", build="ft", workers=2)
    assert ft2["status"] == "ok"
    assert ft2["ticks_per_s"] == {"median": 16.2, "min": 15.0, "max": 17.0, "n": 3}
    assert ft2["speedup_vs_1"] == pytest.approx(16.2 / 9.0)
    # best single core of any build is the GIL build's 10.0, not ft's own 9.0
    assert ft2["speedup_vs_best_1"] == pytest.approx(16.2 / 10.0)
    assert ft2["efficiency"] == pytest.approx(16.2 / 9.0 / 2)
    assert ft2["vs_reference"] == pytest.approx((16.2 / 9.0) / 2.0)
    # every comparison carries its 95 % interval, which holds the point figure
    for key in ("speedup_vs_1", "speedup_vs_best_1", "vs_reference"):
        ci = ft2[f"{key}_ci"]
        assert ci["low"] <= ft2[key] <= ci["high"] and ci["low"] < ci["high"], key
    assert ft2["speedup_vs_1_ci"]["n"] == [3, 3]
    assert ft2["vs_reference_ci"]["n"] == [3, 3, 3, 3]
    assert ft2["beats_reference"] is False
    assert ft2["ticks_per_s_ci"]["low"] <= 16.2 <= ft2["ticks_per_s_ci"]["high"]
    # a cell against itself is 1 by definition: no interval
    ft1 = by(cells, sums, workload="arena", build="ft", workers=1)
    assert ft1["speedup_vs_1"] == 1.0 and ft1["speedup_vs_1_ci"] is None
    gil2 = by(cells, sums, workload="arena", build="gil", workers=2)
    assert gil2["speedup_vs_1"] == pytest.approx(1.0)
    assert gil2["mspt"]["p50"] == pytest.approx(100.0)


def test_ft_cell_with_gil_enabled_in_a_worker_is_invalid_and_never_a_baseline() -> None:
    cells = standard_cells()
    # ft at 1 worker is the fastest single-core cell, but one of its workers had the GIL on.
    cells[2] = cell("arena", "ft", "threads", 1, [50.0, 50.0, 50.0], True)
    sums = aggregate(cells, BUILDS)
    bad = by(cells, sums, workload="arena", build="ft", workers=1)
    assert bad["status"] == "INVALID"
    assert "expects the GIL disabled" in bad["reason"]
    ft2 = by(cells, sums, workload="arena", build="ft", workers=2)
    assert ft2["speedup_vs_1"] is None  # its baseline is invalid
    assert ft2["speedup_vs_best_1"] == pytest.approx(16.2 / 10.0)  # not 16.2 / 50
    text = table(section(cells))
    assert "**INVALID**" in text
    assert "~~50.00 [50.00–50.00]~~" in text


def test_gil_build_reporting_no_gil_is_invalid_too() -> None:
    c = cell("arena", "gil", "threads", 2, [10.0], False)
    assert judge(c, expects_gil=True)[0] == "INVALID"
    assert judge(c, expects_gil=False) == ("ok", None)


def test_mixed_gil_states_and_missing_states_are_invalid() -> None:
    c = cell("arena", "ft", "threads", 2, [10.0], False)
    c["runs"][0]["worker_gil"] = [False, True]
    assert judge(c, expects_gil=False)[0] == "INVALID"
    c["runs"][0]["worker_gil"] = []
    c["runs"][0]["gil_enabled"] = None
    assert judge(c, expects_gil=False) == ("INVALID", "no worker reported its GIL state")


def test_cell_without_a_successful_repeat_is_error() -> None:
    c = cell("arena", "ft", "threads", 2, [10.0], False)
    c["runs"][0].update(ok=False, error="CellError: timed out", ticks_per_s=None)
    status, reason = judge(c, expects_gil=False)
    assert status == "ERROR" and "timed out" in (reason or "")
    s = aggregate([c], BUILDS)[0]
    assert "ticks_per_s" not in s


def test_failed_repeats_are_counted_not_averaged() -> None:
    c = cell("arena", "gil", "threads", 1, [10.0, 12.0, 11.0], True)
    c["runs"][1].update(ok=False, error="x", ticks_per_s=None, tick_ms=[])
    s = aggregate([c], BUILDS)[0]
    assert s["status"] == "ok" and s["repeats"] == 2 and s["failed_repeats"] == 1
    assert s["ticks_per_s"]["median"] == pytest.approx(10.5)


def test_digest_disagreement_is_flagged() -> None:
    cells = standard_cells()
    cells[1] = cell("arena", "gil", "threads", 2, [10.0, 10.0, 10.0], True, digest="other")
    sums = aggregate(cells, BUILDS)
    assert all(s.get("digest_mismatch") for c, s in zip(cells, sums, strict=True)
               if c["workload"] == "arena")
    c = cell("arena", "gil", "threads", 1, [10.0, 10.0], True)
    c["runs"][1]["digest"] = "zzz"
    assert aggregate([c], BUILDS)[0]["status"] == "INVALID"


def test_matrix_skips_impossible_cells() -> None:
    b = Build("ft", "/x/python", expects_gil=False)
    plan = Plan(builds=(b,), backends=("inline", "threads", "interpreters"), workers=(1, 2),
                kernels=("python", "numpy"), ceiling=True)
    cells = cells_for(plan)
    arena = [c for c in cells if c["workload"] == "arena"]
    assert not any(c["backend"] == "inline" and c["workers"] != 1 for c in cells)
    assert not any(c["kernel"] == "numpy" and c["backend"] == "interpreters" for c in arena)
    assert {(c["backend"], c["kernel"]) for c in arena} == {
        ("inline", "python"), ("inline", "numpy"), ("threads", "python"), ("threads", "numpy"),
        ("interpreters", "python")}
    assert len([c for c in cells if c["workload"] == "reference"]) == 5


def test_runtime_metrics_are_summarised_as_cross_checks() -> None:
    c = cell("arena", "ft", "threads", 2, [10.0, 10.0], False)
    for i, r in enumerate(c["runs"]):
        r["runtime_metrics"] = {"mspt": {"p50": 90.0 + i, "p99": 120.0},
                                "workers": [{"mspt": {"p50": 40.0}, "border_wait_ms": {"p50": 5.0}},
                                            {"mspt": {"p50": 60.0 + i},
                                             "border_wait_ms": {"p50": None}}]}
    s = aggregate([c], BUILDS)[0]
    assert s["runtime"] == {"step_mspt_p50": 90.5, "step_mspt_p99": 120.0,
                            "slowest_worker_mspt_p50": 60.5, "max_border_wait_ms_p50": 5.0}
    assert aggregate([cell("arena", "ft", "threads", 2, [10.0], False)], BUILDS)[0][
        "runtime"] is None


def test_the_lockstep_coordination_cost_is_summarised_and_reported() -> None:
    from bench.report import _where_time_goes

    c = cell("arena", "ft", "threads", 2, [10.0, 10.0, 10.0], False)
    for i, r in enumerate(c["runs"]):
        r["runtime_metrics"] = {"mspt": {"p50": 2.0, "p99": 3.0},
                                "coordination_ms": {"p50": 0.1 * (i + 1), "p99": 0.5 + i}}
    s = aggregate([c], BUILDS)[0]
    assert s["runtime"]["coordination_ms_p50"] == pytest.approx(0.2)  # median of 0.1 .. 0.3
    assert s["runtime"]["coordination_ms_p99"] == pytest.approx(1.5)
    sec = section([c])
    lines = _where_time_goes(sec)
    assert any("coordination p50 (µs)" in line for line in lines)
    row = next(line for line in lines if line.startswith("| ") and "threads" in line)
    assert row.rstrip(" |").split("|")[-2:] == [" 200 ", " 1500"]


def test_headlines_quote_measured_ratios() -> None:
    sec = section(standard_cells())
    sums = aggregate(sec["cells"], BUILDS)
    ft2 = by(sec["cells"], sums, workload="arena", build="ft", workers=2)
    lo, hi = ft2["speedup_vs_1_ci"]["low"], ft2["speedup_vs_1_ci"]["high"]
    rlo, rhi = ft2["vs_reference_ci"]["low"], ft2["vs_reference_ci"]["high"]
    lines = headlines(sec)
    assert (f"- 3.13t free-threaded, threads: 1.80× [{lo:.2f}, {hi:.2f}] at 2 workers vs 1 "
            f"worker (efficiency 90%; 0.90 [{rlo:.2f}, {rhi:.2f}] of the reference loop's "
            "speedup)") in lines
    assert any(x.startswith("- 3.13 GIL, threads: 1.00× [") for x in lines)
    best = next(x for x in lines if x.startswith("- best parallel"))
    assert "3.13t free-threaded threads x2 at 16.20 ticks/s = 1.62× [" in best
    # 1.80 [1.50, 2.12] against ">= 1.8": the interval straddles the target
    goal = next(x for x in lines if x.startswith("- goal speedup vs 1 worker at 2 workers"))
    assert goal.endswith("**undecided**")
    cells = standard_cells()
    cells[3] = cell("arena", "ft", "threads", 2, [30.0], True)
    assert any("INVALID" in x for x in headlines(section(cells)))


def test_default_worker_counts() -> None:
    assert default_workers(1) == (1,)
    assert default_workers(2) == (1, 2)
    assert default_workers(4) == (1, 2, 3, 4)
    assert default_workers(12) == (1, 2, 4, 8, 12)
    assert default_workers(16) == (1, 2, 4, 8, 16)


def test_goal_verdicts_follow_the_interval_not_the_point() -> None:
    cells = standard_cells()
    # tight repeats: 2.0x with a narrow interval clears 1.8; 1.5x misses it entirely
    cells[2] = cell("arena", "ft", "threads", 1, [9.0, 9.05, 8.95, 9.0], False)
    cells[3] = cell("arena", "ft", "threads", 2, [18.0, 18.1, 17.9, 18.0], False)
    goals = {g["goal"]: g for g in goal_verdicts(section(cells))}
    assert goals["speedup vs 1 worker at 2 workers >= 1.8"]["verdict"] == "met"
    cells[3] = cell("arena", "ft", "threads", 2, [13.5, 13.6, 13.4, 13.5], False)
    goals = {g["goal"]: g for g in goal_verdicts(section(cells))}
    assert goals["speedup vs 1 worker at 2 workers >= 1.8"]["verdict"] == "not met"
    # one repeat per cell: no interval, and the verdict says so
    cells[2] = cell("arena", "ft", "threads", 1, [9.0], False)
    cells[3] = cell("arena", "ft", "threads", 2, [18.0], False)
    goals = {g["goal"]: g for g in goal_verdicts(section(cells))}
    g = goals["speedup vs 1 worker at 2 workers >= 1.8"]
    assert g["ci"] is None and g["verdict"] == "met (measured once, no interval)"


def test_the_best_parallel_cell_is_judged_against_1_8_times_the_best_single_core() -> None:
    cells = standard_cells()
    cells[0] = cell("arena", "gil", "threads", 1, [10.0, 10.02, 9.98], True)  # best single core
    cells[1] = cell("arena", "gil", "threads", 2, [10.0, 10.02, 9.98], True)
    cells[2] = cell("arena", "ft", "threads", 1, [9.0, 9.02, 8.98], False)
    goal = "best parallel vs the best single core >= 1.8"
    cells[3] = cell("arena", "ft", "threads", 2, [17.5, 17.52, 17.48], False)  # 1.75x, tight
    g = {g["goal"]: g for g in goal_verdicts(section(cells))}[goal]
    assert g["verdict"] == "not met" and g["cell"].startswith("3.13t")
    cells[3] = cell("arena", "ft", "threads", 2, [18.5, 18.52, 18.48], False)  # 1.85x
    assert {g["goal"]: g for g in goal_verdicts(section(cells))}[goal]["verdict"] == "met"


def test_a_beaten_reference_is_flagged_only_when_the_whole_interval_is_above_one() -> None:
    cells = standard_cells()
    cells[4] = cell("reference", "ft", "threads", 1, [4.0, 4.02, 3.98], False)
    cells[5] = cell("reference", "ft", "threads", 2, [4.4, 4.42, 4.38], False)  # 1.1x
    cells[2] = cell("arena", "ft", "threads", 1, [9.0, 9.02, 8.98], False)
    cells[3] = cell("arena", "ft", "threads", 2, [16.2, 16.22, 16.18], False)  # 1.8x
    s = by(cells, aggregate(cells, BUILDS), workload="arena", build="ft", workers=2)
    assert s["vs_reference"] == pytest.approx(1.8 / 1.1, rel=1e-3)
    assert s["vs_reference_ci"]["low"] > 1.0 and s["beats_reference"] is True
    assert "beats the reference loop" in table(section(cells))
    sums = aggregate(standard_cells(), BUILDS)
    assert not any(x.get("beats_reference") for x in sums)


def test_reference_loop_options_and_their_old_spellings() -> None:
    import argparse

    from bench import scaling

    p = argparse.ArgumentParser()
    scaling.add_arguments(p)
    new = p.parse_args(["--reference-iters", "7", "--no-reference"])
    old = p.parse_args(["--ceiling-iters", "7", "--no-ceiling"])
    assert (new.ceiling_iters, new.no_ceiling) == (old.ceiling_iters, old.no_ceiling) == (7, True)
    assert p.parse_args([]).no_ceiling is False
    # bench.cell still knows the reference loop by its first name
    b = Build("ft", "/x/python", expects_gil=False)
    plan = Plan(builds=(b,), backends=("threads",), workers=(1,), ceiling=True)
    ref = next(c for c in cells_for(plan) if c["workload"] == "reference")
    assert scaling.spec_for(ref, plan, [0])["workload"] == "ceiling"
    assert ref["workload"] == "reference"
