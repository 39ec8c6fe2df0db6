"""The numpy kernel is bit-identical to the python kernel (digests and rows)."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from sim.config import WorldConfig
from sim.errors import InvalidInput, KernelUnavailable, SimError
from sim.kernels import make_shards
from sim.world import World, spawn

from .helpers import input_log, run_world

#: The numpy kernel as a whole-world group (World's default) and as one shard per region.
LAYOUTS = [pytest.param(False, id="whole-world"), pytest.param(True, id="per-region")]


@pytest.mark.parametrize("per_region", LAYOUTS)
@pytest.mark.parametrize("grid", [(1, 1), (2, 2), (3, 2), (1, 4), (4, 4)])
def test_numpy_equals_python_with_players_and_inputs(grid, per_region):
    cfg = WorldConfig(width=768, height=640, regions_x=grid[0], regions_y=grid[1], seed=21,
                      view_radius=30.0)
    py = run_world(cfg, 1500, 100, kernel="python", players=10, log_seed=2, view=True)
    nu = run_world(cfg, 1500, 100, kernel="numpy", players=10, log_seed=2, view=True,
                   per_region=per_region)
    assert nu.rows() == py.rows()  # same values, same Python types
    assert nu.digest() == py.digest()
    for a, b in zip(py.shards, nu.shards, strict=True):
        assert len(a) == len(b) and a.rows() == b.rows()
        assert sorted(a.view_rows()) == sorted(b.view_rows())


@pytest.mark.parametrize("per_region", LAYOUTS)
def test_numpy_equals_python_when_players_turn_full_circles(per_region):
    """Players holding a turn wrap their heading past +pi and past -pi several times (at full
    turn a circle takes 60 ticks), with and without boost, some inputs changing mid-way."""
    cfg = WorldConfig(width=1024, height=1024, regions_x=2, regions_y=2, seed=5)
    worlds = [World(cfg, spawn(cfg, 400, players=12), kernel=k, per_region=per_region)
              for k in ("python", "numpy")]
    headings: list[float] = []
    for t in range(150):
        inputs = []
        if t == 0:
            inputs = [(pid, t, 1.0 if pid % 3 else 0.25, (1.0, -1.0, 0.75)[pid % 3], pid % 2)
                      for pid in range(12)]
        elif t == 70:
            inputs = [(pid, t, 0.5, -1.0 if pid % 2 else 1.0, 1) for pid in range(6)]
        for w in worlds:
            w.step(inputs)
        headings.extend(r[7] for r in worlds[1].rows() if r[0] < 12)
    py, nu = worlds
    assert nu.rows() == py.rows()
    assert nu.digest() == py.digest()
    assert max(headings) > 3.0 and min(headings) < -3.0  # both ends of the wrap were reached
    assert all(-math.pi <= h <= math.pi for h in headings)


@pytest.mark.parametrize("per_region", LAYOUTS)
def test_numpy_equals_python_in_a_crowd_against_walls(per_region):
    """Dense world: many contacts per entity, wall reflections, speed caps."""
    cfg = WorldConfig(width=256, height=256, regions_x=2, regions_y=2, seed=4, max_speed=300,
                      wander_period=3, wander_kick=900.0)
    py = run_world(cfg, 1200, 60, kernel="python", players=3, log_seed=1)
    nu = run_world(cfg, 1200, 60, kernel="numpy", players=3, log_seed=1, per_region=per_region)
    assert nu.digest() == py.digest()


@pytest.mark.parametrize("per_region", LAYOUTS)
def test_mixed_radii_agree_across_kernels_and_splits(per_region):
    """Entities of different sizes (the python kernel's exact per-pair path), crowded."""
    cfg = WorldConfig(width=320, height=320, regions_x=2, regions_y=2, seed=9, max_speed=200,
                      wander_period=4, wander_kick=600.0)
    rows = [(*r[:6], 1.0 + (r[0] % 7) * 0.5, *r[7:]) for r in spawn(cfg, 1500, players=2)]

    def run(kernel, grid, **kw):
        world = World(cfg.replace(regions_x=grid[0], regions_y=grid[1]), rows, kernel=kernel,
                      **kw)
        for inputs in input_log(3, 2, 60):
            world.step(inputs)
        return world

    whole = run("python", (1, 1))
    assert len({r[6] for r in whole.rows()}) == 7  # radii 1.0 .. 4.0 survive the ticks
    assert sum(r[8] for r in whole.rows()) > 1000  # many contacts
    assert run("python", (2, 2)).digest() == whole.digest()
    assert run("numpy", (2, 2), per_region=per_region).digest() == whole.digest()


@pytest.mark.parametrize("per_region", LAYOUTS)
def test_numpy_equals_python_at_the_largest_view_radius(per_region):
    """Entities leaving a region are classified with the whole view band: no crash, same rows."""
    cfg = WorldConfig(width=512, height=512, regions_x=4, regions_y=4, seed=3,
                      view_radius=128.0 - 120.0 / 30 - 1.0)
    py = run_world(cfg, 2000, 40, kernel="python", players=4, log_seed=5, view=True)
    nu = run_world(cfg, 2000, 40, kernel="numpy", players=4, log_seed=5, view=True,
                   per_region=per_region)
    assert nu.digest() == py.digest()
    for a, b in zip(py.shards, nu.shards, strict=True):
        assert sorted(a.view_rows()) == sorted(b.view_rows())


@pytest.mark.parametrize("per_region", LAYOUTS)
def test_numpy_equals_python_in_a_huge_region(per_region):
    """Regions too large for the dense contact grid (the binary-search path), with contacts."""
    cfg = WorldConfig(width=3000.0, height=3000.0, seed=2)
    py = run_world(cfg, 4000, 30, kernel="python", players=2, log_seed=1)
    nu = run_world(cfg, 4000, 30, kernel="numpy", players=2, log_seed=1, per_region=per_region)
    assert max(r[8] for r in py.rows()) > 0  # some contacts happened
    assert nu.digest() == py.digest()


@pytest.mark.parametrize("scale", [1024.0, 1.0, 0.125])
def test_sort_key_quantum_never_changes_the_contacts(monkeypatch, scale):
    """The group's sweep sorts quantised keys: a quantum as coarse as a whole cell (0.125 per
    unit: 8 units) only adds candidates, which the exact distance test drops."""
    import sim.kernels.numpy as kn

    monkeypatch.setattr(kn, "_key_scale", lambda extent, bits: scale)
    cfg = WorldConfig(width=256, height=256, regions_x=4, regions_y=4, seed=4, max_speed=200,
                      wander_period=3, wander_kick=900.0)
    rows = spawn(cfg, 1200, players=3)
    py = World(cfg, rows, kernel="python")
    nu = World(cfg, rows, kernel="numpy", groups=[[0, 1, 4, 5], [2, 3, 6, 7, 8, 9, 10, 11,
                                                                   12, 13, 14, 15]])
    for inputs in input_log(1, 3, 30):
        py.step(inputs)
        nu.step(inputs)
    assert sum(r[8] for r in py.rows()) > 1000  # crowded: many contacts, and ghosts' too
    assert nu.digest() == py.digest()


@pytest.mark.parametrize(("extent", "bits"), [(0.0, 40), (1e5, 40), (3e7, 38), (1e12, 30),
                                              (5e9, 33)])
def test_sort_key_quantum_fits_the_bits(extent, bits):
    from sim.kernels.numpy import _key_scale

    scale = _key_scale(extent, bits)
    assert (extent + 1.0) * scale < 2.0 ** bits
    assert scale <= 1024.0 and math.log2(scale).is_integer()
    # the largest such power of two (up to 1024 per unit)
    assert scale == 1024.0 or (extent + 1.0) * scale * 2 >= 2.0 ** bits


def test_numpy_regions_of_one_thread_are_one_group():
    cfg = WorldConfig(width=512, height=512, regions_x=2, regions_y=2)
    rows = spawn(cfg, 200)
    whole = World(cfg, rows, kernel="numpy")
    assert len({id(s._group) for s in whole.shards}) == 1  # type: ignore[attr-defined]
    assert all(s.internal_borders for s in whole.shards)
    split = World(cfg, rows, kernel="numpy", per_region=True)
    assert not any(hasattr(s, "_group") for s in split.shards)
    # A worker that owns only some regions: one group, with borders to the others.
    part = make_shards(cfg, {0: [], 1: []}, kernel="numpy")
    assert [s.region for s in part] == [0, 1]
    assert part[0]._group is part[1]._group  # type: ignore[attr-defined]
    assert not any(s.internal_borders for s in part)
    # A worker with a single region of a larger world keeps the per-region shard (faster there).
    (lone,) = make_shards(cfg, {3: []}, kernel="numpy")
    assert lone.region == 3 and not hasattr(lone, "_group")
    halves = World(cfg, rows, kernel="numpy", groups=[[0, 2], [1, 3]])
    assert len({id(s._group) for s in halves.shards}) == 2  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput, match="groups"):
        World(cfg, rows, kernel="numpy", groups=[[0, 1], [1, 2, 3]])


