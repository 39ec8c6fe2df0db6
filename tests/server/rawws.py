"""A hostile websocket client on a raw socket: no project code, no websocket library.

It speaks just enough RFC 6455 to attack a server the way a script would: a real opening
handshake, then masked frames of any opcode written as fast as the socket takes them, with or
without reading what comes back.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """One masked client frame (RFC 6455 section 5.2)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def connect(port: int, *, subprotocol: str | None = "paratick.msgpack.v1",
            source: str | None = None, rcvbuf: int | None = None,
            timeout: float = 5.0) -> socket.socket:
    """A raw socket with the websocket handshake done (raises if the server refuses it).

    Args:
        port: the server's port on 127.0.0.1.
        subprotocol: offered in Sec-WebSocket-Protocol (None: offer none).
        source: local address to connect from (another loopback address looks like another
            machine to per-address limits).
        rcvbuf: SO_RCVBUF to set before connecting (a small one makes an unread socket fill
            the server's buffers sooner).
        timeout: socket timeout for the handshake.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source is not None:
        s.bind((source, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    proto = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
    s.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n{proto}\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("server closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    return s


class Reader:
    """Parses the server's frames from the bytes read so far; remembers pongs and the close."""

    def __init__(self) -> None:
        self.buf = b""
        self.pongs = 0
        self.close: int | None = None   # the close code, once the close frame arrived

    def feed(self, data: bytes) -> None:
        buf = self.buf + data
        while len(buf) >= 2:
            op, n = buf[0] & 0x0F, buf[1] & 0x7F
            at = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, at = struct.unpack("!H", buf[2:4])[0], 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, at = struct.unpack("!Q", buf[2:10])[0], 10
            if len(buf) < at + n:
                break
            payload, buf = buf[at:at + n], buf[at + n:]
            if op == OP_PONG:
                self.pongs += 1
            elif op == OP_CLOSE and self.close is None:
                self.close = int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 \
                    else 1005
        self.buf = buf


def flood(s: socket.socket, data: bytes, *, seconds: float, read: Reader | None = None,
          limit_bytes: int = 64 << 20) -> tuple[int, bool]:
    """Write ``data`` over and over for ``seconds`` (bounded by ``limit_bytes``).

    Args:
        read: also read what the server sends, between writes, into this reader.

    Returns:
        (bytes written, whether the server closed or reset the connection).
    """
    s.setblocking(False)
    sent = 0
    deadline = time.monotonic() + seconds
    closed = False
    view = memoryview(data)
    while time.monotonic() < deadline and sent < limit_bytes and not closed:
        try:
            sent += s.send(view)
        except BlockingIOError:
            time.sleep(0.001)
        except OSError:
            closed = True
        if read is not None:
            try:
                got = s.recv(1 << 16)
                if got == b"":
                    closed = True
                read.feed(got)
            except BlockingIOError:
                pass
            except OSError:
                closed = True
    return sent, closed


def close_code(s: socket.socket, timeout: float = 5.0, reader: Reader | None = None) -> int | None:
    """Read until the server's close frame or EOF; returns the close code (None: no close
    frame, e.g. the connection was reset or aborted)."""
    r = reader or Reader()
    s.setblocking(True)
    s.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while r.close is None and time.monotonic() < deadline:
        try:
            chunk = s.recv(1 << 16)
        except (TimeoutError, OSError):
            break
        if not chunk:
            break
        r.feed(chunk)
    return r.close
