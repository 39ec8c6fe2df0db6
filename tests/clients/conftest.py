"""A live server for the bot tests: a small world on loopback, inline backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from server.app import ServerSettings
from server.harness import ServerThread
from server.runtime import Runtime
from sim.config import WorldConfig

WORLD = WorldConfig(width=512, height=512, regions_x=2, regions_y=2, view_radius=100.0)


@pytest.fixture
def server() -> Iterator[ServerThread]:
    st = ServerThread(WORLD, ServerSettings(port=0, players=16, npcs=60, backend="inline"),
                      runtime_factory=Runtime)
    st.start()
    yield st
    st.stop()