def test_group_refuses_a_broken_tick_protocol():
    cfg = WorldConfig(width=512, height=512, regions_x=2, regions_y=2)
    w = World(cfg, spawn(cfg, 200), kernel="numpy")
    s0, s1 = w.shards[0], w.shards[1]
    out = s0.advance(0, {})
    assert out == {n: ([], [], []) for n in s0.neighbours}  # all neighbours are in the group
    with pytest.raises(SimError, match="advanced twice"):
        s0.advance(0, {})
    with pytest.raises(SimError, match="half done"):
        s1.advance(5, {})


#: Ways workers may own a 4 x 3 grid: halves, an uneven split, a column, every region alone.
PARTITIONS = [
    [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]],
    [[0, 5, 10], [1, 2, 3, 4, 6, 7, 8, 9, 11]],
    [[0, 4, 8], [1, 2, 3, 5, 6, 7, 9, 10, 11]],
    [[r] for r in range(12)],
]


@pytest.mark.parametrize("groups", PARTITIONS, ids=["halves", "scattered", "column", "alone"])
def test_numpy_groups_exchanging_borders_equal_python(groups):
    """Groups send outsiders exactly what per-region shards would: same rows, views, digest."""
    cfg = WorldConfig(width=768, height=640, regions_x=4, regions_y=3, seed=21, view_radius=30.0)
    rows = spawn(cfg, 1500, players=10)
    py = World(cfg, rows, kernel="python")
    nu = World(cfg, rows, kernel="numpy", groups=groups)
    for t, inputs in enumerate(input_log(2, 10, 90)):
        view = t % 3 == 0
        py.step(inputs, view=view)
        nu.step(inputs, view=view)
        if view:
            # The view rows as numbers first, as the snapshot hook reads them after a tick: the
            # group settles its arrivals when first asked.
            arrays = [b.view_array().tolist() for b in nu.shards]
            for a, b, arr in zip(py.shards, nu.shards, arrays, strict=True):
                assert a.rows() == b.rows()
                assert sorted(a.view_rows()) == sorted(b.view_rows())
                # the same view rows, in view_rows()'s order (batched snapshots)
                assert arr == [[float(v) for v in r] for r in b.view_rows()]
    assert nu.digest() == py.digest()


