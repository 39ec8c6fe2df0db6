"""Bots against a live server on loopback: short runs, real websockets."""

from __future__ import annotations

import asyncio
import math
import random

import pytest

from clients.bots import (
    MAX_PENDING,
    BotResult,
    FleetSpec,
    choose,
    format_report,
    report,
    run_fleet,
    snapshots_since,
    steady_bot_cpu,
    steady_start,
)
from clients.inputs import InputClock
from clients.wsbot import run_bot
from server.app import ServerSettings
from server.harness import ServerThread
from server.runtime import Runtime
from tests.clients.conftest import WORLD


def test_chase_steers_toward_the_nearest_entity() -> None:
    me = (1, 0, 100.0, 100.0, 0.0, 0.0, 0.0, 0)          # heading east
    north = (2, 1, 100.0, 120.0, 0.0, 0.0, 0.0, 0)       # +y: a left turn (positive angle)
    far = (3, 1, 400.0, 100.0, 0.0, 0.0, 0.0, 0)
    seen = {1: me, 2: north, 3: far}
    thrust, turn, _ = choose("chase", me, seen, random.Random(1), {})
    assert turn > 0 and 0 < thrust <= 1
    thrust, turn, _ = choose("chase", me, {1: me, 3: far}, random.Random(1), {})
    assert thrust == 1.0 and math.isclose(turn, 0.0, abs_tol=1e-9)
    assert choose("idle", me, seen, random.Random(1), {}) == (0.0, 0.0, 0)


