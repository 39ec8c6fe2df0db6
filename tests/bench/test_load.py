"""bench.load: the pass/fail rule and the bounded search (pure parts; no server needed)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.load import Criteria, bounded_search, holds, outcome, window
from bench.summary import load_table as table


def report(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"connected": 100, "dropped": 0, "snapshots_per_bot_s": 19.9,
                            "latency_ms": {"p50": 20.0, "p99": 60.0},
                            "server": {"mspt_p50_median": 10.0, "mspt_p99_max": 25.0,
                                       "tick_rate_min": 29.9}}
    base.update(kw)
    return base


def test_a_healthy_run_holds() -> None:
    assert holds(report(), 100) == (True, [])


@pytest.mark.parametrize(("change", "reason"), [
    ({"connected": 97}, "97 of 100 bots connected"),
    ({"dropped": 2}, "2 bots dropped"),
    ({"snapshots_per_bot_s": 18.2}, "18.2 snapshots/s per bot < 19"),
    ({"steady_snapshots_per_bot_s": 18.5, "snapshots_per_bot_s": 19.5},
     "18.5 snapshots/s per bot < 19"),
    ({"latency_ms": {"p99": 140.0}}, "p99 input->ack 140.0 ms > 100 ms"),
    ({"latency_ms": {}}, "no input->ack latency sample"),
    ({"server": {"mspt_p99_max": 40.0, "tick_rate_min": 30.0}}, "p99 MSPT 40.0 ms > 33.3 ms"),
    ({"server": {"mspt_p99_max": 20.0, "tick_rate_min": 21.0}}, "tick rate fell to 21.0 Hz"),
    ({"server": {}}, "no server MSPT sample"),
])
def test_each_criterion_can_fail_alone(change: dict[str, Any], reason: str) -> None:
    ok, why = holds(report(**change), 100)
    assert not ok and why == [reason]


def test_the_snapshot_rate_is_judged_over_the_steady_part_where_there_is_one() -> None:
    # a slow ramp (the whole run's rate) does not fail a probe whose steady part kept the rate
    assert holds(report(snapshots_per_bot_s=18.0, steady_snapshots_per_bot_s=19.9), 100)[0]


def test_criteria_are_configurable() -> None:
    assert holds(report(), 100, Criteria(mspt_p99_ms=20.0))[0] is False


@given(st.integers(min_value=1, max_value=5000), st.integers(min_value=1, max_value=12))
def test_search_finds_the_threshold_within_its_probe_budget(threshold: int,
                                                            probes: int) -> None:
    calls: list[int] = []

    def passes(n: int) -> bool:
        calls.append(n)
        return n <= threshold

    best, trail = bounded_search(passes, start=100, limit=4000, max_probes=probes)
    assert len(calls) <= probes and [n for n, _ in trail] == calls
    if best is None:
        assert not any(ok for _, ok in trail) and threshold < min(n for n, _ in trail)
    else:
        assert passes(best) and 1 <= best <= min(4000, threshold)
        # every probe at or below best passed: the answer is a measured pass, never a guess
        assert any(n == best and ok for n, ok in trail)


def test_search_converges_with_enough_probes() -> None:
    best, trail = bounded_search(lambda n: n <= 1234, start=100, limit=100_000, max_probes=30)
    assert best is not None and 1234 * 0.95 <= best <= 1234
    assert [n for n, _ in trail][:5] == [100, 200, 400, 800, 1600]


def test_search_stops_at_the_limit_and_when_start_fails() -> None:
    assert bounded_search(lambda n: True, start=100, limit=300, max_probes=10) == (
        300, [(100, True), (200, True), (300, True)])
    assert bounded_search(lambda n: False, start=100, limit=300, max_probes=10) == (
        None, [(100, False), (50, False), (25, False), (12, False), (6, False), (3, False),
               (1, False)])
    assert bounded_search(lambda n: False, start=100, limit=300, max_probes=2) == (
        None, [(100, False), (50, False)])


def test_search_goes_below_a_start_that_fails() -> None:
    best, trail = bounded_search(lambda n: n <= 30, start=100, limit=1000, max_probes=12)
    assert [n for n, _ in trail][:3] == [100, 50, 25]
    assert best is not None and 30 * 0.95 <= best <= 30
    with pytest.raises(ValueError):
        bounded_search(lambda n: True, start=0, limit=10, max_probes=3)


def test_table_lists_runs_and_bests() -> None:
    section = {"runs": [{"build": "ft", "backend": "threads", "phase": "fixed load",
                         "entities": 5000, "bots": 200, "mspt_p50_ms": 12.0,
                         "mspt_p99_ms": 30.0, "ack_ms": {"p99": 55.0}, "tick_rate_min": 29.8,
                         "gc": {"pause_ms_max": 44.24}, "bot_cpu_us_per_message": 31.2,
                         "bot_cpu_us_per_received": 62.4, "steady_bot_cpu_us_per_message": 24.6,
                         "steady_bot_cpu_us_per_received": 49.1, "holds": True, "why": []},
                        {"build": "gil", "backend": "threads", "phase": "fixed load",
                         "entities": 5000, "bots": 200, "holds": False,
                         "why": ["CellError: server did not start"]}],
               "best": [{"build": "ft", "backend": "threads", "entities": 8000,
                         "bots_fixed": 100, "bots": 700, "entities_fixed": 5000}]}
    text = table(section)
    assert ("| ft | threads | 0 | fixed load | 5000 | 200 | 12.0 / 30.0 | 55.0 | 29.8 | - "
            "| 31 / 62; 25 / 49 | 44.2 | yes |") in text
    assert "| 5000 | 200 | - / - | - | - | - | - / -; - / - | - | no |" in text  # no figures
    assert "server did not start" in text and "| 8000 (with 100 bots) | 700" in text
    section["runs"][0]["loop"] = "uvloop"
    assert "| ft | threads | 0, uvloop | fixed load |" in table(section)


def test_window_rate_overrides_the_since_start_rate() -> None:
    assert holds(report(), 100, tick_rate=20.0) == (False, ["tick rate fell to 20.0 Hz"])
    assert holds(report(server={"mspt_p99_max": 20.0, "tick_rate_min": 10.0}), 100,
                 tick_rate=29.5)[0]


def test_window_measures_ticks_between_first_and_last_sample() -> None:
    samples: list[dict[str, Any]] = [{"t": 10.0, "tick": 300, "ticker": {"deadline_misses": 4}},
               {"t": 11.0, "tick": None, "ticker": {}},
               {"t": 14.0, "tick": 420, "ticker": {"deadline_misses": 6}}]
    assert window(samples) == {"seconds": 4.0, "loaded": False, "tick_rate": 30.0,
                               "deadline_misses": 2.0, "gc": None}
    assert window(samples[:1]) == {}


def test_window_loaded_ticks_mspt_cpu() -> None:
    """The window runs while every bot plays; its ticks are stitched from the numbered
    ``recent_ms`` lists (one tick missed between two samples is counted, not invented)."""
    def sample(t: float, playing: int, ticks: int, cpu: float) -> dict[str, Any]:
        # tick k took k % 40 ms: the stitched list says which ticks it holds
        recent = [float(k % 40) for k in range(max(1, ticks - 9), ticks + 1)]
        return {"t": t, "tick": ticks, "playing": playing, "cpu": cpu,
                "ticker": {"ticks": ticks, "recent_ms": recent, "deadline_misses": 0}}

    samples = [sample(0.0, 3, 5, 0.0),      # ramp: not every bot yet
               sample(1.0, 10, 15, 0.5),    # loaded from here ...
               sample(2.0, 10, 25, 1.5),
               sample(3.0, 10, 36, 2.1),    # 11 new ticks, 10 listed: one unseen
               sample(4.0, 10, 45, 2.9),    # ... to here
               sample(5.0, 4, 55, 3.0)]     # leaving
    for k, s in enumerate(samples):  # the collector's figures since the server started
        s["gc"] = {"pause_ms_max": 10.0 * k}
    win = window(samples, 10)
    assert win["gc"] == {"pause_ms_max": 40.0}  # to the loaded window's end, not the leaving
    assert win["loaded"] and win["seconds"] == 3.0 and win["tick_rate"] == 10.0
    assert win["server_cpu_s_per_s"] == (2.9 - 0.5) / 3.0
    assert win["tick_ms"] == [float(k % 40) for k in [*range(16, 26), *range(27, 46)]]
    assert win["ticks_unseen"] == 1
    assert win["mspt_max_ms"] == 39.0
    assert win["mspt_p50_ms"] == 24.0  # the 15th of 29: 0..5, then 16..25, 27..39
    # the loaded p99 decides, not the bots' samples of the rolling window
    assert holds(report(), 100, mspt_p99=win["mspt_p99_ms"]) == (
        False, [f"p99 MSPT {win['mspt_p99_ms']:.1f} ms > 33.3 ms"])
    assert holds(report(server={"mspt_p99_max": 50.0, "tick_rate_min": 30.0}), 100,
                 mspt_p99=20.0)[0]
    # bots never all playing: the whole run, and it says so
    assert not window(samples, 11)["loaded"] and window(samples, 11)["seconds"] == 5.0


def test_progress_line_gives_verdict_and_loaded_figures() -> None:
    rec = {"holds": False, "why": ["p99 MSPT 37.0 ms > 33.3 ms"], "mspt_p50_ms": 22.31,
           "mspt_p99_ms": 37.04, "ack_ms": {"p99": 107.7}, "server_cpu_ms_per_bot_s": 1.538}
    assert outcome(rec) == ("fails: p99 MSPT 37.0 ms > 33.3 ms (MSPT p50/p99 22.3/37.0 ms, "
                            "ack p99 108 ms, server 1.54 ms CPU per bot-second)")
    # a probe that never ran (server did not start) has only its reason
    assert outcome({"holds": False, "why": ["CellError: server did not start"]}) == \
        "fails: CellError: server did not start"
    assert outcome({"holds": True, "why": [], "mspt_p50_ms": 1.0, "mspt_p99_ms": 2.0}) == \
        "holds (MSPT p50/p99 1.0/2.0 ms)"


def test_a_bad_region_grid_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from server.cli import main

    assert main(["bench", "load", "--regions", "4y4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("paratick bench load: regions must") and len(err.splitlines()) == 1


@pytest.mark.parametrize("value", ["", "uvloop,trio"])
def test_a_bad_loop_list_is_one_line(capsys: pytest.CaptureFixture[str], value: str) -> None:
    from server.cli import main

    assert main(["bench", "load", "--loop", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("paratick bench load: --loop takes a comma list of auto, asyncio and "
                          "uvloop") and len(err.splitlines()) == 1


def unstarted(build: str, backend: str) -> dict[str, Any]:
    """A probe record as bench.load.run_probe gives it when the server did not start."""
    return {"build": build, "backend": backend, "workers": None, "kernel": "python",
            "entities": 100, "bots": 10, "duration_s": 1.0, "gateways": 0,
            "gateway_backend": None, "bots_build": build, "bots_nice": 0, "regions": "1x1",
            "loop": "asyncio", "ok": False, "holds": False,
            "why": ["CellError: server did not start"]}


def stopped_run(monkeypatch: pytest.MonkeyPatch, out: Any, stop: Any, *argv: str,
                ) -> tuple[list[str], dict[str, Any]]:
    """``bench load`` with stand-in probes (servers that did not start) that call ``stop(k)``
    as the k-th begins; returns the backends asked for and the saved load section."""
    import json

    import bench.load
    from server.cli import main

    asked: list[str] = []

    def probe(build: Any, backend: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        asked.append(backend)
        stop(len(asked))
        return unstarted(build.name, backend)

    monkeypatch.setattr(bench.load, "run_probe", probe)
    assert main(["bench", "load", "--builds", "current", "--bots-build", "same", "--no-search",
                 "--quiet", *argv, "--out", str(out)]) == 0
    return asked, json.loads((out / "results.json").read_text())["load"]


def test_ctrl_c_keeps_the_probes_that_ran(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """SIGINT (a terminal's Ctrl-C, or `timeout -s INT` on a lent machine) ends the run in the
    probe under way; the probes before it are saved and the report says the run stopped."""
    def stop(k: int) -> None:
        if k == 2:
            raise KeyboardInterrupt

    asked, section = stopped_run(monkeypatch, tmp_path / "load", stop, "--backend",
                                 "threads,processes,interpreters", "--note", "test box")
    assert asked == ["threads", "processes"]  # the third configuration never started
    assert [r["backend"] for r in section["runs"]] == ["threads"]
    assert section["stopped_early"] == ("interrupted (Ctrl-C) in configuration 2 of 3; "
                                        "1 probe kept")
    assert section["note"] == "test box"
    md = (tmp_path / "load" / "report.md").read_text()
    assert "**Stopped early**: interrupted (Ctrl-C) in configuration 2 of 3" in md
    assert "Machine note: test box" in md
    assert "stopped early: interrupted" in capsys.readouterr().err


def test_a_time_budget_starts_no_probe_once_spent(tmp_path: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    def stop(k: int) -> None:
        time.sleep(0.5)  # the budget below is spent while the first probe runs

    asked, section = stopped_run(monkeypatch, tmp_path / "load", stop, "--backend",
                                 "threads,processes", "--time-budget", "0.3")
    assert asked == ["threads"]
    assert section["stopped_early"] == ("time budget of 0.3 s spent in configuration 2 of 2; "
                                        "1 probe kept")
    assert section["params"]["time_budget_s"] == 0.3
