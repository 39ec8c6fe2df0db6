"""The runtime's message schema: what coordinator and workers say to each other, as msgpack bytes.

Sans-I/O: :func:`encode` turns a message into bytes, :func:`decode` turns bytes back into a
validated message tuple; neither knows about channels, threads or pipes.  Every message is a
msgpack array ``[VERSION, KIND, *fields]``; decoding uses ``use_list=False`` so rows, borders and
inputs come back as tuples, exactly the types the shards produce (a border decoded on the other
side of a channel is indistinguishable from one passed directly).

Messages (``c`` = coordinator, ``w`` = worker)::

    HELLO    w->c  worker, info {gil, pid, interp, cmsgpack, python}   up, first exchange done
    TICK     c->w  tick, inputs [InputRow...], view, jobs [...]          one lockstep tick
    BORDERS  w->w  tick, src worker, [(src region, dst region, Border)...]  one per peer per tick
    DONE     w->c  worker, tick, report {...}, hook results [...]       tick finished
    ROWS     c->w  -                                                    ask for owned rows
    ROWS_OK  w->c  worker, rows                                         the answer
    FAIL     w->c  worker, kind, traceback                              unrecoverable worker error
    STOP     c->w  -                                                    leave the loop
    EXITED   *->c  worker, detail                                       posted when a worker ends
    PING     any   payload                                              channel benchmark
"""

from __future__ import annotations

from typing import Any

import msgpack

from server.runtime.errors import ProtocolError

#: Bumped whenever a field changes meaning; a worker of another version is rejected, not guessed.
VERSION = 1

HELLO, TICK, BORDERS, DONE, ROWS, ROWS_OK, FAIL, STOP, EXITED, PING = range(10)
NAMES = ("HELLO", "TICK", "BORDERS", "DONE", "ROWS", "ROWS_OK", "FAIL", "STOP", "EXITED", "PING")
#: Number of fields after ``[VERSION, KIND]`` for each kind.
ARITY = (2, 4, 3, 4, 0, 2, 3, 0, 2, 1)

Message = tuple[Any, ...]


def encode(kind: int, *fields: Any) -> bytes:
    """Pack one message.

    Raises:
        ProtocolError: unknown kind, wrong number of fields, or a field msgpack cannot encode
            (a bug on our side: every field is built from plain values).
    """
    if not 0 <= kind < len(ARITY) or len(fields) != ARITY[kind]:
        raise ProtocolError(f"cannot encode kind {kind} with {len(fields)} fields")
    try:
        return msgpack.packb((VERSION, kind, *fields), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"{NAMES[kind]} message is not msgpack-encodable: {exc}") from exc


def decode(data: bytes) -> Message:
    """Unpack and check one message; returns ``(kind, *fields)``.

    Raises:
        ProtocolError: not msgpack, not an array, another schema version, unknown kind or arity.
    """
    try:
        obj = msgpack.unpackb(data, use_list=False, raw=False, strict_map_key=False)
    # TypeError: a map with an unhashable key (found by the fuzz test); the rest: bad bytes.
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"undecodable runtime message ({len(data)} bytes): {exc}") from exc
    if not isinstance(obj, tuple) or len(obj) < 2:
        raise ProtocolError(f"a runtime message is an array [version, kind, ...], got {obj!r:.60}")
    if obj[0] != VERSION:
        raise ProtocolError(f"runtime message version {obj[0]!r}, this code reads {VERSION}")
    kind = obj[1]
    if not isinstance(kind, int) or not 0 <= kind < len(ARITY):
        raise ProtocolError(f"unknown runtime message kind {kind!r}")
    if len(obj) - 2 != ARITY[kind]:
        raise ProtocolError(f"{NAMES[kind]} has {ARITY[kind]} fields, got {len(obj) - 2}")
    return obj[1:]


def cmsgpack() -> bool:
    """Whether msgpack's C extension is loaded here.

    In a subinterpreter msgpack's single-phase-init extension refuses to load and msgpack falls
    back, silently, to its pure-Python implementation (several times slower); workers report this
    so that a slow interpreters run is explained, not guessed at.
    """
    try:
        from msgpack import _cmsgpack  # noqa: F401
    except ImportError:
        return False
    return msgpack.Packer.__module__ != "msgpack.fallback"
