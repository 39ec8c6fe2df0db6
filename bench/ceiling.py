"""The reference loop: an embarrassingly parallel pure-Python loop with no shared state.

Each scaling table carries *reference* rows: :func:`spin` (integer arithmetic in a local loop:
no shared mutable state, no messages, no memory traffic to speak of) run as W equal parts on W
workers of the same kind the runtime uses, warmed up in those same workers, released together
and timed from "go" until the last one finishes.  :func:`run` takes the iterations *per
worker*; :mod:`bench.cell` divides a fixed total by W (strong scaling, like a fixed world split
over W workers).

What it is, and what it is not.  Its speedup at W workers says how well *this interpreter on
this machine* runs W copies of compute-only Python code at once: the GIL (threads on a GIL
build take turns: ~1x), the cost of free threading's shared structures, the machine's turbo and
SMT behaviour, and neighbours on a shared host.  It is **not an upper bound** on the tick
loop's speedup, and was renamed from "ceiling" for that reason: the tick loop's 1-worker run
sweeps the whole world's columns through one core's caches, and W workers each sweep 1/W of
them, so its work per entity can get cheaper as W grows (a superlinear effect a loop without
data cannot show); and both are medians of a few noisy repeats.  The report therefore shows the
ratio with its 95 % interval and flags a tick loop that beats the reference loop with the whole
interval above 1 (:func:`bench.summary.aggregate`).  ``ceiling`` is still the workload's name
inside :mod:`bench.cell` and in results written before the rename.

* ``threads``: W threads, each warmed up, then released by a barrier (on a GIL build they take
  turns: ~1x).
* ``interpreters``: W isolated subinterpreters (PEP 684, one GIL each; private ``_interpreters``
  module on 3.13, public as ``concurrent.interpreters`` from 3.14 per PEP 734), each driven by
  one thread; the loop's source is executed and warmed up in each beforehand, so creation is
  not timed.
* ``processes``: W child processes of the same interpreter, started and warmed up beforehand
  and released by a line on stdin.
* ``inline``: one loop in the calling thread (W must be 1), after a warm-up call.

Start-up and warm-up are excluded everywhere: only the parallel section is timed, as for ticks.
The warm-up is a tenth of the timed iterations (at least one), in the very workers that are then
timed, so their code has been specialised (on builds that specialise) and their allocators are
warm when the clock starts.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable

from server.clock import TimeSource
from server.runtime import BACKENDS

#: The loop, as source, so that subinterpreters and child processes run the very same code.
SPIN_SOURCE = """
def spin(n):
    x = 1
    acc = 0
    for _ in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        acc += x >> 16
    return acc
"""

_ns: dict[str, object] = {}
exec(SPIN_SOURCE, _ns)
#: spin(n) -> int: n iterations of a linear congruential step; pure, local, deterministic.
spin: Callable[[int], int] = _ns["spin"]  # type: ignore[assignment]

class StartLine(threading.Barrier):
    """A barrier for ``parties`` that reads ``clock`` once all have arrived and before any is
    released (the barrier's action), so the timed window opens before the first worker starts."""

    def __init__(self, parties: int, clock: TimeSource) -> None:
        self.t0 = 0.0
        self._clock = clock
        super().__init__(parties, action=self._start)

    def _start(self) -> None:
        self.t0 = self._clock()


def released_together(threads: list[threading.Thread], barrier: StartLine,
                      clock: TimeSource) -> float:
    """Start ``threads`` (each waits on ``barrier``), release them at once, and return the
    seconds from the release until the last one ends."""
    for t in threads:
        t.start()
    barrier.wait()
    for t in threads:
        t.join()
    return clock() - barrier.t0


def _warmup(iters: int) -> int:
    """Untimed iterations each worker runs first: a tenth of the timed ones, at least one."""
    return max(1, iters // 10)


def _run_threads(workers: int, iters: int, clock: TimeSource) -> float:
    barrier = StartLine(workers + 1, clock)
    warm = _warmup(iters)

    def body() -> None:
        spin(warm)  # in this very thread, before the clock starts
        barrier.wait()
        spin(iters)

    return released_together([threading.Thread(target=body) for _ in range(workers)], barrier,
                             clock)


def _run_interpreters(workers: int, iters: int, clock: TimeSource) -> float:
    import _interpreters  # private in 3.13 (PEP 734 made it public in 3.14)

    ids = [_interpreters.create() for _ in range(workers)]
    try:
        for iid in ids:
            err = _interpreters.exec(iid, SPIN_SOURCE + f"\nspin({_warmup(iters)})\n")
            if err is not None:
                raise RuntimeError(f"spin failed to warm up in a subinterpreter: {err}")
        barrier = StartLine(workers + 1, clock)
        errors: list[object] = []

        def body(iid: int) -> None:
            barrier.wait()
            err = _interpreters.exec(iid, f"spin({iters})")
            if err is not None:
                errors.append(err)

        elapsed = released_together(
            [threading.Thread(target=body, args=(iid,)) for iid in ids], barrier, clock)
        if errors:
            raise RuntimeError(f"spin failed in a subinterpreter: {errors[0]}")
        return elapsed
    finally:
        for iid in ids:
            _interpreters.destroy(iid)


def _run_processes(workers: int, iters: int, clock: TimeSource) -> float:
    code = (SPIN_SOURCE + f"\nspin({_warmup(iters)})\n"
            "import sys\nprint('ready', flush=True)\nsys.stdin.readline()\n"
            f"spin({iters})\nprint('done', flush=True)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(workers)]
    try:
        for p in procs:  # every child started, spin defined and warmed up: all untimed
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a reference-loop child process failed to start")
        t0 = clock()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "done":
                raise RuntimeError("a reference-loop child process failed")
        elapsed = clock() - t0
    finally:
        for p in procs:
            if p.stdin is not None:
                p.stdin.close()
            p.wait(timeout=30)
    return elapsed


def run(backend: str, workers: int, iters: int, *,
        clock: TimeSource = time.perf_counter) -> float:
    """Seconds for ``workers`` parallel copies of ``spin(iters)`` on ``backend``, each worker
    warmed up first (untimed) with a tenth of ``iters``.

    Raises:
        ValueError: unknown backend, or ``inline`` with more than one worker.
    """
    if workers < 1 or iters < 1:
        raise ValueError(f"need workers >= 1 and iters >= 1, got {workers}, {iters}")
    if backend == "inline":
        if workers != 1:
            raise ValueError("the inline backend has exactly one worker")
        spin(_warmup(iters))
        t0 = clock()
        spin(iters)
        return clock() - t0
    if backend == "threads":
        return _run_threads(workers, iters, clock)
    if backend == "interpreters":
        return _run_interpreters(workers, iters, clock)
    if backend == "processes":
        return _run_processes(workers, iters, clock)
    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
