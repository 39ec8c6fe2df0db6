"""The machine and interpreter this process runs on: one probe for every command and worker.

``paratick info``, ``paratick sim``/``run``, each runtime worker (threads, subinterpreters and
processes alike: standard library only), the benchmarks and the demo ask here, so "is the GIL
on" has one answer everywhere.  The *build* (``Py_GIL_DISABLED``) and the GIL's *state* are
different questions: a free-threaded build turns the GIL back on when it imports an extension
that does not declare free-threading support, or when ``PYTHON_GIL=1`` is set (PEP 703).
``scripts/toolchain.py`` keeps its own copy on purpose: it runs under any python3 before a
paratick venv exists.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import sys
import sysconfig
import threading
from collections.abc import Callable, Iterable
from typing import Any

#: The C extensions paratick loads.  Either could re-enable the GIL on a free-threaded build
#: when imported, so :func:`import_extensions` loads them before anyone reports the GIL state.
EXTENSIONS = ("msgpack", "numpy")


def free_threaded() -> bool:
    """Whether this interpreter is a free-threaded build (``Py_GIL_DISABLED=1``)."""
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def gil_enabled() -> bool:
    """Whether the GIL is enabled *now* (True on builds without ``sys._is_gil_enabled``)."""
    fn = getattr(sys, "_is_gil_enabled", None)
    return True if fn is None else bool(fn())


def usable_cpus() -> list[int] | None:
    """The CPU ids this process may run on (its affinity mask), None where the OS does not say."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return None


#: Container allocations between two garbage collections on a free-threaded build (3.13t's
#: default is 2,000).  Its collector is not generational: every collection stops every thread
#: and scans the whole heap, 20-30 ms for a server's heap on the 2-core VM, so at the default it
#: ran every few ticks and set the p99 of the tick time: serve on threads, 100 bots, 2,000 NPCs,
#: p99 MSPT 44-52 ms at the default, 32-33 ms at this value (two interleaved runs each).
FT_GC_THRESHOLD = 100_000


def tune_gc() -> int | None:
    """Set this interpreter's collection threshold for a tick loop; returns it, or None where
    the default stays (builds with the GIL: their young-generation collections are cheap).

    Called by paratick's own entry points (serve, run, node, worker processes and
    subinterpreters), never on import: a library does not change its host's collector.
    """
    if not free_threaded():
        return None
    gc.set_threshold(FT_GC_THRESHOLD)
    return FT_GC_THRESHOLD


#: glibc's ``mallopt`` parameters and the values :func:`tune_malloc` sets.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Allocations below this come from the heap, never from a fresh ``mmap`` (glibc's ceiling).
MMAP_THRESHOLD = 32 << 20
#: Free memory kept at the top of a heap instead of being given back to the kernel.
TRIM_THRESHOLD = 256 << 20


def tune_malloc() -> bool:
    """Keep the C allocator from mapping and unmapping the tick's large temporaries.

    A numpy tick allocates and frees arrays of a few hundred KiB to a few MiB dozens of times.
    By default glibc serves such blocks with ``mmap`` (or returns a freed heap top past a
    threshold that moves with the traffic), so every tick faults its temporaries in again page
    by page: on the 2-core VM that was about 40 % of a 250,000-entity world's tick (numpy kernel,
    one thread: 34 ms per tick by default, 19-22 ms with these values) and half of arena-20k's
    ticked in the main thread of the free-threaded build (2.3 -> 1.2 ms).  Fixed thresholds --
    blocks up to 32 MiB from the heap, up to 256 MiB of free heap kept -- make them reuse memory
    the process already has.

    Process-wide; called by paratick's own entry points (serve, run, node, worker processes,
    the benchmarks' probes), never on import.  Returns whether the allocator took the values:
    False off glibc, where ``mallopt`` is missing, or where the user already chose thresholds
    with glibc's ``MALLOC_*_`` environment variables (those stay as given).
    """
    if not sys.platform.startswith("linux") or any(
            k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def tune() -> dict[str, Any]:
    """:func:`tune_gc` and :func:`tune_malloc`, for the entry point of a process that ticks (a
    subinterpreter calls only :func:`tune_gc`: the allocator is the process's).  Returns what
    they set, as result files record it."""
    return {"gc_threshold": tune_gc(), "malloc_tuned": tune_malloc()}


def hold_core(cpu: int) -> Callable[[], None] | None:
    """Keep the calling thread on ``cpu`` until the returned undo is called (from any thread).

    For a thread that ticks a lockstep worker's shards between other work (the runtime's
    coordinator leading worker 0): unpinned, it was often on the core of the worker it had just
    woken, which then waited for it.  Unlike :func:`pin_thread` the scheduling policy stays: the
    thread also serves its caller, whose wake-ups must not wait for the scheduler's tick.  None
    where the OS refuses or has no such calls.
    """
    tid = threading.get_native_id()
    try:
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        return None

    def undo() -> None:
        with contextlib.suppress(OSError):  # the thread is gone: nothing to give back
            os.sched_setaffinity(tid, before)

    return undo


def pin_thread(cpu: int) -> bool:
    """Keep the calling thread on ``cpu`` and out of wake-up preemption (``SCHED_BATCH``).

    For a lockstep worker that has a core of its own.  Unpinned, a worker woken for a tick was
    often placed on the core of the thread that woke it and preempted it there, while the other
    core idled until the scheduler's next balance: about 5 % of ticks on a 2-core VM lost a
    whole worker's compute (1-2 ms) that way.  ``SCHED_BATCH`` keeps a woken worker from
    preempting the coordinator before it has woken every worker.  Linux only (the calling
    thread's own mask and policy); False where the OS refuses or has no such calls.
    """
    if hold_core(cpu) is None:
        return False
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    return True


def usable_cores() -> int:
    """Cores this process may run on (affinity-aware; what ``--workers`` defaults to)."""
    cpus = usable_cpus()
    return len(cpus) if cpus is not None else os.cpu_count() or 1


def interpreter() -> dict[str, Any]:
    """Version, build and GIL state in one JSON-ready dict (what result files record)."""
    return {"version": platform.python_version(), "free_threaded": free_threaded(),
            "gil_enabled": gil_enabled()}


def import_extensions() -> None:
    """Import :data:`EXTENSIONS` (those installed), so that :func:`gil_enabled` reports the
    state paratick's own code will run in, not the state before an extension switched it."""
    for mod in EXTENSIONS:
        with contextlib.suppress(ImportError):
            __import__(mod)


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each distribution, None where it is not installed."""
    from importlib import metadata  # ~20 ms: not paid by workers, which never ask

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
