"""Subinterpreters and cross-interpreter queues behind one small adapter (PEP 734).

PEP 734 made multiple interpreters public as :mod:`concurrent.interpreters` in Python 3.14.  On
3.13 the same machinery exists as the private modules ``_interpreters`` (create / exec / destroy)
and ``_interpqueues`` (queues whose items cross interpreters); this module is the only place that
touches them, so the rest of the runtime sees four functions and a queue id.

Only *shareable* objects cross: ``bytes``, ``str``, ``int``, ``None``.  The runtime therefore
moves msgpack bytes, and boots a worker by binding a few bytes/str/int into the new interpreter's
``__main__`` and executing a short script that imports :mod:`server.runtime.worker`.

Why no blocking ``get``: the queue's blocking ``get()`` (``test.support.interpreters.queues`` on
3.13, ``concurrent.interpreters.Queue.get`` on 3.14) polls: it retries ``get_nowait`` and sleeps
``_delay=10 / 1000`` between tries, so a lockstep tick built on it waits ~10 ms per hop.  The
channels use :func:`queue_get_nowait` plus a wake-up pipe instead (see
:mod:`server.runtime.channels`).
"""

from __future__ import annotations

import contextlib
import importlib
import queue
import sys
import time
from typing import Any

from server.runtime.errors import BackendUnavailable, ChannelClosed, ChannelFull

_interpreters: Any = None
_queues: Any = None
try:  # 3.13: private modules; 3.14+: still present underneath concurrent.interpreters
    _interpreters = importlib.import_module("_interpreters")
    _queues = importlib.import_module("_interpqueues")
except ImportError:  # pragma: no cover - depends on the build
    _interpreters = _queues = None

_NEW_API = sys.version_info >= (3, 14)
#: ``fmt`` value meaning "shareable objects only" (no pickling) in the 3.13 queue API.
_FMT_SHARED = 0
#: ``unboundop`` flag: drop an item whose sending interpreter was destroyed (``UNBOUND_REMOVE``
#: in ``_crossinterp``: 1 on 3.13 and 3.14).
_UNBOUND_REMOVE = 1
#: 3.14 ``fallback`` flag: 0 = shareable objects only, never pickle (bytes are shareable).
_FALLBACK_SHARED = 0


def _ensure_queue_errors() -> None:
    """Give 3.13's ``_interpqueues`` its QueueEmpty/QueueFull classes without the test suite.

    On 3.13 the C module gets those classes from a high-level module that registers them: the
    first empty ``get`` imports ``interpreters.queues`` or else
    ``test.support.interpreters.queues``.
    Distributions often ship Python without ``test`` (Debian's libpython3.13-testsuite, slim
    containers); there every empty ``get`` raised ModuleNotFoundError and the interpreters
    backend could not run.  When that module is missing, register same-named classes (with
    the same bases) ourselves, once per interpreter.  3.14 keeps them in the stdlib
    (``concurrent.interpreters._queues``), so nothing is needed there.
    """
    if _queues is None or _NEW_API:
        return
    try:
        importlib.import_module("test.support.interpreters.queues")
        return
    except ImportError:
        pass

    class QueueEmpty(_queues.QueueError, queue.Empty):
        """Raised by ``_interpqueues.get`` on an empty queue."""

    class QueueFull(_queues.QueueError, queue.Full):
        """Raised by ``_interpqueues.put`` on a full queue."""

    class Queue:
        """Registered as the queue type only; this runtime passes queue ids, never objects."""

    with contextlib.suppress(Exception):  # already registered in this interpreter
        _queues._register_heap_types(Queue, QueueEmpty, QueueFull)


_ensure_queue_errors()


def available() -> bool:
    """Whether this interpreter can create subinterpreters with queues."""
    return _interpreters is not None and _queues is not None


def require() -> None:
    """Raise :class:`BackendUnavailable` if subinterpreters are missing."""
    if not available():
        raise BackendUnavailable(
            f"subinterpreters are not available on {sys.implementation.name} "
            f"{sys.version.split()[0]} (need _interpreters/_interpqueues, PEP 734)")


# ---- interpreters --------------------------------------------------------------------------------
#: Tries at creating one interpreter (see :func:`create`).
CREATE_TRIES = 3


