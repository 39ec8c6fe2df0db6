"""``paratick sim``: the single-thread reference run, its digest and its one-line errors."""

import json

import pytest

from server.cli import main
from sim.config import WorldConfig
from sim.scripted import scripted_inputs
from sim.world import World, spawn


def world_digest(entities, grid, ticks, seed, players, kernel="python"):
    cfg = WorldConfig(regions_x=grid[0], regions_y=grid[1], seed=seed)
    w = World(cfg, spawn(cfg, entities, players=players), kernel=kernel)
    for _ in range(ticks):
        w.step(scripted_inputs(seed, players, w.tick))
    return w.digest()


@pytest.mark.parametrize("kernel", ["python", "numpy"])
def test_sim_prints_the_worlds_digest(capsys, kernel):
    rc = main(["sim", "--entities", "500", "--regions", "2x3", "--ticks", "6", "--warmup", "2",
               "--seed", "5", "--players", "3", "--kernel", kernel])
    assert rc == 0
    out = capsys.readouterr().out
    assert world_digest(500, (2, 3), 8, 5, 3) in out
    assert "ticks/s" in out and "entity-updates/s" in out and "GIL" in out


def test_sim_json(capsys):
    assert main(["sim", "--entities", "300", "--regions", "1", "--ticks", "3", "--warmup", "0",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["digest"] == world_digest(300, (1, 1), 3, 1, 0)
    assert res["ticks"] == 3 and res["entities"] == 300 and res["ticks_per_s"] > 0
    assert res["entity_updates_per_s"] == pytest.approx(res["ticks_per_s"] * 300)
    assert set(res["interpreter"]) == {"version", "free_threaded", "gil_enabled"}


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--regions", "0x2"], "regions"),
    (["--regions", "64x64", "--entities", "10"], None),
    (["--regions", "200x1"], "max_speed"),
    (["--players", "5", "--entities", "3"], "players"),
    (["--ticks", "-1"], "--ticks"),
])
def test_bad_options_exit_2_with_one_line(capsys, argv, fragment):
    rc = main(["sim", "--ticks", "1", "--warmup", "0", *argv])
    err = capsys.readouterr().err
    if fragment is None:
        assert rc == 0
        return
    assert rc == 2
    assert err.startswith("paratick sim: ") and fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
