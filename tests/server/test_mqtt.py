"""``serve --mqtt``: the stats reach a real broker on 127.0.0.1:1883.

CI starts mosquitto on 127.0.0.1:1883 (.ci/run).  Under ``CI=true`` a missing broker fails this
test; elsewhere it is reported as a failure too, with the command that starts one.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid

import pytest

from server.app import GameServer, ServerSettings
from server.mqtt import parse_target, publish_stats
from server.runtime import Runtime
from sim.config import WorldConfig

BROKER = ("127.0.0.1", 1883)


def broker_up() -> bool:
    try:
        with socket.create_connection(BROKER, timeout=1.0):
            return True
    except OSError:
        return False


def test_parse_target() -> None:
    assert parse_target("10.0.0.1:1884") == ("10.0.0.1", 1884)
    assert parse_target("broker") == ("broker", 1883)
    with pytest.raises(ValueError):
        parse_target("host:http")


def test_stats_are_published_once_per_interval() -> None:
    if not broker_up():
        where = "CI should have started it (.ci/run)" if os.environ.get("CI") == "true" else \
            "start one with: mosquitto -p 1883 (apt-get install -y mosquitto)"
        pytest.fail(f"no MQTT broker on {BROKER[0]}:{BROKER[1]}; {where}")
    import aiomqtt

    topic = f"paratick/test/{uuid.uuid4().hex}"
    world = WorldConfig(width=512, height=512, view_radius=64.0)

    async def scenario() -> list[dict[str, object]]:
        got: list[dict[str, object]] = []
        settings = ServerSettings(port=0, players=2, npcs=10, backend="inline")
        async with GameServer(world, settings, runtime_factory=Runtime) as srv, \
                aiomqtt.Client(hostname=BROKER[0], port=BROKER[1]) as sub:
            await sub.subscribe(topic)
            counters: dict[str, int] = {}
            pub = asyncio.create_task(publish_stats(srv.stats, f"{BROKER[0]}:{BROKER[1]}",
                                                    topic=topic, interval=0.05,
                                                    counters=counters))
            try:
                async with asyncio.timeout(10.0):
                    async for msg in sub.messages:
                        got.append(json.loads(bytes(msg.payload)))  # type: ignore[arg-type]
                        if len(got) == 2:
                            break
            finally:
                pub.cancel()
            assert counters["failures"] == 0 and counters["published"] >= 2
        return got

    got = asyncio.run(scenario())
    assert len(got) == 2
    assert all("ticker" in g and "connections" in g for g in got)
    assert got[1]["tick"] >= got[0]["tick"]  # type: ignore[operator]
