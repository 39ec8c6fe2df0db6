"""bench.load's harness against stand-in serve/bots programs on loopback: start-up wait, /stats
polling, the bots' JSON, shutdown by SIGINT, and a search over real subprocess probes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from bench.builds import make_build, repo_root
from bench.load import Criteria, bounded_search, run_probe

FAKE = [sys.executable, str(Path(__file__).with_name("fake_server.py"))]


def probe(entities: int, duration: float = 0.0) -> dict[str, Any]:
    return run_probe(make_build("current", None), "threads", 2, "python", entities, 5, duration,
                     repo_root(), Criteria(), program=FAKE, settle=0.0)


def test_a_probe_runs_server_and_bots_and_judges_them() -> None:
    rec = probe(1000, duration=2.5)  # stand-in p99 MSPT = 10 ms
    assert rec["ok"] and rec["holds"], rec.get("why")
    assert rec["mspt_p99_ms"] == 10.0 and rec["connected"] == 5
    assert rec["ack_ms"]["p99"] == 40.0
    # the rate over the bots' run comes from /stats tick counts, not the since-start counter
    assert 25.0 < rec["window"]["tick_rate"] < 35.0 and rec["window"]["deadline_misses"] == 0
    # ... over the window in which every bot played, with every tick of it listed
    assert rec["window"]["loaded"] and rec["window"]["ticks_unseen"] == 0
    assert rec["tick_ms"] and set(rec["tick_ms"]) == {10.0}
    assert rec["server_cpu_s_per_s"] is not None and rec["run_cpu_s_per_s"] is not None
    # the loop the server said it ran (the stand-in runs uvloop for auto), not the one asked for
    assert rec["loop"] == "uvloop" and rec["ticker_on"] == "loop"
    # the collector's figures of the last reading (cumulative: the most collections seen)
    assert rec["gc"]["pause_ms_max"] == 1.5 and rec["gc"]["collections"] >= 60
    failing = probe(5000)  # p99 MSPT = 50 ms > 33.3 ms budget
    assert failing["ok"] and not failing["holds"]
    assert failing["why"] == ["p99 MSPT 50.0 ms > 33.3 ms"]


def test_the_server_admits_every_bot_past_its_default_cap_on_connections() -> None:
    """serve refuses connections past --max-connections (4096 by default): a probe of 5,000
    bots (a many-core machine's) raises it, else only 4,096 could connect."""
    rec = run_probe(make_build("current", None), "threads", 2, "python", 1000, 5000, 0.0,
                    repo_root(), Criteria(), program=FAKE, settle=0.0)
    assert rec["ok"] and rec["connected"] == 5000, rec.get("why")


def test_a_server_that_never_starts_is_a_failed_record_not_a_crash() -> None:
    rec = run_probe(make_build("current", None), "threads", 2, "python", 1000, 5, 1.0,
                    repo_root(), Criteria(), program=[sys.executable, "-c", "raise SystemExit(3)"],
                    settle=0.0)
    assert not rec["ok"] and not rec["holds"] and "server did not start" in rec["why"][0]
    assert rec["loop"] == "auto"  # what was asked: the server never said


def test_search_over_real_probes() -> None:
    best, trail = bounded_search(lambda n: bool(probe(n)["holds"]), start=1000, limit=8000,
                                 max_probes=3)
    # passes up to 3330 entities (p99 <= 33.3 ms): 1000 ok, 2000 ok, 4000 fails
    assert best == 2000 and trail == [(1000, True), (2000, True), (4000, False)]


def test_bots_may_run_under_another_build_than_the_server() -> None:
    """A real server and real bots: the bots under a second Build (the load generator may use
    whichever interpreter is fastest for it), named in the record with the client they used."""
    from bench.builds import Build

    server = make_build("current", None)
    bots = Build("bots", sys.executable, {}, expects_gil=server.expects_gil)
    rec = run_probe(server, "threads", 1, "python", 200, 4, 1.5, repo_root(), Criteria(),
                    settle=0.0, bots_build=bots, bots_nice=4)
    assert rec["ok"], rec.get("why")
    assert rec["bots_build"] == "bots" and rec["build"] == server.name
    assert rec["connected"] == 4 and rec["bots_client"] in ("picows", "websockets")
    # --bots-nice: the bots ran that many nice levels below this process (and the server)
    assert rec["bots_nice"] == 4
    assert rec["bots_report"]["nice"] == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 4)


def test_a_probe_with_gateway_processes_spreads_the_bots() -> None:
    """A real server whose clients are served by two gateway processes: the record names the
    gateway backend and the bots say which gateway welcomed them."""
    rec = run_probe(make_build("current", None), "threads", 1, "python", 200, 12, 1.5,
                    repo_root(), Criteria(), settle=0.0, gateways=2,
                    gateway_backend="processes")
    assert rec["ok"], rec.get("why")
    assert rec["gateways"] == 2 and rec["gateway_backend"] == "processes"
    assert rec["connected"] == 12
    per = rec["bots_report"]["gateways"]
    assert sum(per.values()) == 12 and set(per) <= {"0", "1"}, per
