"""Publish server telemetry to an MQTT broker (``paratick serve --mqtt HOST:PORT``).

Topics, under a prefix (``--mqtt-prefix``, default ``paratick``):

* ``<prefix>/status``, retained, QoS 1: ``{"status": "online", ...}`` once connected;
  ``{"status": "offline", "reason": "stopped"}`` when the publisher stops cleanly; and, registered
  with the broker as the last will, ``{"status": "offline", "reason": "connection lost"}`` which the
  broker publishes itself when the connection drops without a DISCONNECT (crash, kill, network
  loss; noticed at once on a TCP close, after 1.5 x ``KEEPALIVE`` s on a silent peer).  A
  dashboard that subscribes late still learns whether the server is up.
* ``<prefix>/stats``, QoS 0, every interval: a summary of ``/stats`` (tick, tick rate, MSPT,
  connections, messages; see :func:`summary`), a few hundred bytes instead of the 4 KB document
  with ``settings`` and ``world`` that never change.
* ``<prefix>/shards/<region>``, QoS 0, every interval: one small document per shard, from
  ``stats()["runtime"]["shards"]`` when the runtime reports them (see :func:`shard_documents`).

Monitoring is best effort: a broker that is down or goes away never affects the game.  The
publisher reconnects every ``RETRY`` seconds, says so on stderr once per outage, and counts what it
published and what failed.  The payload builders (:func:`summary`, :func:`shard_documents`,
:func:`messages`) are pure functions of the stats document; only :func:`publish_stats` does I/O.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import ssl
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiomqtt

#: The IANA ports for MQTT and MQTT over TLS, used when ``--mqtt`` names no port.
DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
#: Topic prefix; topics are ``<prefix>/status``, ``<prefix>/stats``, ``<prefix>/shards/<r>``.
DEFAULT_PREFIX = "paratick"
#: Seconds between publications: dashboards refresh about once a second.
INTERVAL = 1.0
#: Seconds to wait before reconnecting to a broker that failed.
RETRY = 2.0
#: MQTT keepalive in seconds.  The broker declares a silent client dead (and publishes the
#: "offline" will) after 1.5 x keepalive; paho's default of 60 s would leave a dead server "online"
#: for 90 s.
KEEPALIVE = 15
#: Seconds any one MQTT operation (connect, publish ack, disconnect) may take; aiomqtt's default.
TIMEOUT = 10.0
#: Seconds a clean stop may spend publishing the retained "offline" status.  A broker that does not
#: acknowledge by then is probably gone, and publishes the will if it ever notices.
OFFLINE_TIMEOUT = 2.0
#: Characters that MQTT forbids in a topic name we publish to (wildcards and NUL, MQTT 3.1.1 4.7).
_TOPIC_FORBIDDEN = frozenset("+#\0")


def default_client_id() -> str:
    """``paratick-<hostname>-<pid>``: unique per process, so two servers never kick each other
    off the broker (a broker drops the older of two connections with the same client id)."""
    return f"paratick-{socket.gethostname()}-{os.getpid()}"


def parse_target(target: str, *, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``"HOST:PORT"``, ``"[IPV6]:PORT"`` or ``"HOST"`` (``default_port``) -> (host, port).

    An empty host (``":1883"``) means 127.0.0.1.

    Raises:
        ValueError: the port is not an integer in 1..65535.
    """
    if target.startswith("["):
        host, bracket, rest = target[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"MQTT target must look like [IPV6]:PORT, got {target!r}")
        port, sep = rest[1:], bool(rest)
    else:
        host, colon, port = target.rpartition(":")
        sep = bool(colon)
        if not sep:
            host = target
    if not sep:
        return host or "127.0.0.1", default_port
    try:
        p = int(port)
    except ValueError:
        raise ValueError(f"MQTT target must look like HOST:PORT, got {target!r}") from None
    if not 0 < p < 65536:
        raise ValueError(f"MQTT port must be in 1..65535, got {p}")
    return host or "127.0.0.1", p


