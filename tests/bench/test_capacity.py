"""bench.capacity: density scaling, the search on a synthetic predicate, verdicts, the schema,
the table, the command line, and one tiny real probe in a fresh interpreter."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import report, schema
from bench.builds import Build, make_build
from bench.capacity import (
    ARENA_DENSITY,
    MIN_SIDE,
    Plan,
    build_section,
    configs_for,
    execute,
    params_of,
    search,
    world_for,
    world_side,
)
from bench.errors import ResultsError
from bench.summary import capacity_headlines, capacity_summary, capacity_table, capacity_verdict
from server.cli import main
from server.host import gil_enabled
from sim.config import WorldConfig

GIL = Build("gil", "/x/gil/python", expects_gil=True)
FT = Build("ft", "/x/ft/python", expects_gil=False)
ENV: dict[str, Any] = {"machine": {"cpu_model": "Test CPU", "usable_cores": 2}, "git": {},
                       "interpreters": {}}


def probe_rec(n: int, *, tick_ms: float = 10.0, ticks: int = 90, ran: int | None = None,
              late: int = 0, gil: bool = True, workers: int = 1, ok: bool = True,
              ) -> dict[str, Any]:
    """A probe record as bench.capacity.run_probe returns it (schema PROBE)."""
    ran = ticks if ran is None else ran
    return {"entities": n, "side": world_side(n), "ticks_planned": ticks, "ok": ok,
            "error": None if ok else "CellError: boom", "ticks_run": ran if ok else 0,
            "timed_s": ran / 30 if ok else None, "tick_ms": [tick_ms] * ran if ok else [],
            "late_ticks": late if ok else None, "deadline_misses": 0 if ok else None,
            "min_dilation": 1.0 if not late else 0.5, "start_lag_ms_max": 0.1,
            "worker_gil": [gil] * workers if ok else [], "gil_enabled": gil if ok else None,
            "peak_rss": 2**26 if ok else None, "startup_s": 0.2 if ok else None,
            "runtime_metrics": {} if ok else None}


def threshold_probe(threshold: int, *, gil: bool = True) -> Any:
    """A fake probe: holds (10 ms ticks, no late tick) up to ``threshold`` entities."""
    calls: list[int] = []

    def probe(build: Build, spec: dict[str, Any], root: Path, timeout: float) -> dict[str, Any]:
        n = spec["world"]["entities"]
        calls.append(n)
        held = n <= threshold
        return probe_rec(n, tick_ms=10.0 if held else 50.0, late=0 if held else 3,
                         ran=spec["ticks"] if held else 30, ticks=spec["ticks"], gil=gil,
                         workers=spec["workers"])

    probe.calls = calls  # type: ignore[attr-defined]
    return probe


# --- density scaling -------------------------------------------------------------------------


def test_arena_density_gives_arena_20k() -> None:
    assert pytest.approx(20_000 / 2048**2 * 1e6) == ARENA_DENSITY
    assert world_side(20_000) == pytest.approx(2048.0)
    assert world_side(80_000) == pytest.approx(4096.0)  # 4x the entities, 2x the side
    assert world_side(5_000) == pytest.approx(1024.0)


def test_density_flag_scales_the_side() -> None:
    assert world_side(1_000, 1_000.0) == pytest.approx(1_000.0)  # 1,000 per 1,000,000 units^2
    assert world_side(20_000, 2 * ARENA_DENSITY) == pytest.approx(2048.0 / math.sqrt(2))


@given(st.integers(min_value=100, max_value=10_000_000))
def test_density_stays_constant(n: int) -> None:
    side = world_side(n)
    assert pytest.approx(ARENA_DENSITY) == n / side**2 * 1e6


@pytest.mark.parametrize("n", [0, 1, 12, 200, 20_000, 1_000_000])
def test_every_probe_world_is_a_valid_config(n: int) -> None:
    w = world_for(n)
    assert w["width"] == w["height"] >= MIN_SIDE and w["entities"] == n
    WorldConfig(width=w["width"], height=w["height"], regions_x=w["regions_x"],
                regions_y=w["regions_y"], radius=w["radius"], seed=w["seed"])


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_bad_density_is_refused(bad: float) -> None:
    with pytest.raises(ValueError):
        world_side(100, bad)


# --- verdicts --------------------------------------------------------------------------------

PARAMS = {"mspt_budget_ms": 1000 / 30, "max_late_ticks": 0}


def test_a_steady_probe_holds() -> None:
    assert capacity_verdict(probe_rec(1000), expects_gil=True, params=PARAMS) == ("held", [])


@pytest.mark.parametrize(("rec", "reason"), [
    (probe_rec(1000, tick_ms=40.0), "p99 MSPT 40.0 ms > 33.3 ms"),
    (probe_rec(1000, late=1), "1 late tick (world clock dilated to 0.50x)"),
    (probe_rec(1000, ran=60), "ran 60 of 90 ticks"),
])
def test_each_criterion_fails_alone(rec: dict[str, Any], reason: str) -> None:
    assert capacity_verdict(rec, expects_gil=True, params=PARAMS) == ("fails", [reason])


def test_one_slow_tick_fails_through_lateness_not_p99() -> None:
    rec = probe_rec(1000)
    rec["tick_ms"][-1] = 60.0
    rec["late_ticks"] = 1
    verdict, why = capacity_verdict(rec, expects_gil=True, params=PARAMS)
    assert verdict == "fails" and len(why) == 1 and "late tick" in why[0]
    assert capacity_verdict(rec, expects_gil=True,
                            params={**PARAMS, "max_late_ticks": 1})[0] == "held"


def test_gil_on_in_a_no_gil_build_is_invalid_and_a_crash_is_an_error() -> None:
    verdict, why = capacity_verdict(probe_rec(1000, gil=True), expects_gil=False, params=PARAMS)
    assert verdict == "INVALID" and "GIL disabled" in why[0]
    assert capacity_verdict(probe_rec(1000, ok=False), expects_gil=True,
                            params=PARAMS) == ("ERROR", ["CellError: boom"])


# --- the search, on a synthetic predicate (no subprocess) -----------------------------------


def test_matrix_skips_impossible_combinations() -> None:
    plan = Plan(builds=(GIL, FT), workers=(1, 2))
    configs = configs_for(plan)
    assert not any(c["kernel"] == "numpy" and c["backend"] == "interpreters" for c in configs)
    assert not any(c["backend"] == "inline" and c["workers"] != 1 for c in configs)
    # python: inline + 3 parallel backends x 2 workers; numpy: inline + 2 x 2; per build
    assert len(configs) == 2 * (7 + 5)
    assert [c["kernel"] for c in configs] == ["python"] * 14 + ["numpy"] * 10


@given(st.integers(min_value=1, max_value=200_000), st.integers(min_value=1, max_value=8))
def test_search_brackets_the_threshold_within_its_probes(threshold: int, probes: int) -> None:
    plan = Plan(builds=(GIL,), start=20_000, limit=100_000, max_probes=probes)
    probe = threshold_probe(threshold)
    config = {"build": "gil", "backend": "threads", "kernel": "python", "workers": 2}
    recs = search(plan, config, GIL, root=Path("."), cpus=[0, 1], params=params_of(plan),
                  probe=probe)
    assert len(recs) == len(probe.calls) <= probes
    assert all(r["entities"] <= plan.limit for r in recs)
    assert recs[0]["entities"] == 20_000  # the first world tried is the start
    held = [r["entities"] for r in recs if r["entities"] <= threshold]
    s = capacity_summary(build_section(plan, [{**config, "probes": recs}], ENV, ["t"]))[0]
    assert s["status"] == "ok"
    assert s["held"] == (max(held) if held else None)
    if held:
        assert s["held"] <= threshold
        failed_above = any(r["entities"] > s["held"] for r in recs)
        assert s["at_least"] is not failed_above


def test_search_stops_at_the_first_invalid_probe() -> None:
    plan = Plan(builds=(FT,), start=1_000, max_probes=6)
    probe = threshold_probe(10**6, gil=True)  # the GIL came back on in a no-GIL build
    config = {"build": "ft", "backend": "threads", "kernel": "python", "workers": 2}
    recs = search(plan, config, FT, root=Path("."), cpus=[0, 1], params=params_of(plan),
                  probe=probe)
    assert len(recs) == 1
    s = capacity_summary(build_section(plan, [{**config, "probes": recs}], ENV, ["t"]))[0]
    assert s["status"] == "INVALID"


def test_execute_runs_every_configuration_and_reports_progress() -> None:
    plan = Plan(builds=(GIL,), backends=("inline", "threads"), workers=(1, 2),
                kernels=("python", "numpy"), max_probes=3)
    lines: list[str] = []
    configs, stopped = execute(plan, root=Path("."), progress=lines.append,
                               probe=threshold_probe(30_000))
    assert stopped is None and len(configs) == 6
    assert all(1 <= len(c["probes"]) <= 3 for c in configs)
    assert sum("->" in ln for ln in lines) == sum(len(c["probes"]) for c in configs)
    # python starts at 20,000 (holds, then 40,000 fails); numpy at 200,000 (fails, halves)
    assert [p["entities"] for p in configs[0]["probes"]] == [20_000, 40_000, 30_000]
    assert [p["entities"] for p in configs[3]["probes"]] == [200_000, 100_000, 50_000]


def test_a_time_budget_stops_before_the_next_probe_and_keeps_a_search_cut_short() -> None:
    plan = Plan(builds=(GIL,), backends=("threads",), workers=(1, 2), kernels=("python",),
                max_probes=4, time_budget_s=10.0)
    now = [0.0]
    inner = threshold_probe(1_000_000)

    def probe(build: Build, spec: dict[str, Any], root: Path, timeout: float) -> dict[str, Any]:
        now[0] += 4.0  # each probe takes 4 s
        return inner(build, spec, root, timeout)

    configs, stopped = execute(plan, root=Path("."), probe=probe, clock=lambda: now[0])
    # probes start at 0, 4 and 8 s; the fourth would start at 12 s, past the budget
    assert [len(c["probes"]) for c in configs] == [3, 0]
    assert stopped == "time budget of 10 s spent in configuration 1 of 2"
    section = build_section(plan, configs, ENV, ["paratick", "bench", "capacity"],
                            stopped=stopped)
    first, second = capacity_summary(section)
    # every probe of the search held: what it held is a bound from below, never a result
    assert first["status"] == "ok" and first["held"] == 80_000 and first["at_least"]
    assert second["status"] == "NOT RUN"
    assert section["params"]["time_budget_s"] == 10.0


def test_ctrl_c_in_a_search_keeps_its_finished_probes() -> None:
    plan = Plan(builds=(GIL,), backends=("threads",), workers=(1,), kernels=("python",),
                max_probes=4)
    inner = threshold_probe(30_000)

    def probe(build: Build, spec: dict[str, Any], root: Path, timeout: float) -> dict[str, Any]:
        if len(inner.calls) == 2:
            raise KeyboardInterrupt
        return inner(build, spec, root, timeout)

    configs, stopped = execute(plan, root=Path("."), probe=probe)
    assert stopped == "interrupted (Ctrl-C) in configuration 1 of 1"
    assert [p["entities"] for p in configs[0]["probes"]] == [20_000, 40_000]
    (s,) = capacity_summary(build_section(plan, configs, ENV, ["paratick"], stopped=stopped))
    assert s["held"] == 20_000 and not s["at_least"]  # 40,000 failed: bracketed, not a bound


# --- schema, table, report -------------------------------------------------------------------


def synthetic_section() -> dict[str, Any]:
    plan = Plan(builds=(GIL, FT), backends=("inline", "threads"), workers=(1, 2),
                kernels=("python",), start=20_000)
    configs = configs_for(plan)  # gil inline 1, gil threads 1, 2, ft inline 1, threads 1, 2
    trails: list[list[dict[str, Any]]] = [
        [probe_rec(20_000), probe_rec(40_000, late=2), probe_rec(30_000)],
        [probe_rec(20_000), probe_rec(40_000, tick_ms=50.0), probe_rec(30_000, late=1)],
        [probe_rec(20_000, workers=2), probe_rec(40_000, workers=2)],
        [probe_rec(20_000, gil=True)],
        [probe_rec(20_000, ok=False), probe_rec(10_000, gil=False)],
        [],
    ]
    for c, probes in zip(configs, trails, strict=True):
        c["probes"] = probes
    return build_section(plan, configs, ENV, ["paratick", "bench", "capacity"],
                         stopped="interrupted (Ctrl-C) in configuration 6 of 6", note="test box")


def test_section_round_trips_through_the_schema(tmp_path: Path) -> None:
    section = synthetic_section()
    schema.save_section(tmp_path, "capacity", section)
    assert schema.load(tmp_path)["capacity"] == section


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda s: s["configs"][0]["probes"][1].__setitem__("ticks_run", "90"),
     "capacity.configs[0].probes[1].ticks_run: expected int, got str"),
    (lambda s: s["configs"][2].pop("workers"), "capacity.configs[2]: missing key 'workers'"),
    (lambda s: s["params"].__setitem__("max_late_ticks", None),
     "capacity.params.max_late_ticks: expected int, got null"),
    (lambda s: s["configs"][0]["probes"][0]["worker_gil"].append(1),
     "capacity.configs[0].probes[0].worker_gil[1]: expected bool, got int"),
])
def test_schema_names_the_first_bad_path(mutate: Any, message: str) -> None:
    doc = schema.empty()
    doc["capacity"] = copy.deepcopy(synthetic_section())
    mutate(doc["capacity"])
    with pytest.raises(ResultsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        schema.validate(doc)


def test_summary_and_table() -> None:
    section = synthetic_section()
    sums = capacity_summary(section)
    assert [s["status"] for s in sums] == ["ok", "ok", "ok", "INVALID", "ok", "NOT RUN"]
    assert [s["held"] for s in sums] == [30_000, 20_000, 40_000, 20_000, 10_000, None]
    assert sums[0]["vs_best_1"] == pytest.approx(1.0)  # gil inline is the best single core
    assert sums[2]["vs_best_1"] == pytest.approx(40 / 30) and sums[2]["at_least"]
    assert sums[2]["updates_per_s"] == 40_000 * 30
    table = capacity_table(section)
    lines = table.splitlines()
    assert len(lines) == 2 + 6
    assert "| 30,000 |" in lines[2] and "| 0.90 |" in lines[2]  # 30k x 30 Hz = 0.9 M/s
    assert "20k✓ 40k✗ 30k✓" in lines[2]
    assert "| ≥ 40,000 |" in lines[4] and "| 1.33 |" in lines[4] and "on ×2" in lines[4]
    assert "~~≥ 20,000~~" in lines[5] and "**INVALID**" in lines[5]
    assert "20k(ERROR) 10k✓" in lines[6]
    assert "**NOT RUN**" in lines[7]
    heads = capacity_headlines(section)
    assert heads[0].startswith("- python kernel: 3.13 GIL threads x2 holds ≥ 40,000 entities")
    assert "1.33x the best single core" in heads[0]
    assert any("stopped early" in h for h in heads)


def test_report_renders_the_capacity_section(tmp_path: Path) -> None:
    schema.save_section(tmp_path, "capacity", synthetic_section())
    written = report.write(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## Capacity at 30 Hz" in md and "Machine note: test box" in md
    assert "| ≥ 40,000 |" in md and "Stopped early" in md
    if tmp_path / "capacity.png" in written:
        assert (tmp_path / "capacity.png").read_bytes().startswith(b"\x89PNG")


# --- command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--builds", "current", "--kernels", "fortran"], "unknown kernel 'fortran'"),
    (["--builds", "current", "--backends", "gpu"], "unknown backend 'gpu'"),
    (["--builds", "pypy"], "unknown build 'pypy'"),
    (["--builds", "current", "--workers", "999"], "999 workers asked"),
    (["--builds", "current", "--start", "500", "--limit", "100"], "--limit 100 is below"),
    (["--builds", "current", "--kernels", "numpy", "--backends", "interpreters"],
     "nothing to run"),
])
def test_bad_options_are_one_line_and_exit_2(argv: list[str], fragment: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "capacity", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("paratick bench capacity: ") and fragment in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["--seconds", "0"], ["--workers", "0"], ["--start", "x"],
                                  ["--density", "-1"], ["--max-probes", "1.5"],
                                  ["--time-budget", "0"]])
def test_bad_numbers_are_one_line_and_exit_2(argv: list[str],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "capacity", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "capacity" in err and len(err.strip().splitlines()) == 1


def test_help_explains_the_method(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "capacity", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--quick", "--builds", "--backend", "--workers", "--kernel", "--start",
                 "--max-probes", "--seconds", "--density", "--out", "--note"):
        assert flag in out
    assert "holds" in out and "late" in out


# --- one tiny real probe ---------------------------------------------------------------------


def test_a_tiny_real_run(tmp_path: Path) -> None:
    """The interpreter running the tests, inline, python kernel, 200 entities, one 0.5 s probe:
    a fresh interpreter, pinned, paced by the tick scheduler, its record saved and reported."""
    build = make_build("current", None)
    plan = Plan(builds=(build,), backends=("inline",), workers=(1,), kernels=("python",),
                start=200, max_probes=1, seconds=0.5)
    configs, stopped = execute(plan)
    assert stopped is None and len(configs) == 1
    (rec,) = configs[0]["probes"]
    assert rec["ok"], rec.get("error")
    assert rec["entities"] == 200 and rec["side"] == pytest.approx(world_side(200))
    assert rec["ticks_planned"] == 15 and 1 <= rec["ticks_run"] <= 15
    assert len(rec["tick_ms"]) == rec["ticks_run"] and rec["timed_s"] > 0
    assert rec["worker_gil"] == [gil_enabled()] and rec["late_ticks"] is not None
    # Timing on a shared machine decides held or not; either way the verdict is a judgement,
    # never an error or INVALID.
    verdict, _ = capacity_verdict(rec, expects_gil=build.expects_gil, params=params_of(plan))
    assert verdict in ("held", "fails")
    section = build_section(plan, configs, ENV, ["test"])
    schema.save_section(tmp_path, "capacity", section)
    report.write(tmp_path, plots=False)
    assert "| python | current interpreter | inline | 1 |" in (tmp_path / "report.md").read_text()
