"""``paratick bench kernels`` (bench.sim_kernels): interleaved rounds, same-round ratios, the
JSON it writes."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest

from bench import env, sim_kernels
from server.cli import main


def test_quick_run_writes_interleaved_results(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "kernels", "--quick", "--entities", "300", "--kernels", "naive,python",
               "--out", str(tmp_path)])
    assert rc == 0
    (path,) = tmp_path.glob("sim-kernels-*.json")
    assert path.name == f"sim-kernels-{env.build_label()}.json"
    data = json.loads(path.read_text())
    assert data["workload"]["entities"] == 300 and data["quick"] is True
    # The environment record every results file carries; its driver is the measured interpreter.
    assert set(data["environment"]) == {"machine", "git", "driver", "interpreters"}
    assert data["environment"]["driver"]["executable"] == sys.executable
    naive, python = data["kernels"]["naive"], data["kernels"]["python"]
    rounds = max(sim_kernels.QUICK["naive"][1], sim_kernels.QUICK["python"][1])
    assert len(naive["samples"]) == len(python["samples"]) == rounds
    # The ratio is the median of per-round ratios, not the ratio of medians.
    ratios = [p / n for p, n in zip(python["samples"], naive["samples"], strict=True)]
    assert python["vs_naive"] == pytest.approx(statistics.median(ratios))
    q1, q3 = python["vs_naive_iqr"]
    assert min(ratios) <= q1 <= python["vs_naive"] <= q3 <= max(ratios)
    assert naive["vs_naive"] == pytest.approx(1.0)
    assert naive["min"] <= naive["median"] <= naive["max"]
    captured = capsys.readouterr()
    assert "python" in captured.out and "vs naive" in captured.out
    assert f"round {rounds}/{rounds}" in captured.err  # progress on stderr


def test_rounds_option_sets_the_number_of_interleaved_rounds(tmp_path: Path) -> None:
    assert main(["bench", "kernels", "--quick", "--rounds", "3", "--entities", "200",
                 "--kernels", "naive,python", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("sim-kernels-*.json")
    kernels = json.loads(path.read_text())["kernels"]
    assert [len(k["samples"]) for k in kernels.values()] == [3, 3]
    assert all(k["repeats"] == 3 for k in kernels.values())


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--rounds", "0"], "--rounds must be at least 1"),
    (["--kernels", "naive,fortran"], "unknown kernel(s) fortran"),
])
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             argv: list[str], fragment: str) -> None:
    assert main(["bench", "kernels", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("paratick bench kernels: ") and fragment in err
    assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())
