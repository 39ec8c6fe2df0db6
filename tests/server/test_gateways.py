"""Several gateways on one port: connections spread, sessions move, faults stay local.

Every test runs with gateways on threads and in processes (``gateway_backend``)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from server.harness import ServerThread
from server.protocol import (
    CODECS,
    SERVER_MESSAGES,
    SUBPROTOCOL_MSGPACK,
    Bye,
    Hello,
    Input,
    Snapshot,
    Welcome,
)
from server.settings import default_gateways
from tests.server import rawws

Start = Callable[..., ServerThread]
MP = CODECS[SUBPROTOCOL_MSGPACK]


def join(st: ServerThread, token: str | None = None) -> tuple[ClientConnection, Welcome]:
    ws = connect(st.url, subprotocols=[SUBPROTOCOL_MSGPACK]).__enter__()  # type: ignore[list-item]
    ws.send(MP.encode(Hello(name="g", token=token)))
    while True:
        msg = MP.decode(ws.recv(10), accept=SERVER_MESSAGES, max_size=1 << 24)
        if isinstance(msg, Welcome):
            return ws, msg
        assert not isinstance(msg, Snapshot), msg


def gateway_of(st: ServerThread, entity: int) -> int:
    """Index of the gateway whose connection holds the session of ``entity`` (waits a little:
    the claim happens on the gateway's thread)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with st.server._lock:
            for c in st.server.by_sid.values():
                if c.session is not None and c.session.entity == entity:
                    return c.gateway.index
        time.sleep(0.01)
    raise AssertionError(f"no connection holds entity {entity}")


@pytest.fixture(params=["threads", "processes"])
def gw_start(request: pytest.FixtureRequest, live_server: Start) -> Start:
    """``live_server`` with gateways on threads, then in processes."""

    def start(**kw: Any) -> ServerThread:
        return live_server(gateway_backend=request.param, **kw)

    return start


def test_default_gateways_follow_the_build_and_cores() -> None:
    assert default_gateways(free_threaded=True, cores=2) == 2
    assert default_gateways(free_threaded=True, cores=64) == 8
    assert default_gateways(free_threaded=True, cores=1) == 0
    assert default_gateways(free_threaded=False, cores=16) == 0


def test_connections_spread_over_the_gateways(gw_start: Start) -> None:
    st = gw_start(gateways=2, players=24)
    clients = [join(st) for _ in range(20)]
    per = [g["connections"] for g in st.stats()["gateways"]]
    assert len(per) == 2 and sum(per) == 20 and min(per) > 0, per
    assert {gateway_of(st, w.entity) for _, w in clients} == {0, 1}
    assert all(w.gateway == gateway_of(st, w.entity) for _, w in clients)  # welcome says which
    for ws, _ in clients:
        ws.close()


def test_a_reconnect_resumes_on_another_gateway(gw_start: Start) -> None:
    st = gw_start(gateways=2, players=8, grace=30.0)
    ws, first = join(st)
    home = gateway_of(st, first.entity)
    token, entity = first.token, first.entity
    for _ in range(200):  # the kernel picks the listener by the connection's ports: retry
        ws.close()
        ws, w = join(st, token)
        assert w.resumed and w.entity == entity and w.token == token
        if gateway_of(st, entity) != home:
            break
    else:
        raise AssertionError("200 reconnects all landed on the same gateway")
    ws.send(MP.encode(Input(seq=7, thrust=1.0)))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the input is applied: acks come back on the new one
        msg = MP.decode(ws.recv(10), accept=SERVER_MESSAGES, max_size=1 << 24)
        if isinstance(msg, Snapshot) and msg.ack == 7:
            break
    else:
        raise AssertionError("the input sent after the move was never acknowledged")
    ws.close()


class Player:
    """Inputs with rising sequence numbers; records every ack; reconnects with its token."""

    def __init__(self, st: ServerThread) -> None:
        self.st = st
        self.ws, w = join(st)
        self.token, self.entity = w.token, w.entity
        self.seq = 0
        self.acks: list[int] = []
        self.closes: list[int | None] = []
        self.snapshots: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        next_input = 0.0
        while not self.stop.is_set():
            try:
                now = time.monotonic()
                if now >= next_input:
                    self.seq += 1
                    self.ws.send(MP.encode(Input(seq=self.seq, thrust=0.5)))
                    next_input = now + 0.05
                try:
                    msg = MP.decode(self.ws.recv(0.02), accept=SERVER_MESSAGES,
                                    max_size=1 << 24)
                except TimeoutError:
                    continue
                if isinstance(msg, Snapshot):
                    self.acks.append(msg.ack)
                    self.snapshots.append(time.monotonic())
            except ConnectionClosed as exc:
                self.closes.append(exc.rcvd.code if exc.rcvd else None)
                with contextlib.suppress(Exception):
                    self.ws, w = join(self.st, self.token)
                    assert w.resumed and w.entity == self.entity

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        with contextlib.suppress(Exception):
            self.ws.send(MP.encode(Bye("done")))
            self.ws.close()


def spread_players(st: ServerThread, least: int = 10, most: int = 16,
                   ) -> tuple[list[Player], list[int]]:
    """``least`` players, and more (up to ``most``) until both gateways hold some: the kernel
    picks a listener by a hash of each connection's addresses, so 10 connections all land on
    one of two gateways about once in 500 runs; 16 about once in 30,000."""
    players: list[Player] = []
    homes: list[int] = []
    while len(players) < least or (set(homes) != {0, 1} and len(players) < most):
        players.append(Player(st))
        homes.append(gateway_of(st, players[-1].entity))
    return players, homes


def test_a_gateway_fault_closes_only_its_connections_and_they_come_back(
        gw_start: Start) -> None:
    st = gw_start(gateways=2, players=16, grace=30.0)
    players, homes = spread_players(st)
    try:
        time.sleep(0.5)
        assert set(homes) == {0, 1}, homes
        st.call(st.server.fail_gateway(1))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
                gateway_of(st, p.entity) != 0 for p in players):
            time.sleep(0.05)
        for p, home in zip(players, homes, strict=True):
            assert gateway_of(st, p.entity) == 0  # everyone is on the gateway that is left
            assert p.closes == ([1011] if home == 1 else []), (home, p.closes)
        last = [p.seq for p in players]
        time.sleep(1.0)
        for p, seq in zip(players, last, strict=True):
            # Acks never go back (no input applied twice or out of order), and inputs sent
            # after the move are applied (none lost for good).
            assert all(a <= b for a, b in zip(p.acks, p.acks[1:], strict=False)), p.acks
            assert p.acks[-1] >= seq
        stats = st.stats()["gateways"]
        assert stats[1]["failed"] == "injected fault" and stats[1]["connections"] == 0
    finally:
        for p in players:
            p.close()


