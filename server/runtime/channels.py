"""Channels: how msgpack bytes travel between the coordinator and the workers, per backend.

Theory of operation
-------------------
Every participant (workers ``0..W-1`` and the coordinator, index ``W``) owns one *endpoint*.  An
endpoint sends bytes to any other index and receives, in arrival order, everything sent to it:
one inbox per participant, so a worker that waits for its neighbours' borders also sees a STOP
from the coordinator and never hangs on a peer that died.

Bounds.  The lockstep protocol bounds what is in flight: per tick an inbox receives at most one
control message and one BORDERS message per peer (workers) or one report per worker plus one exit
notice (coordinator).  Inboxes are created with :func:`capacity` slots, twice that bound plus
slack; a full inbox therefore means a protocol bug, and a sender that finds it full counts a
``full_events``, waits up to ``send_timeout`` for space (backpressure), then raises
:class:`ChannelFull` rather than buffer without limit.

Three implementations, one per backend:

* :class:`ThreadEndpoint` - a ``deque`` per inbox plus a wake-up pipe (threads share the
  process); the same wake-up as below, which stays fast on a loaded free-threaded machine.
  Runtime messages cross as the objects themselves (:attr:`Endpoint.in_memory`): no msgpack on
  either side.  That is safe because a message is never changed after it is sent: the sender
  builds every border, report and tick afresh and keeps no handle that it writes to later, and
  receivers only read them (shards copy what they absorb).  A receiver that is spinning
  (:meth:`Endpoint.recv_soon`) is not sent a wake-up byte: it will look at its deque anyway.
* :class:`InterpEndpoint` - one bounded ``_interpqueues`` queue per inbox (PEP 734) plus a
  wake-up pipe; runtime messages as :mod:`marshal` bytes, C in every interpreter, where
  msgpack falls back to pure Python.  The sender puts the bytes then writes one byte to the
  pipe; the receiver takes with ``get_nowait`` and, only when the queue is empty, blocks in
  ``poll`` on the pipe.  The stdlib's blocking ``Queue.get()`` instead polls, sleeping 10 ms
  between tries (``_delay=10 / 1000`` in ``queues.py``), which caps a lockstep loop far below
  100 Hz.
* :class:`FdEndpoint` - processes: a full mesh of ``AF_UNIX`` socket pairs, length-prefixed
  frames, non-blocking writes.  A write the kernel cannot take now is kept in a per-peer pending
  list and flushed while the endpoint waits to receive, so two workers that send each other large
  borders at the same moment cannot deadlock on full socket buffers.

``statistics()`` returns the counters of one endpoint: messages and bytes sent and received,
full events, and the largest inbox depth / pending backlog seen.

Delivery of the socket mesh is asynchronous: ``send`` returns once the frame is queued and the
remainder is written while the endpoint waits in ``recv`` (or in ``flush``/``close``).
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import selectors
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from server.runtime import messages as m
from server.runtime.errors import ChannelClosed, ChannelFull, MessageError

#: Seconds a sender waits for space in a full inbox before giving up (a full inbox is a bug).
SEND_TIMEOUT = 10.0
#: Slack added to the lockstep bound so that a burst (a STOP during a tick) never counts as full.
CAPACITY_SLACK = 8
#: Bytes read from a socket per system call: large enough for a whole border of a busy region.
READ_CHUNK = 1 << 18
_HEADER = 4  # frame length prefix, little-endian uint32
#: Complete frames a socket endpoint holds before its owner reads them.  The lockstep bounds
#: in-flight messages per participant (one per peer per tick, plus control), so more means a
#: bug or a peer that is not ours: the endpoint raises MessageError rather than buffer without
#: end.
MAX_INBOX = 4096
#: Largest frame a socket endpoint accepts (a border of a 200k-entity world is ~20 MB); a larger
#: length prefix is a corrupt stream, refused before any buffering.
MAX_FRAME_BYTES = 1 << 30


def capacity(workers: int) -> int:
    """Inbox slots for a run with ``workers`` workers (the lockstep bound x2 + slack)."""
    return 2 * (workers + 1) + CAPACITY_SLACK


@dataclass
class ChannelStats:
    """Counters of one endpoint (cumulative since it was created)."""

    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    full_events: int = 0
    max_backlog: int = 0
    max_inbox: int = 0              # most unread frames held (socket endpoints; MAX_INBOX)

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))  # every tick, in each worker's report: asdict() costs 10x


class Endpoint:
    """One participant's view of the channels.  Subclasses implement the transport."""

    #: True where :meth:`send_message` hands the message object itself to the receiver (threads
    #: of one process): nothing is encoded, so nothing checks that fields are msgpack-able, and
    #: fields keep the sender's types (lists stay lists).  Callers that promise msgpack-able,
    #: tuple-typed payloads (hook jobs and results) normalise them themselves.
    in_memory = False
    #: True where payloads arrive as msgpack decodes them (arrays as tuples); False where they
    #: keep the sender's types (objects handed over, or marshal between interpreters).
    msgpack_types = True

    def __init__(self, index: int) -> None:
        self.index = index
        self.stats = ChannelStats()

    def send(self, dst: int, data: bytes) -> None:
        """Deliver ``data`` to participant ``dst``'s inbox.

        Raises:
            ChannelFull: the inbox stayed full for :data:`SEND_TIMEOUT`.
            ChannelClosed: the destination is gone.
        """
        raise NotImplementedError

    def recv(self, timeout: float | None = None) -> bytes | None:
        """The next message for this endpoint, or None after ``timeout`` seconds.

        Raises:
            ChannelClosed: a peer's end closed (``.peer`` names it when known).
        """
        raise NotImplementedError

    def recv_soon(self, timeout: float | None, spin: float) -> bytes | None:
        """:meth:`recv` for a message expected any moment (a neighbour's borders): poll for up
        to ``spin`` seconds without sleeping, then block as :meth:`recv` does.  Spinning saves the
        kernel's wake-up (tens of microseconds on a busy machine) at the price of a core kept busy
        for at most ``spin``; only for a caller that holds no shared GIL and has a core to
        itself.  Transports without a cheap poll simply block."""
        return self.recv(timeout)

    def encode(self, msg: m.Message) -> bytes:
        """A runtime message as this transport's bytes (msgpack unless a transport says)."""
        return m.encode(msg)

    def decode(self, data: bytes) -> m.Message:
        """:meth:`encode`'s bytes -> the checked message."""
        return m.decode(data)

    def send_message(self, dst: int, msg: m.Message) -> None:
        """:meth:`send` one runtime message.  Encoded here; a transport that splits messages
        (the bus: one message per region pair) takes the object and encodes only the parts."""
        self.send(dst, self.encode(msg))

    def recv_message(self, timeout: float | None, spin: float = 0.0) -> m.Message | None:
        """The next runtime message (:meth:`recv_soon` with ``spin`` > 0, else :meth:`recv`),
        decoded; None after ``timeout`` seconds.  A transport that reassembles messages (the
        bus) hands over the object it built, not bytes to decode again."""
        data = self.recv_soon(timeout, spin) if spin > 0 else self.recv(timeout)
        return None if data is None else self.decode(data)

    def statistics(self) -> ChannelStats:
        return self.stats

    def flush(self, timeout: float) -> bool:
        """Wait until everything sent has been handed over (queue transports: at once)."""
        return True

    def close(self) -> None:
        """Release what this endpoint holds (idempotent)."""


