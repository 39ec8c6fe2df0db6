"""The transport: burst logging, the descriptor budget, its limits, and the guarded
connection's own framing (against websockets' parser, on a real loopback connection).

Floods and other attacks on the guarded connection are exercised over real sockets through the
whole server in test_hostile.py.
"""

from __future__ import annotations

import asyncio
import errno
import io
import random
import resource
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from server.app import GameServer, ServerSettings
from server.connection import ControlLimits
from server.transport import (
    BurstLog,
    GuardedConnection,
    TransportGuard,
    TransportLimits,
    descriptor_budget,
)
from sim.config import WorldConfig
from tests.server import rawws


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_log_prints_once_per_burst_then_the_count() -> None:
    clock, out = Clock(), io.StringIO()
    log = BurstLog(window=10.0, clock=clock, stream=out)
    assert log.note("accept", "accept failed")
    for _ in range(500):
        clock.now += 0.01
        assert not log.note("accept", "accept failed")
    assert log.note("other", "something else")  # kinds are independent
    clock.now = 20.0
    assert log.note("accept", "accept failed")
    lines = out.getvalue().splitlines()
    assert lines == ["paratick: accept failed", "paratick: something else",
                     "paratick: accept failed (500 more like it in the last 20 s)"]


def test_exception_handler_folds_os_errors_and_passes_the_rest_on() -> None:
    clock, out = Clock(), io.StringIO()
    handler = BurstLog(clock=clock, stream=out).exception_handler()
    passed: list[dict[str, Any]] = []

    class Loop:
        def default_exception_handler(self, context: dict[str, Any]) -> None:
            passed.append(context)

    emfile = OSError(errno.EMFILE, "Too many open files")
    for _ in range(1000):
        handler(Loop(), {"message": "socket.accept() out of system resource",  # type: ignore
                         "exception": emfile})
    handler(Loop(), {"message": "Task exception was never retrieved",  # type: ignore
                     "exception": ZeroDivisionError()})
    assert len(out.getvalue().splitlines()) == 1
    assert "Too many open files" in out.getvalue()
    assert len(passed) == 1 and isinstance(passed[0]["exception"], ZeroDivisionError)


def test_descriptor_budget_subtracts_what_is_in_use_and_the_reserve() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    b = descriptor_budget(raise_soft=False, reserve=64, in_use=lambda: 100)
    assert b.soft == soft and b.raised_from is None and b.in_use == 100
    assert b.available == max(0, soft - 164)


