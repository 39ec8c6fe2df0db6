"""Reading a snapshot's header without decoding the snapshot: the lean bots' fast path.

A bot that only measures (input->ack latency, snapshot rate, bytes) needs three numbers from a
snapshot: its tick, the newest input it acknowledges and its delta base.  The server writes them
first, always in the same order (:meth:`server.protocol.MsgpackCodec.dumps_snapshot`)::

    86 a1 't' a8 'snapshot' a4 'tick' <int> a3 'ack' <int> a4 'base' <nil|int> a4 'ents' ...

so :func:`snapshot_head` reads them at fixed offsets with a handful of byte comparisons: no
objects for the entities, no validation.  Anything else (a welcome, an error, a bye, a frame from
another server) returns None and takes the full, validating decode.  The bots that *validate*
(a sample of the fleet) decode and apply every snapshot as before and count every failure.
"""

from __future__ import annotations

_PREFIX = b"\x86\xa1t\xa8snapshot\xa4tick"
_ACK = b"\xa3ack"
_BASE = b"\xa4base"
_N = len(_PREFIX)


def _int(data: bytes, i: int) -> tuple[int, int] | None:
    """The msgpack integer at ``data[i]`` and the offset after it (None: not an integer)."""
    b = data[i]
    if b < 0x80:
        return b, i + 1
    if b >= 0xE0:
        return b - 0x100, i + 1
    if 0xCC <= b <= 0xCF:
        n = 1 << (b - 0xCC)
        return int.from_bytes(data[i + 1:i + 1 + n], "big"), i + 1 + n
    if 0xD0 <= b <= 0xD3:
        n = 1 << (b - 0xD0)
        return int.from_bytes(data[i + 1:i + 1 + n], "big", signed=True), i + 1 + n
    return None


def snapshot_head(data: bytes | str) -> tuple[int, int, int | None] | None:
    """(tick, ack, base) of a msgpack snapshot frame, or None when ``data`` is not one."""
    if not isinstance(data, bytes) or not data.startswith(_PREFIX) or len(data) < _N + 16:
        return None
    try:
        got = _int(data, _N)
        if got is None:
            return None
        tick, i = got
        if data[i:i + 4] != _ACK:
            return None
        got = _int(data, i + 4)
        if got is None:
            return None
        ack, i = got
        if data[i:i + 5] != _BASE:
            return None
        i += 5
        if data[i] == 0xC0:
            return tick, ack, None
        got = _int(data, i)
        return None if got is None else (tick, ack, got[0])
    except IndexError:
        return None