def _closed(message: str, peer: int) -> ChannelClosed:
    exc = ChannelClosed(message)
    exc.peer = peer  # type: ignore[attr-defined]
    return exc


# ---- wake-up pipes (threads and subinterpreters) -------------------------------------------------
def _wake_pipes(participants: int) -> tuple[list[int], list[int]]:
    """One non-blocking pipe per participant: (read ends, write ends).

    Non-blocking both ways: a reader drains every pending wake byte at once, and a writer that
    finds the pipe full (64 KiB of unread wake-ups) has nothing to add.
    """
    rfds: list[int] = []
    wfds: list[int] = []
    for _ in range(participants):
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        rfds.append(r)
        wfds.append(w)
    return rfds, wfds


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class _PipeWokenEndpoint(Endpoint):
    """Messages live in a store (a deque, an interpreter queue); a pipe only wakes the reader.

    The sender stores the message, then writes one byte to the receiver's pipe.  The receiver
    takes without blocking and, only when the store is empty, sleeps in ``poll`` on its pipe.
    Every message is stored before its byte is written, so a reader that drained the pipe and
    then finds the store empty has seen every message whose byte it consumed; stray bytes cost
    one empty look.  A blocked ``read``/``poll`` is woken by the kernel: measured on the
    free-threaded build on a loaded machine it stays near 10 us per hop, where ``SimpleQueue``
    (whose lock spins and yields before parking) rose to 60 us and ``threading.Semaphore`` to
    150 us.
    """

    def __init__(self, index: int, rfds: list[int], wfds: list[int], maxsize: int) -> None:
        super().__init__(index)
        self._wfds = list(wfds)
        self._rfd = rfds[index]
        self._maxsize = maxsize
        self._poll = select.poll()  # registered once: cheaper per wait than select.select
        self._poll.register(self._rfd, select.POLLIN)

    def _store(self, dst: int, data: bytes) -> bool:
        """Store for ``dst``; False when its store is full."""
        raise NotImplementedError

    def _take(self) -> bytes | None:
        """The next stored message for this endpoint, or None."""
        raise NotImplementedError

    def send(self, dst: int, data: bytes) -> None:
        self._put(dst, data, len(data))

    def _put(self, dst: int, item: Any, size: int) -> None:
        """Store ``item`` for ``dst`` (waiting for space, see the module docstring), wake it."""
        if not self._store(dst, item):
            self.stats.full_events += 1
            deadline = time.monotonic() + SEND_TIMEOUT
            while not self._store(dst, item):  # rare by construction: a short backoff will do
                if time.monotonic() > deadline:
                    raise ChannelFull(f"inbox of participant {dst} full for {SEND_TIMEOUT} s "
                                      f"(capacity {self._maxsize})")
                time.sleep(0.0005)
        self._wake(dst)
        self.stats.messages_sent += 1
        self.stats.bytes_sent += size

    def _wake(self, dst: int) -> None:
        """Wake ``dst`` if it sleeps: one byte on its pipe."""
        try:
            os.write(self._wfds[dst], b"\x01")
        except BlockingIOError:
            pass  # pipe full of unread wake-ups: the reader wakes anyway
        except OSError as exc:
            raise _closed(f"wake-up pipe of participant {dst} closed", dst) from exc

    def _got(self, item: Any) -> Any:
        self.stats.messages_received += 1
        if isinstance(item, bytes):
            self.stats.bytes_received += len(item)
        return item

    def _spin_for(self, spin: float) -> Any:
        """Poll the store for up to ``spin`` seconds; the item, or None."""
        take = self._take
        clock = time.perf_counter
        until = clock() + spin
        while clock() < until:
            item = take()
            if item is not None:
                return self._got(item)
        return None

    def recv_soon(self, timeout: float | None, spin: float) -> bytes | None:
        data = self._spin_for(spin)
        return data if data is not None else self.recv(timeout)

    def recv(self, timeout: float | None = None) -> bytes | None:
        return self._recv_item(timeout)

    def _recv_item(self, timeout: float | None) -> Any:
        take = self._take
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            data = take()
            if data is not None:
                return self._got(data)
            left = None if deadline is None else deadline - time.monotonic()
            wait = None if left is None else max(0, math.ceil(left * 1e3))  # poll() takes ms
            if not self._poll.poll(wait):
                if left is not None and left <= 0:
                    return take()
                continue
            with contextlib.suppress(BlockingIOError):
                os.read(self._rfd, 4096)  # drain wake-ups; the store is the source of truth


