"""Publish the server's ``/stats`` JSON to an MQTT broker once per second (``serve --mqtt``).

Monitoring is best effort: a broker that is down or goes away never affects the game.  The
publisher reconnects with a fixed back-off and counts what it published and what failed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

#: Topic the stats go to.
TOPIC = "paratick/stats"
#: Seconds between publications (the issue asks for once per second).
INTERVAL = 1.0
#: Seconds to wait before reconnecting to a broker that failed.
RETRY = 2.0


def parse_target(target: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (or ``"HOST"``, port 1883) -> (host, port).

    Raises:
        ValueError: the port is not an integer in 1..65535.
    """
    host, sep, port = target.rpartition(":")
    if not sep:
        return target, 1883
    try:
        p = int(port)
    except ValueError:
        raise ValueError(f"MQTT target must look like HOST:PORT, got {target!r}") from None
    if not 0 < p < 65536:
        raise ValueError(f"MQTT port must be in 1..65535, got {p}")
    return host or "127.0.0.1", p


async def publish_stats(stats: Callable[[], dict[str, Any]], target: str, *,
                        topic: str = TOPIC, interval: float = INTERVAL,
                        counters: dict[str, int] | None = None) -> None:
    """Publish ``stats()`` as JSON to ``topic`` every ``interval`` seconds until cancelled.

    Args:
        stats: returns the JSON-ready stats (``GameServer.stats``).
        target: ``HOST:PORT`` of the broker.
        topic: MQTT topic.
        interval: seconds between messages.
        counters: optional dict updated with ``published`` and ``failures``.
    """
    import aiomqtt

    host, port = parse_target(target)
    count = counters if counters is not None else {}
    count.setdefault("published", 0)
    count.setdefault("failures", 0)
    while True:
        try:
            async with aiomqtt.Client(hostname=host, port=port) as client:
                while True:
                    await client.publish(topic, json.dumps(stats()).encode(), qos=0)
                    count["published"] += 1
                    await asyncio.sleep(interval)
        except aiomqtt.MqttError as exc:
            count["failures"] += 1
            print(f"paratick: MQTT {host}:{port}: {exc}; retrying in {RETRY:g} s",
                  file=sys.stderr)
            await asyncio.sleep(RETRY)