def test_a_client_that_never_reads_on_one_gateway_does_not_delay_the_others(
        gw_start: Start) -> None:
    st = gw_start(gateways=2, players=16, write_stall_timeout=1.0, send_buffer=16384)
    players = [Player(st) for _ in range(6)]
    sinks: list[Any] = []
    try:
        for _ in range(4):  # on either gateway
            s = rawws.connect(st.port, rcvbuf=4096)
            s.sendall(rawws.frame(rawws.OP_BINARY, bytes(MP.encode(Hello(name="sink")))))
            sinks.append(s)
        t0 = time.monotonic()
        time.sleep(3.0)
        t1 = time.monotonic()
        for p in players:
            n = sum(1 for t in p.snapshots if t0 <= t < t1)
            assert n / (t1 - t0) >= 15.0, f"{n / (t1 - t0):.1f} snapshots/s"
    finally:
        for s in sinks:
            s.close()
        for p in players:
            p.close()


@pytest.mark.parametrize("gateways", [1, 3])
def test_the_game_is_the_same_through_any_number_of_gateways(gw_start: Start,
                                                             gateways: int) -> None:
    st = gw_start(gateways=gateways)
    ws, _ = join(st)
    ws.send(MP.encode(Input(seq=1, thrust=1.0)))
    for _ in range(100):
        msg = MP.decode(ws.recv(10), accept=SERVER_MESSAGES, max_size=1 << 24)
        if isinstance(msg, Snapshot) and msg.ack == 1:
            break
    else:
        raise AssertionError("no snapshot acknowledged the input")
    ws.close()
    assert len(st.stats()["gateways"]) == gateways


def test_a_killed_gateway_process_loses_only_its_clients(live_server: Start) -> None:
    """A gateway process that dies (SIGKILL, no 1011 from it): the hub frees its clients'
    places and keeps their sessions for the grace period; they resume on the one left, and the
    clients of the other gateway never notice."""
    import os
    import signal

    from server.gateway_process import RemoteGateway

    st = live_server(gateways=2, gateway_backend="processes", players=16, grace=30.0)
    players, homes = spread_players(st)
    try:
        time.sleep(0.5)
        assert set(homes) == {0, 1}, homes
        victim = st.server.gateways[1]
        assert isinstance(victim, RemoteGateway)
        os.kill(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
                gateway_of(st, p.entity) != 0 for p in players):
            time.sleep(0.05)
        for p, home in zip(players, homes, strict=True):
            assert gateway_of(st, p.entity) == 0
            assert (p.closes != []) == (home == 1), (home, p.closes)  # only its clients
        last = [p.seq for p in players]
        time.sleep(1.0)
        for p, seq in zip(players, last, strict=True):
            assert all(a <= b for a, b in zip(p.acks, p.acks[1:], strict=False)), p.acks
            assert p.acks[-1] >= seq
        stats = st.stats()
        assert stats["gateways"][1]["failed"] == "gateway process ended"
        assert stats["gateways"][1]["connections"] == 0
        assert stats["connections"]["open"] == len(players)  # the dead one's places were freed
    finally:
        for p in players:
            p.close()