# ---- threads ------------------------------------------------------------------------------------
class ThreadHub:
    """The inboxes of a threads run: one ``collections.deque`` + wake-up pipe per participant.

    ``deque.append``/``popleft`` are atomic on both builds (a per-object critical section on the
    free-threaded one).  The bound is checked on send (``len >= maxsize``); concurrent senders
    may overshoot by at most their own number, which :data:`CAPACITY_SLACK` covers.

    ``spinning[i]`` says participant ``i`` is polling its deque (:meth:`ThreadEndpoint.recv_soon`)
    and needs no wake-up byte.  It changes only under ``locks[i]``, and a sender reads it under the
    same lock *after* appending: if the sender saw True, the receiver's switch back to False
    came after that append, and the receiver looks at its deque once more before it sleeps, so
    no message is left unseen.
    """

    def __init__(self, participants: int, maxsize: int) -> None:
        self.maxsize = maxsize
        self.inboxes: list[deque[Any]] = [deque() for _ in range(participants)]
        self.rfds, self.wfds = _wake_pipes(participants)
        self.spinning = [False] * participants
        self.locks = [threading.Lock() for _ in range(participants)]

    def endpoint(self, index: int) -> ThreadEndpoint:
        return ThreadEndpoint(index, self)

    def close(self) -> None:
        _close_fds(self.rfds + self.wfds)
        self.rfds, self.wfds = [], []


