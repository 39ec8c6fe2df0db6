"""Lean bots on picows against a live server: the load generator's fast path.

picows (and uvloop) publish wheels for the GIL build only; the GIL venv installs them (the
``fastbots`` extra), the free-threaded one cannot.  So on the GIL build the picows bots play for
real, and on the free-threaded build the fallback and the refusal are what is tested: either way
something is asserted, nothing is skipped.
"""

from __future__ import annotations

import asyncio
import sysconfig

import pytest

from clients import fastws
from clients.bots import FleetSpec, format_report, lean_client, run_fleet, run_loop
from clients.inputs import InputClock
from server.harness import ServerThread

#: Where picows must load: the GIL build (its venv installs the fastbots extra).
GIL_BUILD = not sysconfig.get_config_var("Py_GIL_DISABLED")
ONLY_GIL = pytest.mark.skipif(not GIL_BUILD, reason="picows publishes no free-threaded wheels; "
                              "this build's fallback to websockets is tested above")


def _inputs(loop: asyncio.AbstractEventLoop) -> InputClock:
    return InputClock(1 / 20, clock=loop.time, call_at=loop.call_at)


def test_picows_loads_where_its_wheels_exist() -> None:
    assert fastws.available() is GIL_BUILD
    assert lean_client("websockets") == "websockets"
    assert lean_client("auto") == ("picows" if GIL_BUILD else "websockets")
    if not GIL_BUILD:
        with pytest.raises(ValueError, match="picows does not load"):
            lean_client("picows")
    with pytest.raises(ValueError, match="unknown client"):
        lean_client("curl")


def test_a_fleet_of_lean_picows_bots_measures_like_websockets_bots(server: ServerThread,
                                                                     ) -> None:
    spec = FleetSpec(url=server.url, bots=10, ramp=100.0, duration=1.5, validate=0.2)
    rep = run_loop(run_fleet(spec, processes=1), lean_client(spec.client))
    assert rep["client"] == ("picows" if GIL_BUILD else "websockets")
    assert rep["connected"] == 10 and rep["failed"] == 0 and rep["dropped"] == 0
    assert rep["validating"] == 2 and rep["errors"] == {}
    assert rep["latency_ms"]["samples"] > 0 and rep["snapshots_per_bot_s"] > 5
    assert rep["inputs"] > 10 * 10  # ~20/s each for 1.5 s after the ramp
    assert rep["bytes_in_per_s"] > rep["bytes_out_per_s"] > 0
    assert rep["client"] in format_report(rep)
    stats = server.stats()
    assert stats["messages"]["inputs"] >= rep["inputs"] * 0.9


@ONLY_GIL
def test_a_lean_bot_records_welcome_errors_and_the_servers_bye(server: ServerThread) -> None:
    from clients.bots import MAX_PENDING, BotResult, choose

    async def play() -> BotResult:
        res = BotResult(0, validating=False)
        loop = asyncio.get_running_loop()
        await fastws.run_lean_bot(server.url, res, seed=1, inputs=_inputs(loop),
                                  until=loop.time() + 1.0, clock=loop.time,
                                  max_pending=MAX_PENDING, choose=choose)
        return res

    res = run_loop(play(), "picows")
    assert res.connected and res.failed is None and res.dropped is None
    assert res.gateway is None or res.gateway >= 0
    assert res.snapshots > 10 and res.messages_in > res.snapshots  # + welcome
    assert res.latencies_ms and all(0 < x < 1000 for x in res.latencies_ms)
    assert not res.ramp_latencies_ms  # no steady time given: every ack is the steady load's


@ONLY_GIL
def test_a_lean_bot_counts_acks_before_steady_as_the_ramps(server: ServerThread) -> None:
    from clients.bots import MAX_PENDING, BotResult, choose

    async def play() -> BotResult:
        res = BotResult(0, validating=False)
        loop = asyncio.get_running_loop()
        now = loop.time()
        await fastws.run_lean_bot(server.url, res, seed=1, inputs=_inputs(loop), until=now + 1.2,
                                  clock=loop.time, max_pending=MAX_PENDING, choose=choose,
                                  steady=now + 0.6)
        return res

    res = run_loop(play(), "picows")
    assert res.connected and res.latencies_ms and res.ramp_latencies_ms


@ONLY_GIL
def test_a_lean_bot_that_cannot_connect_says_why() -> None:
    from clients.bots import MAX_PENDING, BotResult, choose

    async def play() -> BotResult:
        res = BotResult(0, validating=False)
        loop = asyncio.get_running_loop()
        await fastws.run_lean_bot("ws://127.0.0.1:9", res, seed=1, inputs=_inputs(loop),
                                  until=loop.time() + 1.0, clock=loop.time,
                                  max_pending=MAX_PENDING, choose=choose)
        return res

    res = run_loop(play(), "picows")
    assert not res.connected and res.failed is not None and res.failed.startswith("connect:")

