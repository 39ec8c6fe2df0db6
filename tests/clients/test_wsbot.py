"""Bots on websockets' protocol against scripted servers: every kind of failure is counted.

A scripted server (websockets' own asyncio server on loopback) says exactly what each test needs
-- a fragmented welcome, a snapshot too early, bytes the codec or websockets rejects, an error
and a bye -- and the test reads what the bot recorded.  The bot plays against the real server in
``test_bots.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from clients import wsbot
from clients.bots import MAX_PENDING, BotResult, choose
from clients.inputs import InputClock
from clients.wsbot import run_bot
from server.protocol import SUBPROTOCOL_MSGPACK, Bye, Error, MsgpackCodec, Snapshot, Welcome

CODEC = MsgpackCodec()
WELCOME = CODEC.encode(Welcome(entity=3, token="t" * 16, tick=10, tick_rate=30.0,
                               snapshot_rate=20.0, width=512.0, height=512.0,
                               view_radius=100.0))
ENTITY = (3, 0, 10.0, 20.0, 0.0, 0.0, 0.0, 0)
SNAPSHOT = CODEC.encode(Snapshot(tick=11, ack=0, entities=(ENTITY,)))


async def one_bot(port: int, *, seconds: float = 1.0, behaviour: str = "wander",
                  validate: bool = True) -> BotResult:
    """One bot against ``127.0.0.1:port`` for ``seconds``; what it recorded."""
    loop = asyncio.get_running_loop()
    res = BotResult(0, validating=validate)
    await run_bot(f"ws://127.0.0.1:{port}", res, behaviour=behaviour, seed=1,
                  inputs=InputClock(1 / 20, clock=loop.time, call_at=loop.call_at),
                  until=loop.time() + seconds, clock=loop.time, max_pending=MAX_PENDING,
                  choose=choose, validate=validate)
    return res


def play(script: Callable[[ServerConnection], Awaitable[None]], *, seconds: float = 0.6,
         validate: bool = True) -> tuple[BotResult, list[Any]]:
    """Run one bot for ``seconds`` against a server that runs ``script`` on its connection;
    return what the bot recorded and the messages the server received."""
    received: list[Any] = []

    async def handler(ws: ServerConnection) -> None:
        received.append(CODEC.decode(await ws.recv()))  # the hello
        await script(ws)
        try:
            async for data in ws:
                received.append(CODEC.decode(data))
        except Exception:
            pass
        received.append(("closed", ws.close_code))

    async def main() -> BotResult:
        async with serve(handler, "127.0.0.1", 0,
                         subprotocols=[SUBPROTOCOL_MSGPACK]) as server:  # type: ignore[list-item]
            return await one_bot(server.sockets[0].getsockname()[1], seconds=seconds,
                                 behaviour="chase", validate=validate)

    return asyncio.run(main()), received


def test_a_fragmented_welcome_is_assembled_and_snapshots_are_acked() -> None:
    async def script(ws: ServerConnection) -> None:
        assert isinstance(WELCOME, bytes)
        await ws.send([WELCOME[:5], WELCOME[5:20], WELCOME[20:]])  # one message, three frames
        await asyncio.sleep(0.2)  # some inputs first, then the snapshot that acks them
        await ws.send(CODEC.encode(Snapshot(tick=12, ack=3, entities=(ENTITY,))))

    res, received = play(script)
    assert res.connected and res.failed is None and res.dropped is None and res.errors == []
    assert res.snapshots == 1 and res.latencies_ms
    assert res.inputs >= 5 and res.bytes_out > 0
    assert received[-1] == ("closed", 1000)
    kinds = [type(m).__name__ for m in received[:-1]]
    assert kinds[0] == "Hello" and kinds.count("Input") == res.inputs
    assert kinds[-1] == "Bye"  # said at the end of the run, before the close
    seqs = [m.seq for m in received if type(m).__name__ == "Input"]
    assert seqs == list(range(1, len(seqs) + 1))
    assert any(m.ack == 12 for m in received if type(m).__name__ == "Input")


def test_a_snapshot_before_the_welcome_fails_the_bot() -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.send(SNAPSHOT)

    res, _ = play(script)
    assert not res.connected and res.failed is not None
    assert res.failed.startswith("expected welcome")


@pytest.mark.parametrize("validate", [True, False])
def test_a_message_the_codec_rejects_stops_the_bot(validate: bool) -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.send(WELCOME)
        await ws.send(b"\x81\xa1t\xa8snapshot")  # a snapshot without its fields

    res, received = play(script, validate=validate)
    assert res.connected and res.failed is not None and "snapshot" in res.failed
    assert res.snapshots == 0
    assert received[-1] == ("closed", 1002)  # the bot closed: the server broke the protocol


def test_a_frame_websockets_rejects_drops_the_connection_with_1002() -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.send(WELCOME)
        ws.transport.write(b"\xc2\x00")  # a binary frame with RSV1 set: no extension allows it

    res, _ = play(script)
    assert res.connected and res.failed is None
    assert res.dropped is not None and "1002" in res.dropped


def test_errors_are_counted_and_a_bye_ends_the_bot() -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.send(WELCOME)
        await ws.send(CODEC.encode(Error("rate_limited", "slow down")))
        await ws.send(CODEC.encode(Bye("server shutting down")))

    res, _ = play(script, seconds=5.0)
    assert res.connected and res.errors == ["rate_limited"]
    assert res.dropped == "server said bye: server shutting down"
    assert res.seconds < 4.0  # the bye ended it, not the run's end


def test_a_server_that_never_answers_the_handshake_times_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wsbot, "CONNECT_TIMEOUT", 0.3)

    async def main() -> BotResult:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1 << 16)  # the request, never answered
            await asyncio.sleep(2.0)
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        async with server:
            return await one_bot(server.sockets[0].getsockname()[1])

    res = asyncio.run(main())
    assert not res.connected and res.failed is not None
    assert res.failed.startswith("connect: TimeoutError")


def test_a_refused_handshake_says_why() -> None:
    async def main() -> BotResult:
        async def handler(ws: ServerConnection) -> None:
            pass

        def refuse(conn: ServerConnection, request: Any) -> Any:
            return conn.respond(403, "no\n")

        async with serve(handler, "127.0.0.1", 0, process_request=refuse) as server:
            return await one_bot(server.sockets[0].getsockname()[1])

    res = asyncio.run(main())
    assert not res.connected and res.failed is not None
    assert res.failed.startswith("connect: InvalidStatus") and "403" in res.failed
