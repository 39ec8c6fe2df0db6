"""Bots on websockets' protocol: every byte through it, and the validating sample's decode.

A fleet's validating sample (:data:`clients.bots.VALIDATE`) is what catches a server that
breaks the protocol, so it keeps the strict path: websockets' sans-I/O client protocol
(:class:`websockets.client.ClientProtocol`: the handshake, frame parsing and its limits, control
frames, fragments, the close handshake) and :meth:`server.protocol.Codec.decode` with
:func:`server.protocol.apply_snapshot` on every message.  Where picows does not load (the
free-threaded build), the rest of the fleet runs here too and reads only a snapshot's header
(:func:`clients.lean.snapshot_head`).

The bot drives that protocol from an :class:`asyncio.Protocol`, websockets' own sans-I/O
design (bytes in with ``receive_data``, events out with ``events_received``, bytes to write from
``data_to_send``), rather than through websockets' asyncio connection, whose task, queue and
futures per message, with a sleep per input, made about half of a validating bot's CPU (210 us
per received message; py-spy, the 2-core VM).  Its inputs go out from the process's
:class:`~clients.inputs.InputClock` like every other bot's.

Every failure counts: a handshake refused (``failed``), a frame websockets rejects (the
protocol closes the connection as RFC 6455 says; ``dropped`` names the close), a message the
codec rejects (the bot closes and stops; ``failed`` names it), an error message from the server
(``errors``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Callable
from typing import Any, cast

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidURI
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from clients.acks import Acks
from clients.inputs import InputClock
from clients.lean import snapshot_head
from server.protocol import (
    SERVER_MESSAGES,
    SUBPROTOCOL_MSGPACK,
    Bye,
    Entity,
    Error,
    Hello,
    Input,
    MsgpackCodec,
    ProtocolError,
    Snapshot,
    SnapshotGap,
    Welcome,
    apply_snapshot,
)

#: Snapshots kept for delta application (the server's ring is 32; acks arrive in order).
HISTORY = 8
#: Largest message a validating bot accepts (4 MiB, as the lean bots).
MAX_SIZE = 1 << 22
#: Seconds to connect and to be welcomed; seconds the close handshake may take.
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0


class WsBot(asyncio.Protocol):
    """One bot's connection: websockets' client protocol fed by the event loop.  It decodes
    and applies every message when ``validate``, else reads snapshot headers only."""

    def __init__(self, url: str, res: Any, *, behaviour: str, rng: random.Random,
                 clock: Callable[[], float], steady: float, max_pending: int,
                 choose: Callable[..., tuple[float, float, int]], validate: bool = True) -> None:
        self.protocol = ClientProtocol(parse_uri(url),
                                       subprotocols=[Subprotocol(SUBPROTOCOL_MSGPACK)],
                                       max_size=MAX_SIZE)
        self.res, self.behaviour, self.rng, self.clock = res, behaviour, rng, clock
        self.choose = choose
        self.acks = Acks(res, steady=steady, max_pending=max_pending)
        self.validate = validate
        self.closing = False
        self.codec = MsgpackCodec()
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.welcome: asyncio.Future[Welcome] = loop.create_future()
        self.gone: asyncio.Future[str] = loop.create_future()
        self.fragments: list[bytes] = []
        self.fragment_text = False
        self.history: dict[int, dict[int, Entity]] = {}
        self.state: dict[int, Entity] = {}
        self.me: int | None = None
        self.memory: dict[str, float] = {}
        self.seq = 0
        self.until = math.inf
        self.opened_at: float | None = None

    # ---- the event loop's side -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        protocol.receive_data(data)
        for event in protocol.events_received():
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Response):
                self._handshake()
        self._flush()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.receive_eof()  # idempotent; the protocol's state is CLOSED after it
        close = self.protocol.close_exc
        self._gone(f"{type(close).__name__}: {close}"[:200])

    # ---- websockets' protocol ------------------------------------------------------------
    def _flush(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        for chunk in self.protocol.data_to_send():
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                transport.write_eof()
        if not self.closing and self.protocol.close_expected():
            self.closing = True  # the peer has CLOSE_TIMEOUT to close the TCP connection
            asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.abort)

    def _handshake(self) -> None:
        exc = self.protocol.handshake_exc
        if exc is not None:
            self._fail(f"connect: {type(exc).__name__}: {exc}")
            return
        self.opened_at = self.clock()  # connected from here, as a bot on picows counts it
        hello = self.codec.encode(Hello(name=f"bot{self.res.index}"))
        assert isinstance(hello, bytes)
        self._send(hello)

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.BINARY or opcode is Opcode.TEXT:
            self.fragment_text = opcode is Opcode.TEXT
            if not frame.fin:
                self.fragments = [bytes(frame.data)]
                return
            data = bytes(frame.data)
        elif opcode is Opcode.CONT:
            self.fragments.append(bytes(frame.data))
            if not frame.fin:
                return
            data = b"".join(self.fragments)
            self.fragments = []
        else:
            return  # ping, pong, close: the protocol answers them
        message: bytes | str = data
        if self.fragment_text:
            try:
                message = data.decode()
            except UnicodeDecodeError:
                self._fail("ProtocolError: a text message is not UTF-8")
                return
        self._message(message)

    def _send(self, data: bytes) -> None:
        if self.protocol.state is not State.OPEN:
            return
        self.protocol.send_binary(data)
        self.res.bytes_out += len(data)
        self._flush()

    # ---- paratick's protocol -------------------------------------------------------------
    def _message(self, data: bytes | str) -> None:
        res = self.res
        res.bytes_in += len(data)
        res.messages_in += 1
        if not self.validate and self.welcome.done():
            head = snapshot_head(data)
            if head is not None:  # the lean path: tick, ack, base; nothing else decoded
                self.acks.snapshot(head[0], head[1], head[2] is not None, self.clock())
                return
        try:
            msg = self.codec.decode(data, accept=SERVER_MESSAGES)
        except ProtocolError as exc:
            self._fail(f"{type(exc).__name__}: {exc}")
            return
        if not self.welcome.done():
            if isinstance(msg, Welcome):
                self.me = msg.entity
                self.welcome.set_result(msg)
            else:
                self._fail(f"expected welcome, got {msg!r:.100}")
        elif isinstance(msg, Snapshot):
            try:
                state = apply_snapshot(self.history, msg)
            except SnapshotGap:  # keep acking the old baseline; the server will send a full one
                self.acks.snapshot(None, msg.ack, msg.is_delta, self.clock())
                return
            history = self.history
            history[msg.tick] = self.state = state
            while len(history) > HISTORY:
                del history[min(history)]
            self.acks.snapshot(msg.tick, msg.ack, msg.is_delta, self.clock())
        elif isinstance(msg, Error):
            res.errors.append(msg.code)
        elif isinstance(msg, Bye):
            self._gone(f"server said bye: {msg.reason}")
        elif isinstance(msg, Welcome):
            self._fail("ProtocolError: a second welcome")

    def send_input(self) -> bool:
        """One input now (the input clock calls it); False once the bot is done."""
        if self.gone.done() or self.clock() >= self.until:
            return False
        self.seq += 1
        state = self.state
        me = None if self.me is None else state.get(self.me)
        thrust, turn, action = self.choose(self.behaviour, me, state, self.rng, self.memory)
        data = self.codec.encode(Input(self.seq, thrust, turn, action, ack=self.acks.latest))
        assert isinstance(data, bytes)
        self._send(data)
        self.acks.sent(self.seq, self.clock())
        return True

    # ---- the end -------------------------------------------------------------------------
    def _fail(self, why: str) -> None:
        """Stop on a failure of the server's (recorded as the bot's ``failed``)."""
        if self.res.failed is None:
            self.res.failed = why[:200]
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(CloseCode.PROTOCOL_ERROR, why[:100])
            self._flush()
        self._gone(why)

    def _gone(self, why: str) -> None:
        if not self.gone.done():
            self.gone.set_result(why)
        if not self.welcome.done():
            self.welcome.set_exception(ConnectionError(why))

    async def close(self) -> None:
        """Say bye, close the connection and wait for it (at most :data:`CLOSE_TIMEOUT`)."""
        if self.protocol.state is State.OPEN and not self.gone.done():
            bye = self.codec.encode(Bye("done"))
            assert isinstance(bye, bytes)
            self._send(bye)
            self.protocol.send_close(CloseCode.NORMAL_CLOSURE)
            self._flush()
        transport = self.transport
        if transport is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.gone), CLOSE_TIMEOUT)
        transport.abort()


async def run_bot(url: str, res: Any, *, behaviour: str, seed: int, inputs: InputClock,
                  until: float, clock: Callable[[], float], max_pending: int,
                  choose: Callable[..., tuple[float, float, int]], validate: bool = True,
                  steady: float = -math.inf) -> None:
    """Play one bot into ``res`` (a :class:`clients.bots.BotResult`) until ``until`` (a
    ``clock`` time), its inputs sent by ``inputs`` (the process's input clock); never raises for
    network trouble (it is recorded in ``res``).  A bot that does not ``validate`` reads
    snapshot headers only and wanders.  Acks that arrive before ``steady`` count as the
    ramp's."""
    rng = random.Random(seed * 1_000_003 + res.index)
    loop = asyncio.get_running_loop()
    try:
        wsuri = parse_uri(url)
        bot = WsBot(url, res, behaviour=behaviour if validate else "wander", rng=rng,
                    clock=clock, steady=steady, max_pending=max_pending, choose=choose,
                    validate=validate)
        await asyncio.wait_for(loop.create_connection(lambda: bot, wsuri.host, wsuri.port,
                                                      ssl=True if wsuri.secure else None),
                               CONNECT_TIMEOUT)
    except (OSError, TimeoutError, InvalidURI) as exc:
        res.failed = f"connect: {type(exc).__name__}: {exc}"[:200]
        return
    try:
        try:
            await asyncio.wait_for(asyncio.shield(bot.welcome), CONNECT_TIMEOUT)
        except (TimeoutError, ConnectionError, InvalidHandshake) as exc:
            if res.failed is None:  # still in the websocket handshake, or waiting for welcome
                stage = "connect: " if bot.protocol.state is State.CONNECTING else ""
                res.failed = f"{stage}{type(exc).__name__}: {exc}"[:200]
            return
        res.connected = True
        res.gateway = bot.welcome.result().gateway
        bot.until = until
        inputs.add(bot.send_input, rng.random())
        try:
            why = await asyncio.wait_for(asyncio.shield(bot.gone), max(0.0, until - clock()))
        except TimeoutError:
            return
        if res.failed is None:
            res.dropped = why
    finally:
        res.seconds = 0.0 if bot.opened_at is None else clock() - bot.opened_at
        bot.until = -math.inf
        if bot.welcome.done() and not bot.welcome.cancelled():
            bot.welcome.exception()  # retrieved: a late failure is in res, not in the log
        await bot.close()
