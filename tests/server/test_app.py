"""The websocket server, live on loopback, driven by real websocket clients."""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from server.harness import ServerThread
from server.protocol import (
    CODECS,
    SERVER_MESSAGES,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Bye,
    Codec,
    Error,
    Hello,
    Input,
    Message,
    Snapshot,
    Welcome,
    apply_snapshot,
)

Start = Callable[..., ServerThread]
MP = CODECS[SUBPROTOCOL_MSGPACK]
JS = CODECS[SUBPROTOCOL_JSON]
#: Fuzz batches of 40-80 frames: 220 of them send >= 10,000 frames (FUZZ_N overrides, for
#: debugging with fewer).
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_N", "220"))
#: Generous receive timeout: only hit if the server is broken (tests assert on messages).
RECV = 10.0


def open_ws(url: str, *subprotocols: str) -> ClientConnection:
    """A sync client connection kept open across statements.

    websockets 17 warns when ``connect()`` is not used as a context manager (its ``legacy``
    flag does not exist in 16, which pyproject allows); entering the connection's own context
    is what both versions accept.
    """
    kw: dict[str, Any] = {"subprotocols": list(subprotocols)} if subprotocols else {}
    ws = connect(url, **kw)
    return ws.__enter__()


def recv(ws: ClientConnection, codec: Codec) -> Message:
    return codec.decode(ws.recv(RECV), accept=SERVER_MESSAGES, max_size=1 << 24)


def recv_until(ws: ClientConnection, codec: Codec, kind: type, limit: int = 200) -> Any:
    for _ in range(limit):
        msg = recv(ws, codec)
        if isinstance(msg, kind):
            return msg
    raise AssertionError(f"no {kind.__name__} in {limit} messages")


def join(st: ServerThread, codec: Codec = MP, name: str = "t", token: str | None = None,
         ) -> tuple[ClientConnection, Welcome]:
    ws = open_ws(st.url, codec.name)
    ws.send(codec.encode(Hello(name=name, token=token)))
    welcome = recv(ws, codec)
    assert isinstance(welcome, Welcome), welcome
    return ws, welcome


def closed_with(ws: ClientConnection, codec: Codec) -> tuple[list[Message], int | None]:
    """Read until the server closes; returns the messages and the close code."""
    msgs: list[Message] = []
    try:
        for _ in range(500):
            msgs.append(recv(ws, codec))
    except ConnectionClosed as exc:
        return msgs, exc.rcvd.code if exc.rcvd else None
    raise AssertionError("the server did not close the connection")


def errors(msgs: list[Message]) -> list[str]:
    return [m.code for m in msgs if isinstance(m, Error)]


# ---- the happy path ---------------------------------------------------------------------------
@pytest.mark.parametrize("tick_on", ["thread", "loop"])
@pytest.mark.parametrize("codec", [MP, JS], ids=["msgpack", "json"])
def test_round_trip_hello_input_snapshot_ack(live_server: Start, codec: Codec,
                                             tick_on: str) -> None:
    """On either ticker (a thread of its own, or the hub's event loop)."""
    st = live_server(tick_on=tick_on)
    assert st.stats()["ticker"]["on"] == tick_on
    ws, welcome = join(st, codec)
    assert welcome.tick_rate == 30 and welcome.view_radius == 100 and not welcome.resumed
    assert ws.subprotocol == codec.name
    history: dict[int, dict[int, Any]] = {}
    seen_ack = -1
    for seq in range(1, 40):
        ws.send(codec.encode(Input(seq=seq, thrust=1.0, turn=0.1,
                                   ack=max(history) if history else None)))
        snap = recv_until(ws, codec, Snapshot)
        assert isinstance(ws.recv.__self__, ClientConnection)
        state = apply_snapshot(history, snap)
        history[snap.tick] = state
        assert welcome.entity in state, "a player always sees itself"
        me = state[welcome.entity]
        for e in state.values():
            assert math.hypot(e[2] - me[2], e[3] - me[3]) <= 100.0 + 0.1
        assert snap.ack >= seen_ack
        seen_ack = snap.ack
        if seen_ack == seq:
            break
    assert seen_ack > 0, "inputs are applied and acknowledged in snapshots"
    ws.send(codec.encode(Bye("done")))
    ws.close()


