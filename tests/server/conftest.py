"""Live servers on loopback for the server tests (ephemeral ports, small worlds)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from server.app import ServerSettings
from server.harness import ServerThread
from sim.config import WorldConfig


def runtime_factory() -> Any:
    from server.runtime import Runtime
    return Runtime


SMALL_WORLD = WorldConfig(width=512, height=512, regions_x=2, regions_y=2, view_radius=100.0,
                          max_speed=120.0)


@pytest.fixture
def live_server() -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def start(world: WorldConfig = SMALL_WORLD, runtime: Any = None,
              **settings: Any) -> ServerThread:
        """A server ticking ``world`` with ``settings``; ``runtime``: a Runtime subclass to
        tick with instead (one that injects a fault or records the steps)."""
        base: dict[str, Any] = {"port": 0, "players": 8, "npcs": 60, "backend": "inline",
                                "workers": 1}
        st = ServerThread(world, ServerSettings(**{**base, **settings}),
                          runtime_factory=runtime or runtime_factory())
        st.start()
        started.append(st)
        return st

    yield start
    for st in started:
        st.stop()