def test_descriptor_budget_raises_the_soft_limit_where_allowed() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(64, hard // 2), hard))
    lowered, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        b = descriptor_budget(in_use=lambda: 10)
        assert b.raised_from == lowered and b.soft > lowered
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == b.soft
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_caps_follow_the_descriptor_limit(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A server under a soft limit it may not raise lowers its caps and says so in one line."""
    import server.app
    from server.runtime import Runtime

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    world = WorldConfig(width=256, height=256, regions_x=1, regions_y=1, view_radius=64.0)
    monkeypatch.setattr(server.app, "descriptor_budget",
                        lambda: descriptor_budget(raise_soft=False, in_use=lambda: 800))

    async def scenario() -> dict[str, Any]:
        settings = ServerSettings(port=0, players=2, npcs=4, backend="inline",
                                  max_per_address=1100)
        async with GameServer(world, settings, runtime_factory=Runtime) as srv:
            return srv.stats()["connections"]  # type: ignore[no-any-return]

    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        conns = asyncio.run(scenario())
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert conns["max"] == 1024 - 800 - 64
    assert conns["max_per_address"] == conns["max"]
    err = capsys.readouterr().err
    assert err.count("descriptor limit") == 1 and "ulimit -n" in err


@pytest.mark.parametrize("bad", [{"write_stall_timeout": 0.0}, {"max_open": 0},
                                 {"max_per_address": 0}, {"send_buffer": 100}])
def test_transport_limits_are_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TransportLimits(**bad)


# ---- the guarded connection's framing ------------------------------------------------
MAX_SIZE = 4096


class Echo:
    """A websockets server whose connections are guarded: each connection's messages are kept,
    and tests feed it bytes as if they came from its socket, split however they like."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.conns: list[GuardedConnection] = []
        self.got: dict[int, list[bytes | str]] = {}
        self.ready = threading.Event()
        guard = TransportGuard(TransportLimits(control=ControlLimits(rate=1000, burst=1000)))

        async def handler(ws: Any) -> None:
            got = self.got[id(ws)] = []
            ws.on_message = got.append
            self.conns.append(ws)
            await ws.wait_closed()

        async def start() -> Any:
            from websockets.asyncio.server import serve
            return await serve(handler, "127.0.0.1", 0, max_size=MAX_SIZE, compression=None,
                               ping_interval=None,
                               create_connection=guard.factory())  # type: ignore[arg-type]

        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    def connect(self) -> tuple[socket.socket, GuardedConnection]:
        n = len(self.conns)
        s = rawws.connect(self.port)
        deadline = time.monotonic() + 5
        while len(self.conns) == n:
            assert time.monotonic() < deadline, "the handler never ran"
            time.sleep(0.005)
        return s, self.conns[-1]

    def feed(self, conn: GuardedConnection, chunks: list[bytes]) -> None:
        """``conn.data_received`` for each chunk, on the server's loop, as its socket would."""
        async def run() -> None:
            for chunk in chunks:
                conn.data_received(chunk)
        asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            await self.server.wait_closed()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def echo() -> Iterator[Echo]:
    e = Echo()
    yield e
    e.close()


def _splits(data: bytes, rng: random.Random) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        k = rng.choice((1, 1, 2, 3, 7, 64, 1000))
        out.append(data[i:i + k])
        i += k
    return out


def _read_until(s: socket.socket, reader: rawws.Reader, done: Any, seconds: float = 5) -> None:
    s.settimeout(0.05)
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            return
        reader.feed(chunk)


STREAM = [
    rawws.frame(rawws.OP_BINARY, b"\x01\x02"),
    rawws.frame(rawws.OP_TEXT, "héllo".encode()),
    rawws.frame(rawws.OP_PING, b"p1"),
    rawws.frame(rawws.OP_BINARY, bytes(range(256)) * 2),        # a 16-bit length
    rawws.frame(rawws.OP_TEXT, b"frag", fin=False),              # a fragmented text message,
    rawws.frame(rawws.OP_PING, b"p2"),                           # a ping between its parts,
    rawws.frame(0x0, b"men", fin=False),
    rawws.frame(0x0, b"ted", fin=True),
    rawws.frame(rawws.OP_BINARY, b""),
    rawws.frame(rawws.OP_PONG, b"unsolicited"),
    rawws.frame(rawws.OP_BINARY, b"x" * (MAX_SIZE - 1)),
]
EXPECTED: list[bytes | str] = [b"\x01\x02", "héllo", bytes(range(256)) * 2, "fragmented", b"",
                               b"x" * (MAX_SIZE - 1)]


@pytest.mark.parametrize("seed", range(4))
def test_own_framing_delivers_what_websockets_parser_does(echo: Echo, seed: int) -> None:
    rng = random.Random(seed)
    data = b"".join(STREAM)
    results = []
    for framing in ("own", "protocol"):
        s, conn = echo.connect()
        try:
            if framing == "protocol":  # every byte through websockets' parser, as a reference
                conn._framing = "protocol"
            echo.feed(conn, _splits(data, rng))
            reader = rawws.Reader()
            _read_until(s, reader, lambda r=reader: r.pongs >= 2)
            assert conn._framing == framing
            results.append((echo.got[id(conn)], reader.pongs, reader.close))
        finally:
            s.close()
    assert results[0] == results[1] == (EXPECTED, 2, None)


@pytest.mark.parametrize(("frames", "code"), [
    ([rawws.frame(rawws.OP_TEXT, b"\xff\xfe")], 1007),                       # not UTF-8
    ([rawws.frame(rawws.OP_BINARY, b"x" * (MAX_SIZE + 1))], 1009),            # too big
    ([b"\x82\xff" + (MAX_SIZE * 1000).to_bytes(8) + b"mask"], 1009),          # 64-bit length
    ([b"\x82\x02ok"], 1002),                                                   # unmasked
    ([rawws.frame(rawws.OP_TEXT, b"a", fin=False), rawws.frame(rawws.OP_BINARY, b"b")], 1002),
    ([rawws.frame(0x0, b"a")], 1002),                                        # stray continuation
    ([rawws.frame(0x3, b"a")], 1002),                                        # reserved opcode
    ([b"\xc2" + rawws.frame(rawws.OP_BINARY, b"x")[1:]], 1002),                # RSV1, no extension
])
def test_own_framing_keeps_websockets_rules(echo: Echo, frames: list[bytes], code: int) -> None:
    s, conn = echo.connect()
    try:
        echo.feed(conn, [b"".join(frames)])
        reader = rawws.Reader()
        _read_until(s, reader, lambda: reader.close is not None)
        assert reader.close == code
        assert echo.got[id(conn)] == []
    finally:
        s.close()


def test_a_close_frame_ends_own_framing(echo: Echo) -> None:
    s, conn = echo.connect()
    try:
        echo.feed(conn, [rawws.frame(rawws.OP_BINARY, b"before")
                         + rawws.frame(rawws.OP_CLOSE, (1000).to_bytes(2))
                         + rawws.frame(rawws.OP_BINARY, b"after")])
        reader = rawws.Reader()
        _read_until(s, reader, lambda: reader.close is not None)
        assert reader.close == 1000
        assert echo.got[id(conn)] == [b"before"]
        assert conn._framing == "protocol"
    finally:
        s.close()


def test_bytes_sent_before_the_handshake_answer_go_through_websockets(echo: Echo) -> None:
    # A client that writes a frame right behind its request: websockets' parser has those
    # bytes, so the connection never splits frames itself, and still delivers everything.
    n = len(echo.conns)
    s = socket.create_connection(("127.0.0.1", echo.port), timeout=5)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  b"Sec-WebSocket-Version: 13\r\n\r\n" + rawws.frame(rawws.OP_BINARY, b"early"))
        deadline = time.monotonic() + 5
        while len(echo.conns) == n and time.monotonic() < deadline:
            time.sleep(0.005)
        conn = echo.conns[-1]
        s.sendall(rawws.frame(rawws.OP_BINARY, b"later"))
        deadline = time.monotonic() + 5
        while not echo.got[id(conn)] and time.monotonic() < deadline:
            time.sleep(0.005)
        # "early" came before the handler took the messages: it waits in websockets' queue.
        early = asyncio.run_coroutine_threadsafe(conn.recv(), echo.loop).result(5)
        assert (early, echo.got[id(conn)]) == (b"early", [b"later"])
        assert conn._framing == "protocol"
    finally:
        s.close()


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
@pytest.mark.parametrize("kind", [bytes, str])
def test_send_now_writes_one_whole_frame(echo: Echo, size: int, kind: type) -> None:
    s, conn = echo.connect()
    try:
        payload: bytes | str = b"\x07" * size if kind is bytes else "é" * (size // 2)
        sent = asyncio.run_coroutine_threadsafe(_send_now(conn, payload), echo.loop).result(5)
        assert sent
        got: list[bytes] = []
        reader = _Frames(got)
        _read_until(s, reader, lambda: bool(got))  # type: ignore[arg-type]
        raw = payload if isinstance(payload, bytes) else payload.encode()
        assert got == [bytes([0x82 if kind is bytes else 0x81]) + raw]
    finally:
        s.close()


async def _send_now(conn: GuardedConnection, payload: bytes | str) -> bool:
    return conn.send_now(payload)


class _Frames(rawws.Reader):
    """Keeps each frame's first byte and payload (what a client library would check)."""

    def __init__(self, out: list[bytes]) -> None:
        super().__init__()
        self.out = out

    def feed(self, data: bytes) -> None:
        buf = self.buf + data
        while len(buf) >= 2:
            n, at = buf[1] & 0x7F, 2
            if n == 126:
                n, at = int.from_bytes(buf[2:4]), 4
            elif n == 127:
                n, at = int.from_bytes(buf[2:10]), 10
            if len(buf) < at + n:
                break
            self.out.append(buf[:1] + buf[at:at + n])
            buf = buf[at + n:]
        self.buf = buf