def test_numpy_groups_in_a_crowd_with_many_handoffs():
    """Most entities cross borders every few ticks: ghosts of leavers, arrivals, walls."""
    cfg = WorldConfig(width=256, height=256, regions_x=4, regions_y=4, seed=4, max_speed=200,
                      wander_period=3, wander_kick=900.0)
    rows = spawn(cfg, 1200, players=3)
    py = World(cfg, rows, kernel="python")
    nu = World(cfg, rows, kernel="numpy", groups=[[0, 1, 4, 5, 10], [2, 3, 6, 7], [8, 9, 11],
                                                   [12, 13, 14, 15]])
    for inputs in input_log(1, 3, 60):
        py.step(inputs)
        nu.step(inputs)
    assert nu.digest() == py.digest() and len(nu) == 1200


def _twin_crowds() -> tuple[World, World, list]:
    """Two identical crowded worlds, each two numpy groups of 8 regions, and 40 ticks of input."""
    cfg = WorldConfig(width=256, height=256, regions_x=4, regions_y=4, seed=4, max_speed=200,
                      wander_period=3, wander_kick=900.0)
    rows = spawn(cfg, 1200, players=3)
    halves = [list(range(8)), list(range(8, 16))]
    return (World(cfg, rows, kernel="numpy", groups=halves),
            World(cfg, rows, kernel="numpy", groups=halves), list(input_log(1, 3, 40)))


