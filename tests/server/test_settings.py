"""Server settings and the HTTP answers any gateway gives without the hub."""

from __future__ import annotations

from http import HTTPStatus
from types import SimpleNamespace
from typing import Any

import pytest

from server.app import GameServer
from server.settings import (
    NODES_REGIONS,
    STATIC,
    ServerSettings,
    auto_regions,
    default_gateways,
    default_kernel,
    respond_static,
    stats_allowed,
)
from sim.config import WorldConfig


class FakeConnection:
    def __init__(self, peer: str) -> None:
        self.remote_address = (peer, 50000)

    def respond(self, status: HTTPStatus, body: str) -> Any:
        return SimpleNamespace(status=status, body=body,
                               headers={"Content-Type": "text/plain"})


def get(path: str, upgrade: bool = False) -> Any:
    return SimpleNamespace(path=path, headers={"Upgrade": "websocket"} if upgrade else {})


def test_gateway_backends_are_checked() -> None:
    assert ServerSettings(gateway_backend="processes").gateway_backend == "processes"
    with pytest.raises(ValueError, match="gateway_backend"):
        ServerSettings(gateway_backend="fibers")


@pytest.mark.parametrize(("backend", "tick_on", "on_loop"), [
    ("inline", "auto", True),         # the step runs in the caller: on the loop
    ("processes", "auto", False),     # the step waits for workers: not on the loop
    ("threads", "auto", False),
    ("inline", "thread", False),
    ("inline", "loop", True),
])
def test_where_ticks_run(backend: str, tick_on: str, on_loop: bool) -> None:
    assert ServerSettings(backend=backend, tick_on=tick_on).ticks_on_loop() is on_loop


def test_ticking_on_the_loop_needs_the_inline_backend() -> None:
    with pytest.raises(ValueError, match="needs the inline backend"):
        ServerSettings(backend="processes", tick_on="loop")
    with pytest.raises(ValueError, match="tick_on must be one of auto, thread, loop"):
        ServerSettings(tick_on="fiber")


def test_no_more_snapshots_than_ticks() -> None:
    ServerSettings(snapshot_rate=30).check_world(30.0)  # one a tick: allowed
    with pytest.raises(ValueError, match="exceeds the tick rate 30 Hz"):
        ServerSettings(snapshot_rate=31).check_world(30.0)
    with pytest.raises(ValueError, match="at most one snapshot per tick"):
        GameServer(WorldConfig(tick_rate=10.0, view_radius=64.0), ServerSettings())


def test_statistics_answer_loopback_unless_public() -> None:
    outside, inside = FakeConnection("10.0.0.9"), FakeConnection("127.0.0.1")
    exposed = ServerSettings(host="0.0.0.0")
    assert not stats_allowed(exposed, outside) and stats_allowed(exposed, inside)
    assert stats_allowed(ServerSettings(host="0.0.0.0", public_stats=True), outside)
    assert stats_allowed(ServerSettings(), outside)  # bound to loopback: nobody else reaches it


def test_the_live_page_and_404_and_the_handshake() -> None:
    conn = FakeConnection("127.0.0.1")
    page = respond_static(conn, get("/"), "/")
    assert page.status == HTTPStatus.OK and page.body == STATIC["/"][0]
    assert page.headers["Content-Type"].startswith("text/html")
    assert "Content-Security-Policy" in page.headers
    assert respond_static(conn, get("/../etc/passwd"), "/../etc/passwd").status == 404
    assert respond_static(conn, get("/", upgrade=True), "/") is None  # a websocket goes on


def test_origins_and_tls() -> None:
    assert ServerSettings().websocket_origins() is None  # loopback, no origins: no check
    assert ServerSettings(host="0.0.0.0").websocket_origins() == [None]
    assert ServerSettings(origins=("https://g.example",)).websocket_origins() == [
        None, "https://g.example"]
    assert ServerSettings().ssl_context() is None
    assert default_gateways(free_threaded=False, cores=8) == 0


@pytest.mark.parametrize(("backend", "kernel"), [
    ("inline", "numpy"), ("threads", "numpy"), ("processes", "numpy"), ("nodes", "numpy"),
    ("interpreters", "python"),  # numpy does not load in a subinterpreter
])
def test_default_kernel_is_numpy_where_it_loads(backend: str, kernel: str) -> None:
    from server.runtime import BACKENDS

    assert backend in (*BACKENDS, "nodes")
    assert default_kernel(backend) == kernel


def test_auto_regions_give_each_worker_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from server import host

    assert auto_regions("threads", 2, 2048, 2048, 128) == (2, 1)
    assert auto_regions("processes", 16, 2048, 2048, 128) == (4, 4)
    assert auto_regions("interpreters", 17, 2048, 2048, 128) == (5, 5)  # 17x1: too narrow
    assert auto_regions("inline", 8, 2048, 2048, 128) == (1, 1)  # one worker ticks it all
    # machines running nodes of one world must agree: never from this machine's cores
    assert auto_regions("nodes", 6, 2048, 2048, 128) == NODES_REGIONS
    monkeypatch.setattr(host, "usable_cores", lambda: 3)
    assert auto_regions("threads", None, 2048, 2048, 128) == (3, 1)


def test_what_a_gateway_answers_alone_and_what_it_asks_the_hub() -> None:
    from server.settings import http_answer, respond_document

    exposed = ServerSettings(host="0.0.0.0")
    assert http_answer(exposed, FakeConnection("127.0.0.1"), get("/stats?x=1")) == (
        "/stats", None)
    path, resp = http_answer(exposed, FakeConnection("10.0.0.9"), get("/metrics"))
    assert path is None and resp.status == HTTPStatus.FORBIDDEN
    path, resp = http_answer(exposed, FakeConnection("10.0.0.9"), get("/"))
    assert path is None and resp.status == HTTPStatus.OK
    doc = respond_document(FakeConnection("127.0.0.1"), 200, "{}\n", "application/json")
    assert doc.body == "{}\n" and doc.headers["Content-Type"] == "application/json"
