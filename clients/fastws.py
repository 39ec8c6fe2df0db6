"""Lean bots on picows: the load generator's fast path, where picows installs.

The bots are the load generator, not the system under test, so the ones that only measure (the
non-validating majority of a fleet, :data:`clients.bots.VALIDATE`) may use the fastest client
there is.  `picows <https://github.com/tarasko/picows>`_ parses frames and masks in C and hands
each frame to :meth:`_Listener.on_ws_frame` without a coroutine, a future or a queue; with
:func:`clients.lean.snapshot_head` reading three integers of the frame, a received snapshot
costs a few microseconds of the bot process's CPU instead of websockets' tens.  The validating
sample keeps using websockets' protocol and the full decode (:func:`clients.wsbot.run_bot`), so
protocol errors are still caught on every kind of message.  Every bot's inputs go out from the
process's :class:`~clients.inputs.InputClock`.

picows publishes wheels for the GIL build only (no free-threaded ones), and so does uvloop, which
the fleet uses as its event loop when it is there: :func:`available` says whether this
interpreter can run lean bots; ``paratick bots --client auto`` falls back to websockets when it
cannot, and the report names the client that ran.

What a lean bot measures is what a websockets bot measures (:class:`clients.bots.BotResult`):
bytes, frames, snapshots and deltas from each snapshot's header, and input->ack latency.  It
wanders (the behaviours that steer need the decoded entities).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Callable
from typing import Any

from clients.acks import Acks
from clients.inputs import InputClock
from clients.lean import snapshot_head
from server.protocol import (
    SERVER_MESSAGES,
    SUBPROTOCOL_MSGPACK,
    Bye,
    Error,
    Hello,
    Input,
    MsgpackCodec,
    ProtocolError,
    Welcome,
)

try:
    from picows import WSListener, WSMsgType, ws_connect
except ImportError:  # no wheel for this interpreter (the free-threaded build, for one)
    WSListener = object  # type: ignore[misc,assignment]
    HAVE_PICOWS = False
else:
    HAVE_PICOWS = True
    BINARY = WSMsgType.BINARY

#: An input's bytes, built without the message (the lean bots' inputs: 20 a second each).
input_bytes = MsgpackCodec.input_bytes

#: Largest frame a lean bot accepts (as the websockets bots: 4 MiB).
MAX_FRAME = 1 << 22


def available() -> bool:
    """Whether picows loads in this interpreter."""
    return HAVE_PICOWS


class _Listener(WSListener):
    """One lean bot's receive side: every frame, synchronously, on the loop's thread."""

    def __init__(self, bot: Any) -> None:
        self.bot = bot

    def on_ws_connected(self, transport: Any) -> None:
        self.bot.transport = transport

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        bot = self.bot
        kind = frame.msg_type
        if kind == WSMsgType.CLOSE:
            bot.closed(f"closed by the server ({frame.get_close_code()})")
            with contextlib.suppress(Exception):
                transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if kind != WSMsgType.BINARY and kind != WSMsgType.TEXT:
            return  # pings are answered by picows; pongs and continuations are not expected
        bot.frame(frame.get_payload_as_bytes())

    def on_ws_disconnected(self, transport: Any) -> None:
        self.bot.closed("connection lost")


class LeanBot:
    """The state of one lean bot; :func:`run_lean_bot` drives it."""

    def __init__(self, res: Any, clock: Callable[[], float], *, steady: float = -math.inf,
                 max_pending: int) -> None:
        self.res = res
        self.clock = clock
        self.acks = Acks(res, steady=steady, max_pending=max_pending)
        self.codec = MsgpackCodec()
        self.transport: Any = None
        self.welcome: asyncio.Future[Welcome] = asyncio.get_running_loop().create_future()
        self.gone: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def frame(self, data: bytes) -> None:
        res = self.res
        res.bytes_in += len(data)
        res.messages_in += 1
        head = snapshot_head(data)
        if head is not None:
            self.acks.snapshot(head[0], head[1], head[2] is not None, self.clock())
            return
        try:
            msg = self.codec.decode(data, accept=SERVER_MESSAGES)
        except ProtocolError as exc:
            res.errors.append(f"undecodable: {exc}"[:200])
            return
        if isinstance(msg, Welcome):
            if not self.welcome.done():
                self.welcome.set_result(msg)
        elif isinstance(msg, Error):
            res.errors.append(msg.code)
        elif isinstance(msg, Bye):
            self.closed(f"server said bye: {msg.reason}")
        elif not self.welcome.done():
            self.welcome.set_exception(ProtocolError(f"expected welcome, got {msg!r:.100}"))

    def closed(self, why: str) -> None:
        if not self.gone.done():
            self.gone.set_result(why)
        if not self.welcome.done():
            self.welcome.set_exception(ConnectionError(why))

    def send(self, msg: Hello | Input | Bye) -> None:
        data = self.codec.encode(msg)
        assert isinstance(data, bytes)  # msgpack
        self.transport.send(WSMsgType.BINARY, data)
        self.res.bytes_out += len(data)


class _Inputs:
    """One lean bot's inputs, sent by the fleet process's :class:`~clients.inputs.InputClock`
    (no task, future, sleep or timer per input); none at or after ``until`` or once the bot is
    gone."""

    def __init__(self, bot: LeanBot, rng: random.Random, *, until: float,
                 choose: Callable[..., tuple[float, float, int]]) -> None:
        self.bot, self.rng, self.until, self.choose = bot, rng, until, choose
        self.memory: dict[str, float] = {}
        self.seq = 0
        self.stopped = False

    def send(self) -> bool:
        bot = self.bot
        clock = bot.clock
        if self.stopped or bot.gone.done() or clock() >= self.until:
            return False
        self.seq += 1
        thrust, turn, action = self.choose("wander", None, {}, self.rng, self.memory)
        data = input_bytes(self.seq, thrust, turn, action, bot.acks.latest)
        bot.transport.send(BINARY, data)
        bot.res.bytes_out += len(data)
        bot.acks.sent(self.seq, clock())
        return True

    def stop(self) -> None:
        self.stopped = True


async def run_lean_bot(url: str, res: Any, *, seed: int, inputs: InputClock, until: float,
                       clock: Callable[[], float], max_pending: int,
                       choose: Callable[..., tuple[float, float, int]],
                       steady: float = -math.inf) -> None:
    """Play one lean bot into ``res`` (a :class:`clients.bots.BotResult`) until ``until``,
    its inputs sent by ``inputs`` (the process's input clock); never raises for network
    trouble (it is recorded in ``res``).  Acks before ``steady`` count as the ramp's."""
    bot = LeanBot(res, clock, steady=steady, max_pending=max_pending)
    rng = random.Random(seed * 1_000_003 + res.index)
    try:
        transport, _ = await asyncio.wait_for(
            ws_connect(lambda: _Listener(bot), url, max_frame_size=MAX_FRAME,
                       extra_headers={"Sec-WebSocket-Protocol": SUBPROTOCOL_MSGPACK}), 10.0)
    except Exception as exc:  # OSError, TimeoutError, and picows' own handshake errors
        res.failed = f"connect: {type(exc).__name__}: {exc}"[:200]
        return
    t_start = clock()
    try:
        bot.send(Hello(name=f"bot{res.index}"))
        try:
            welcome = await asyncio.wait_for(asyncio.shield(bot.welcome), 10.0)
        except (TimeoutError, ConnectionError, ProtocolError) as exc:
            res.failed = f"{type(exc).__name__}: {exc}"[:200]
            return
        res.connected = True
        res.gateway = welcome.gateway
        sender = _Inputs(bot, rng, until=until, choose=choose)
        inputs.add(sender.send, rng.random())
        try:
            res.dropped = await asyncio.wait_for(asyncio.shield(bot.gone),
                                                 max(0.0, until - clock()))
            return
        except TimeoutError:
            pass
        finally:
            sender.stop()
        if not bot.gone.done():
            bot.send(Bye("done"))
    finally:
        res.seconds = clock() - t_start
        if bot.welcome.done() and not bot.welcome.cancelled():
            bot.welcome.exception()  # retrieved: a late failure is in res, not in the log
        with contextlib.suppress(Exception):
            transport.send_close()
            transport.disconnect()