def test_wander_is_seeded() -> None:
    me = (1, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
    runs = [[choose("wander", me, {}, rng, mem) for _ in range(50)]
            for rng, mem in ((random.Random(7), {}), (random.Random(7), {}))]
    assert runs[0] == runs[1]


def test_short_fleet_run_reports_latency_and_server_mspt(server: ServerThread) -> None:
    spec = FleetSpec(url=server.url, bots=6, ramp=60.0, duration=1.5, seed=3)
    lines: list[str] = []
    rep = asyncio.run(run_fleet(spec, processes=1, progress=lines.append))
    assert rep["connected"] == 6 and rep["failed"] == 0 and rep["dropped"] == 0
    lat = rep["latency_ms"]
    assert lat["samples"] > 0 and 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert rep["snapshots_per_bot_s"] > 0 and rep["bytes_in_per_s"] > rep["bytes_out_per_s"] > 0
    assert rep["server"]["samples"] >= 1 and rep["server"]["mspt_p50_median"] > 0
    assert lines and "MSPT" in lines[-1]
    # the acks of the first 0.75 s after the last bot started are the ramp's, apart
    ramp = rep["ramp_latency_ms"]
    assert ramp["samples"] > 0 and 0 < ramp["p50"] <= ramp["p99"] <= ramp["max"]
    assert "input->ack latency" in format_report(rep)
    assert "input->ack p50/p99 while connecting" in format_report(rep)
    stats = server.stats()
    assert stats["connections"]["dropped"] == 0 and stats["sessions"]["created"] == 6


def test_fleet_spread_over_two_processes(server: ServerThread) -> None:
    spec = FleetSpec(url=server.url, bots=4, ramp=40.0, duration=1.0, seed=5)
    rep = asyncio.run(run_fleet(spec, processes=2))
    assert rep["processes"] == 2
    assert rep["connected"] == 4 and rep["failed"] == 0 and rep["dropped"] == 0
    assert rep["latency_ms"]["samples"] > 0
    assert rep["steady_bot_cpu_us_per_received"] > 0  # both processes' steady windows came back
    # 4 bots on a 30 Hz server at 20 snapshots a second each over the steady second
    assert 15 < rep["steady_snapshots_per_bot_s"] < 25


def test_unreachable_server_counts_failures() -> None:
    spec = FleetSpec(url="ws://127.0.0.1:9", bots=2, ramp=100.0, duration=0.1)
    rep = asyncio.run(run_fleet(spec, processes=1))
    assert rep["connected"] == 0 and rep["failed"] == 2 and rep["first_failures"]


def test_a_lean_fleet_measures_with_a_validating_sample(server: ServerThread) -> None:
    spec = FleetSpec(url=server.url, bots=10, behaviour="mix", ramp=100.0, duration=1.5,
                     validate=0.2)
    rep = asyncio.run(run_fleet(spec, processes=1))
    assert rep["connected"] == 10 and rep["failed"] == 0 and rep["dropped"] == 0
    assert rep["validating"] == 2  # bots 0 and 5
    assert rep["latency_ms"]["samples"] > 0 and rep["snapshots_per_bot_s"] > 5
    assert rep["bot_cpu_s"] > 0 and rep["bot_cpu_us_per_message"] > 0
    # each bot receives about as many snapshots as it sends inputs: about twice per message
    assert 1.5 < rep["bot_cpu_us_per_received"] / rep["bot_cpu_us_per_message"] < 2.5
    # and over the steady part alone (from 0.75 s after the last bot started)
    assert 0 < rep["steady_bot_cpu_us_per_message"] < rep["steady_bot_cpu_us_per_received"]
    assert "all bots playing" in format_report(rep)
    assert "bot CPU per message in or out / received" in format_report(rep)


def test_bots_report_the_gateways_that_served_them() -> None:
    st = ServerThread(WORLD, ServerSettings(port=0, players=16, npcs=20, backend="inline",
                                            gateways=2), runtime_factory=Runtime)
    st.start()
    try:
        spec = FleetSpec(url=st.url, bots=12, ramp=200.0, duration=0.5)
        rep = asyncio.run(run_fleet(spec, processes=1))
    finally:
        st.stop()
    assert rep["connected"] == 12
    assert sum(rep["gateways"].values()) == 12 and set(rep["gateways"]) <= {"0", "1"}
    assert "gateway 0" in format_report(rep) or "gateway 1" in format_report(rep)


def test_a_bot_counts_acks_before_steady_as_the_ramps(server: ServerThread) -> None:
    async def play() -> BotResult:
        loop = asyncio.get_running_loop()
        now = loop.time()
        res = BotResult(0)
        await run_bot(server.url, res, behaviour="wander", seed=1,
                      inputs=InputClock(1 / 20, clock=loop.time, call_at=loop.call_at),
                      until=now + 1.2, clock=loop.time, max_pending=MAX_PENDING, choose=choose,
                      steady=now + 0.6)
        return res

    res = asyncio.run(play())
    assert res.connected and res.latencies_ms and res.ramp_latencies_ms


def test_the_report_judges_steady_acks_and_shows_the_ramps_apart() -> None:
    spec = FleetSpec(url="ws://127.0.0.1:9", bots=2)
    a = BotResult(0, connected=True, seconds=1.0, latencies_ms=[10.0, 20.0],
                  ramp_latencies_ms=[500.0])
    b = BotResult(1, connected=True, seconds=1.0, latencies_ms=[30.0], ramp_latencies_ms=[])
    rep = report(spec, [a, b], [], 1.0, 1)
    assert rep["latency_ms"]["samples"] == 3 and rep["latency_ms"]["max"] == 30.0
    assert rep["ramp_latency_ms"]["samples"] == 1 and rep["ramp_latency_ms"]["p99"] == 500.0


def test_the_steady_snapshot_count_follows_the_bots_playing_when_it_began() -> None:
    early = BotResult(0, connected=True, snapshots=40)
    late = BotResult(1)  # still connecting when the steady part begins
    gone = BotResult(2, connected=True, snapshots=40, dropped="lost")
    start = steady_start([early, late, gone])
    assert start == {0: 40}
    early.snapshots, late.connected, late.snapshots = 60, True, 15
    # 20 snapshots over the steady part, from the one bot whose bot-seconds it counts
    assert snapshots_since([early, late, gone], start) == 20


def test_steady_bot_cpu_sums_every_process_and_needs_each_window() -> None:
    two = [{"cpu_s": 0.3, "received": 6000.0, "sent": 6000.0, "snapshots": 5900.0,
            "bot_s": 300.0},
           {"cpu_s": 0.1, "received": 2000.0, "sent": 2000.0, "snapshots": 2000.0,
            "bot_s": 100.0}]
    got = steady_bot_cpu(two)
    assert got["steady_bot_cpu_us_per_received"] == pytest.approx(50.0)
    assert got["steady_bot_cpu_us_per_message"] == pytest.approx(25.0)
    assert got["steady_snapshots_per_bot_s"] == pytest.approx(7900 / 400)
    # a process whose fleet ended before its steady part: no figure rather than a partial one
    assert steady_bot_cpu([two[0], {}])["steady_bot_cpu_us_per_received"] is None
    assert steady_bot_cpu([])["steady_bot_cpu_us_per_message"] is None