class ThreadEndpoint(_PipeWokenEndpoint):
    """Threads of one process: runtime messages cross as objects (see the module docstring);
    bytes sent with :meth:`send` cross as bytes."""

    in_memory = True
    msgpack_types = False

    def __init__(self, index: int, hub: ThreadHub) -> None:
        super().__init__(index, hub.rfds, hub.wfds, hub.maxsize)
        self._hub = hub
        self._inboxes = hub.inboxes
        self._inbox = hub.inboxes[index]

    def _store(self, dst: int, data: Any) -> bool:
        box = self._inboxes[dst]
        if len(box) >= self._maxsize:
            return False
        box.append(data)
        return True

    def _take(self) -> Any:
        box = self._inbox
        depth = len(box)
        if depth > self.stats.max_backlog:
            self.stats.max_backlog = depth
        try:
            return box.popleft()
        except IndexError:
            return None

    def _wake(self, dst: int) -> None:
        hub = self._hub
        with hub.locks[dst]:
            if hub.spinning[dst]:
                return
        super()._wake(dst)

    def recv_soon(self, timeout: float | None, spin: float) -> bytes | None:
        item = self._recv_soon_item(timeout, spin)
        return m.encode(item) if isinstance(item, m.TYPES) else item

    def recv(self, timeout: float | None = None) -> bytes | None:
        item = self._recv_item(timeout)
        return m.encode(item) if isinstance(item, m.TYPES) else item

    def _recv_soon_item(self, timeout: float | None, spin: float) -> Any:
        hub, i = self._hub, self.index
        with hub.locks[i]:
            hub.spinning[i] = True
        try:
            item = self._spin_for(spin)
        finally:
            with hub.locks[i]:
                hub.spinning[i] = False
        # Senders that saw us spinning wrote no wake-up: look again before sleeping.
        return item if item is not None else self._recv_item(timeout)

    def send_message(self, dst: int, msg: m.Message) -> None:
        self._put(dst, msg, 0)

    def recv_message(self, timeout: float | None, spin: float = 0.0) -> m.Message | None:
        item = self._recv_soon_item(timeout, spin) if spin > 0 else self._recv_item(timeout)
        return m.decode(item) if isinstance(item, bytes) else item


class InterpHub:
    """The inboxes of an interpreters run: a bounded interpreter queue + a wake-up pipe each.

    Created in the main interpreter; its plain-int description (:meth:`describe`) is what a
    worker interpreter needs to build its :class:`InterpEndpoint`.
    """

    def __init__(self, participants: int, maxsize: int) -> None:
        from server.runtime import interp
        interp.require()
        self.maxsize = maxsize
        self.qids = [interp.queue_create(maxsize) for _ in range(participants)]
        # The main interpreter holds a reference to every queue until close(): a queue lives
        # while any interpreter holds one, and workers that all failed at start-up and let go
        # of theirs took the coordinator's inbox, with their FAIL messages in it, along.
        for qid in self.qids:
            interp.queue_bind(qid)
        self.rfds, self.wfds = _wake_pipes(participants)

    def describe(self) -> dict[str, Any]:
        return {"qids": self.qids, "rfds": self.rfds, "wfds": self.wfds, "maxsize": self.maxsize}

    def endpoint(self, index: int) -> InterpEndpoint:
        return InterpEndpoint(index, self.describe(), bind=False)

    def close(self) -> None:
        from server.runtime import interp
        for qid in self.qids:
            interp.queue_destroy(qid)
        _close_fds(self.rfds + self.wfds)
        self.qids, self.rfds, self.wfds = [], [], []