def test_client_without_subprotocol_speaks_json(live_server: Start) -> None:
    st = live_server()
    with connect(st.url) as ws:
        assert ws.subprotocol is None or ws.subprotocol == SUBPROTOCOL_JSON
        ws.send('{"t":"hello","v":1,"name":"console"}')
        assert isinstance(recv(ws, JS), Welcome)


def test_unknown_subprotocol_is_refused_at_handshake(live_server: Start) -> None:
    st = live_server()
    with pytest.raises(InvalidStatus):
        connect(st.url, subprotocols=["paratick.xml.v9"])  # type: ignore[list-item]


def test_reconnect_with_token_gets_the_same_entity(live_server: Start) -> None:
    st = live_server()
    ws, w1 = join(st)
    ws.close()  # dropped without bye: the session waits for the grace period
    ws2, w2 = join(st, token=w1.token)
    assert w2.resumed and w2.entity == w1.entity and w2.token == w1.token
    recv_until(ws2, MP, Snapshot)
    ws3, w3 = join(st)
    assert w3.entity != w1.entity
    ws2.close()
    ws3.close()


def test_resume_takes_over_a_live_connection(live_server: Start) -> None:
    st = live_server()
    ws1, w1 = join(st)
    ws2, w2 = join(st, token=w1.token)
    assert w2.entity == w1.entity
    msgs, code = closed_with(ws1, MP)
    assert "replaced" in errors(msgs) and code == 4000  # CLOSE_REPLACED
    ws2.close()


def test_bad_token_is_an_error_and_hello_can_be_retried(live_server: Start) -> None:
    st = live_server()
    with open_ws(st.url, MP.name) as ws:
        ws.send(MP.encode(Hello(name="x", token="forged")))
        err = recv(ws, MP)
        assert isinstance(err, Error) and err.code == "bad_token"
        ws.send(MP.encode(Hello(name="x")))
        assert isinstance(recv(ws, MP), Welcome)


def test_http_stats_and_metrics(live_server: Start) -> None:
    st = live_server()
    ws, _ = join(st)
    recv_until(ws, MP, Snapshot)
    with urllib.request.urlopen(f"http://127.0.0.1:{st.port}/stats", timeout=RECV) as r:
        assert r.headers["Content-Type"] == "application/json"
        stats = json.load(r)
    assert stats["connections"]["playing"] == 1
    assert stats["messages"]["snapshots_out"] >= 1
    assert stats["ticker"]["ticks"] > 0 and stats["ticker"]["fault"] is None
    assert isinstance(stats["runtime"], dict)
    with urllib.request.urlopen(f"http://127.0.0.1:{st.port}/metrics", timeout=RECV) as r:
        text = r.read().decode()
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines()
                   if line and not line.startswith("#"))
    assert float(samples["paratick_connections_playing"]) == 1.0
    assert float(samples["paratick_ticks_total"]) > 0
    assert float(samples["paratick_tick_duration_seconds_count"]) > 0  # the histogram is fed
    ws.send(MP.encode(Input(seq=1, thrust=1.0)))
    deadline = time.monotonic() + 5  # the input is applied by a tick, then observed
    while True:
        recv_until(ws, MP, Snapshot)
        with urllib.request.urlopen(f"http://127.0.0.1:{st.port}/metrics", timeout=RECV) as r:
            text = r.read().decode()
        samples = dict(line.rsplit(" ", 1) for line in text.splitlines()
                       if line and not line.startswith("#"))
        if float(samples["paratick_input_latency_seconds_count"]) >= 1 \
                or time.monotonic() > deadline:
            break
    assert float(samples["paratick_input_latency_seconds_count"]) >= 1
    regions = {k.split("region=")[1].split(",")[0] for k in samples
               if k.startswith("paratick_shard_entities{")}
    assert regions == {f'"{r}"' for r in range(4)}
    gc.collect()  # the server runs in this process: its collector pauses are ours
    with urllib.request.urlopen(f"http://127.0.0.1:{st.port}/stats", timeout=RECV) as r:
        collector = json.load(r)["gc"]
    assert any(g["generation"] == 2 and g["collections"] >= 1
               for g in collector["by_generation"])
    with urllib.request.urlopen(f"http://127.0.0.1:{st.port}/metrics", timeout=RECV) as r:
        text = r.read().decode()
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines()
                   if line and not line.startswith("#"))
    assert float(samples["paratick_gc_pause_seconds_count"]) >= 1
    ws.close()


