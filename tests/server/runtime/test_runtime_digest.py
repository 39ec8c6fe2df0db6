"""Sharded parallel runs give the reference World's digest, on every backend available here."""

from __future__ import annotations

import json
import sys

import pytest

from server.runtime import Runtime, RuntimeConfigError, State
from sim.errors import InvalidInput
from sim.world import World
from tests.server.runtime.runtime_helpers import (
    BACKENDS,
    PARALLEL,
    inputs_for,
    reference_digest,
    small_world,
)

TICKS = 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_workers_match_reference(backend: str) -> None:
    cfg, rows = small_world()
    ref = reference_digest(cfg, rows, TICKS)
    with Runtime(cfg, rows, backend=backend) as rt:
        assert 1 <= rt.workers <= cfg.regions
        for t in range(TICKS):
            res = rt.step(inputs_for(t))
            assert res.tick == t + 1 == rt.tick
        assert rt.digest() == ref


# Processes get one grid only: each spawned worker costs ~0.3 s of start-up.
CASES = [(b, grid, w) for b in PARALLEL for grid, w in [((3, 2), 2), ((2, 2), 4), ((4, 1), 3)]
         if b != "processes" or grid == (3, 2)]


@pytest.mark.parametrize(("backend", "grid", "workers"), CASES)
def test_worker_counts_and_grids_match_reference(backend: str, grid: tuple[int, int],
                                                 workers: int) -> None:
    cfg, rows = small_world(grid)
    ref = reference_digest(cfg, rows, TICKS)
    with Runtime(cfg, rows, backend=backend, workers=workers) as rt:
        assert rt.workers == workers
        assert sorted(r for block in rt.assignment for r in block) == list(range(cfg.regions))
        for t in range(TICKS):
            rt.step(inputs_for(t))
        assert [r[0] for r in rt.rows()] == sorted(r[0] for r in rows)  # nothing lost
        assert rt.digest() == ref


@pytest.mark.parametrize("backend", PARALLEL)
def test_view_rows_exchange_keeps_digest(backend: str) -> None:
    cfg, rows = small_world(view_radius=40.0)
    world = World(cfg, rows)
    with Runtime(cfg, rows, backend=backend, workers=2) as rt:
        for t in range(3):
            world.step(inputs_for(t), view=True)
            rt.step(inputs_for(t), view=True)
        assert rt.digest() == world.digest()


@pytest.mark.parametrize("backend", BACKENDS)
def test_hook_results_come_from_the_owning_worker(backend: str) -> None:
    cfg, rows = small_world()
    wanted = [0, 3, 100, 239]
    world = World(cfg, rows)
    world.step(inputs_for(0))
    expected = {r[0]: tuple(r) for r in world.rows() if r[0] in wanted}
    workers = None if backend == "inline" else 3
    with Runtime(cfg, rows, backend=backend, workers=workers,
                 hook="tests.server.runtime.runtime_helpers:EntityLookup",
                 hook_args={"tag": "x"}) as rt:
        res = rt.step(inputs_for(0), jobs=wanted)
        assert len(res.hook_results_by_worker) == rt.workers
        got = {row[0]: row for tag, tick, region, row in res.hook_results
               if tag == "x" and tick == 1}
        assert got == expected
        regions = {r[3][0]: r[2] for r in res.hook_results}
        for eid, region in regions.items():
            assert rt.owner[region] in range(rt.workers)
            assert cfg.regions > region >= 0
            assert world.layout.region_of(expected[eid][2], expected[eid][3]) == region
        assert rt.step().hook_results == []  # no jobs, no hook call


@pytest.mark.parametrize("backend", PARALLEL)
def test_jobs_msgpack_cannot_encode_are_refused_on_every_backend(backend: str) -> None:
    """Threads hand messages over without encoding them, yet refuse the same jobs a byte
    channel cannot carry, and nothing reaches the workers."""
    cfg, rows = small_world()
    with Runtime(cfg, rows, backend=backend, workers=2,
                 hook="tests.server.runtime.runtime_helpers:EntityLookup") as rt:
        with pytest.raises(InvalidInput, match="msgpack"):
            rt.step(jobs=[object()])
        assert rt.tick == 0 and rt.state is State.RUNNING
        res = rt.step(jobs=[0])
        assert res.tick == 1 and all(isinstance(r, tuple) for r in res.hook_results)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gil_state_is_reported_from_inside_workers(backend: str) -> None:
    cfg, rows = small_world()
    with Runtime(cfg, rows, backend=backend, workers=None if backend == "inline" else 2) as rt:
        rt.step()
        gil = rt.worker_gil()
        assert len(gil) == rt.workers
        if not getattr(sys, "_is_gil_enabled", lambda: True)():
            assert gil == [False] * rt.workers  # free-threaded run: provably no GIL
        elif backend in ("inline", "threads"):
            assert gil == [True] * rt.workers
        stats = rt.metrics().to_dict()
        json.dumps(stats)
        assert stats["worker_gil"] == gil
        assert sum(s["entities"] for s in stats["shards"]) == len(rows)


