"""The runtime's message schema: what coordinator and workers say to each other, as msgpack bytes.

Sans-I/O: :func:`encode` turns a message into bytes, :func:`decode` turns bytes back into a
validated, typed message; neither knows about channels, threads or pipes.  Each message is a
frozen dataclass whose class names its kind; on the wire it is a msgpack array
``[VERSION, KIND, *fields]`` (the fields in declaration order, the same bytes as before the
messages were typed).  Decoding uses ``use_list=False`` so rows, borders and inputs come back as
tuples, exactly the types the shards produce (a border decoded on the other side of a channel is
indistinguishable from one passed directly).

Messages (``c`` = coordinator, ``w`` = worker)::

    Hello    w->c  worker, info {gil, pid, interp, cmsgpack, python}   up, first exchange done
    Tick     c->w  tick, inputs [InputRow...], view, jobs [...]          one lockstep tick
    Borders  w->w  tick, src worker, [(src region, dst region, Border)...]  one per peer per tick
    Done     w->c  worker, tick, report {...}, hook results [...]       tick finished
    Rows     c->w  -                                                    ask for owned rows
    RowsOk   w->c  worker, rows                                         the answer
    Fail     w->c  worker, error (exception name), traceback            unrecoverable worker error
    Stop     c->w  -                                                    leave the loop
    Exited   *->c  worker, detail                                       posted when a worker ends
    Ping     any   payload                                              channel benchmark
"""

from __future__ import annotations

import marshal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import msgpack

from server.runtime.errors import MessageError

#: Bumped whenever a field changes meaning; a worker of another version is rejected, not guessed.
VERSION = 1


@dataclass(frozen=True, slots=True)
class Hello:
    worker: int
    info: Mapping[str, Any]
    KIND: ClassVar[int] = 0


@dataclass(frozen=True, slots=True)
class Tick:
    tick: int
    inputs: Sequence[Any]
    view: bool
    jobs: Sequence[Any]
    KIND: ClassVar[int] = 1


@dataclass(frozen=True, slots=True)
class Borders:
    tick: int
    src: int
    borders: Sequence[Any]
    KIND: ClassVar[int] = 2


@dataclass(frozen=True, slots=True)
class Done:
    worker: int
    tick: int
    report: Any
    results: Sequence[Any]
    KIND: ClassVar[int] = 3


@dataclass(frozen=True, slots=True)
class Rows:
    KIND: ClassVar[int] = 4


@dataclass(frozen=True, slots=True)
class RowsOk:
    worker: int
    rows: Sequence[Any]
    KIND: ClassVar[int] = 5


@dataclass(frozen=True, slots=True)
class Fail:
    worker: int
    error: str
    traceback: str
    KIND: ClassVar[int] = 6


@dataclass(frozen=True, slots=True)
class Stop:
    KIND: ClassVar[int] = 7


@dataclass(frozen=True, slots=True)
class Exited:
    worker: int
    detail: str
    KIND: ClassVar[int] = 8


@dataclass(frozen=True, slots=True)
class Ping:
    payload: Any
    KIND: ClassVar[int] = 9


Message = Hello | Tick | Borders | Done | Rows | RowsOk | Fail | Stop | Exited | Ping
#: The message classes by kind number (the wire's second element).
TYPES: tuple[type[Message], ...] = (Hello, Tick, Borders, Done, Rows, RowsOk, Fail, Stop,
                                    Exited, Ping)
#: Field names of each kind, in wire order.
FIELDS: tuple[tuple[str, ...], ...] = tuple(tuple(f.name for f in fields(t)) for t in TYPES)
assert all(i == t.KIND for i, t in enumerate(TYPES))


def name(kind: int | type[Message] | Message) -> str:
    """A kind's name for messages: ``Tick``, ``Borders``..."""
    if isinstance(kind, int):
        return TYPES[kind].__name__ if 0 <= kind < len(TYPES) else f"kind {kind}"
    return kind.__name__ if isinstance(kind, type) else type(kind).__name__


def encode(msg: Message) -> bytes:
    """Pack one message.

    Raises:
        MessageError: a field msgpack cannot encode (a bug on our side: every field is built
            from plain values).
    """
    try:
        return msgpack.packb((VERSION, msg.KIND, *(getattr(msg, f) for f in FIELDS[msg.KIND])),
                             use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise MessageError(f"{name(msg)} message is not msgpack-encodable: {exc}") from exc


def decode(data: bytes) -> Message:
    """Unpack and check one message.

    Raises:
        MessageError: not msgpack, not an array, another schema version, unknown kind or arity.
    """
    try:
        obj = msgpack.unpackb(data, use_list=False, raw=False, strict_map_key=False)
    # TypeError: a map with an unhashable key (found by the fuzz test); the rest: bad bytes.
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        raise MessageError(f"undecodable runtime message ({len(data)} bytes): {exc}") from exc
    return _message(obj)


def encode_local(msg: Message) -> bytes:
    """Pack one message for another interpreter of this process: :mod:`marshal`, not msgpack.

    In a subinterpreter msgpack runs its pure-Python fallback (:func:`cmsgpack`), about 50x
    slower than marshal, which is C everywhere: a 6 kB border took ~1 ms to encode and decode
    there.  marshal's format belongs to this Python version and its loader trusts its input,
    so it is only for bytes that never leave the process (the interpreter queues); everything
    else speaks msgpack.  Fields keep the sender's types (lists stay lists).

    Raises:
        MessageError: a field marshal cannot encode.
    """
    try:
        return marshal.dumps((VERSION, msg.KIND, *(getattr(msg, f) for f in FIELDS[msg.KIND])))
    except ValueError as exc:
        raise MessageError(f"{name(msg)} message cannot cross interpreters: {exc}") from exc


def decode_local(data: bytes) -> Message:
    """:func:`encode_local`'s bytes -> the checked message (same checks as :func:`decode`).

    Raises:
        MessageError: not marshal data of a runtime message.
    """
    try:
        obj = marshal.loads(data)
    except (ValueError, EOFError, TypeError) as exc:
        raise MessageError(f"undecodable runtime message ({len(data)} bytes): {exc}") from exc
    return _message(obj)


def _message(obj: Any) -> Message:
    """A decoded ``[VERSION, KIND, *fields]`` array -> its message, checked."""
    if not isinstance(obj, tuple) or len(obj) < 2:
        raise MessageError(f"a runtime message is an array [version, kind, ...], got {obj!r:.60}")
    if obj[0] != VERSION:
        raise MessageError(f"runtime message version {obj[0]!r}, this code reads {VERSION}")
    kind = obj[1]
    if not isinstance(kind, int) or isinstance(kind, bool) or not 0 <= kind < len(TYPES):
        raise MessageError(f"unknown runtime message kind {kind!r}")
    if len(obj) - 2 != len(FIELDS[kind]):
        raise MessageError(f"{name(kind)} has {len(FIELDS[kind])} fields, got {len(obj) - 2}")
    return TYPES[kind](*obj[2:])


def as_sent(payload: Any) -> Any:
    """``payload`` as it arrives over a msgpack channel: encoded and decoded (tuples for
    arrays).  Hook jobs and results get this shape on every backend, also where messages keep
    the sender's types (:attr:`server.runtime.channels.Endpoint.msgpack_types`), and one that
    msgpack cannot encode fails on every backend.

    Raises:
        MessageError: msgpack cannot encode ``payload``.
    """
    if not payload:
        return payload
    try:
        data = msgpack.packb(payload, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise MessageError(f"not msgpack-encodable: {exc}") from exc
    return msgpack.unpackb(data, use_list=False, raw=False, strict_map_key=False)


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