# ---- options ------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class MqttOptions:
    """Where and how to publish telemetry.

    Attributes:
        host: broker host name or address.
        port: broker port (1883; 8883 is the usual port with TLS).
        prefix: topic prefix, without wildcards or a trailing ``/``.
        client_id: MQTT client identifier (default ``paratick-<hostname>-<pid>``).
        username: user name, or None for an anonymous connection.
        password: password (needs ``username``); never shown in ``repr``.
        tls: connect with TLS, verifying the broker's certificate and host name.
        cafile: CA bundle to verify the broker with (needs ``tls``); None uses the system's.
        interval: seconds between publications.

    Raises:
        ValueError: on a value the broker would refuse or that cannot work (one-line message).
    """

    host: str
    port: int = DEFAULT_PORT
    prefix: str = DEFAULT_PREFIX
    client_id: str = field(default_factory=default_client_id)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    cafile: str | None = None
    interval: float = INTERVAL

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("MQTT host is empty")
        if isinstance(self.port, bool) or not isinstance(self.port, int) \
                or not 0 < self.port < 65536:
            raise ValueError(f"MQTT port must be an integer in 1..65535, got {self.port!r}")
        if not self.prefix or self.prefix.endswith("/") \
                or _TOPIC_FORBIDDEN.intersection(self.prefix):
            raise ValueError(f"MQTT topic prefix must be non-empty, without '+', '#' or a "
                             f"trailing '/', got {self.prefix!r}")
        if not self.client_id or "\0" in self.client_id:
            raise ValueError(f"MQTT client id must be non-empty, got {self.client_id!r}")
        if self.password is not None and self.username is None:
            raise ValueError("an MQTT password needs a username (MQTT 3.1.1 allows no password "
                             "alone)")
        if self.cafile is not None and not self.tls:
            raise ValueError("an MQTT CA file needs TLS (--mqtt-cafile needs --mqtt-tls)")
        if not (isinstance(self.interval, int | float) and math.isfinite(self.interval)
                and self.interval > 0):
            raise ValueError(f"MQTT interval must be a positive number of seconds, "
                             f"got {self.interval!r}")

    @classmethod
    def from_target(cls, target: str, **kwargs: Any) -> MqttOptions:
        """Options for ``"HOST:PORT"`` (the port defaults to 8883 with ``tls=True``, else 1883).

        Raises:
            ValueError: a bad target or option.
        """
        default = DEFAULT_TLS_PORT if kwargs.get("tls") else DEFAULT_PORT
        host, port = parse_target(target, default_port=default)
        return cls(host=host, port=port, **kwargs)

    @property
    def status_topic(self) -> str:
        return f"{self.prefix}/status"

    @property
    def stats_topic(self) -> str:
        return f"{self.prefix}/stats"

    def shard_topic(self, region: int) -> str:
        return f"{self.prefix}/shards/{region}"