def create() -> int:
    """A new isolated interpreter (its own GIL); returns its id.

    CPython 3.13 sometimes fails to create an interpreter while another interpreter of the
    process starts or finishes ("Failed to import encodings module": a race on the static
    types that interpreters share, python/cpython#127108 and #129824).  The failure is clean,
    so a failed creation is tried again, up to :data:`CREATE_TRIES` times in all.
    """
    require()
    for attempt in range(1, CREATE_TRIES):
        try:
            return int(_interpreters.create())
        except _interpreters.InterpreterError:
            time.sleep(0.01 * attempt)
    return int(_interpreters.create())  # the last try: its failure is the caller's


def bind_main(interp: int, attrs: dict[str, Any]) -> None:
    """Bind shareable values (bytes/str/int) as globals of the interpreter's ``__main__``."""
    _interpreters.set___main___attrs(interp, attrs, restrict=True)


def run(interp: int, code: str) -> str | None:
    """Execute ``code`` in the interpreter (blocks this thread); the error display or None."""
    excinfo = _interpreters.exec(interp, code, restrict=True)
    if excinfo is None:
        return None
    return str(getattr(excinfo, "formatted", None) or getattr(excinfo, "errdisplay", excinfo))


def destroy(interp: int) -> None:
    """Finalise the interpreter; ignores one that is already gone."""
    with contextlib.suppress(Exception):  # InterpreterNotFoundError or still running at shutdown
        _interpreters.destroy(interp, restrict=True)


def current_id() -> int:
    """Id of the running interpreter (0 = main); -1 where subinterpreters do not exist."""
    if _interpreters is None:
        return -1
    return int(_interpreters.get_current()[0])


# ---- queues --------------------------------------------------------------------------------------
def queue_create(maxsize: int) -> int:
    """A bounded cross-interpreter queue of bytes; returns its id (the caller holds a ref)."""
    require()
    if _NEW_API:  # pragma: no cover - 3.14 signature: (maxsize, unboundop, fallback)
        return int(_queues.create(maxsize, _UNBOUND_REMOVE, _FALLBACK_SHARED))
    return int(_queues.create(maxsize, _FMT_SHARED, _UNBOUND_REMOVE))


def queue_bind(qid: int) -> None:
    """Take a reference from this interpreter (the queue lives while any holds one)."""
    _queues.bind(qid)


def queue_release(qid: int) -> None:
    with contextlib.suppress(Exception):  # QueueNotFoundError: already destroyed by the owner
        _queues.release(qid)


def queue_destroy(qid: int) -> None:
    with contextlib.suppress(Exception):  # QueueNotFoundError
        _queues.destroy(qid)


def queue_put(qid: int, data: bytes) -> None:
    """Append without blocking.

    Raises:
        ChannelFull: the queue is at its maxsize.
        ChannelClosed: the queue was destroyed.
    """
    try:
        if _NEW_API:  # pragma: no cover
            _queues.put(qid, data, _UNBOUND_REMOVE, _FALLBACK_SHARED)
        else:
            _queues.put(qid, data, _FMT_SHARED, _UNBOUND_REMOVE)
    except queue.Full as exc:  # QueueFull subclasses queue.Full
        raise ChannelFull(f"interpreter queue {qid} is full") from exc
    except _queues.QueueError as exc:
        if _named(exc, "QueueFull"):
            raise ChannelFull(f"interpreter queue {qid} is full") from exc
        raise ChannelClosed(f"interpreter queue {qid}: {exc}") from exc


def queue_get_nowait(qid: int) -> bytes | None:
    """The next item, or None when empty.

    Raises:
        ChannelClosed: the queue was destroyed.
    """
    try:
        item = _queues.get(qid)
    except queue.Empty:  # QueueEmpty subclasses queue.Empty
        return None
    except _queues.QueueError as exc:
        if _named(exc, "QueueEmpty"):
            return None
        raise ChannelClosed(f"interpreter queue {qid}: {exc}") from exc
    obj = item[0]
    if obj is None:  # an item whose sender was destroyed (unbound): skip it
        return queue_get_nowait(qid)
    return bytes(obj)


def _named(exc: BaseException, name: str) -> bool:
    """``_interpqueues`` raises the stdlib's QueueEmpty/QueueFull, which also subclass
    ``queue.Empty``/``queue.Full``, once ``test.support.interpreters.queues`` (3.13) or
    ``concurrent.interpreters._queues`` (3.14) registered them; a build without that module
    raises a plain QueueError subclass, recognised here by name."""
    return any(cls.__name__ == name for cls in type(exc).__mro__)