def test_bad_arguments_are_refused_before_starting() -> None:
    cfg, rows = small_world()
    for kwargs in ({"backend": "gpu"}, {"backend": "threads", "workers": 0},
                   {"backend": "inline", "workers": 2}, {"backend": "threads", "hook": "nocolon"},
                   {"kernel": "fortran"}):
        with pytest.raises(RuntimeConfigError):
            Runtime(cfg, rows, **kwargs)  # type: ignore[arg-type]


def test_lifecycle_refuses_use_after_close() -> None:
    from server.runtime import InvalidState
    cfg, rows = small_world()
    rt = Runtime(cfg, rows, backend="threads", workers=2)
    rt.close()
    rt.close()  # idempotent
    assert rt.state is State.CLOSED
    with pytest.raises(InvalidState):
        rt.step()
    with pytest.raises(InvalidState):
        rt.digest()


def test_invalid_input_leaves_the_runtime_usable() -> None:
    from sim.errors import InvalidInput
    cfg, rows = small_world()
    with Runtime(cfg, rows, backend="threads", workers=2) as rt:
        with pytest.raises(InvalidInput):
            rt.step([(0, 1, float("nan"), 0.0, 0)])
        assert rt.tick == 0
        rt.step(inputs_for(0))
        assert rt.digest() == reference_digest(cfg, rows, 1)


def test_rows_are_checked_unless_the_caller_vouches_for_them() -> None:
    """validate=False (rows spawn() just made) skips the per-row checks and changes nothing
    else; by default a malformed row is refused before any worker starts."""
    from sim.errors import InvalidInput
    cfg, rows = small_world()
    with Runtime(cfg, rows, backend="threads", workers=2, validate=False) as rt:
        for t in range(3):
            rt.step(inputs_for(t))
        assert rt.digest() == reference_digest(cfg, rows, 3)
    bad = [(*rows[0][:2], float("nan"), *rows[0][3:]), *rows[1:]]
    with pytest.raises(InvalidInput):
        Runtime(cfg, bad, backend="threads", workers=2)


@pytest.mark.parametrize("backend", ["inline", "threads", "processes"])
def test_numpy_kernel_matches_the_python_reference(backend: str) -> None:
    pytest.importorskip("sim.kernels.numpy", reason="the numpy kernel lands from the sim branch")
    cfg, rows = small_world()
    ref = reference_digest(cfg, rows, TICKS)
    with Runtime(cfg, rows, backend=backend, kernel="numpy",
                 workers=None if backend == "inline" else 2) as rt:
        for t in range(TICKS):
            rt.step(inputs_for(t))
        assert rt.digest() == ref


def test_save_resumes_on_another_backend_with_the_same_future() -> None:
    cfg, rows = small_world()
    ref = reference_digest(cfg, rows, TICKS)
    with Runtime(cfg, rows, backend="threads", workers=3) as rt:
        for t in range(2):
            rt.step(inputs_for(t))
        saved = rt.save()
    world = World.load(saved)
    assert world.tick == 2
    with Runtime(world.config, world.rows(), backend="inline", tick=world.tick) as rt2:
        for t in range(2, TICKS):
            rt2.step(inputs_for(t))
        assert rt2.digest() == ref


@pytest.mark.parametrize("backend", BACKENDS)
def test_view_rows_seen_by_the_hook_match_the_reference(backend: str) -> None:
    cfg, rows = small_world(view_radius=40.0)
    world = World(cfg, rows)
    with Runtime(cfg, rows, backend=backend, workers=None if backend == "inline" else 3,
                 hook="tests.server.runtime.runtime_helpers:ViewHook") as rt:
        for t in range(3):
            world.step(inputs_for(t), view=True)
            res = rt.step(inputs_for(t), view=True, jobs=["snapshot"])
            got = {region: [tuple(v) for v in views] for region, views in res.hook_results}
            assert got == {s.region: sorted(s.view_rows()) for s in world.shards}
            # neighbours' entities really crossed (not only each shard's own rows)
            assert any(len(got[s.region]) > len(s) for s in world.shards)
