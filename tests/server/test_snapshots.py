"""SnapshotHook: area of interest, ownership split across workers, delta correctness."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from typing import Any

import pytest

from server.protocol import (
    CODECS,
    POS_SCALE,
    SERVER_MESSAGES,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Snapshot,
    apply_snapshot,
    quantise,
)
from server.snapshots import PROBE_JOBS, PROBE_TRIES, SnapshotHook, probe_every
from sim.config import WorldConfig
from sim.world import World, spawn

MP = CODECS[SUBPROTOCOL_MSGPACK]
R = 60.0


def make_world(**kw: object) -> World:
    cfg = WorldConfig(width=400, height=400, regions_x=2, regions_y=2, view_radius=R,
                      max_speed=60, **kw)  # type: ignore[arg-type]
    return World(cfg, spawn(cfg, 300, players=6))


def decode(payload: bytes | str) -> Snapshot:
    codec = CODECS[SUBPROTOCOL_MSGPACK if isinstance(payload, bytes) else SUBPROTOCOL_JSON]
    msg = codec.decode(payload, accept=SERVER_MESSAGES, max_size=1 << 24)
    assert isinstance(msg, Snapshot)
    return msg


def test_aoi_matches_brute_force_across_region_borders() -> None:
    world = make_world()
    world.step(view=True)
    hook = SnapshotHook(view_radius=R)
    jobs = [(eid, 100 + eid, SUBPROTOCOL_MSGPACK, -1, 7) for eid in range(6)]
    out = dict(hook.run(world.tick, world.shards, jobs))
    assert sorted(out) == [100 + e for e in range(6)]
    rows = {r[0]: quantise((r[0], r[1], r[2], r[3], r[4], r[5], r[7], r[8]))
            for r in world.rows()}
    crossing = 0
    for eid in range(6):
        snap = decode(out[100 + eid])
        assert snap.tick == world.tick and snap.ack == 7 and snap.base is None
        me = rows[eid]
        expect = {k for k, w in rows.items()
                  if math.hypot(w[2] - me[2], w[3] - me[3]) <= R * POS_SCALE}
        got = {e[0] for e in snap.entities}
        assert got == expect
        assert eid in got
        region = world.layout.region_of(me[2] / POS_SCALE, me[3] / POS_SCALE)
        crossing += any(world.layout.region_of(rows[k][2] / POS_SCALE, rows[k][3] / POS_SCALE)
                        != region for k in got)
        for e in snap.entities:
            assert quantise(e) == rows[e[0]]
    assert crossing > 0, "no AOI crossed a region border; the test world is too sparse"


def test_each_job_is_handled_by_the_worker_owning_the_entity() -> None:
    world = make_world()
    world.step(view=True)
    jobs = [(eid, eid, SUBPROTOCOL_JSON, -1, -1) for eid in range(6)]
    halves = [world.shards[:2], world.shards[2:]]
    results = [SnapshotHook(view_radius=R).run(world.tick, h, jobs) for h in halves]
    sids = sorted(sid for res in results for sid, _ in res)
    assert sids == list(range(6))
    for res in results:
        for _, payload in res:
            assert isinstance(payload, str)  # JSON codec -> text frames


def test_delta_client_sees_what_a_full_snapshot_client_sees() -> None:
    # High drag and no wander kicks: most NPCs come to rest, so deltas are really used.
    world = make_world(drag=20.0, wander_kick=0.0)
    for _ in range(20):
        world.step()
    delta_hook, full_hook = SnapshotHook(view_radius=R, ring=4), SnapshotHook(view_radius=R)
    hist: dict[int, dict[int, object]] = {}
    acked = -1
    deltas = 0
    for t in range(60):
        world.step([(0, t, 1.0, 0.3 if t < 30 else -0.3, 0)], view=True)
        # The delta client acks every other snapshot, and once skips long enough for its
        # baseline to fall out of the 4-entry ring.
        (_, dp), = delta_hook.run(world.tick, world.shards, [(0, 1, SUBPROTOCOL_MSGPACK, acked,
                                                               t)])
        (_, fp), = full_hook.run(world.tick, world.shards, [(0, 2, SUBPROTOCOL_MSGPACK, -1, t)])
        d, f = decode(dp), decode(fp)
        assert not f.is_delta
        deltas += d.is_delta
        state = apply_snapshot(hist, d)  # type: ignore[arg-type]
        assert state == apply_snapshot({}, f)
        hist[d.tick] = state  # type: ignore[assignment]
        if t % 2 == 0 and not 40 <= t < 50:
            acked = d.tick
    assert deltas >= 10, f"only {deltas} deltas: the test does not exercise them"
    assert delta_hook.stats["full"] > 1  # the first one, and after the ring lost the baseline


def test_unknown_codec_and_unowned_entities_are_skipped() -> None:
    world = make_world()
    world.step(view=True)
    hook = SnapshotHook(view_radius=R)
    assert hook.run(world.tick, world.shards, [(0, 1, "paratick.xml.v9", -1, 0),
                                               (99999, 2, SUBPROTOCOL_MSGPACK, -1, 0)]) == []


def test_importable_without_numpy() -> None:
    code = ("import sys; import server.snapshots, server.protocol; "
            "sys.exit('numpy' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_without_numpy_snapshots_are_built_a_client_at_a_time() -> None:
    # What a subinterpreter gets: numpy does not import; the hook still answers every job.
    code = ("import sys; sys.modules['numpy'] = None\n"
            "from server.snapshots import SnapshotHook\n"
            "class Shard:\n"
            "    def view_rows(self): return [(1, 0, 5.0, 5.0, 0.0, 0.0, 0.0, 0),"
            " (2, 0, 9.0, 5.0, 0.0, 0.0, 0.0, 0)]\n"
            "    def __len__(self): return 2\n"
            "hook = SnapshotHook(view_radius=10, deltas=False)\n"
            "assert hook._np is None\n"
            "out = hook.run(3, [Shard()], [(1, 7, 'paratick.json.v1', -1, 0)])\n"
            "import json\n"
            "assert [(s, [e[0] for e in json.loads(p)['ents']]) for s, p in out]"
            " == [(7, [1, 2])], out\n")
    res = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr


class _Shard:
    """A shard as the hook sees it: view rows (own first) and how many it owns."""

    def __init__(self, own: list[tuple[Any, ...]], seen: list[tuple[Any, ...]]) -> None:
        self.rows = own + seen
        self.owned = len(own)

    def view_rows(self) -> list[tuple[Any, ...]]:
        return self.rows

    def __len__(self) -> int:
        return self.owned


def _row(eid: int, x: float, y: float) -> tuple[Any, ...]:
    return (eid, eid % 2, x, y, 1.5, -2.25, eid * 0.1 - 3.0, eid % 7)


def _edge_shards() -> list[_Shard]:
    """Entities exactly on the view radius, on cell edges, at 0, seen by two shards, a ring of
    clients around each: what a vectorised query could get wrong."""
    rng = random.Random(5)
    a_own = [_row(0, 0.0, 0.0), _row(1, R, 0.0), _row(2, 2 * R, R), _row(3, R, R)]
    a_own += [_row(10 + k, rng.uniform(0, 2 * R), rng.uniform(0, 3 * R)) for k in range(120)]
    b_own = [_row(200 + k, rng.uniform(2 * R, 4 * R), rng.uniform(0, 3 * R)) for k in range(120)]
    b_own += [_row(4, 2 * R + R, R), _row(5, 2 * R, 2 * R)]
    # Each shard sees the other's rows near their border (the same tuples: ghosts).
    a_seen = [r for r in b_own if r[2] < 3 * R]
    b_seen = [r for r in a_own if r[2] > R]
    return [_Shard(a_own, a_seen), _Shard(b_own, b_seen)]


@pytest.mark.parametrize("case", ["edges", "world", "dense", "numpy", "numpy-few"])
def test_batched_full_snapshots_are_the_per_client_bytes(case: str) -> None:
    if case == "edges":
        shards: list[Any] = _edge_shards()
        eids = [r[0] for s in shards for r in s.rows[:s.owned]]
    elif case.startswith("numpy"):  # what the server ticks: regions give view rows as arrays
        # (with a few clients most rows are in nobody's view, and only the listed are encoded)
        cfg = WorldConfig(width=400, height=400, regions_x=2, regions_y=2, view_radius=R,
                          max_speed=60)
        world = World(cfg, spawn(cfg, 2000, players=300), kernel="numpy", groups=[[0, 1], [2, 3]])
        for _ in range(3):
            world.step(view=True)
        shards, eids = world.shards, list(range(4 if case == "numpy-few" else 300))
        assert all(hasattr(s, "view_array") for s in shards)
    else:
        world = make_world() if case == "world" else World(
            WorldConfig(width=400, height=400, regions_x=2, regions_y=2, view_radius=R,
                        max_speed=60), spawn(WorldConfig(width=400, height=400, regions_x=2,
                                                         regions_y=2, view_radius=R,
                                                         max_speed=60), 2000, players=300))
        world.step(view=True)
        shards, eids = world.shards, list(range(6 if case == "world" else 300))
    codecs = [SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON, "paratick.xml.v9"]
    jobs = [(e, 1000 + k, codecs[k % 3] if k % 5 == 0 else SUBPROTOCOL_MSGPACK, -1, k)
            for k, e in enumerate(eids)] + [(99999, 1, SUBPROTOCOL_MSGPACK, -1, 0)]
    batched = SnapshotHook(view_radius=R, deltas=False)
    loop = SnapshotHook(view_radius=R, deltas=False, batch=False)
    assert batched._np is not None and loop._np is None
    got, want = batched.run(7, shards, jobs), loop.run(7, shards, jobs)
    assert got == want
    assert len(got) == sum(1 for j in jobs if j[2] != "paratick.xml.v9" and j[0] != 99999)
    assert batched.stats == loop.stats
    if case == "edges":  # the radius is inclusive: entity 1 at exactly R from entity 0
        assert 1 in {e[0] for e in decode(dict(got)[1000]).entities}


def test_rings_of_departed_clients_are_dropped() -> None:
    world = make_world()
    hook = SnapshotHook(view_radius=R, ring_ttl=10)
    world.step(view=True)
    hook.run(world.tick, world.shards, [(0, 1, SUBPROTOCOL_MSGPACK, -1, 0),
                                        (1, 2, SUBPROTOCOL_MSGPACK, -1, 0)])
    for _ in range(70):  # client 2 leaves; client 1 keeps getting snapshots every third tick
        world.step(view=True)
        if world.tick % 3 == 0:
            out = hook.run(world.tick, world.shards, [(0, 1, SUBPROTOCOL_MSGPACK, -1, 0)])
            assert [sid for sid, _ in out] == [1]
    assert hook.sessions == {1}


def _acking_run(world: World, hook: SnapshotHook, ticks: int) -> list[bytes | str]:
    """One client (entity 0) that acks every snapshot it gets; returns the payloads."""
    acked, out = -1, []
    for _ in range(ticks):
        t = world.tick
        world.step([(0, t, 1.0, 0.2, 0)], view=True)
        (_, payload), = hook.run(world.tick, world.shards, [(0, 1, SUBPROTOCOL_MSGPACK, acked, t)])
        out.append(payload)
        acked = world.tick
    return out


def test_deltas_rest_where_they_do_not_pay() -> None:
    # The default world keeps moving: a delta lists (nearly) everything, so it rarely wins.
    world, twin = make_world(), make_world()
    hook = SnapshotHook(view_radius=R, delta_window=8, delta_rest=20)
    plain = SnapshotHook(view_radius=R, deltas=False)
    sent = _acking_run(world, hook, 15)
    assert hook.stats["rests"] == 1
    assert hook.stats["delta"] <= 1
    assert hook.sessions == frozenset()  # resting: no baselines kept
    tries = hook.stats["tries"]
    sent += _acking_run(world, hook, 35)  # the rest ends: baselines again, then tries
    assert hook.stats["tries"] > tries
    for t in range(50):  # the reference: the same world, full snapshots only
        twin.step([(0, t, 1.0, 0.2, 0)], view=True)
        (_, ref), = plain.run(twin.tick, twin.shards, [(0, 1, SUBPROTOCOL_MSGPACK, -1, t)])
        if not decode(sent[t]).is_delta:
            assert sent[t] == ref, t  # a full snapshot is the same bytes either way
    assert plain.sessions == frozenset()


def test_deltas_keep_going_where_they_pay() -> None:
    world = make_world(drag=20.0, wander_kick=0.0)  # NPCs come to rest: deltas are small
    for _ in range(20):
        world.step()
    hook = SnapshotHook(view_radius=R, delta_window=8, delta_rest=20)
    payloads = _acking_run(world, hook, 40)
    assert hook.stats["rests"] == 0
    assert sum(decode(p).is_delta for p in payloads) >= 30
    assert hook.sessions == {1}


def _numpy_world(**kw: object) -> World:
    """What the server ticks: a numpy group per worker, view rows as arrays."""
    cfg = WorldConfig(width=400, height=400, regions_x=2, regions_y=2, view_radius=R,
                      max_speed=60, **kw)  # type: ignore[arg-type]
    return World(cfg, spawn(cfg, 2000, players=300), kernel="numpy", groups=[[0, 1], [2, 3]])


def test_deltas_are_tried_on_a_sample_the_others_batched_same_bytes() -> None:
    world = _numpy_world()
    world.step(view=True)
    jobs = [(e, 1000 + e, SUBPROTOCOL_MSGPACK if e % 7 else SUBPROTOCOL_JSON, -1, e)
            for e in range(300)]
    hook = SnapshotHook(view_radius=R)
    loop = SnapshotHook(view_radius=R, deltas=False, batch=False)
    got = hook.run(world.tick, world.shards, jobs)
    # No client has acked a baseline yet: every snapshot is full, the same bytes in job order
    assert got == loop.run(world.tick, world.shards, jobs)
    every = probe_every(len(jobs))
    tried = {sid for _, sid, *_ in jobs if sid % every == 0}
    assert 0 < len(tried) <= 2 * PROBE_JOBS
    assert hook.sessions == tried  # only the sample keeps baselines


@pytest.mark.parametrize("pays", [True, False])
def test_the_sample_decides_for_everyone(pays: bool) -> None:
    # Clients that ack every snapshot; deltas pay where the NPCs come to rest.
    world = _numpy_world(**({"drag": 20.0, "wander_kick": 0.0} if pays else {}))
    for _ in range(20):
        world.step()
    hook = SnapshotHook(view_radius=R, delta_window=16, delta_rest=1000)
    plain = SnapshotHook(view_radius=R, deltas=False, batch=False)
    acked = dict.fromkeys(range(40), -1)
    state: dict[int, dict[int, Any]] = {e: {} for e in acked}
    got_delta: set[int] = set()
    for t in range(12):
        world.step(view=True)
        jobs = [(e, e, SUBPROTOCOL_MSGPACK, acked[e], t) for e in acked]
        out = hook.run(world.tick, world.shards, jobs)
        ref = dict(plain.run(world.tick, world.shards, jobs))
        assert [sid for sid, _ in out] == list(acked)
        for sid, payload in out:
            snap = decode(payload)
            got_delta.update([sid] if snap.is_delta else [])
            now = apply_snapshot(state[sid], snap)
            assert now == apply_snapshot({}, decode(ref[sid]))
            state[sid] = {snap.tick: now}
            acked[sid] = snap.tick
    every = probe_every(40)
    if pays:  # judged on the sample, then every client gets deltas
        assert hook.stats["rests"] == 0
        assert len(got_delta) > len([e for e in acked if e % every == 0])
    else:  # judged on the sample: rest, full snapshots for all
        assert hook.stats["rests"] == 1
        assert hook.sessions == frozenset()
        assert got_delta <= {e for e in acked if e % every == 0}


def test_a_trial_ends_while_the_count_of_jobs_moves() -> None:
    # As the server paces snapshots, a different share of the clients has a job each tick.
    world = _numpy_world()
    hook = SnapshotHook(view_radius=R)
    rng = random.Random(3)
    acked = dict.fromkeys(range(120), -1)
    for t in range(60):
        world.step(view=True)
        jobs = [(e, e, SUBPROTOCOL_MSGPACK, acked[e], t) for e in acked
                if rng.random() < rng.uniform(0.45, 0.9)]
        for sid, payload in hook.run(world.tick, world.shards, jobs):
            acked[sid] = decode(payload).tick
        if hook.stats["rests"]:
            break
    assert hook.stats["rests"] == 1, hook.stats  # the moving world's deltas did not pay
    assert hook.stats["tries"] >= PROBE_TRIES


def test_probe_every_halves_or_doubles() -> None:
    assert [probe_every(n) for n in (0, 1, PROBE_JOBS - 1)] == [1, 1, 1]
    seen = {probe_every(n) for n in range(1, 4000)}
    assert all(k & (k - 1) == 0 for k in seen)  # powers of two only
    assert all(n / PROBE_JOBS / 2 < probe_every(n) <= max(1, n / PROBE_JOBS)
               for n in range(PROBE_JOBS, 4000))
