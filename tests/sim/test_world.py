"""World-level behaviour: sharded == unsharded, repeatability, conservation, save/load."""

import functools
import math

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.config import WorldConfig
from sim.errors import InvalidInput, SchemaError
from sim.world import World, digest, spawn

from .helpers import input_log, run_world

ENTITIES = 2000
TICKS = 300
PLAYERS = 8
#: One grid per family the issue names (2, 4, 9, 16 regions, non-square).
FAMILIES = {"2": (2, 1), "4": (2, 2), "9": (3, 3), "16": (4, 4), "non-square": (3, 2)}
SLOW = settings(max_examples=3, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def config(seed: int, size: tuple[float, float], grid: tuple[int, int]) -> WorldConfig:
    return WorldConfig(width=size[0], height=size[1], regions_x=grid[0], regions_y=grid[1],
                       seed=seed)


@functools.cache
def python_reference(seed: int) -> str:
    """Digest of the unsplit 1024 x 768 world after TICKS ticks, python kernel."""
    return run_world(config(seed, (1024, 768), (1, 1)), ENTITIES, TICKS,
                     players=PLAYERS, log_seed=seed).digest()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_python_kernel_sharded_equals_unsharded(family):
    """The required size (>= 2000 entities, >= 300 ticks, players on an input log), per family."""
    grid = FAMILIES[family]
    w = run_world(config(11, (1024, 768), grid), ENTITIES, TICKS, players=PLAYERS, log_seed=11)
    assert len(w) == ENTITIES
    assert w.digest() == python_reference(11)


@SLOW
@given(seed=st.integers(0, 2**64 - 1),
       size=st.sampled_from([(512.0, 512.0), (1024.0, 768.0), (700.0, 1300.0), (2048.0, 2048.0)]),
       grid=st.sampled_from([(2, 1), (1, 2), (2, 2), (3, 3), (4, 4), (3, 2), (2, 5), (4, 1)]))
def test_sharded_equals_unsharded_for_drawn_worlds(seed, size, grid):
    """Drawn seeds, sizes and grids; numpy kernel (bit-identical to python, tested separately)."""
    whole = run_world(config(seed, size, (1, 1)), ENTITIES, TICKS, kernel="numpy",
                      players=PLAYERS, log_seed=seed)
    split = run_world(config(seed, size, grid), ENTITIES, TICKS, kernel="numpy",
                      players=PLAYERS, log_seed=seed)
    assert split.tick == whole.tick == TICKS
    assert split.digest() == whole.digest()


@pytest.mark.parametrize("kernel", ["python", "numpy"])
def test_running_twice_gives_identical_digests(kernel):
    cfg = config(3, (800, 800), (3, 2))
    a = run_world(cfg, 1200, 60, kernel=kernel, players=4, log_seed=3)
    b = run_world(cfg, 1200, 60, kernel=kernel, players=4, log_seed=3)
    assert a.digest() == b.digest()
    assert a.rows() == b.rows()
    c = run_world(cfg.replace(seed=4), 1200, 60, kernel=kernel, players=4, log_seed=3)
    assert c.digest() != a.digest()


@pytest.mark.parametrize("kernel", ["python", "numpy"])
def test_conservation_under_border_stress(kernel):
    """Most entities cross a border every few ticks; none is lost or duplicated."""
    cfg = WorldConfig(width=256, height=256, regions_x=8, regions_y=8, max_speed=600.0,
                      drag=0.0, wander_period=2, wander_kick=3000.0, seed=9)
    rows = spawn(cfg, 600)
    ids = sorted(r[0] for r in rows)
    split = World(cfg, rows, kernel=kernel)
    whole = World(cfg.replace(regions_x=1, regions_y=1), rows, kernel=kernel)
    owner = {r[0]: s.region for s in split.shards for r in s.rows()}
    crossings = 0
    ticks = 40
    for _ in range(ticks):
        split.step()
        whole.step()
        now = {r[0]: s.region for s in split.shards for r in s.rows()}
        assert sorted(now) == ids  # nothing lost, nothing duplicated
        assert len(split) == len(ids)
        crossings += sum(now[e] != owner[e] for e in ids)
        owner = now
    assert crossings / (len(ids) * ticks) > 0.3, "the stress case must really stress handoffs"
    assert split.digest() == whole.digest()


def test_nan_and_bad_inputs_never_enter_the_state():
    cfg = config(2, (512, 512), (2, 2))
    w = World(cfg, spawn(cfg, 300, players=2))
    before = (w.tick, w.digest())
    for bad in [(0, 1, math.nan, 0.0, 0), (1, 1, 0.0, math.inf, 0), (0, 1, 0.0, 0.0, -1),
                ("0", 1, 0.0, 0.0, 0), (0, 1, 0.5)]:
        with pytest.raises(InvalidInput):
            w.step([(1, 0, 1.0, 0.0, 0), bad])
        assert (w.tick, w.digest()) == before
    w.step([(0, 1, 1.0, 0.5, 1)])
    assert all(all(math.isfinite(v) for v in r[2:8]) for r in w.rows())


def test_world_rejects_duplicate_ids_and_bad_rows():
    cfg = config(1, (512, 512), (1, 1))
    rows = spawn(cfg, 3)
    with pytest.raises(InvalidInput, match="duplicate"):
        World(cfg, rows + rows[:1])
    bad = list(rows[0])
    bad[2] = math.nan
    with pytest.raises(InvalidInput, match="finite"):
        World(cfg, [tuple(bad)])
    with pytest.raises(InvalidInput):
        spawn(cfg, 3, players=4)


@pytest.mark.parametrize(("kernel", "other", "grid"), [
    ("python", "python", None), ("python", "numpy", (3, 1)), ("numpy", "python", (1, 2))])
def test_save_load_continues_identically(kernel, other, grid):
    cfg = config(6, (640, 640), (2, 2))
    log = input_log(6, 4, 60)
    a = World(cfg, spawn(cfg, 800, players=4), kernel=kernel)
    for inputs in log[:30]:
        a.step(inputs)
    b = World.load(a.save(), kernel=other, regions=grid)
    assert (b.tick, b.digest()) == (a.tick, a.digest())
    for inputs in log[30:]:
        a.step(inputs)
        b.step(inputs)
    assert b.digest() == a.digest()


@pytest.mark.parametrize("blob", [
    b"", b"\x00\x01garbage", msgpack.packb([1, 2, 3]), msgpack.packb({"v": 99}),
    msgpack.packb({"v": 1, "config": {"bogus": 1}, "tick": 0, "rows": []}),
    msgpack.packb({"v": 1, "config": {}, "tick": -4, "rows": []}),
    msgpack.packb({"v": 1, "config": {}, "tick": 0}),
], ids=["empty", "garbage", "list", "future-version", "unknown-config-field", "negative-tick",
        "no-rows"])
def test_corrupt_save_is_a_schema_error(blob):
    with pytest.raises(SchemaError):
        World.load(blob)


def test_truncated_save_is_a_schema_error():
    cfg = config(1, (512, 512), (1, 1))
    data = World(cfg, spawn(cfg, 50)).save()
    with pytest.raises(SchemaError):
        World.load(data[: len(data) // 2])


def test_digest_depends_on_tick_and_rows_not_order():
    rows = spawn(config(1, (512, 512), (1, 1)), 20)
    assert digest(rows, 3) == digest(list(reversed(rows)), 3)
    assert digest(rows, 3) != digest(rows, 4)
    assert digest(rows, 3) != digest(rows[1:], 3)