# ---- bad input ----------------------------------------------------------------------------------
def test_oversized_frame_gets_error_and_close_1009(live_server: Start) -> None:
    st = live_server(max_frame=256)
    good, _ = join(st, name="good")
    ws, _ = join(st)
    ws.send(b"\x00" * 300)
    msgs, code = closed_with(ws, MP)
    assert errors(msgs) == ["too_large"] and code == 1009
    recv_until(good, MP, Snapshot)
    good.close()


def test_huge_frame_is_refused_by_the_library_with_1009(live_server: Start) -> None:
    st = live_server(max_frame=256)
    ws, _ = join(st)
    ws.send(b"\x00" * (256 * 16 + 1))
    _, code = closed_with(ws, MP)
    assert code == 1009


@pytest.mark.parametrize(("frame", "code"), [
    (b"\xc1\xc1", "malformed"),
    (b'{"t":"input"', "frame_type"),            # text on the binary subprotocol? no: bytes
    (MP.dumps({"t": "teleport"}), "unknown_type"),
    (MP.dumps({"t": "input", "seq": "1", "thrust": 0, "turn": 0, "action": 0}), "invalid_field"),
    (MP.dumps({"t": "input", "seq": 1, "thrust": math.nan, "turn": 0, "action": 0}),
     "invalid_field"),
    (MP.dumps({"t": "input", "seq": 1, "thrust": math.inf, "turn": 0, "action": 0}),
     "invalid_field"),
], ids=["malformed", "garbage", "unknown", "type", "nan", "inf"])
def test_bad_messages_get_an_error_and_the_connection_stays(live_server: Start, frame: bytes,
                                                            code: str) -> None:
    st = live_server()
    ws, _ = join(st)
    if code == "frame_type":
        ws.send(frame.decode())  # a text frame on the msgpack subprotocol
    else:
        ws.send(frame)
    err = recv_until(ws, MP, Error)
    assert err.code == code and err.reason and "Traceback" not in err.reason
    ws.send(MP.encode(Input(seq=5, thrust=0.5)))
    for _ in range(100):
        snap = recv_until(ws, MP, Snapshot)
        if snap.ack == 5:
            break
    assert snap.ack == 5, "the connection still plays after a bad message"
    ws.close()


def test_json_nan_constant_is_malformed(live_server: Start) -> None:
    st = live_server()
    ws, _ = join(st, JS)
    ws.send('{"t":"input","seq":1,"thrust":NaN,"turn":0,"action":0}')
    assert recv_until(ws, JS, Error).code == "malformed"
    ws.close()


def test_too_many_bad_messages_in_a_row_close_1008(live_server: Start) -> None:
    st = live_server(max_strikes=3)
    ws, _ = join(st)
    for _ in range(3):
        ws.send(b"\xc1")
    msgs, code = closed_with(ws, MP)
    assert errors(msgs)[-1] == "too_many_errors" and code == 1008


def test_input_before_hello_closes_1008(live_server: Start) -> None:
    st = live_server()
    ws = open_ws(st.url, MP.name)
    ws.send(MP.encode(Input(seq=1)))
    msgs, code = closed_with(ws, MP)
    assert errors(msgs) == ["hello_first"] and code == 1008


def test_second_hello_closes_1008(live_server: Start) -> None:
    st = live_server()
    ws, _ = join(st)
    ws.send(MP.encode(Hello(name="again")))
    msgs, code = closed_with(ws, MP)
    assert "duplicate_hello" in errors(msgs) and code == 1008


def test_inputs_over_the_rate_limit_are_dropped_with_an_error(live_server: Start) -> None:
    st = live_server(input_rate=8.0, input_burst=3.0)
    ws, _ = join(st)
    for seq in range(1, 30):
        ws.send(MP.encode(Input(seq=seq)))
    assert recv_until(ws, MP, Error).code == "rate_limited"
    # The first error can arrive before the server has read the rest of the burst: wait (bounded)
    # for the count to settle instead of reading it once.
    deadline = time.monotonic() + 10.0
    while (limited := st.stats()["messages"]["rate_limited"]) < 20:
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert limited >= 20
    assert st.stats()["connections"]["playing"] == 1  # not disconnected
    ws.close()


