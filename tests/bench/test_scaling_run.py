"""A tiny real scaling run, end to end: subprocess cells, pinning, interleaving, JSON, report.

One build (the interpreter running the tests), inline + threads, workers 1..2, a 400-entity
world and two ticks: small enough to finish in seconds, real enough to prove every stage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import report, schema
from bench.builds import make_build, repo_root
from bench.scaling import ARENA_20K, Plan, build_section, cells_for, execute
from bench.summary import aggregate
from bench.summary import scaling_table as table
from server.host import gil_enabled

CORES = len(os.sched_getaffinity(0))
WORKERS = tuple(range(1, min(2, CORES) + 1))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    build = make_build("current", None)
    world = {**ARENA_20K, "entities": 400}
    plan = Plan(builds=(build,), backends=("inline", "threads"), workers=WORKERS, repeats=2,
                ticks=2, warmup=1, ceiling_iters=2000, world=tuple(world.items()),
                min_seconds=0.05)
    lines: list[str] = []
    cells, order, stopped = execute(plan, progress=lines.append)
    assert stopped is None
    assert lines and "done in" in lines[-1]
    section = build_section(plan, cells, order, {"machine": {}, "git": {}, "interpreters": {}},
                            ["test"])
    out = tmp_path_factory.mktemp("results")
    schema.save_section(out, "scaling", section)
    return out, section


def test_every_cell_ran_and_is_valid(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    _, section = tiny_run
    sums = aggregate(section["cells"], section["builds"])
    assert len(sums) == len(cells_for(Plan(builds=(make_build("current", None),),
                                           backends=("inline", "threads"), workers=WORKERS)))
    for c, s in zip(section["cells"], sums, strict=True):
        assert s["status"] == "ok", (c, s.get("reason"))
        assert s["repeats"] == 2
        assert s["ticks_per_s"]["median"] > 0
        assert s["worker_gil"] == [gil_enabled()] * c["workers"]
        assert s["peak_rss"] > 0
        if c["workload"] == "arena":
            # 2 fixed ticks (the digest's), then more until 50 ms were timed: the fixed ticks'
            # wall time (the steps and what runs between them) plus each extra step's
            run = c["runs"][0]
            assert len(run["tick_ms"]) == run["timed_ticks"] >= 2
            elapsed_ms = run["timed_ticks"] / run["ticks_per_s"] * 1e3
            assert elapsed_ms >= 50.0 * (1 - 1e-9) and run["tick"] == 1 + 2
            assert 0 < sum(run["tick_ms"]) <= elapsed_ms * (1 + 1e-9)
            assert s["speedup_vs_1"] is not None and s["speedup_vs_best_1"] is not None
    # Same world, same ticks: every backend and worker count ends on the same digest.
    digests = {s["digest"] for c, s in zip(section["cells"], sums, strict=True)
               if c["workload"] == "arena"}
    assert len(digests) == 1 and None not in digests


def test_runs_were_interleaved_and_pinned(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    _, section = tiny_run
    n = len(section["cells"])
    assert section["order"] == [[r, i] for r in range(2) for i in range(n)]
    for c in section["cells"]:
        assert [r["round"] for r in c["runs"]] == [0, 1]


def test_results_and_report_from_the_run(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    out, section = tiny_run
    assert schema.load(out)["scaling"]["cells"] == section["cells"]
    report.write(out)
    md = (out / "report.md").read_text()
    assert "threads" in md and "CEILING" in md and "Where the time goes" in md
    assert (out / "scaling.png").stat().st_size > 1000
    assert table(section).count("\n") == len(section["cells"]) + 1


def test_cell_pins_itself_and_reports_failures_as_data() -> None:
    spec = {"workload": "ceiling", "backend": "threads", "workers": 1, "kernel": "python",
            "cpus": [sorted(os.sched_getaffinity(0))[0]], "iters": 1000}
    env = {**os.environ, "PYTHONPATH": str(repo_root())}
    proc = subprocess.run([sys.executable, "-m", "bench.cell", "--spec", json.dumps(spec)],
                          capture_output=True, text=True, env=env, check=False, timeout=60)
    res = json.loads(proc.stdout)
    assert proc.returncode == 0 and res["ok"] and res["cpus"] == spec["cpus"]
    bad = {**spec, "workload": "bogus"}
    proc = subprocess.run([sys.executable, "-m", "bench.cell", "--spec", json.dumps(bad)],
                          capture_output=True, text=True, env=env, check=False, timeout=60)
    res = json.loads(proc.stdout)
    assert proc.returncode == 2 and not res["ok"] and "bogus" in res["error"]


def test_a_stuck_cell_is_killed_with_its_children_and_reported() -> None:
    from bench.errors import CellError
    from bench.scaling import run_cell

    spec = {"workload": "ceiling", "backend": "processes", "workers": 1, "kernel": "python",
            "cpus": None, "iters": 10**12}  # would spin for hours in a child process
    with pytest.raises(CellError, match="timed out"):
        run_cell(make_build("current", None), spec, repo_root(), timeout_s=1.5)
    # the spinning grandchild (in its warm-up, spin(10**11)) went with the process group
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True,
                         check=True).stdout
    assert f"spin({10**11}" not in out


def test_a_spent_time_budget_keeps_what_ran(tmp_path: Path) -> None:
    """The budget is checked between runs on the injected clock: here each check advances it by
    10 s against a 25 s budget, so exactly the first runs happen; the rest are NOT RUN, the
    section says why, and the saved file still validates and reports."""
    build = make_build("current", None)
    world = {**ARENA_20K, "entities": 200}
    plan = Plan(builds=(build,), backends=("inline", "threads"), workers=(1,), repeats=2,
                ticks=1, warmup=0, ceiling=False, world=tuple(world.items()),
                time_budget_s=25.0)
    ticks = iter(range(0, 1000, 10))
    cells, order, stopped = execute(plan, clock=lambda: float(next(ticks)))
    assert stopped is not None and "time budget" in stopped
    assert order == [[0, 0], [0, 1]]  # t=10 and t=20 start a run; t=30 is past the budget
    section = build_section(plan, cells, order, {"machine": {}, "git": {}, "interpreters": {}},
                            ["test"], stopped=stopped, note="tiny box")
    assert section["runs_done"] == 2 and section["runs_planned"] == 4
    sums = aggregate(section["cells"], section["builds"])
    assert [s["status"] for s in sums] == ["ok", "ok"]
    assert all(s["repeats"] == 1 for s in sums)
    schema.save_section(tmp_path, "scaling", section)
    report.write(tmp_path, plots=False)
    md = (tmp_path / "report.md").read_text()
    assert "Stopped early" in md and "tiny box" in md and "not the 2 planned" in md


def test_a_cell_that_never_ran_is_not_run_not_error() -> None:
    build = make_build("current", None)
    plan = Plan(builds=(build,), backends=("inline",), workers=(1,), repeats=1, ceiling=False,
                time_budget_s=0.0)
    cells, order, stopped = execute(plan)
    assert order == [] and stopped is not None
    (s,) = aggregate(cells, [build.to_dict()])
    assert s["status"] == "NOT RUN" and "ticks_per_s" not in s
