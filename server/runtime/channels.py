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

* :class:`ThreadEndpoint` - ``queue.SimpleQueue`` inboxes bounded on send (threads share the
  process).
* :class:`InterpEndpoint` - one bounded ``_interpqueues`` queue per inbox (PEP 734) plus a
  wake-up pipe: the sender puts the bytes then writes one byte to the pipe; the receiver takes
  with ``get_nowait`` and, only when the queue is empty, blocks in ``select`` on the pipe.  The
  stdlib's blocking ``Queue.get()`` instead polls, sleeping 10 ms between tries
  (``_delay=10 / 1000`` in ``queues.py``), which caps a lockstep loop far below 100 Hz.
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
import queue
import select
import selectors
import socket
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from server.runtime.errors import ChannelClosed, ChannelFull

#: Seconds a sender waits for space in a full inbox before giving up (a full inbox is a bug).
SEND_TIMEOUT = 10.0
#: Slack added to the lockstep bound so that a burst (a STOP during a tick) never counts as full.
CAPACITY_SLACK = 8
#: Bytes read from a socket per system call: large enough for a whole border of a busy region.
READ_CHUNK = 1 << 18
_HEADER = 4  # frame length prefix, little-endian uint32


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

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class Endpoint:
    """One participant's view of the channels.  Subclasses implement the transport."""

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