def _rolled_back_equals_twin(a: World, b: World, saved: list, log: list) -> bool:
    """``a`` (with ``b`` at tick 10) ticks on to 25, rolls back to ``saved`` (tick 10), and both
    tick to the end of ``log``: whether they end with the same digest."""
    for inputs in log[10:25]:  # handoffs both ways: storage grows into spare columns, shrinks
        a.step(inputs)
    for shard, state in zip(a.shards, saved, strict=True):
        shard.rollback(state)
    a.tick = 10
    for inputs in log[10:]:
        a.step(inputs)
        b.step(inputs)
    return a.digest() == b.digest()


def test_numpy_group_rolled_back_replays_the_same_bits():
    """A rollback restores the storage whatever spare columns it grew into since, and the
    sweep, whose order the checkpoint leaves out, starts afresh: the replay is bit for bit."""
    a, b, log = _twin_crowds()
    for inputs in log[:10]:
        a.step(inputs)
        b.step(inputs)
    assert _rolled_back_equals_twin(a, b, [s.checkpoint() for s in a.shards], log)


def test_numpy_checkpoint_reuses_a_handed_back_one_and_stays_a_copy():
    """A checkpoint taken with the previous one handed back copies into its memory (while the
    entity count moves with handoffs), is still a copy (ticking on leaves it alone), and rolls
    back to the same bits as one taken fresh."""
    import numpy as np

    a, b, log = _twin_crowds()
    first = [s.checkpoint() for s in a.shards]
    counts = set()
    for inputs in log[:10]:  # handoffs both ways: each group's entity count moves
        a.step(inputs)
        b.step(inputs)
        counts.add(len(a.shards[0]._group._f[0]))
    assert len(counts) > 1
    buffers = {id(st[0][k].base) for st in first for k in ("_f", "_i")}
    saved = [s.checkpoint(old) for s, old in zip(a.shards, first, strict=True)]
    assert {id(st[0][k].base) for st in saved for k in ("_f", "_i")} == buffers  # reused
    fresh = [s.checkpoint() for s in b.shards]  # same state, new memory
    for got, want in zip(saved, fresh, strict=True):
        assert got[0]["_f"] is not want[0]["_f"]
        assert np.array_equal(got[0]["_f"], want[0]["_f"])
        assert np.array_equal(got[0]["_i"], want[0]["_i"])
    copy = [np.array(st[0]["_f"]) for st in saved]
    for inputs in log[10:13]:
        a.step(inputs)
    assert all(np.array_equal(st[0]["_f"], c) for st, c in zip(saved, copy, strict=True))
    assert _rolled_back_equals_twin(a, b, saved, log)  # ticks on from 13, then rolls back to 10