def add_mqtt_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``telemetry (MQTT)`` argument group; :func:`mqtt_options` reads it back.

    The password is read from a file (``--mqtt-password-file``), never from the command line,
    where every local user could read it in ``ps``.
    """
    g = parser.add_argument_group("telemetry (MQTT)")
    g.add_argument("--mqtt", metavar="HOST:PORT", default=None,
                   help=f"publish telemetry to this MQTT broker (port default {DEFAULT_PORT}, "
                        f"{DEFAULT_TLS_PORT} with --mqtt-tls): <prefix>/status (retained online/"
                        "offline, also the last will), <prefix>/stats, <prefix>/shards/<region>")
    g.add_argument("--mqtt-prefix", metavar="PREFIX", default=DEFAULT_PREFIX,
                   help="topic prefix (default %(default)s)")
    g.add_argument("--mqtt-client-id", metavar="ID", default=None,
                   help="MQTT client id (default paratick-<hostname>-<pid>)")
    g.add_argument("--mqtt-username", metavar="USER", default=None, help="MQTT user name")
    g.add_argument("--mqtt-password-file", metavar="PATH", default=None,
                   help="file whose content (one trailing newline stripped) is the MQTT password; "
                        "needs --mqtt-username")
    g.add_argument("--mqtt-tls", action="store_true",
                   help="connect with TLS and verify the broker's certificate and host name")
    g.add_argument("--mqtt-cafile", metavar="PATH", default=None,
                   help="CA bundle to verify the broker with (needs --mqtt-tls; default: the "
                        "system's)")
    g.add_argument("--mqtt-interval", metavar="SECONDS", type=float, default=INTERVAL,
                   help="seconds between publications (default %(default)s)")


def mqtt_options(args: argparse.Namespace) -> MqttOptions | None:
    """The :class:`MqttOptions` the ``--mqtt*`` flags ask for; None without ``--mqtt``.

    Reads the password file and loads the CA file now, so that a mistake stops ``serve`` at start
    with exit status 2 instead of surfacing later in the publisher.  Flags that
    :func:`add_mqtt_arguments` did not add take their defaults.

    Raises:
        ValueError: a bad target or option, an unreadable or empty password file, an unreadable
            or invalid CA file, or ``--mqtt-*`` flags without ``--mqtt`` (one-line message).
    """
    target = getattr(args, "mqtt", None)
    prefix = getattr(args, "mqtt_prefix", DEFAULT_PREFIX)
    client_id = getattr(args, "mqtt_client_id", None)
    username = getattr(args, "mqtt_username", None)
    password_file = getattr(args, "mqtt_password_file", None)
    tls = bool(getattr(args, "mqtt_tls", False))
    cafile = getattr(args, "mqtt_cafile", None)
    interval = getattr(args, "mqtt_interval", INTERVAL)
    if target is None:
        extra = [flag for flag, value in (
            ("--mqtt-prefix", prefix != DEFAULT_PREFIX), ("--mqtt-client-id", client_id),
            ("--mqtt-username", username), ("--mqtt-password-file", password_file),
            ("--mqtt-tls", tls), ("--mqtt-cafile", cafile),
            ("--mqtt-interval", interval != INTERVAL)) if value]
        if extra:
            raise ValueError(f"{', '.join(extra)} given without --mqtt HOST:PORT")
        return None
    password = None
    if password_file is not None:
        password = read_password_file(password_file)
    kwargs: dict[str, Any] = {"prefix": prefix, "username": username, "password": password,
                              "tls": tls, "cafile": cafile, "interval": interval}
    if client_id is not None:
        kwargs["client_id"] = client_id
    options = MqttOptions.from_target(target, **kwargs)
    tls_context(options)  # a bad CA file fails here, not in the publisher
    return options


def read_password_file(path: str) -> str:
    """The password in ``path``, without one trailing newline (what ``echo pw > file`` adds).

    Raises:
        ValueError: the file cannot be read, is not UTF-8, or holds an empty password.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ValueError(f"cannot read --mqtt-password-file {path}: "
                         f"{exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"--mqtt-password-file {path} is not UTF-8 text") from exc
    password = text.removesuffix("\n").removesuffix("\r")
    if not password:
        raise ValueError(f"--mqtt-password-file {path} holds an empty password")
    return password


def tls_context(options: MqttOptions) -> ssl.SSLContext | None:
    """The client TLS context (verifies certificate and host name), or None without TLS.

    Raises:
        ValueError: the CA file cannot be read or holds no valid certificate.
    """
    if not options.tls:
        return None
    try:
        return ssl.create_default_context(cafile=options.cafile)
    except (OSError, ssl.SSLError) as exc:  # FileNotFoundError, or "no certificate" (ssl)
        raise ValueError(f"cannot load MQTT CA file {options.cafile}: "
                         f"{getattr(exc, 'strerror', None) or exc}") from exc


# ---- payloads (pure) ----------------------------------------------------------------------------
def encode(doc: Mapping[str, Any]) -> bytes:
    """Compact JSON; floats rounded to 3 decimals, NaN and infinities as null (JSON has none)."""
    return json.dumps(_tidy(doc), separators=(",", ":")).encode()


def _tidy(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 3) if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {k: _tidy(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_tidy(v) for v in x]
    return x


def status_document(options: MqttOptions, status: str, reason: str | None = None
                    ) -> dict[str, Any]:
    """``{"status": "online"|"offline", "client_id": ..., "reason": ...}`` for the status topic."""
    doc: dict[str, Any] = {"status": status, "client_id": options.client_id}
    if reason is not None:
        doc["reason"] = reason
    return doc


def summary(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a ``GameServer.stats()`` document an operator graphs every second.

    Missing sections give nulls rather than errors, so a partial document still publishes.
    """
    ticker = stats.get("ticker") or {}
    conns = stats.get("connections") or {}
    msgs = stats.get("messages") or {}
    return {
        "tick": stats.get("tick"),
        "uptime_s": stats.get("uptime_s"),
        "tick_rate": {"target": ticker.get("tick_rate_target"),
                      "actual": ticker.get("tick_rate_actual")},
        "mspt": {k: ticker.get(f"mspt_{k}") for k in ("mean", "p50", "p95", "p99", "max")},
        "budget_ms": ticker.get("budget_ms"),
        "deadline_misses": ticker.get("deadline_misses"),
        "fault": ticker.get("fault"),
        "connections": {k: conns.get(k) for k in ("open", "playing", "peak")},
        "messages": {k: msgs.get(k) for k in ("in", "out", "bytes_in", "bytes_out", "bad",
                                              "rate_limited")},
    }


def shard_documents(stats: Mapping[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(region, document) for each shard in ``stats["runtime"]["shards"]``; [] when absent.

    A shard entry without an integer ``region`` is skipped: its topic would be ambiguous.
    """
    runtime = stats.get("runtime")
    shards = runtime.get("shards") if isinstance(runtime, Mapping) else None
    if not isinstance(shards, list):
        return []
    out = []
    for shard in shards:
        region = shard.get("region") if isinstance(shard, Mapping) else None
        if isinstance(region, bool) or not isinstance(region, int):
            continue
        out.append((region, {"tick": stats.get("tick"), "region": region,
                             "worker": shard.get("worker"), "entities": shard.get("entities"),
                             "mspt": shard.get("mspt")}))
    return out


def messages(options: MqttOptions, stats: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """The (topic, payload) pairs one publication sends: the summary, then each shard."""
    out = [(options.stats_topic, encode(summary(stats)))]
    out.extend((options.shard_topic(region), encode(doc))
               for region, doc in shard_documents(stats))
    return out


# ---- I/O ----------------------------------------------------------------------------------------
def make_client(options: MqttOptions, *, tls: ssl.SSLContext | None = None) -> aiomqtt.Client:
    """An aiomqtt client for ``options`` with the "offline" last will; connect with ``async with``.

    Must be called with an event loop running (aiomqtt binds to it).

    Args:
        options: broker, identity and TLS settings.
        tls: the TLS context to use (default: :func:`tls_context` of ``options``).
    """
    import aiomqtt

    will = aiomqtt.Will(topic=options.status_topic,
                        payload=encode(status_document(options, "offline", "connection lost")),
                        qos=1, retain=True)
    return aiomqtt.Client(
        hostname=options.host, port=options.port, identifier=options.client_id,
        username=options.username, password=options.password, will=will,
        tls_context=tls if tls is not None else tls_context(options),
        keepalive=KEEPALIVE, timeout=TIMEOUT,
        # Each publication is several small writes (summary, then one per shard).  With Nagle's
        # algorithm the second waits for the ACK of the first, which the broker may delay by up to
        # 40 ms (Linux delayed ACK), so the shard documents would trail the summary.  aiomqtt sets
        # these options on the socket right after connecting.
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])


async def publish_stats(stats: Callable[[], Mapping[str, Any]], target: str | MqttOptions, *,
                        counters: dict[str, int] | None = None, retry: float = RETRY) -> None:
    """Publish telemetry from ``stats()`` every interval until cancelled (see the module doc).

    On cancellation it publishes the retained "offline" status (at most ``OFFLINE_TIMEOUT``
    seconds), disconnects cleanly and re-raises.  A caller that wants the "offline" status to
    reach the broker should await the cancelled task before closing the event loop.

    Args:
        stats: returns the JSON-ready stats (``GameServer.stats``).
        target: ``"HOST:PORT"`` of the broker (all other options default), or :class:`MqttOptions`.
        counters: optional dict updated with ``connects``, ``published`` (publications, each a
            summary plus the shard documents), ``messages`` (MQTT messages) and ``failures``.
        retry: seconds to wait before reconnecting after a failure.

    Raises:
        ValueError: ``target`` is not a valid ``HOST:PORT`` or the CA file cannot be loaded.
    """
    import aiomqtt

    options = target if isinstance(target, MqttOptions) else MqttOptions.from_target(target)
    tls = tls_context(options)
    count = counters if counters is not None else {}
    for key in ("connects", "published", "messages", "failures"):
        count.setdefault(key, 0)
    where = f"{options.host}:{options.port}"
    failing = False
    stopping: BaseException | None = None
    while True:
        try:
            async with make_client(options, tls=tls) as client:
                if failing:
                    print(f"paratick: MQTT {where}: connected again", file=sys.stderr)
                    failing = False
                count["connects"] += 1
                try:
                    await client.publish(options.status_topic,
                                         encode(status_document(options, "online")),
                                         qos=1, retain=True)
                    while True:
                        for topic, payload in messages(options, stats()):
                            await client.publish(topic, payload, qos=0)
                            count["messages"] += 1
                        count["published"] += 1
                        await asyncio.sleep(options.interval)
                except aiomqtt.MqttError:
                    raise  # the connection is gone: the broker publishes the will
                except BaseException as exc:  # cancelled, or stats() failed: say so ourselves
                    reason = "stopped" if isinstance(exc, asyncio.CancelledError) \
                        else f"publisher failed: {type(exc).__name__}"
                    stopping = exc
                    await _publish_offline(client, options, reason)
                    raise
        except aiomqtt.MqttError as exc:
            if stopping is not None:  # the disconnect failed while stopping: still stop
                raise stopping from exc
            count["failures"] += 1
            if not failing:
                print(f"paratick: MQTT {where}: {exc}; retrying every {retry:g} s",
                      file=sys.stderr)
                failing = True
            await asyncio.sleep(retry)


async def _publish_offline(client: aiomqtt.Client, options: MqttOptions, reason: str) -> None:
    """Best effort: the retained "offline" status, bounded by ``OFFLINE_TIMEOUT``."""
    import aiomqtt

    try:
        async with asyncio.timeout(OFFLINE_TIMEOUT):
            await client.publish(options.status_topic,
                                 encode(status_document(options, "offline", reason)),
                                 qos=1, retain=True)
    except (TimeoutError, aiomqtt.MqttError):
        pass