# ---- threads ------------------------------------------------------------------------------------
class ThreadHub:
    """The inboxes of a threads run: one ``queue.SimpleQueue`` per participant, bounded on send.

    ``SimpleQueue`` (a C deque and one lock) hands a message to a blocked reader about twice as
    fast as ``queue.Queue`` (Python ``Condition`` objects), on both builds.  It has no maxsize, so
    :meth:`ThreadEndpoint.send` enforces ``maxsize`` itself by checking the depth first;
    concurrent senders may overshoot by at most their own number, which the slack covers.
    """

    def __init__(self, participants: int, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queues: list[queue.SimpleQueue[bytes]] = [queue.SimpleQueue()
                                                       for _ in range(participants)]

    def endpoint(self, index: int) -> ThreadEndpoint:
        return ThreadEndpoint(index, self.queues, self.maxsize)


class ThreadEndpoint(Endpoint):
    def __init__(self, index: int, queues: list[queue.SimpleQueue[bytes]], maxsize: int) -> None:
        super().__init__(index)
        self._queues = queues
        self._inbox = queues[index]
        self._maxsize = maxsize

    def send(self, dst: int, data: bytes) -> None:
        q = self._queues[dst]
        if q.qsize() >= self._maxsize:
            self.stats.full_events += 1
            deadline = time.monotonic() + SEND_TIMEOUT
            while q.qsize() >= self._maxsize:  # rare by construction: a short backoff will do
                if time.monotonic() > deadline:
                    raise ChannelFull(f"inbox of participant {dst} full for {SEND_TIMEOUT} s "
                                      f"(capacity {self._maxsize})")
                time.sleep(0.0005)
        q.put(data)
        self.stats.messages_sent += 1
        self.stats.bytes_sent += len(data)

    def recv(self, timeout: float | None = None) -> bytes | None:
        inbox = self._inbox
        depth = inbox.qsize()
        if depth > self.stats.max_backlog:
            self.stats.max_backlog = depth
        try:
            data = inbox.get(timeout=timeout) if timeout is None or timeout > 0 \
                else inbox.get_nowait()
        except queue.Empty:
            return None
        self.stats.messages_received += 1
        self.stats.bytes_received += len(data)
        return data


# ---- subinterpreters -----------------------------------------------------------------------------
class InterpHub:
    """The inboxes of an interpreters run: a bounded interpreter queue + a wake-up pipe each.

    Created in the main interpreter; its plain-int description (:meth:`describe`) is what a
    worker interpreter needs to build its :class:`InterpEndpoint`.
    """

    def __init__(self, participants: int, maxsize: int) -> None:
        from server.runtime import interp
        interp.require()
        self.qids = [interp.queue_create(maxsize) for _ in range(participants)]
        self.rfds: list[int] = []
        self.wfds: list[int] = []
        for _ in range(participants):
            r, w = os.pipe()
            # Non-blocking both ways: a reader drains all pending wake bytes at once, and a
            # writer that finds the pipe full (64 KiB of unread wake-ups) has nothing to add.
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            self.rfds.append(r)
            self.wfds.append(w)

    def describe(self) -> dict[str, list[int]]:
        return {"qids": self.qids, "rfds": self.rfds, "wfds": self.wfds}

    def endpoint(self, index: int) -> InterpEndpoint:
        return InterpEndpoint(index, self.describe(), bind=False)

    def close(self) -> None:
        from server.runtime import interp
        for qid in self.qids:
            interp.queue_destroy(qid)
        for fd in self.rfds + self.wfds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.qids, self.rfds, self.wfds = [], [], []


class InterpEndpoint(Endpoint):
    """Endpoint over interpreter queues; usable in any interpreter of the process."""

    def __init__(self, index: int, desc: dict[str, list[int]], *, bind: bool = True) -> None:
        from server.runtime import interp
        super().__init__(index)
        self._interp = interp
        self._qids = list(desc["qids"])
        self._wfds = list(desc["wfds"])
        self._qid = self._qids[index]
        self._rfd = desc["rfds"][index]
        self._poll = select.poll()  # registered once: cheaper per wait than select.select
        self._poll.register(self._rfd, select.POLLIN)
        self._bound = bind
        if bind:  # a worker interpreter holds its own references to every queue it touches
            for qid in self._qids:
                interp.queue_bind(qid)

    def send(self, dst: int, data: bytes) -> None:
        qid = self._qids[dst]
        put = self._interp.queue_put
        try:
            put(qid, data)
        except ChannelFull:
            self.stats.full_events += 1
            deadline = time.monotonic() + SEND_TIMEOUT
            while True:  # rare by construction (see module doc): a short backoff is enough
                time.sleep(0.0005)
                try:
                    put(qid, data)
                    break
                except ChannelFull:
                    if time.monotonic() > deadline:
                        raise
        try:
            os.write(self._wfds[dst], b"\x01")
        except BlockingIOError:
            pass  # pipe full of unread wake-ups: the reader wakes anyway
        except OSError as exc:
            raise _closed(f"wake-up pipe of participant {dst} closed", dst) from exc
        self.stats.messages_sent += 1
        self.stats.bytes_sent += len(data)

    def recv(self, timeout: float | None = None) -> bytes | None:
        get = self._interp.queue_get_nowait
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            data = get(self._qid)
            if data is not None:
                self.stats.messages_received += 1
                self.stats.bytes_received += len(data)
                return data
            left = None if deadline is None else deadline - time.monotonic()
            wait = None if left is None else max(0, math.ceil(left * 1e3))  # poll() takes ms
            if not self._poll.poll(wait):
                if get(self._qid) is None:
                    return None
                continue
            with contextlib.suppress(BlockingIOError):
                os.read(self._rfd, 4096)  # drain wake-ups; the queue is the source of truth

    def close(self) -> None:
        if self._bound:
            for qid in self._qids:
                self._interp.queue_release(qid)
            self._bound = False


# ---- processes -----------------------------------------------------------------------------------
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
        frame = len(data).to_bytes(_HEADER, "little") + data
        pend.append(memoryview(frame))
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
            if end - pos - _HEADER < n:
                break
            self._inbox.append(bytes(buf[pos + _HEADER:pos + _HEADER + n]))
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

    def pending(self) -> int:
        """Frames accepted by :meth:`send` that the kernel has not taken yet."""
        return sum(len(p) for p in self._pending.values())

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


def describe_stats(stats: ChannelStats) -> dict[str, Any]:
    """JSON-ready counters."""
    return stats.to_dict()