def test_http_answers_through_every_gateway(gw_start: Start) -> None:
    """/stats and /metrics (the hub's figures: a gateway process asks the hub for them) and
    the live page (a gateway answers it alone), whichever gateway the kernel picks."""
    import json
    import urllib.request

    st = gw_start(gateways=2)
    ws, _ = join(st)
    try:
        for _ in range(6):  # new connections: both listeners get some
            with urllib.request.urlopen(f"http://127.0.0.1:{st.port}/stats", timeout=10) as r:
                doc = json.loads(r.read())
            assert r.headers["Content-Type"] == "application/json"
            assert [g["index"] for g in doc["gateways"]] == [0, 1]
            assert doc["connections"]["playing"] == 1
            with urllib.request.urlopen(f"http://127.0.0.1:{st.port}/metrics", timeout=10) as r:
                assert b"paratick_" in r.read()
            with urllib.request.urlopen(f"http://127.0.0.1:{st.port}/", timeout=10) as r:
                assert r.headers["Content-Type"].startswith("text/html")
    finally:
        ws.close()


def test_connection_caps_hold_across_gateways(gw_start: Start) -> None:
    """The caps are the hub's: with two gateways, the third connection from one address is
    refused whichever gateway took it."""
    from server.protocol import Error

    st = gw_start(gateways=2, players=8, max_per_address=2)
    first = [join(st)[0] for _ in range(2)]
    try:
        ws = connect(st.url, subprotocols=[SUBPROTOCOL_MSGPACK]).__enter__()  # type: ignore[list-item]
        msg = MP.decode(ws.recv(10), accept=SERVER_MESSAGES, max_size=1 << 24)
        assert isinstance(msg, Error) and msg.code == "too_many_connections", msg
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    finally:
        for w in first:
            w.close()


def test_spectators_watch_through_every_gateway(gw_start: Start) -> None:
    """A spectator on any gateway gets watching, then views of the world; its place is the
    hub's and is freed when it leaves."""
    from server.protocol import Spectate, View, Watching

    st = gw_start(gateways=2, max_spectators=16)
    watchers = []
    try:
        while (len(watchers) < 16 and len({g for _, g in watchers}) < 2) or len(watchers) < 4:
            ws = connect(st.url, subprotocols=[SUBPROTOCOL_MSGPACK]).__enter__()  # type: ignore[list-item]
            ws.send(MP.encode(Spectate()))
            first = MP.decode(ws.recv(10), accept=SERVER_MESSAGES, max_size=1 << 24)
            assert isinstance(first, Watching), first
            watchers.append((ws, first.gateway))
        assert {g for _, g in watchers} == {0, 1}  # both gateways serve spectators
        for ws, _ in watchers:
            for _ in range(20):
                msg = MP.decode(ws.recv(10), accept=SERVER_MESSAGES, max_size=1 << 24)
                if isinstance(msg, View):
                    assert msg.entities
                    break
            else:
                raise AssertionError("no view came")
        assert st.stats()["connections"]["spectators"] == len(watchers)
    finally:
        for ws, _ in watchers:
            ws.close()
    deadline = time.monotonic() + 5
    while st.stats()["connections"]["spectators"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert st.stats()["connections"]["spectators"] == 0


def test_stats_read_from_another_thread_while_the_gateway_records() -> None:
    """/stats reads every gateway from the hub's thread while each gateway's own thread appends
    its loop lag and counts frames: on a free-threaded build, sorting the live lag window there
    raised "deque mutated during iteration" (a 500 from /stats).  Connections come and go
    meanwhile too."""
    from types import SimpleNamespace

    from server.gateway import Gateway

    gw = Gateway(SimpleNamespace(), 0)  # type: ignore[arg-type]
    stop = threading.Event()

    class Conn:  # what stats reads of a connection
        phase = None

    class Stub:  # hashable, as a client is
        conn = Conn()

    errors: list[BaseException] = []

    def record() -> None:  # what the gateway's timer and handlers do, flat out
        k = 0
        try:
            while not stop.is_set():
                gw.record_lag(k * 1e-6)
                gw.counters["messages_in"] += 1
                gw.clients.add(Stub())  # type: ignore[arg-type]
                if k % 2:
                    gw.clients.pop()
                k += 1
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    writer = threading.Thread(target=record)
    writer.start()
    try:
        deadline = time.monotonic() + 1.0
        reads = 0
        while reads < 20_000 and time.monotonic() < deadline:
            s = gw.stats()
            assert s["loop_lag_p99_ms"] >= 0.0 and s["frames_in"] >= 0
            reads += 1
    finally:
        stop.set()
        writer.join()
    assert not errors, errors
    assert reads > 0 and gw.counters["messages_in"] > 0 and gw.clients