class InterpEndpoint(_PipeWokenEndpoint):
    """Endpoint over interpreter queues (PEP 734); usable in any interpreter of the process.

    The queue is bounded by itself (``maxsize`` at creation); the stdlib's blocking ``get()``
    would poll every 10 ms, so the wake-up pipe replaces it.  Runtime messages cross as
    :mod:`marshal` bytes (:func:`~server.runtime.messages.encode_local`): msgpack's C extension
    does not load in a subinterpreter, and its pure-Python fallback made a border cost ~1 ms.
    """

    msgpack_types = False

    def encode(self, msg: m.Message) -> bytes:
        return m.encode_local(msg)

    def decode(self, data: bytes) -> m.Message:
        return m.decode_local(data)

    def __init__(self, index: int, desc: dict[str, Any], *, bind: bool = True) -> None:
        from server.runtime import interp
        super().__init__(index, desc["rfds"], desc["wfds"], desc.get("maxsize", 0))
        self._interp = interp
        self._qids = list(desc["qids"])
        self._qid = self._qids[index]
        self._bound = bind
        if bind:  # a worker interpreter holds its own references to every queue it touches
            for qid in self._qids:
                interp.queue_bind(qid)

    def _store(self, dst: int, data: bytes) -> bool:
        try:
            self._interp.queue_put(self._qids[dst], data)
        except ChannelFull:
            return False
        return True

    def _take(self) -> bytes | None:
        return self._interp.queue_get_nowait(self._qid)

    def close(self) -> None:
        if self._bound:
            for qid in self._qids:
                self._interp.queue_release(qid)
            self._bound = False


# ---- processes -----------------------------------------------------------------------------------
def frame(data: bytes) -> bytes:
    """``data`` as one frame of the socket mesh: a little-endian uint32 length, then the bytes."""
    return len(data).to_bytes(_HEADER, "little") + data


