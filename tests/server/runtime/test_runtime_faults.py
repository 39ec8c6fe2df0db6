"""Faults: a failing tick is restored and retried; dead or hung workers are named, not hung on."""

from __future__ import annotations

import os
import signal

import pytest

from server.runtime import (
    InvalidState,
    Runtime,
    ShardFault,
    State,
    WorkerCrashed,
    WorkerTimeout,
    interp,
)
from sim.errors import KernelUnavailable
from tests.server.runtime import runtime_helpers
from tests.server.runtime.runtime_helpers import BACKENDS, inputs_for, reference_digest, small_world

TICKS = 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_injected_fault_is_recovered_with_identical_digest(backend: str) -> None:
    cfg, rows = small_world()
    ref = reference_digest(cfg, rows, TICKS)
    workers = None if backend == "inline" else 2
    with Runtime(cfg, rows, backend=backend, workers=workers, fault_at=(4, 2)) as rt:
        for t in range(TICKS):
            rt.step(inputs_for(t))
        assert rt.digest() == ref
        faulty = rt.owner[4]
        stats = rt.metrics().workers
        assert stats[faulty].faults_recovered == 1
        assert "injected fault in region 4 at tick 2" in stats[faulty].last_fault
        assert sum(w.faults_recovered for w in stats) == 1


@pytest.mark.parametrize(("fault_tick", "every"), [(1, 1), (5, 2), (6, 3), (7, 32)])
def test_recovery_replays_the_log_since_the_checkpoint(fault_tick: int, every: int) -> None:
    cfg, rows = small_world()
    ticks = 8
    ref = reference_digest(cfg, rows, ticks)
    with Runtime(cfg, rows, backend="threads", workers=3, checkpoint_every=every,
                 fault_at=(1, fault_tick)) as rt:
        for t in range(ticks):
            rt.step(inputs_for(t))
        assert rt.digest() == ref
        assert sum(w.faults_recovered for w in rt.metrics().workers) == 1


def test_fault_without_checkpoints_fails_the_runtime() -> None:
    cfg, rows = small_world()
    with Runtime(cfg, rows, backend="threads", workers=2, checkpoint=False,
                 fault_at=(0, 1)) as rt:
        rt.step()
        with pytest.raises(ShardFault) as info:
            rt.step()
        assert info.value.worker == 0
        assert "InjectedFault" in info.value.detail
        assert rt.state is State.FAILED
        with pytest.raises(InvalidState):
            rt.step()


def test_hook_exception_is_reported_with_its_traceback() -> None:
    cfg, rows = small_world()
    with Runtime(cfg, rows, backend="threads", workers=2,
                 hook="tests.server.runtime.runtime_helpers:FailingHook") as rt:
        with pytest.raises(ShardFault) as info:
            rt.step(jobs=[1])
        assert "ZeroDivisionError: hook bug" in info.value.detail


def test_killed_worker_process_is_reported_not_hung_on() -> None:
    cfg, rows = small_world()
    with Runtime(cfg, rows, backend="processes", workers=2, tick_timeout=60) as rt:
        rt.step()
        victim = 1
        os.kill(rt.worker_pids()[victim], signal.SIGKILL)
        with pytest.raises(WorkerCrashed) as info:
            rt.step()
        assert info.value.worker == victim
        assert rt.state is State.FAILED


def test_watchdog_names_the_worker_that_hangs() -> None:
    cfg, rows = small_world()
    runtime_helpers.GATE.clear()
    rt = Runtime(cfg, rows, backend="threads", workers=2, tick_timeout=0.3,
                 hook="tests.server.runtime.runtime_helpers:BlockingHook")
    try:
        with pytest.raises(WorkerTimeout) as info:
            rt.step(jobs=[0])
        assert info.value.worker in (0, 1)
        assert "did not finish tick 0" in str(info.value)
    finally:
        runtime_helpers.GATE.set()
        rt.close()


@pytest.mark.skipif(not interp.available(), reason="no subinterpreters on this interpreter")
def test_numpy_kernel_with_interpreters_is_refused_before_starting() -> None:
    cfg, rows = small_world()
    before = len(interp._interpreters.list_all())
    with pytest.raises(KernelUnavailable, match="subinterpreters"):
        Runtime(cfg, rows, backend="interpreters", kernel="numpy", workers=2)
    assert len(interp._interpreters.list_all()) == before


@pytest.mark.skipif(not interp.available(), reason="no subinterpreters on this interpreter")
def test_processes_after_interpreters_in_one_process() -> None:
    """gh-139759: forking once a subinterpreter exists kills the child; spawn must be used."""
    cfg, rows = small_world()
    ref = reference_digest(cfg, rows, 2)
    stray = interp.create()  # an interpreter that stays alive while processes start
    try:
        with Runtime(cfg, rows, backend="interpreters", workers=2) as rt:
            rt.step(inputs_for(0))
        with Runtime(cfg, rows, backend="processes", workers=2) as rt:
            rt.step(inputs_for(0))
            rt.step(inputs_for(1))
            assert rt.digest() == ref
    finally:
        interp.destroy(stray)