def test_python_shards_rolled_back_replay_the_same_bits_twice():
    """A python shard's checkpoint (copies of its columns) restores the state it was taken in,
    and stays a checkpoint after a rollback: rolled back twice, the replays end on the bits of
    a twin that never rolled back."""
    cfg = WorldConfig(width=256, height=256, regions_x=4, regions_y=4, seed=4, max_speed=200,
                      wander_period=3, wander_kick=900.0)
    rows = spawn(cfg, 1200, players=3)
    a, b = World(cfg, rows, kernel="python"), World(cfg, rows, kernel="python")
    log = list(input_log(1, 3, 40))
    for inputs in log[:10]:
        a.step(inputs)
        b.step(inputs)
    saved = [s.checkpoint() for s in a.shards]
    assert _rolled_back_equals_twin(a, b, saved, log)  # a: to 25, back to 10, on to 40
    for shard, state in zip(a.shards, saved, strict=True):
        shard.rollback(state)
    a.tick = 10
    for inputs in log[10:]:
        a.step(inputs)
    assert a.digest() == b.digest()


def test_a_python_checkpoint_keeps_no_object_per_entity_for_the_collector():
    """Kept for 32 ticks at a time, a checkpoint must not hold a container per entity: the
    collector would walk them all in every full collection (tens of milliseconds at 100,000)."""
    import gc

    cfg = WorldConfig(width=512, height=512, regions_x=2, regions_y=2, seed=3)
    world = World(cfg, spawn(cfg, 4000), kernel="python")
    for _ in range(3):
        world.step()
    gc.collect()
    before = len(gc.get_objects())
    kept = [s.checkpoint() for s in world.shards]
    gc.collect()
    assert len(gc.get_objects()) - before < 40 * len(kept)


@pytest.mark.parametrize("first", [None, [[0, 1, 2], [3, 4, 5]]], ids=["whole", "halves"])
def test_group_checkpoint_restores_into_per_region_shards_and_back(first):
    """A facade's checkpoint carries the ghosts a per-region shard would hold."""
    cfg = WorldConfig(width=640, height=512, regions_x=3, regions_y=2, seed=8)
    a = World(cfg, spawn(cfg, 1500, players=4), kernel="numpy", groups=first)
    for inputs in input_log(3, 4, 15):
        a.step(inputs)
    b = World(cfg, [], kernel="python", tick=a.tick)
    for src, dst in zip(a.shards, b.shards, strict=True):
        state = src.state()
        assert state["ghosts"]
        dst.restore(state)
    c = World(cfg, [], kernel="numpy", tick=a.tick, groups=[[0, 4], [1, 2, 3, 5]])
    for src, dst in zip(b.shards, c.shards, strict=True):
        dst.restore(src.state())
    for w in (a, b, c):
        for _ in range(20):
            w.step()
    assert a.digest() == b.digest() == c.digest()


def test_kernel_unavailable_is_a_sim_error():
    assert issubclass(KernelUnavailable, SimError)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, cwd=Path(__file__).resolve().parents[2])


def test_nothing_but_the_numpy_kernel_imports_numpy():
    """Subinterpreter workers import sim; numpy must stay out of everything they import."""
    proc = _python("import sys, sim.world, sim.shard, sim.kernels, sim.scripted, sim.geometry;"
                   "print('numpy' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_numpy_kernel_without_numpy_is_kernel_unavailable():
    proc = _python("import sys; sys.modules['numpy'] = None\n"
                   "from sim.config import WorldConfig\n"
                   "from sim.errors import KernelUnavailable\n"
                   "from sim.kernels import make_shard\n"
                   "try:\n"
                   "    make_shard(WorldConfig(), 0, kernel='numpy')\n"
                   "except KernelUnavailable as exc:\n"
                   "    print('unavailable:', exc)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("unavailable: the numpy kernel needs numpy")