def read_frame(sock: socket.socket) -> bytes:
    """One frame read with blocking calls (a worker process reads its spec this way, before its
    :class:`FdEndpoint` exists).

    Raises:
        ConnectionError: the peer closed the socket mid-frame.
    """
    def exact(n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(min(n - len(buf), READ_CHUNK))
            if not chunk:
                raise ConnectionError("socket closed mid-frame")
            buf += chunk
        return bytes(buf)

    return exact(int.from_bytes(exact(_HEADER), "little"))


def socket_mesh(participants: int) -> list[dict[int, socket.socket]]:
    """A full mesh of ``AF_UNIX`` stream socket pairs: ``mesh[i][j]`` is i's socket to j."""
    mesh: list[dict[int, socket.socket]] = [{} for _ in range(participants)]
    for i in range(participants):
        for j in range(i + 1, participants):
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            mesh[i][j] = a
            mesh[j][i] = b
    return mesh


class FdEndpoint(Endpoint):
    """Endpoint over a socket mesh: length-prefixed frames, non-blocking writes.

    Args:
        index: this participant.
        socks: peer index -> connected socket.
        max_pending: frames that may wait per peer for the kernel to take them; beyond it
            :meth:`send` pumps (reads and writes) until space frees or raises ChannelFull.
    """

    def __init__(self, index: int, socks: dict[int, socket.socket], *,
                 max_pending: int = 64) -> None:
        super().__init__(index)
        self._socks = dict(socks)
        self._max_pending = max_pending
        self._pending: dict[int, deque[memoryview]] = {p: deque() for p in socks}
        self._bufs: dict[int, bytearray] = {p: bytearray() for p in socks}
        self._inbox: deque[bytes] = deque()
        self._closed: set[int] = set()
        self._sel = selectors.DefaultSelector()
        for peer, sock in self._socks.items():
            sock.setblocking(False)
            self._sel.register(sock, selectors.EVENT_READ, peer)

    def _write(self, peer: int) -> None:
        """Push as much of ``peer``'s pending frames as the kernel takes now."""
        pend = self._pending[peer]
        sock = self._socks[peer]
        while pend:
            view = pend[0]
            try:
                n = sock.send(view)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                self._closed.add(peer)
                raise _closed(f"participant {peer} closed its channel: {exc}", peer) from exc
            if n < len(view):
                pend[0] = view[n:]
                break
            pend.popleft()
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if pend else 0)
        if peer not in self._closed:
            self._sel.modify(sock, events, peer)

    def send(self, dst: int, data: bytes) -> None:
        if dst in self._closed:
            raise _closed(f"participant {dst} closed its channel", dst)
        pend = self._pending[dst]
        pend.append(memoryview(frame(data)))
        self._write(dst)
        if pend:
            self.stats.full_events += 1
            self.stats.max_backlog = max(self.stats.max_backlog, len(pend))
            deadline = time.monotonic() + SEND_TIMEOUT
            while len(pend) > self._max_pending:
                if time.monotonic() > deadline:
                    raise ChannelFull(f"channel to participant {dst}: {len(pend)} frames "
                                      f"pending for {SEND_TIMEOUT} s")
                self._pump(0.05)
        self.stats.messages_sent += 1
        self.stats.bytes_sent += len(data)

    def _read(self, peer: int) -> None:
        sock = self._socks[peer]
        try:
            chunk = sock.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._closed.add(peer)
            self._sel.unregister(sock)
            return
        buf = self._bufs[peer]
        buf += chunk
        pos = 0
        end = len(buf)
        while end - pos >= _HEADER:
            n = int.from_bytes(buf[pos:pos + _HEADER], "little")
            if n > MAX_FRAME_BYTES:
                raise MessageError(f"participant {peer} sent a frame of {n} bytes "
                                   f"(limit {MAX_FRAME_BYTES}): the stream is corrupt")
            if end - pos - _HEADER < n:
                break
            if len(self._inbox) >= MAX_INBOX:
                raise MessageError(f"{MAX_INBOX} unread messages from the channels of "
                                   f"participant {self.index}: the lockstep bounds them lower")
            self._inbox.append(bytes(buf[pos + _HEADER:pos + _HEADER + n]))
            self.stats.max_inbox = max(self.stats.max_inbox, len(self._inbox))
            pos += _HEADER + n
        if pos:
            del buf[:pos]

    def _pump(self, timeout: float | None) -> bool:
        """Wait once for readable/writable sockets; True if anything happened."""
        events = self._sel.select(timeout)
        for key, mask in events:
            peer = key.data
            if mask & selectors.EVENT_WRITE:
                self._write(peer)
            if mask & selectors.EVENT_READ:
                self._read(peer)
        return bool(events)

    def recv_soon(self, timeout: float | None, spin: float) -> bytes | None:
        clock = time.perf_counter
        until = clock() + spin
        while not self._inbox and not self._closed and clock() < until:
            self._pump(0)
        return self.recv(timeout)

    def recv(self, timeout: float | None = None) -> bytes | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._inbox:
            if self._closed:  # deliver what already arrived before reporting a closed peer
                self._pump(0)
                if self._inbox:
                    break
                peer = min(self._closed)
                raise _closed(f"participant {peer} closed its channel", peer)
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._pump(wait) and deadline is not None and time.monotonic() >= deadline:
                return None
        data = self._inbox.popleft()
        self.stats.messages_received += 1
        self.stats.bytes_received += len(data)
        return data

    def flush(self, timeout: float) -> bool:
        """Pump until every pending frame is written (or ``timeout``); True when all went.

        :meth:`send` returns once a frame is queued; the rest is written while this endpoint
        waits in :meth:`recv`.  A participant about to stop receiving (a worker leaving) calls
        this so that its last messages are not lost.
        """
        deadline = time.monotonic() + timeout
        while any(self._pending[p] for p in self._pending if p not in self._closed):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._pump(remaining)
        return True

    def close(self, linger: float = 5.0) -> None:
        """Flush pending frames for up to ``linger`` seconds, then close every socket."""
        if self._socks:
            with contextlib.suppress(ChannelClosed):
                self.flush(linger)
        with contextlib.suppress(Exception):
            self._sel.close()
        for sock in self._socks.values():
            with contextlib.suppress(OSError):
                sock.close()
        self._socks.clear()