def test_connection_cap_per_address(live_server: Start) -> None:
    st = live_server(max_per_address=2)
    a, _ = join(st)
    b, _ = join(st)
    c = open_ws(st.url, MP.name)
    msgs, code = closed_with(c, MP)
    assert errors(msgs) == ["too_many_connections"] and code == 1008
    recv_until(a, MP, Snapshot)
    a.close()
    b.close()


def test_server_full_closes_1013(live_server: Start) -> None:
    st = live_server(players=1)
    a, _ = join(st)
    b = open_ws(st.url, MP.name)
    b.send(MP.encode(Hello(name="late")))
    msgs, code = closed_with(b, MP)
    assert errors(msgs) == ["server_full"] and code == 1013
    a.close()


# ---- shutdown ---------------------------------------------------------------------------------
def test_graceful_shutdown_sends_bye_and_1001(live_server: Start) -> None:
    st = live_server()
    ws, _ = join(st)
    recv_until(ws, MP, Snapshot)
    final = st.stop()
    msgs, code = closed_with(ws, MP)
    assert any(isinstance(m, Bye) for m in msgs) and code == 1001
    assert final["connections"]["open"] == 0
    assert final["ticker"]["ticks"] > 0 and final["ticker"]["fault"] is None
    assert not st.server.ticker.running  # type: ignore[union-attr]


def test_other_clients_keep_ticking_during_abuse(live_server: Start) -> None:
    st = live_server(max_strikes=2)
    good, _ = join(st, name="good")
    t0 = recv_until(good, MP, Snapshot).tick
    for _ in range(20):
        bad = open_ws(st.url, MP.name)
        bad.send(b"\xff\xff")
        bad.send(b"\xff\xff")
        closed_with(bad, MP)
    t1 = recv_until(good, MP, Snapshot).tick
    assert t1 > t0
    assert st.stats()["messages"]["internal_errors"] == 0
    good.close()


def _wait_for(pred: Callable[[], bool]) -> None:
    for _ in range(500):
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError("condition never became true")


# ---- fuzz ---------------------------------------------------------------------------------------
def _client_messages() -> Any:
    from hypothesis import strategies as st

    unit = st.floats(-1.0, 1.0, allow_nan=False)
    inputs = st.builds(Input, seq=st.integers(0, 2**63 - 1), thrust=unit, turn=unit,
                       action=st.integers(0, 255), ack=st.none() | st.integers(0, 2**40))
    hello = st.builds(Hello, name=st.text(max_size=70), token=st.none() | st.text(max_size=30))
    return inputs, hello


def _frames() -> Any:
    from hypothesis import strategies as st

    inputs, hellos = _client_messages()
    codec = st.sampled_from([MP, JS])
    valid = st.tuples(inputs, codec).map(lambda mc: mc[1].encode(mc[0]))
    hello = st.tuples(hellos, codec).map(lambda mc: mc[1].encode(mc[0]))  # mutated only

    def mutate(data: bytes | str, how: int, pos: int, junk: bytes) -> bytes | str:
        raw = data.encode() if isinstance(data, str) else data
        i = pos % (len(raw) + 1)
        if how == 0:
            raw = raw[:i]
        elif how == 1:
            raw = raw[:i] + junk + raw[i:]
        elif how == 2 and raw:
            j = min(i, len(raw) - 1)
            raw = raw[:j] + bytes([raw[j] ^ (junk[0] if junk else 0xFF)]) + raw[j + 1:]
        else:
            raw = raw * 2
        return raw.decode("utf-8", "replace") if isinstance(data, str) else raw

    mutated = st.builds(mutate, valid | hello, st.integers(0, 3), st.integers(0, 10_000),
                        st.binary(min_size=1, max_size=8))
    json_values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    fields = st.dictionaries(st.sampled_from(["t", "v", "name", "token", "seq", "thrust", "turn",
                                              "action", "ack", "reason", "x"]),
                             json_values, max_size=7)

    def structured(d: dict[str, Any], binary: bool) -> bytes | str:
        try:
            return MP.dumps(d) if binary else json.dumps(d)
        except (ValueError, OverflowError):
            return b"\x80"
    junk = st.builds(structured, fields, st.booleans())
    # Frames that end a connection (too large, bye, a second hello) are rare, and the sender
    # waits for the close after one: frames sent into a closing connection are never decoded.
    normal = st.one_of(valid, valid, valid, mutated, mutated, junk, st.binary(max_size=200),
                       st.text(max_size=200))
    # Always fatal on a connection that said hello: built by the sender in its codec.
    fatal = st.sampled_from(["big", "bye", "hello"]).map(lambda f: (f, True))
    return st.integers(0, 39).flatmap(
        lambda i: fatal if i == 0 else normal.map(lambda f: (f, False)))


