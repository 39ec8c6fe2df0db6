"""Which event loop serves the clients: asyncio's own or uvloop's.

Most of what a busy server spends per message outside its own rules is the event loop's: the
selector, the socket transports' reads and writes, the callbacks' bookkeeping.  `uvloop
<https://github.com/MagicStack/uvloop>`_ does those in C on libuv (the server's Python callbacks
stay the same), and took 11-12 % off the server's CPU per bot-second at 400 bots (GIL build,
inline ticking, one loop or two gateway processes; ``bench load`` on this project's 2-core VM,
bench/results/2026-12-06-vm-intel-uvloop).  It publishes wheels for the GIL build
only, so ``auto`` means uvloop where it installs and asyncio's loop elsewhere (the free-threaded
build); ``/stats`` says which loop ran.

Every loop that serves clients is made here (:func:`new_loop`, :func:`run`): the main loop of
``paratick serve``, each gateway thread's, each gateway process's, and the test harness's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

#: Accepted names (:attr:`server.settings.ServerSettings.loop`).
LOOPS = ("auto", "asyncio", "uvloop")


def _uvloop() -> Any:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


def available() -> tuple[str, ...]:
    """The loops this interpreter can run."""
    return ("asyncio", "uvloop") if _uvloop() is not None else ("asyncio",)


def resolve(name: str) -> str:
    """The loop ``name`` stands for here: ``auto`` is uvloop where it installs, else asyncio.

    Raises:
        ValueError: not one of :data:`LOOPS`, or ``uvloop`` where it does not install.
    """
    if name not in LOOPS:
        raise ValueError(f"loop must be one of {', '.join(LOOPS)}, got {name!r}")
    if name == "auto":
        return available()[-1]
    if name == "uvloop" and _uvloop() is None:
        raise ValueError("uvloop does not install on this interpreter (it has wheels for "
                              "GIL builds only); use --loop asyncio")
    return name


def factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A function making new event loops of kind ``name`` (see :func:`resolve`)."""
    if resolve(name) == "uvloop":
        new_event_loop: Callable[[], asyncio.AbstractEventLoop] = _uvloop().new_event_loop
        return new_event_loop
    return asyncio.new_event_loop


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    """A new event loop of kind ``name``."""
    return factory(name)()


def run[T](main: Coroutine[Any, Any, T], name: str) -> T:
    """``asyncio.run(main)`` on a loop of kind ``name``."""
    return asyncio.run(main, loop_factory=factory(name))


def running() -> str:
    """The kind of the running event loop (``uvloop`` or ``asyncio``)."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") \
        else "asyncio"
