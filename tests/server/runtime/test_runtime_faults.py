"""Faults: a failing tick is restored and retried; dead or hung workers are named, not hung on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

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
from tests.server.runtime.runtime_helpers import (
    BACKENDS,
    PARALLEL,
    inputs_for,
    reference_digest,
    small_world,
)

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


@pytest.mark.parametrize("backend", BACKENDS)
def test_hook_exception_is_reported_and_the_world_goes_on(backend: str) -> None:
    cfg, rows = small_world()
    workers = None if backend == "inline" else 2
    with Runtime(cfg, rows, backend=backend, workers=workers,
                 hook="tests.server.runtime.runtime_helpers:FailingHook") as rt:
        res = rt.step(inputs_for(0), jobs=[1])
        assert res.hook_results == []
        assert [w for w, _ in res.hook_errors] == list(range(rt.workers))
        assert all("ZeroDivisionError: hook bug" in tb for _, tb in res.hook_errors)
        assert rt.state is State.RUNNING
        assert rt.step(inputs_for(1)).hook_errors == []  # no jobs, no hook call
        assert rt.digest() == reference_digest(cfg, rows, 2)
        assert [w.hook_errors for w in rt.metrics().workers] == [1] * rt.workers


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


@pytest.mark.parametrize("backend", PARALLEL)
def test_a_worker_that_cannot_start_is_named_and_nothing_is_left_running(backend: str) -> None:
    cfg, rows = small_world()
    before = threading.active_count()
    with pytest.raises(WorkerCrashed) as info:
        Runtime(cfg, rows, backend=backend, workers=2, tick_timeout=5,
                hook="tests.server.runtime.runtime_helpers:NoSuchHook")
    assert info.value.worker in (0, 1)
    assert "NoSuchHook" in info.value.detail
    assert threading.active_count() <= before


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


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b in ("threads", "interpreters")])
def test_worker_that_left_its_loop_is_reported_not_hung_on(backend: str) -> None:
    """A worker thread or interpreter that ends (here: told to STOP behind the runtime's back)
    is named by the next step instead of being waited for until the watchdog."""
    from server.runtime import messages
    cfg, rows = small_world()
    with Runtime(cfg, rows, backend=backend, workers=3, tick_timeout=60) as rt:
        rt.step()
        assert rt._ep is not None
        rt._ep.send_message(2, messages.Stop())
        with pytest.raises(WorkerCrashed) as info:
            rt.step()
        assert info.value.worker == 2


SCRIPT = """
from server.runtime import Runtime
from sim.config import WorldConfig
from sim.world import World, spawn
cfg = WorldConfig(width=1024, height=1024, regions_x=3, regions_y=3, seed=2)
rows = spawn(cfg, 3000, players=2)
world = World(cfg, rows)
with Runtime(cfg, rows, backend="processes", workers=3) as rt:
    for t in range(2):
        rt.step()
        world.step()
    print("same" if rt.digest() == world.digest() else "different")
"""


def test_processes_from_a_script_without_a_main_guard(tmp_path: Path) -> None:
    """Workers are fresh interpreters that import the runtime, not the parent's __main__
    (multiprocessing's spawn would re-run this script in every child).  3000 rows make the
    specs large enough that a fast worker's first borders race a slow worker's spec."""
    script = tmp_path / "no_guard.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=env, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "same"


@pytest.mark.parametrize("backend", ["inline", "threads", "processes"])
def test_numpy_kernel_recovers_from_a_fault_with_identical_digest(backend: str) -> None:
    pytest.importorskip("sim.kernels.numpy", reason="the numpy kernel lands from the sim branch")
    cfg, rows = small_world()
    ticks = 6
    ref = reference_digest(cfg, rows, ticks)
    with Runtime(cfg, rows, backend=backend, kernel="numpy", checkpoint_every=3,
                 workers=None if backend == "inline" else 2, fault_at=(3, 4)) as rt:
        for t in range(ticks):
            rt.step(inputs_for(t))
        assert rt.digest() == ref
        assert sum(w.faults_recovered for w in rt.metrics().workers) == 1


class _Recorder:
    """The coordinator's (and peers') side of one worker's channels, scripted: hands out ``msgs``
    and notes every Done and Borders the worker sends, in order with what its shards do."""

    in_memory = False

    def __init__(self, msgs: list[object], events: list[str]) -> None:
        self.msgs = msgs
        self.events = events

    def recv_message(self, timeout: float, spin: float = 0.0) -> object:
        return self.msgs.pop(0)

    def send_message(self, dst: int, msg: object) -> None:
        from server.runtime import messages as m

        if isinstance(msg, m.Done):
            self.events.append(f"done {msg.tick}")
        elif isinstance(msg, m.Borders):
            self.events.append(f"borders {msg.tick} to {dst}")

    def flush(self, timeout: float) -> bool:
        return True

    def statistics(self) -> object:
        from server.runtime.channels import ChannelStats

        return ChannelStats()


def test_a_due_checkpoint_is_taken_after_the_tick_is_reported() -> None:
    from server.runtime import messages as m
    from server.runtime.worker import WorkerCore

    cfg, rows = small_world()
    per: dict[int, list[object]] = {r: [] for r in range(cfg.regions)}
    from sim.geometry import Layout

    layout = Layout(cfg)
    for row in rows:
        per[layout.region_of(row[2], row[3])].append(row)
    spec = {"config": cfg.to_dict(), "owner": [0] * cfg.regions, "kernel": "python", "tick": 0,
            "hook": None, "checkpoint": True, "checkpoint_every": 2, "w": 0,
            "rows": list(per.items())}
    events: list[str] = []
    core = WorkerCore(spec, None, 1)
    for shard in core.shards.values():
        take = shard.checkpoint

        def noted(reuse=None, take=take):  # type: ignore[no-untyped-def]
            events.append("checkpoint")
            return take(reuse)

        shard.checkpoint = noted  # type: ignore[method-assign]
    core.ep = _Recorder([m.Tick(t, inputs_for(t), False, []) for t in range(4)] + [m.Stop()],
                        events)
    core.serve()
    every = ["checkpoint"] * cfg.regions
    # ticks 1 and 3 bring the worker 2 ticks past its last checkpoint: each copy is taken
    # once that tick is reported, never before
    assert events == ["done 0", "done 1", *every, "done 2", "done 3", *every]


def _core_of_worker_0(cfg, rows, owner, **spec):  # type: ignore[no-untyped-def]
    from server.runtime import messages as m
    from server.runtime.worker import WorkerCore
    from sim.geometry import Layout

    layout = Layout(cfg)
    per: dict[int, list[object]] = {r: [] for r in range(cfg.regions) if owner[r] == 0}
    for row in rows:
        region = layout.region_of(row[2], row[3])
        if owner[region] == 0:
            per[region].append(row)
    base = {"config": cfg.to_dict(), "owner": owner, "kernel": "python", "tick": 0,
            "hook": None, "checkpoint": True, "w": 0, "rows": list(per.items())}
    # the first exchange (the initial state's borders, tick -1) happens on construction
    return WorkerCore({**base, **spec}, _Recorder([m.Borders(-1, 1, [])], []), 2)


@pytest.mark.parametrize("fault_in", [None, 0, 1])
def test_borders_go_to_peers_before_the_interior_is_advanced(fault_in: int | None) -> None:
    """A worker advances the shards next to a peer's first and sends their borders at once; a
    fault (here in the interior shard, after the send, or in the edge shard, before it) is
    recovered without sending them twice."""
    from server.runtime import messages as m

    cfg, rows = small_world(grid=(4, 1))
    # worker 0 owns regions 0 and 1; only region 1 touches worker 1's regions (2 and 3)
    core = _core_of_worker_0(cfg, rows, [0, 0, 1, 1],
                             fault_at=None if fault_in is None else (fault_in, 0))
    events: list[str] = []
    for r, shard in core.shards.items():
        advance = shard.advance

        def noted(tick, inputs, *, view=False, r=r, advance=advance):  # type: ignore[no-untyped-def]
            events.append(f"advance {r}")
            return advance(tick, inputs, view=view)

        shard.advance = noted  # type: ignore[method-assign]
    core.ep = _Recorder([m.Borders(t, 1, []) for t in range(2)], events)
    for t in range(2):
        core.step(t, inputs_for(t), False, [])
    first = {None: ["advance 1", "borders 0 to 1", "advance 0"],
             # the interior fails after the send: every shard is restored and advanced again
             0: ["advance 1", "borders 0 to 1", "advance 0", "advance 1", "advance 0"],
             # the edge fails before it: the send waits for the retry
             1: ["advance 1", "advance 1", "borders 0 to 1", "advance 0"]}[fault_in]
    assert events == [*first, "advance 1", "borders 1 to 1", "advance 0"]
    assert core.faults_recovered == (fault_in is not None)


def test_a_fault_after_a_deferred_checkpoint_recovers_from_it() -> None:
    cfg, rows = small_world()
    ref = reference_digest(cfg, rows, 6)
    with Runtime(cfg, rows, backend="threads", workers=2, checkpoint_every=2,
                 fault_at=(4, 5)) as rt:
        for t in range(6):
            rt.step(inputs_for(t))
        assert rt.digest() == ref
        assert rt.metrics().workers[rt.owner[4]].faults_recovered == 1


def test_ticks_after_a_checkpoint_are_left_out_of_the_coordination_figure() -> None:
    cfg, rows = small_world()
    with Runtime(cfg, rows, backend="threads", workers=2, checkpoint_every=2) as rt:
        for t in range(8):
            rt.step(inputs_for(t))
        co = rt.metrics().coordination
        assert co is not None
        # checkpoints after ticks 1, 3 and 5 (2 ticks apart): ticks 2, 4 and 6 may wait for them
        assert co["n"] == 8 - 3