def test_fuzz_live_server_keeps_ticking_and_serving(live_server: Start) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    # No rate limit and no strike limit, so that most frames reach the decoder (a closed
    # connection discards what follows); both limits have their own tests above.
    st_ = live_server(input_rate=1e6, input_burst=1e6, players=16, grace=0.05,
                      max_strikes=10**9)
    sent = [0]
    conns: list[ClientConnection | None] = [None, None, None]
    codecs = [MP, JS, MP]

    def send(slot: int, frame: bytes | str, fatal: bool) -> None:
        if fatal:
            codec = codecs[slot]
            frame = {"big": b"\x91" + b"\x00" * 5000, "bye": codec.encode(Bye("fuzz")),
                     "hello": codec.encode(Hello(name="again"))}[frame]  # type: ignore[index]
        for _ in range(2):
            ws = conns[slot]
            if ws is None:
                ws = conns[slot] = connect(st_.url, subprotocols=[codecs[slot].name],  # type: ignore[list-item]
                                           max_queue=None, ping_interval=None).__enter__()
                ws.send(codecs[slot].encode(Hello(name=f"fuzz{slot}")))
            try:
                ws.send(frame)
            except ConnectionClosed:  # closed by an earlier frame: reconnect and resend
                ws.close()
                conns[slot] = None
                continue
            sent[0] += 1
            if fatal:  # the server closes: wait for it, so later frames are not wasted
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        ws.recv(RECV)
                ws.close()
                conns[slot] = None
            return

    @given(st.lists(st.tuples(st.integers(0, 2), _frames()), min_size=40, max_size=80))
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(batch: list[tuple[int, bytes | str]]) -> None:
        for slot, (frame, fatal) in batch:
            send(slot, frame, fatal)

    tick0 = st_.stats()["tick"]
    fuzz()
    for ws in conns:
        if ws is not None:
            ws.close()
    assert sent[0] >= 10_000, f"only {sent[0]} frames were sent"
    stats = st_.stats()
    assert stats["messages"]["internal_errors"] == 0
    assert stats["ticker"]["fault"] is None and stats["tick"] > tick0
    # Most frames reached the decoder (not just the socket), many of them bad.  Frames that
    # arrive after the server decided to close a connection are drained undecoded; the client
    # waits for the close after the frames that always close, but junk can close one too.
    assert stats["messages"]["in"] >= 7_000 and stats["messages"]["bad"] >= 2_000, stats
    _wait_for(lambda: st_.stats()["sessions"]["free"] > 0)
    ws, _welcome = join(st_, name="well-behaved")
    ws.send(MP.encode(Input(seq=1, thrust=1.0)))
    for _ in range(100):
        snap = recv_until(ws, MP, Snapshot)
        if snap.ack == 1:
            break
    assert snap.ack == 1 and snap.tick > stats["tick"]
    ws.close()


@pytest.mark.parametrize("backend", ["threads", "interpreters", "processes"])
def test_snapshots_are_built_in_parallel_workers(live_server: Start, backend: str) -> None:
    from server.runtime import BACKENDS, BackendUnavailable

    assert backend in BACKENDS
    try:
        st = live_server(backend=backend, workers=2)
    except BackendUnavailable as exc:  # interpreters need CPython >= 3.13 with _interpreters
        pytest.fail(f"backend {backend} unavailable here: {exc}")
    clients = [join(st, codec, name=f"p{i}") for i, codec in enumerate([MP, JS, MP, JS])]
    for ws, welcome in clients:
        codec = MP if ws.subprotocol == MP.name else JS
        ws.send(codec.encode(Input(seq=3, thrust=1.0)))
        for _ in range(100):
            snap = recv_until(ws, codec, Snapshot)
            if snap.ack == 3:
                break
        assert snap.ack == 3 and any(e[0] == welcome.entity for e in snap.entities)
        ws.close()
    assert st.stats()["runtime"]


