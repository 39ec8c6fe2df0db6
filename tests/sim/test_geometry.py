from hypothesis import given
from hypothesis import strategies as st

from sim.config import WorldConfig
from sim.geometry import Layout

GRIDS = st.sampled_from([(1, 1), (2, 1), (2, 2), (3, 3), (4, 4), (3, 2), (1, 5), (7, 3)])


@given(grid=GRIDS, fx=st.floats(0, 1), fy=st.floats(0, 1))
def test_region_of_point_lies_in_its_rect_and_near_contains_owner(grid, fx, fy):
    cfg = WorldConfig(regions_x=grid[0], regions_y=grid[1])
    lay = Layout(cfg)
    x, y = 4 + fx * 2040, 4 + fy * 2040
    reg = lay.region_of(x, y)
    rect = lay.rect(reg)
    assert rect.x0 <= x <= rect.x1 and rect.y0 <= y <= rect.y1
    near = lay.regions_near(x, y, cfg.ghost_range)
    assert reg in near
    assert set(near) <= {reg, *lay.neighbours(reg)}
    # Every region whose rectangle lies within the margin is listed.
    for other in range(cfg.regions):
        r = lay.rect(other)
        dx = max(r.x0 - x, 0.0, x - r.x1)
        dy = max(r.y0 - y, 0.0, y - r.y1)
        if dx < cfg.ghost_range - 1e-6 and dy < cfg.ghost_range - 1e-6:
            assert other in near


def test_neighbours_are_symmetric_and_at_most_eight():
    lay = Layout(WorldConfig(regions_x=4, regions_y=3))
    for reg in range(12):
        nbrs = lay.neighbours(reg)
        assert len(nbrs) <= 8 and reg not in nbrs and list(nbrs) == sorted(nbrs)
        for n in nbrs:
            assert reg in lay.neighbours(n)
    assert len(lay.neighbours(5)) == 8 and len(lay.neighbours(0)) == 3


@given(regions=st.integers(1, 64), workers=st.integers(1, 80))
def test_assign_partitions_regions_into_contiguous_balanced_blocks(regions, workers):
    blocks = Layout(WorldConfig()).assign(regions, workers)
    assert [r for b in blocks for r in b] == list(range(regions))
    sizes = [len(b) for b in blocks]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
