"""The transport's pure parts: burst logging, the descriptor budget, its limits.

The guarded connection itself is exercised over real sockets in test_hostile.py.
"""

from __future__ import annotations

import asyncio
import errno
import io
import resource
from typing import Any

import pytest

from server.app import GameServer, ServerSettings
from server.transport import BurstLog, TransportLimits, descriptor_budget
from sim.config import WorldConfig


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_log_prints_once_per_burst_then_the_count() -> None:
    clock, out = Clock(), io.StringIO()
    log = BurstLog(window=10.0, clock=clock, stream=out)
    assert log.note("accept", "accept failed")
    for _ in range(500):
        clock.now += 0.01
        assert not log.note("accept", "accept failed")
    assert log.note("other", "something else")  # kinds are independent
    clock.now = 20.0
    assert log.note("accept", "accept failed")
    lines = out.getvalue().splitlines()
    assert lines == ["paratick: accept failed", "paratick: something else",
                     "paratick: accept failed (500 more like it in the last 20 s)"]


def test_exception_handler_folds_os_errors_and_passes_the_rest_on() -> None:
    clock, out = Clock(), io.StringIO()
    handler = BurstLog(clock=clock, stream=out).exception_handler()
    passed: list[dict[str, Any]] = []

    class Loop:
        def default_exception_handler(self, context: dict[str, Any]) -> None:
            passed.append(context)

    emfile = OSError(errno.EMFILE, "Too many open files")
    for _ in range(1000):
        handler(Loop(), {"message": "socket.accept() out of system resource",  # type: ignore
                         "exception": emfile})
    handler(Loop(), {"message": "Task exception was never retrieved",  # type: ignore
                     "exception": ZeroDivisionError()})
    assert len(out.getvalue().splitlines()) == 1
    assert "Too many open files" in out.getvalue()
    assert len(passed) == 1 and isinstance(passed[0]["exception"], ZeroDivisionError)


def test_descriptor_budget_subtracts_what_is_in_use_and_the_reserve() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    b = descriptor_budget(raise_soft=False, reserve=64, in_use=lambda: 100)
    assert b.soft == soft and b.raised_from is None and b.in_use == 100
    assert b.available == max(0, soft - 164)


def test_descriptor_budget_raises_the_soft_limit_where_allowed() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(64, hard // 2), hard))
    lowered, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        b = descriptor_budget(in_use=lambda: 10)
        assert b.raised_from == lowered and b.soft > lowered
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == b.soft
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_caps_follow_the_descriptor_limit(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A server under a soft limit it may not raise lowers its caps and says so in one line."""
    import server.app
    from server.runtime import Runtime

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    world = WorldConfig(width=256, height=256, regions_x=1, regions_y=1, view_radius=64.0)
    monkeypatch.setattr(server.app, "descriptor_budget",
                        lambda: descriptor_budget(raise_soft=False, in_use=lambda: 800))

    async def scenario() -> dict[str, Any]:
        settings = ServerSettings(port=0, players=2, npcs=4, backend="inline",
                                  max_per_address=1100)
        async with GameServer(world, settings, runtime_factory=Runtime) as srv:
            return srv.stats()["connections"]  # type: ignore[no-any-return]

    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        conns = asyncio.run(scenario())
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert conns["max"] == 1024 - 800 - 64
    assert conns["max_per_address"] == conns["max"]
    err = capsys.readouterr().err
    assert err.count("descriptor limit") == 1 and "ulimit -n" in err


@pytest.mark.parametrize("bad", [{"write_stall_timeout": 0.0}, {"max_open": 0},
                                 {"max_per_address": 0}, {"send_buffer": 100}])
def test_transport_limits_are_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TransportLimits(**bad)