def test_a_clients_snapshot_goes_out_on_the_tick_that_applies_its_input(
        live_server: Start) -> None:
    """The snapshot that acknowledges an input is the one of the tick that applied it, for a
    client sending inputs no faster than its snapshot rate (server.pacing)."""
    from server.runtime import Runtime

    steps: list[tuple[int, dict[int, int], set[int]]] = []  # tick, entity -> seq applied, jobs

    class Recording(Runtime):
        def step(self, inputs: Any = (), view: bool = False, jobs: Any = ()) -> Any:
            inputs = list(inputs)
            res = super().step(inputs, view, jobs)
            steps.append((res.tick, {row[0]: row[1] for row in inputs},
                          {job[0] for job in jobs if isinstance(job, tuple)}))
            return res

    st = live_server(runtime=Recording)
    ws, welcome = join(st)
    me = welcome.entity
    acked_on: dict[int, int] = {}  # seq -> tick of the snapshot that first acknowledged it
    for seq in range(1, 13):
        ws.send(MP.encode(Input(seq=seq, thrust=0.5)))
        while seq not in acked_on:
            snap = recv_until(ws, MP, Snapshot)
            if snap.ack >= seq:
                acked_on[seq] = snap.tick
        recv_until(ws, MP, Snapshot)  # one more: slower than 20 inputs a second
    ws.close()
    st.stop()
    applied_on = {ents[me]: tick for tick, ents, _ in steps if me in ents}
    with_job = {tick for tick, _, jobs in steps if me in jobs}
    assert sorted(applied_on) == list(range(1, 13)), "each input applied once"
    assert all(tick in with_job for tick in applied_on.values())
    assert acked_on == applied_on


def test_a_runtime_failure_stops_the_ticker_and_is_reported(live_server: Start) -> None:
    from server.runtime import Runtime

    class Failing(Runtime):
        def step(self, *args: Any, **kwargs: Any) -> Any:
            if self.tick >= 5:
                raise RuntimeError("injected failure")
            return super().step(*args, **kwargs)

    st = live_server(runtime=Failing)
    _wait_for(lambda: st.server.failed.is_set())
    stats = st.stats()
    assert stats["ticker"]["fault"] == "RuntimeError: injected failure"
    assert stats["tick"] == 5


def test_a_snapshot_hook_error_is_counted_and_said_and_the_world_ticks_on(
        live_server: Start, capsys: pytest.CaptureFixture[str]) -> None:
    from server.runtime import Runtime

    class HookFails(Runtime):
        def step(self, *args: Any, **kwargs: Any) -> Any:
            res = super().step(*args, **kwargs)
            if res.hook_results:  # as a worker reports a hook that raised
                res.hook_results = []
                res.hook_errors = [(0, "Traceback (most recent call last):\n"
                                       "IndexError: injected")]
            return res

    st = live_server(runtime=HookFails)
    ws, _ = join(st)
    _wait_for(lambda: st.stats()["messages"]["snapshot_errors"] >= 3)
    ws.close()
    assert not st.server.failed.is_set()
    assert st.stats()["messages"]["snapshots_out"] == 0
    st.stop()
    err = capsys.readouterr().err
    assert "snapshots failed on worker 0, its clients miss them: IndexError: injected" in err


def test_bye_closes_the_connection_1000_and_frees_the_entity(live_server: Start) -> None:
    st = live_server(players=1)
    ws, w1 = join(st)
    ws.send(MP.encode(Bye("leaving")))
    _, code = closed_with(ws, MP)  # the server closes; the client does nothing else
    assert code == 1000
    _wait_for(lambda: st.stats()["sessions"]["free"] == 1)
    ws2, w2 = join(st)
    assert w2.entity == w1.entity and w2.token != w1.token
    ws2.close()


@pytest.mark.parametrize("pin", [True, False])
def test_the_server_asks_for_pinned_workers_unless_told_not_to(pin: bool) -> None:
    from server.app import ServerSettings
    from server.runtime import Runtime
    from tests.server.conftest import SMALL_WORLD

    seen: list[dict[str, Any]] = []

    def factory(*args: Any, **kwargs: Any) -> Runtime:
        seen.append(kwargs)
        return Runtime(*args, **kwargs)

    st = ServerThread(SMALL_WORLD, ServerSettings(port=0, players=2, npcs=10, backend="threads",
                                                  workers=2, pin=pin), runtime_factory=factory)
    st.start()
    try:
        assert seen[0].get("pin", True) is pin
        if not pin:
            assert st.server.runtime.worker_cpus() == [None, None]
    finally:
        st.stop()
