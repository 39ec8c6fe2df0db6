import math

import pytest

from sim.config import WorldConfig, grid_of, parse_grid
from sim.errors import ConfigError, SimError


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"regions_x": 0}, "regions_x"),
    ({"regions_y": 0}, "regions_y"),
    ({"regions_x": 2.5}, "regions_x"),
    ({"radius": -1.0}, "radius"),
    ({"radius": 0}, "radius"),
    ({"width": math.nan}, "width"),
    ({"height": math.inf}, "height"),
    ({"tick_rate": 0}, "tick_rate"),
    ({"drag": -0.1}, "drag"),
    ({"stiffness": math.nan}, "stiffness"),
    ({"seed": -1}, "seed"),
    ({"seed": True}, "seed"),
    ({"drag": 30.0}, "drag*dt"),
    ({"radius": 600.0}, "too large"),
])
def test_bad_configuration_names_the_field(kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        WorldConfig(**kwargs)
    assert fragment in str(info.value)
    assert isinstance(info.value, SimError)


def test_speed_cap_too_high_for_regions_says_the_limit():
    with pytest.raises(ConfigError) as info:
        WorldConfig(regions_x=64, regions_y=64, max_speed=1000.0)
    msg = str(info.value)
    assert "max_speed" in msg and "use max_speed <" in msg
    limit = float(msg.split("use max_speed < ")[1].split()[0])
    WorldConfig(regions_x=64, regions_y=64, max_speed=limit * 0.99)  # just below: accepted


def test_view_radius_larger_than_region_is_refused():
    with pytest.raises(ConfigError, match="view_radius"):
        WorldConfig(regions_x=8, regions_y=8, view_radius=300.0)
    # The band must leave room for one step: an entity that just left is classified by the
    # region it left, and its view band must not reach past that region's neighbours.
    with pytest.raises(ConfigError, match="view_radius"):
        WorldConfig(regions_x=8, regions_y=8, view_radius=256.0)
    WorldConfig(regions_x=8, regions_y=8, view_radius=256.0 - 120.0 / 30 - 1.0)


def test_round_trip_and_replace():
    cfg = WorldConfig(regions_x=3, regions_y=2, seed=7, view_radius=50.0)
    assert WorldConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(regions_x=1).regions == 2
    assert cfg.dt == pytest.approx(1 / 30)
    assert cfg.region_w == pytest.approx(2048 / 3)


def test_unknown_fields_are_refused():
    with pytest.raises(ConfigError, match="bogus"):
        WorldConfig.from_dict({"bogus": 1})


@pytest.mark.parametrize(("text", "grid"), [("4x4", (4, 4)), ("3X2", (3, 2)), ("16", (16, 1)),
                                            ("2×5", (2, 5))])
def test_parse_grid(text, grid):
    assert parse_grid(text) == grid


@pytest.mark.parametrize("text", ["0x4", "ax2", "4x", "1x2x3", "-1x2", ""])
def test_parse_grid_rejects(text):
    with pytest.raises(ConfigError, match="regions"):
        parse_grid(text)


@pytest.mark.parametrize(("count", "grid"), [(1, (1, 1)), (2, (2, 1)), (3, (3, 1)), (4, (2, 2)),
                                             (6, (3, 2)), (8, (4, 2)), (9, (3, 3)),
                                             (16, (4, 4)), (11, (4, 4)), (17, (5, 5))])
def test_grid_of_gives_each_of_count_a_region(count, grid):
    rx, ry = grid_of(count, 2048, 2048, 256)
    assert (rx, ry) == grid and rx * ry >= count
    assert 2048 / rx >= 256 and 2048 / ry >= 256
    WorldConfig(regions_x=rx, regions_y=ry, view_radius=128)  # a valid world


def test_grid_of_lays_the_long_side_along_the_world_s():
    assert grid_of(2, 2048, 1024, 100) == (2, 1)
    assert grid_of(2, 1024, 2048, 100) == (1, 2)
    assert grid_of(8, 1024, 4096, 100) == (2, 4)
