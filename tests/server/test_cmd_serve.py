"""``paratick serve`` as a real process: SIGTERM closes clients with 1001 and prints final stats."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from server.gcfreeze import MIN_GROWTH
from server.host import free_threaded
from server.protocol import CODECS, SERVER_MESSAGES, SUBPROTOCOL_MSGPACK, Bye, Hello, Welcome

MP = CODECS[SUBPROTOCOL_MSGPACK]


def _serve(*args: str) -> subprocess.Popen[str]:
    """``paratick serve`` on a free port of a small world, as a process of its own."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--port", "0",
                             "--world", "512", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _port(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """The port a started server says it listens on, and the line that says so."""
    assert proc.stderr is not None
    line = proc.stderr.readline()
    m = re.search(r"ws://127\.0\.0\.1:(\d+)", line)
    assert m, line
    return m.group(1), line


@pytest.mark.parametrize(("gateways", "says"), [
    (["--gateways", "0"], "clients on the main event loop"),
    (["--gateways", "2", "--gateway-backend", "processes"], "2 gateway processes")])
def test_sigterm_closes_clients_1001_and_prints_final_stats(gateways: list[str],
                                                            says: str) -> None:
    proc = _serve("--regions", "2x2", "--npcs", "50", "--players", "4", "--view-radius", "64",
                  "--backend", "threads", "--workers", "2", *gateways)
    try:
        port, line = _port(proc)
        assert says in line
        with connect(f"ws://127.0.0.1:{port}", subprotocols=[MP.name]) as ws:  # type: ignore[list-item]
            ws.send(MP.encode(Hello(name="sig")))
            assert isinstance(MP.decode(ws.recv(10), accept=SERVER_MESSAGES), Welcome)
            proc.send_signal(signal.SIGTERM)
            seen = []
            try:
                while True:
                    seen.append(MP.decode(ws.recv(10), accept=SERVER_MESSAGES))
            except ConnectionClosed as exc:
                assert exc.rcvd is not None and exc.rcvd.code == 1001
            assert any(isinstance(m, Bye) for m in seen)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    final = json.loads(out)
    assert final["connections"]["open"] == 0 and final["ticker"]["ticks"] > 0
    assert len(final["gateways"]) == max(1, int(gateways[1]))
    assert final["ticker"]["fault"] is None and final["messages"]["snapshot_errors"] == 0
    assert "shutting down" in err
    # start-up objects were frozen out of the collector's reach; collections were counted
    assert final["gc"]["frozen_at_start"] > 1000 and final["gc"]["threshold"]
    assert final["gc"]["freezes"] == 0 and final["gc"]["refreshes"] == 0  # one client: no crowd


def test_a_crowd_of_clients_is_frozen_on_the_gil_build() -> None:
    """MIN_GROWTH clients arrive: the GIL build freezes what they keep (server.gcfreeze); the
    free-threaded build, where a freeze walks the heap, does not."""
    proc = _serve("--regions", "1", "--npcs", "20", "--backend", "inline", "--gateways", "0")
    try:
        port, _ = _port(proc)
        with contextlib.ExitStack() as stack:
            for k in range(MIN_GROWTH):
                ws = stack.enter_context(connect(f"ws://127.0.0.1:{port}", max_queue=None,
                                                 subprotocols=[MP.name]))  # type: ignore[list-item]
                ws.send(MP.encode(Hello(name=f"c{k}")))
                assert isinstance(MP.decode(ws.recv(10), accept=SERVER_MESSAGES), Welcome)
            time.sleep(2.5)  # two of the server's once-a-second checks
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as r:
                gc_stats = json.load(r)["gc"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    assert gc_stats["refreshes"] == 0
    if free_threaded():
        assert gc_stats["freezes"] == 0
    else:
        assert gc_stats["freezes"] >= 1 and gc_stats["freeze_ms_max"] < 1000


def test_bad_options_exit_2() -> None:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    res = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--regions", "64x64"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 2 and "paratick serve:" in res.stderr


def test_port_in_use_exits_2_without_a_traceback() -> None:
    import socket

    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--port", str(port),
                              "--world", "512", "--npcs", "10", "--players", "2",
                              "--view-radius", "64", "--backend", "threads", "--workers", "2"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 2 and "cannot listen" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(("args", "says"), [
    (["--port", "99999"], "port must be in 0..65535"),
    (["--hello-timeout", "0"], "hello_timeout must be > 0"),
    (["--certfile", "/nonexistent.pem"], "TLS needs both"),
    (["--certfile", "/nonexistent.pem", "--keyfile", "/nonexistent.key"],
     "cannot read /nonexistent.pem"),
    (["--send-buffer", "10"], "send_buffer must be >= 4096"),
    (["--snapshot-rate", "40", "--tick-rate", "20"], "at most one snapshot per tick"),
])
def test_bad_values_are_one_line_and_exit_2(args: list[str], says: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    res = subprocess.run([sys.executable, "-m", "server.cli", "serve", *args],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and says in res.stderr, res.stderr


def test_an_exposed_server_says_what_is_open_and_guards_stats(
        capsys: pytest.CaptureFixture[str]) -> None:
    """No socket is opened beyond loopback: the checks run on a server that is not started."""
    from http import HTTPStatus
    from types import SimpleNamespace

    from server.app import GameServer, ServerSettings
    from sim.config import WorldConfig

    world = WorldConfig(width=256, height=256, regions_x=1, regions_y=1, view_radius=64.0)
    srv = GameServer(world, ServerSettings(host="0.0.0.0", origins=("https://game.example",)))
    srv._warn_if_exposed()
    err = capsys.readouterr().err
    assert "reachable from other machines" in err and "TLS OFF" in err
    assert "https://game.example" in err and "loopback clients only" in err
    assert srv.origins() == [None, "https://game.example"]

    def request(peer: str) -> Any:
        conn = SimpleNamespace(remote_address=(peer, 5000),
                               respond=lambda status, body: SimpleNamespace(
                                   status_code=status, body=body, headers={"Content-Type": ""}))
        return srv.http(conn, SimpleNamespace(path="/stats"))

    assert request("192.0.2.7").status_code == HTTPStatus.FORBIDDEN
    assert request("127.0.0.1").status_code == HTTPStatus.OK
    assert srv.http(SimpleNamespace(), SimpleNamespace(path="/")) is None  # the game itself
    loop = GameServer(world, ServerSettings())
    assert loop.origins() is None  # loopback: no origin check unless asked


def test_no_pin_reaches_the_settings_and_pinning_is_the_default() -> None:
    from server.cli import build_parser
    from server.cmd_serve import build

    parser = build_parser()
    for argv, pin in ((["serve"], True), (["serve", "--no-pin"], False)):
        _, settings = build(parser.parse_args(argv))
        assert settings.pin is pin


@pytest.mark.parametrize(("argv", "grid"), [
    (["--backend", "threads", "--workers", "3", "--regions", "auto"], (3, 1)),
    (["--backend", "processes", "--workers", "4", "--regions", "auto"], (2, 2)),
    (["--backend", "inline", "--regions", "auto"], (1, 1)),
    (["--backend", "threads", "--workers", "4", "--regions", "4x4"], (4, 4)),
    (["--backend", "threads", "--workers", "4"], (2, 2)),  # the default
])
def test_the_auto_region_grid_gives_each_worker_a_region(argv: list[str],
                                                            grid: tuple[int, int]) -> None:
    import argparse

    from server import cmd_serve

    p = argparse.ArgumentParser()
    cmd_serve.add_arguments(p)
    world, _ = cmd_serve.build(p.parse_args(argv))
    assert (world.regions_x, world.regions_y) == grid
