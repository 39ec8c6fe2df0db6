"""websockets' asyncio connection, hardened so that no client can slow the others down.

Theory of operation
-------------------
websockets answers a ping with a pong inside its sans-I/O protocol, before our handler sees
anything, and writes every queued frame with its own ``transport.write``.  On CPython 3.12+ each
write to a socket transport with a non-empty buffer asks for the buffer's size, which sums every
queued chunk, so a client that floods pings and never reads makes each further write cost more
than the last: one such client froze every player.  :class:`GuardedConnection` (passed to
``websockets.asyncio.server.serve`` as ``create_connection``) closes that path at four points:

1. **Control-frame budget.**  Incoming bytes are fed to the protocol in slices of
   :data:`READ_SLICE` bytes; after each slice the pings and pongs it held are charged to the
   connection's :class:`~server.connection.ControlBudget`.  Over budget, the queued pongs are
   dropped and the connection is failed with 1008 (:meth:`GuardedConnection.fail`): reading
   stops, and the transport is closed once the close frame is flushed (aborted after
   :data:`CLOSE_GRACE` if it cannot be).  The gateway fails connections the same way when the
   connection rules close them for misbehaviour (bad data, floods, oversized frames), so a peer
   that keeps sending after its close frame costs nothing more.
2. **One write per batch.**  All frames the protocol queued are joined into one
   ``transport.write``, so the transport's buffer holds few large chunks, not one per pong.
3. **Read backpressure.**  When the transport's buffer passes its high-water mark
   (``pause_writing``), the connection stops reading: a peer that does not read cannot make us
   queue more.  If writing stays paused for ``write_stall_timeout`` seconds the transport is
   aborted (the peer is not reading; nothing more can reach it).  Reading is paused while
   *either* this or websockets' own incoming-message queue asks for it.
4. **Descriptor gate.**  A :class:`TransportGuard` counts every open transport, handshakes
   included, in all and per address, and aborts new ones beyond ``max_open`` (which the server
   derives from ``RLIMIT_NOFILE``, :func:`descriptor_budget`) or ``max_per_address`` at once:
   the process never runs out of descriptors because of clients, so ``accept`` never fails,
   and one address cannot take every descriptor with handshakes it never finishes.

Two fast paths cut the per-message cost of a busy server (no task, queue or future per
message): complete data messages go straight from ``data_received`` to the gateway's
:attr:`~GuardedConnection.on_message` (fragments assembled, text checked for UTF-8), and a
snapshot goes straight to the socket with :meth:`~GuardedConnection.send_now` when nothing is
queued before it and writing is not paused (else the gateway's writer task sends it and waits).

Framing.  Once the handshake is done, the connection splits the byte stream into frames itself
(:meth:`GuardedConnection._receive_frames`): an unfragmented text or binary frame (the whole
traffic of a playing client) is unmasked and delivered without websockets' generator-based
parser, and every other frame — pings, pongs, fragments, the close — is fed to websockets'
protocol *whole*, so that its parser always stands at a frame boundary and keeps every rule it
enforces (control frames answered and charged to the budget, continuation order, close
handshake, message size).  A frame over the size limit, a 64-bit length or an unmasked frame
is handed to the protocol with everything after it, and the connection reads through websockets
from then on (the protocol fails it).  So does a client that sent bytes after its request
before the handshake's answer: those bytes were fed to the parser, which may stand inside a
frame.  A snapshot is written with its two- or four-byte header in front, what
``protocol.send_binary`` would queue, when nothing else is queued.  The two took the event
loop's process from 0.71 to 0.57 ms of user CPU per bot-second (400 bots, GIL build, 2-core VM,
two A/B pairs).

Writes to a transport that is already closing are skipped (asyncio logs "socket.send() raised
exception." for each one after the connection is lost).  :class:`BurstLog` folds repeated log
lines (for example the event loop's accept errors) into one line per burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import socket
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode, apply_mask
from websockets.protocol import State

from server.connection import CLOSE_POLICY, ControlBudget, ControlLimits

#: Bytes fed to the websocket protocol at a time: at most ~680 empty pings are parsed before the
#: budget is checked (~1 ms), and a normal client's chunk (< 4 KiB) is a single slice.
READ_SLICE = 4096
#: Opcodes of data frames (delivered to ``on_message`` when it is set).
_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)
#: Close code for a text message that is not UTF-8 (RFC 6455, 7.4.1).
CLOSE_INVALID_DATA = 1007
#: Descriptors kept back from the connection cap for everything else the process opens (the
#: listening sockets, worker pipes, log files, /proc reads, an MQTT client).
DESCRIPTOR_RESERVE = 64
#: Seconds a failed connection gets to flush its close frame before the transport is aborted.
CLOSE_GRACE = 1.0
#: An HTTP request line's method; the server answers every method but GET with 405.
_METHOD = re.compile(rb"[A-Z]{3,10} ")
_405_BODY = b"use GET: a websocket upgrade, /stats or /metrics\n"
METHOD_NOT_ALLOWED = (b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\n"
                      b"Content-Type: text/plain\r\nContent-Length: %d\r\n"
                      b"Connection: close\r\n\r\n%s" % (len(_405_BODY), _405_BODY))
#: Default SO_SNDBUF for client sockets: 256 KiB holds a second of snapshots for a client that
#: sees a thousand entities, and bounds the kernel memory of 4,096 unread clients to ~1 GiB.
SEND_BUFFER = 256 * 1024
#: Largest soft RLIMIT_NOFILE the server asks for (a million descriptors is more than any
#: single process here serves; raising to an "unlimited" hard limit would be meaningless).
NOFILE_CEILING = 1 << 20


@dataclass(frozen=True, kw_only=True)
class TransportLimits:
    """Per-connection transport limits.

    Attributes:
        control: the control-frame budget.
        write_stall_timeout: seconds the transport's write buffer may stay above its high-water
            mark before the connection is aborted (10 s: a client that has not read 32 KiB of
            snapshots in that long has lost 200 of them and is not playing any more).
        max_open: transports open at once (handshakes included); beyond it a new one is
            aborted at once.
        max_per_address: transports open at once from one IP address, handshakes included, so
            that one address cannot take every descriptor with connections that never finish
            their handshake.
        send_buffer: SO_SNDBUF of each client socket in bytes (None: the kernel's autotuning).
            Bounds the kernel memory an unread client can hold (autotuning grows to 4 MiB
            per socket by default) and how long it takes to notice one.
    """

    control: ControlLimits = field(default_factory=ControlLimits)
    write_stall_timeout: float = 10.0
    max_open: int = 4096
    max_per_address: int = 4096
    send_buffer: int | None = SEND_BUFFER

    def __post_init__(self) -> None:
        if not self.write_stall_timeout > 0:
            raise ValueError("write_stall_timeout must be > 0")
        if self.max_open < 1 or self.max_per_address < 1:
            raise ValueError("max_open and max_per_address must be >= 1")
        if self.send_buffer is not None and self.send_buffer < 4096:
            raise ValueError("send_buffer must be >= 4096 bytes")


class TransportGuard:
    """What the transports of one server share: limits, counters, the open count.

    Counters: ``control_flood`` (closed over the control budget), ``write_stalled`` (aborted
    after write_stall_timeout), ``refused_descriptors`` (aborted at the descriptor gate),
    ``read_paused`` (times reading was paused for write backpressure).

    Args:
        limits: the per-connection limits.
        on_refused: called with the number refused so far when the gate refuses one (the server
            logs it through a :class:`BurstLog`).
    """

    def __init__(self, limits: TransportLimits,
                 on_refused: Callable[[int], None] | None = None) -> None:
        self.limits = limits
        self.counters: Counter[str] = Counter()
        self.open = 0
        self.peak = 0
        self.by_address: Counter[str] = Counter()
        self.on_refused = on_refused
        #: Gateways on several threads open and close transports at once.
        self.lock = threading.Lock()

    def factory(self) -> Callable[..., GuardedConnection]:
        """The ``create_connection`` argument for ``serve``."""

        def create(*args: Any, **kwargs: Any) -> GuardedConnection:
            return GuardedConnection(*args, guard=self, **kwargs)

        return create


class GuardedConnection(ServerConnection):
    """A websockets ``ServerConnection`` with the guards described in the module docstring."""

    def __init__(self, *args: Any, guard: TransportGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        self._budget = ControlBudget(guard.limits.control, self.loop.time())
        self._holds: set[str] = set()   # reasons reading is paused: "queue", "write", "discard"
        self._stall: asyncio.TimerHandle | None = None
        self._address: str | None = None
        self._failed = False
        self._discarding = False
        self._seen_data = False
        #: where complete data messages go, synchronously (None: websockets' own queue)
        self.on_message: Callable[[bytes | str], None] | None = None
        self._parts: list[bytes] = []   # a fragmented message so far
        self._text = False              # ... and whether it is text
        #: Framing (see the module docstring): "head" until the request's end is seen, then
        #: "wait" (for the handshake's answer), "own" (we split frames), or "protocol" (every
        #: byte goes to websockets' parser).
        self._framing = "head"
        self._tail = b""   # the last 3 bytes of the request so far (its end may straddle reads)
        self._rx = b""     # the start of a frame not yet complete (framing "own")

    # ---- reading holds ----------------------------------------------------------------------
    def _hold(self, reason: str, on: bool) -> None:
        before = bool(self._holds)
        if on:
            self._holds.add(reason)
        else:
            self._holds.discard(reason)
        after = bool(self._holds)
        if before == after or self.transport.is_closing():
            return
        if after:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # ---- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # websockets pauses reading when its incoming-message queue is full; route that
        # through the holds so that it never resumes a read we paused for backpressure.
        self.recv_messages.pause = lambda: self._hold("queue", True)
        self.recv_messages.resume = lambda: self._hold("queue", False)
        g = self.guard
        sock = transport.get_extra_info("socket")
        if g.limits.send_buffer is not None and sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, g.limits.send_buffer)
        peer = transport.get_extra_info("peername")
        self._address = addr = str(peer[0]) if peer else "?"
        with g.lock:
            g.open += 1
            g.by_address[addr] += 1
            g.peak = max(g.peak, g.open)
            refuse = g.open > g.limits.max_open or g.by_address[addr] > g.limits.max_per_address
            if refuse:
                g.counters["refused_descriptors"] += 1
                refused = g.counters["refused_descriptors"]
        if refuse:
            self._failed = True
            self.transport.abort()
            if g.on_refused is not None:
                g.on_refused(refused)

    def connection_lost(self, exc: Exception | None) -> None:
        addr = self._address
        if addr is not None:
            self._address = None
            g = self.guard
            with g.lock:
                g.open -= 1
                g.by_address[addr] -= 1
                if g.by_address[addr] <= 0:
                    del g.by_address[addr]
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._failed or self._discarding:
            return  # failed: the rest of the input is discarded unread
        framing = self._framing
        if framing == "own" or (framing == "wait" and self.protocol.state is State.OPEN):
            self._framing = "own"
            self._receive_frames(data)
            return
        if not self._seen_data:
            self._seen_data = True
            if not data.startswith(b"GET ") and _METHOD.match(data):
                # websockets closes on any other method without a word: say why.
                self._failed = True
                self.transport.write(METHOD_NOT_ALLOWED)
                self.transport.close()
                return
        if framing == "head":
            seen = self._tail + data
            end = seen.find(b"\r\n\r\n")
            if end < 0:
                self._tail = seen[-3:]
            else:  # bytes after the request go to the parser now: it may stand inside a frame
                self._framing = "wait" if end + 4 == len(seen) else "protocol"
                self._tail = b""
        elif framing == "wait":
            self._framing = "protocol"  # bytes before the handshake's answer, as above
        self._feed(data)

    def _receive_frames(self, data: bytes) -> None:
        """Split ``data`` (after what is left of the last read) into frames: deliver whole
        unfragmented data frames, feed every other whole frame to the protocol."""
        protocol = self.protocol
        buf = self._rx + data if self._rx else data
        self._rx = b""
        n = len(buf)
        pos = 0
        sink = self.on_message
        while n - pos >= 2:
            if self._failed or self._discarding:
                return
            if protocol.state is not State.OPEN:  # a close frame was sent or received
                self._framing = "protocol"
                self._feed(buf[pos:])
                return
            b0 = buf[pos]
            b1 = buf[pos + 1]
            size = b1 & 0x7F
            head = pos + 6
            if size == 126:
                if n - pos < 4:
                    break
                size = (buf[pos + 2] << 8) | buf[pos + 3]
                head = pos + 8
            limit = protocol.max_message_size
            if limit is not None and protocol.current_size is not None:
                limit -= protocol.current_size
            if size == 127 or not b1 & 0x80 or (limit is not None and size > limit):
                # Too big to buffer here, or unmasked: the protocol reads on (and fails it).
                self._framing = "protocol"
                self._feed(buf[pos:])
                return
            end = head + size
            if end > n:
                break
            if (b0 == 0x82 or b0 == 0x81) and sink is not None \
                    and protocol.current_size is None:
                self._deliver(sink, apply_mask(buf[head:end], buf[head - 4:head]), b0 == 0x81)
            else:
                self._feed(buf[pos:end])  # one whole frame: the parser ends at a boundary
                sink = self.on_message
            pos = end
        if pos < n:
            self._rx = buf[pos:]  # at most one frame within the size limit, plus its header

    def _feed(self, data: bytes) -> None:
        """Feed ``data`` to the protocol a slice at a time and handle what it parsed."""
        protocol = self.protocol
        for start in range(0, len(data), READ_SLICE):
            if self._discarding:
                return
            protocol.receive_data(data[start:start + READ_SLICE] if len(data) > READ_SLICE
                                  else data)
            events = protocol.events_received()
            frames = nbytes = 0
            for event in events:
                if isinstance(event, Frame) and event.opcode in (Opcode.PING, Opcode.PONG):
                    frames += 1
                    nbytes += len(event.data)
            if frames and not self._budget.allow(frames, nbytes, self.loop.time()):
                self._fail_flood()
                return
            try:
                self.send_data()
            except Exception as exc:  # as websockets does: remember it, the events still count
                self.set_connection_exc(exc)
            if protocol.close_expected() and self.close_deadline is None \
                    and self.close_timeout is not None:
                self.close_deadline = self.loop.time() + self.close_timeout
            for event in events:
                self.process_event(event)

    def process_event(self, event: Any) -> None:
        sink = self.on_message
        if sink is None or not isinstance(event, Frame) or event.opcode not in _DATA:
            super().process_event(event)
            return
        # The fast path: a complete message goes straight to the sink, with no queue, no
        # future and no task to wake.  websockets' protocol has already checked the framing,
        # the size (max_size, fragments included) and the order of continuation frames.
        data = bytes(event.data)
        if event.opcode is not Opcode.CONT:
            if not event.fin:
                self._parts, self._text = [data], event.opcode is Opcode.TEXT
                return
            text = event.opcode is Opcode.TEXT
        else:
            self._parts.append(data)
            if not event.fin:
                return
            data, text, self._parts = b"".join(self._parts), self._text, []
        self._deliver(sink, data, text)

    def _deliver(self, sink: Callable[[bytes | str], None], data: bytes, text: bool) -> None:
        """Hand one whole message to ``sink`` (text checked for UTF-8)."""
        if text:
            try:
                message: bytes | str = data.decode()
            except UnicodeDecodeError:
                self.fail(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message")
                return
        else:
            message = data
        sink(message)

    def send_now(self, data: bytes | str) -> bool:
        """Write one whole message at once if nothing stands in the way, without a task or an
        await; False (nothing written) when the connection is not open, is closing, or its
        writing is paused for backpressure: the caller then queues it for its writer task."""
        if self._failed or "write" in self._holds or self.transport.is_closing() \
                or self.protocol.state is not State.OPEN:
            return False
        protocol = self.protocol
        if protocol.writes or protocol.expect_continuation_frame:
            if isinstance(data, str):  # something queued first: let websockets frame it
                protocol.send_text(data.encode())
            else:
                protocol.send_binary(data)
            self.send_data()
            return True
        if isinstance(data, str):
            data, first = data.encode(), 0x81
        else:
            first = 0x82
        n = len(data)
        if n < 126:
            head = bytes((first, n))
        elif n < 1 << 16:
            head = bytes((first, 126, n >> 8, n & 0xFF))
        else:
            head = bytes((first, 127)) + n.to_bytes(8)
        self.transport.write(head + data)
        return True

    def _fail_flood(self) -> None:
        with self.guard.lock:
            self.guard.counters["control_flood"] += 1
        self.protocol.data_to_send()  # drop the pongs queued for this slice
        self.fail(CLOSE_POLICY, "too many control frames")

    def discard_input(self) -> None:
        """Stop reading: whatever the peer sends from now on is discarded unread (the connection
        is about to be failed with :meth:`fail`, once what is queued for it is flushed)."""
        self._discarding = True
        self._hold("discard", True)

    def fail(self, code: int, reason: str) -> None:
        """Close with ``code`` now, without waiting for the peer's close frame.

        For a peer that broke the rules: the close frame is sent, reading stops at once (reading
        only to discard would let the peer keep a core busy parsing frames it keeps sending),
        and the transport is closed once the frame is flushed, or aborted after
        :data:`CLOSE_GRACE` if it cannot be.
        """
        if self._failed:
            return
        self._failed = True
        self.protocol.fail(code, reason)
        self.send_data()
        self.transport.close()
        self.loop.call_later(CLOSE_GRACE, self.transport.abort)

    def send_data(self) -> None:
        chunks = self.protocol.data_to_send()
        if not chunks or self.transport.is_closing():
            return
        eof = b"" in chunks
        if eof:
            chunks = chunks[:chunks.index(b"")]
        if chunks:
            self.transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if eof:
            # As websockets does: half-close where the transport can (no TLS), else close.
            if self.transport.can_write_eof():
                with contextlib.suppress(Exception):  # write_eof documents none: best effort
                    self.transport.write_eof()
            else:
                self.transport.close()

    def pause_writing(self) -> None:
        super().pause_writing()
        with self.guard.lock:
            self.guard.counters["read_paused"] += 1
        self._hold("write", True)
        if self._stall is None:
            self._stall = self.loop.call_later(self.guard.limits.write_stall_timeout,
                                               self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        self._hold("write", False)

    def _stalled(self) -> None:
        self._stall = None
        with self.guard.lock:
            self.guard.counters["write_stalled"] += 1
        self._failed = True
        self.transport.abort()


# ---- descriptors --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DescriptorBudget:
    """What :func:`descriptor_budget` found and did.

    Attributes:
        soft, hard: RLIMIT_NOFILE after any raise.
        raised_from: the soft limit before it was raised (None: not raised).
        in_use: descriptors open when measured.
        available: descriptors left for client connections (soft - in_use - reserve).
    """

    soft: int
    hard: int
    raised_from: int | None
    in_use: int
    available: int


def _open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # no /proc: count by probing would be slow; assume a small process
        return 32


def descriptor_budget(*, reserve: int = DESCRIPTOR_RESERVE, raise_soft: bool = True,
                      in_use: Callable[[], int] = _open_descriptors) -> DescriptorBudget:
    """Raise the soft descriptor limit towards the hard one where allowed; say what is left.

    Args:
        reserve: descriptors kept back for everything but client connections.
        raise_soft: try to raise the soft limit (to at most :data:`NOFILE_CEILING`).
        in_use: returns the number of descriptors open now.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    raised_from = None
    target = NOFILE_CEILING if hard == resource.RLIM_INFINITY else min(hard, NOFILE_CEILING)
    if raise_soft and soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            raised_from, soft = soft, target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        soft = NOFILE_CEILING
    used = in_use()
    return DescriptorBudget(soft=soft, hard=hard, raised_from=raised_from, in_use=used,
                            available=max(0, soft - used - reserve))


# ---- logging ------------------------------------------------------------------------------------
class BurstLog:
    """One log line per burst of the same kind of event, then a count when the burst is over.

    The first event of a kind is printed at once; further ones within ``window`` seconds are
    counted, and the next event after the window prints how many were folded.

    Args:
        window: seconds a burst lasts.
        clock: monotonic seconds (injected).
        stream: where lines go (default stderr).
    """

    def __init__(self, *, window: float = 10.0, clock: Callable[[], float],
                 stream: IO[str] | None = None) -> None:
        self.window = window
        self.clock = clock
        self.stream = stream
        self._since: dict[str, float] = {}
        self._folded: Counter[str] = Counter()
        self._lock = threading.Lock()  # gateways on several threads note events

    def note(self, kind: str, line: str) -> bool:
        """Record one event; returns whether a line was written."""
        with self._lock:
            return self._note(kind, line)

    def _note(self, kind: str, line: str) -> bool:
        now = self.clock()
        since = self._since.get(kind)
        if since is not None and now - since < self.window:
            self._folded[kind] += 1
            return False
        folded = self._folded.pop(kind, 0)
        more = f" ({folded} more like it in the last {now - since:.0f} s)" \
            if folded and since is not None else ""
        self._since[kind] = now
        print(f"paratick: {line}{more}", file=self.stream or sys.stderr, flush=True)
        return True

    def exception_handler(self) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
        """An event-loop exception handler folding OS errors (for example ``accept`` failing
        with "Too many open files") into one line per burst; anything else goes to the loop's
        default handler, traceback and all."""

        def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            if not isinstance(exc, OSError):
                loop.default_exception_handler(context)
                return
            message = str(context.get("message") or "event loop error")
            self.note(f"{message}/{exc.errno}", f"{message}: {type(exc).__name__}: {exc}")

        return handle
