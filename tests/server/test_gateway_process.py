"""The link between the hub and a gateway process: framing, on both ends, over a real socket
pair (the end-to-end behaviour is in test_gateways.py, on both gateway backends)."""

from __future__ import annotations

import socket
from typing import Any

from server.gateway_process import _frame, _Link, _recv_frame


def test_frames_cross_in_any_chunking() -> None:
    msgs: list[Any] = [["in", [[1, 2, 0.5, -0.25, 0, None]]], ["d", [[7, b"\x00" * 70_000]]],
                       ["re", 3, ["w", {"entity": 4, "token": "t"}]], ["st", {}]]
    wire = b"".join(_frame(m) for m in msgs)
    for size in (1, 3, 4, 5, 97, len(wire)):
        got: list[Any] = []
        link = _Link(got.append, lambda: None)
        for i in range(0, len(wire), size):
            link.data_received(wire[i:i + size])
        assert got == msgs, size
        assert not link.buf  # nothing left over


def test_the_blocking_end_reads_frames_and_the_end_of_the_stream() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(_frame(["ready", 8765]) + _frame({"index": 1, "settings": {"port": 0}}))
        a.shutdown(socket.SHUT_WR)
        assert _recv_frame(b) == ["ready", 8765]
        assert _recv_frame(b) == {"index": 1, "settings": {"port": 0}}
        assert _recv_frame(b) is None


def test_a_stream_cut_inside_a_frame_is_the_end() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(_frame(["d", [[1, b"x" * 100]]])[:50])
        a.shutdown(socket.SHUT_WR)
        assert _recv_frame(b) is None
