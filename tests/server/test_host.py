"""server.host: pinning a worker thread to a core, the free-threaded collector's threshold and the
allocator's."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from server.host import hold_core, pin_thread, usable_cpus

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="thread affinity and SCHED_BATCH are Linux calls")


@linux_only
def test_pin_thread_pins_only_the_calling_thread_and_batches_it() -> None:
    cpus = usable_cpus()
    assert cpus
    before = os.sched_getaffinity(0)
    policy = os.sched_getscheduler(0)
    seen: dict[str, object] = {}

    def body() -> None:
        seen["ok"] = pin_thread(cpus[-1])
        seen["mask"] = os.sched_getaffinity(0)
        seen["policy"] = os.sched_getscheduler(0)

    t = threading.Thread(target=body)
    t.start()
    t.join(10)
    assert seen["ok"] is True and seen["mask"] == {cpus[-1]}
    # SCHED_BATCH, unless this process runs under a policy it may not leave (SCHED_IDLE without
    # the right to raise it): pinning still holds, the policy change is best effort
    assert seen["policy"] == os.SCHED_BATCH or (policy != os.SCHED_OTHER
                                                and seen["policy"] == policy)
    assert os.sched_getaffinity(0) == before                  # this thread is untouched
    assert os.sched_getscheduler(0) == policy


@linux_only
def test_pin_thread_refuses_a_core_it_cannot_have() -> None:
    seen: list[bool] = []
    t = threading.Thread(target=lambda: seen.append(pin_thread(10_000)))
    t.start()
    t.join(10)
    assert seen == [False]


@linux_only
def test_hold_core_keeps_the_thread_on_a_core_until_undone_from_anywhere() -> None:
    cpus = usable_cpus()
    assert cpus
    policy = os.sched_getscheduler(0)
    seen: dict[str, object] = {}
    undone = threading.Event()
    undos: list[object] = []

    def body() -> None:
        before = os.sched_getaffinity(0)
        undo = hold_core(cpus[-1])
        undos.append(undo)
        seen["held"] = os.sched_getaffinity(0)
        seen["policy"] = os.sched_getscheduler(0)
        undone.wait(10)
        seen["after"] = os.sched_getaffinity(0)
        seen["before"] = before

    t = threading.Thread(target=body)
    t.start()
    for _ in range(1000):
        if undos:
            break
        time.sleep(0.01)
    undo = undos[0]
    assert callable(undo)
    undo()  # from this thread, not the held one
    undone.set()
    t.join(10)
    assert seen["held"] == {cpus[-1]} and seen["policy"] == policy  # the policy stays
    assert seen["after"] == seen["before"]
    assert hold_core(10_000) is None


def test_tune_gc_raises_the_threshold_only_on_free_threaded_builds() -> None:
    import gc

    from server.host import FT_GC_THRESHOLD, free_threaded, tune_gc

    before = gc.get_threshold()
    try:
        got = tune_gc()
        if free_threaded():
            assert got == FT_GC_THRESHOLD == gc.get_threshold()[0]
        else:
            assert got is None and gc.get_threshold() == before
    finally:
        gc.set_threshold(*before)


#: One "tick" of large temporaries: 8 arrays of 4 MiB written and freed, ten times, in a fresh
#: interpreter (the allocator's state is per process); prints the page faults of the ten.
_FAULTS = """
import resource, sys
import numpy as np
if sys.argv[1] == "tuned":
    from server.host import tune_malloc
    assert tune_malloc()
def tick():
    keep = [np.ones(1 << 19) for _ in range(8)]
    del keep
tick(); tick()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    tick()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, **env: str) -> int:
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True,
                         check=True, timeout=60, cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root), **env})
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_tune_malloc_lets_each_tick_reuse_the_memory_of_the_last() -> None:
    default = _faults("default")
    tuned = _faults("tuned")
    # 8 x 4 MiB come back to the kernel and fault in again every tick at glibc's defaults
    # (~40,000 faults in ten ticks); tuned, the heap keeps them
    assert default > 10_000
    assert tuned < default // 20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_tune_malloc_leaves_thresholds_the_user_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from server.host import tune, tune_malloc

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert tune_malloc() is False
    assert tune()["malloc_tuned"] is False
