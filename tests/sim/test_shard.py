import msgpack
import pytest

from sim.config import WorldConfig
from sim.errors import ConfigError, SchemaError
from sim.kernels import KERNELS, make_shard
from sim.world import World, spawn

from .helpers import input_log


def test_unknown_kernel_and_region_are_config_errors():
    cfg = WorldConfig(regions_x=2)
    with pytest.raises(ConfigError, match="unknown kernel"):
        make_shard(cfg, 0, kernel="fortran")
    with pytest.raises(ConfigError, match="region 2"):
        make_shard(cfg, 2)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("other", KERNELS)
def test_state_restore_round_trip_then_advance_is_identical(kernel, other):
    cfg = WorldConfig(regions_x=3, regions_y=2, width=768, height=512, seed=5)
    log = input_log(1, 6, 40)
    a = World(cfg, spawn(cfg, 1500, players=6), kernel=kernel)
    for inputs in log[:20]:
        a.step(inputs)
    # Checkpoint every shard through msgpack bytes, restore into fresh shards of `other`.
    b = World(cfg, [], kernel=other, tick=a.tick)
    for src, dst in zip(a.shards, b.shards, strict=True):
        blob = msgpack.packb(src.state(), use_bin_type=True)
        dst.restore(msgpack.unpackb(blob, raw=False))
        assert dst.rows() == src.rows() and len(dst) == len(src)
    assert b.digest() == a.digest()
    for inputs in log[20:]:
        a.step(inputs)
        b.step(inputs)
    assert b.digest() == a.digest()


@pytest.mark.parametrize("kernel", KERNELS)
def test_restore_rejects_foreign_or_malformed_checkpoints(kernel):
    cfg = WorldConfig(regions_x=2)
    s0 = make_shard(cfg, 0, kernel=kernel)
    s1 = make_shard(cfg, 1, kernel=kernel)
    with pytest.raises(SchemaError, match="region 0"):
        s1.restore(s0.state())
    with pytest.raises(SchemaError):
        s0.restore({"region": 0})


@pytest.mark.parametrize("kernel", KERNELS)
def test_borders_go_to_every_neighbour_and_view_rows_cross(kernel):
    cfg = WorldConfig(regions_x=3, regions_y=3, width=600, height=600, view_radius=40.0)
    w = World(cfg, spawn(cfg, 2000), kernel=kernel)
    outs = {s.region: s.advance(w.tick, {}, view=True) for s in w.shards}
    for s in w.shards:
        assert set(outs[s.region]) == set(s.neighbours)
    w._deliver(outs)
    for s in w.shards:
        own = {v[0] for v in s.view_rows()[:len(s)]}
        seen = [v for v in s.view_rows() if v[0] not in own]
        assert seen, "neighbours' entities within the view radius must be visible"
        for v in seen:
            assert len(v) == 8
            r = s.rect
            dx = max(r.x0 - v[2], 0.0, v[2] - r.x1)
            dy = max(r.y0 - v[3], 0.0, v[3] - r.y1)
            assert max(dx, dy) <= cfg.view_radius + 1.0
