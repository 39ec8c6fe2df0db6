"""``serve --mqtt``: the stats reach a real MQTT broker.

The broker is the one listening on 127.0.0.1:1883 (``.ci/run`` starts mosquitto there), else a
private mosquitto this module starts on a free loopback port for the session (so ``make test``
needs no service started by hand where mosquitto is installed).  With neither, the test fails
and says how to get one: a missing broker is never a silent skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.app import GameServer, ServerSettings
from server.mqtt import parse_target, publish_stats
from server.runtime import Runtime
from sim.config import WorldConfig

DEFAULT = ("127.0.0.1", 1883)


def port_open(addr: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(addr, timeout=1.0):
            return True
    except OSError:
        return False


def mosquitto_bin() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


@pytest.fixture(scope="module")
def broker() -> Iterator[tuple[str, int]]:
    if port_open(DEFAULT):
        yield DEFAULT
        return
    binary = mosquitto_bin()
    if binary is None:
        where = "CI should have installed it (.ci/run)" if os.environ.get("CI") == "true" else \
            "install mosquitto (apt-get install -y mosquitto) or start a broker on 127.0.0.1:1883"
        pytest.fail(f"no MQTT broker on 127.0.0.1:1883 and no mosquitto to start; {where}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 10.0
            while not port_open(("127.0.0.1", port)):
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    pytest.fail(f"mosquitto did not start on 127.0.0.1:{port}: {err[-300:]}")
                time.sleep(0.05)
            yield ("127.0.0.1", port)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_parse_target() -> None:
    assert parse_target("10.0.0.1:1884") == ("10.0.0.1", 1884)
    assert parse_target("broker") == ("broker", 1883)
    with pytest.raises(ValueError):
        parse_target("host:http")


def test_stats_are_published_once_per_interval(broker: tuple[str, int]) -> None:
    host, port = broker
    import aiomqtt

    topic = f"paratick/test/{uuid.uuid4().hex}"
    world = WorldConfig(width=512, height=512, view_radius=64.0)

    async def scenario() -> list[dict[str, object]]:
        got: list[dict[str, object]] = []
        settings = ServerSettings(port=0, players=2, npcs=10, backend="inline")
        async with GameServer(world, settings, runtime_factory=Runtime) as srv, \
                aiomqtt.Client(hostname=host, port=port) as sub:
            await sub.subscribe(topic)
            counters: dict[str, int] = {}
            pub = asyncio.create_task(publish_stats(srv.stats, f"{host}:{port}",
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
