"""``paratick bench snapshots``: what one client snapshot costs, the work behind ``bench load``.

Every snapshot tick, each playing client gets a frame built by
:class:`server.snapshots.SnapshotHook` inside a shard worker: an area-of-interest query, the
quantisation of the rows it finds, a delta against the client's acknowledged baseline, and the
encoding.  This benchmark times exactly that, on one thread, for the load benchmark's world
(2,048 x 2,048, 2 x 2 regions, view radius 128, 1,024 players + 2,000 NPCs), so the load results
can be read against a cost model: ``bots x snapshot_rate x cost`` is the CPU time per second
that snapshots need, spread over the workers.  It also times the encoding alone with msgpack's C
extension and with its pure-Python fallback, and the full hook inside a real subinterpreter
(msgpack's extension does not load there, so it falls back to pure Python).

Figures are medians of interleaved repeats with min and max; nothing here is a pass/fail test.
Run it once per interpreter; each run writes ``snapshots-<version>[t].json`` (figures plus the
environment record every results file carries) into ``bench/results/<date>-<host>/`` or
``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import msgpack.fallback

from bench import schema
from bench.errors import SetupError
from server.protocol import SUBPROTOCOL_MSGPACK
from server.snapshots import SnapshotHook
from sim.config import WorldConfig
from sim.world import World, spawn

DESCRIPTION = """\
What one client snapshot costs: the work behind `paratick bench load`.  Every snapshot tick, each
playing client gets a frame built inside a shard worker: an area-of-interest query, the
quantisation of the rows it finds, a delta against the client's acknowledged baseline, and the
encoding.  This times exactly that, on one thread, for the load benchmark's world (2048 x 2048,
2x2 regions, view radius 128, 1,024 players + 2,000 NPCs), so that load results can be read
against a cost model: bots x snapshot rate x cost is the CPU time per second snapshots need,
spread over the workers.  "full, no baselines kept" is what a worker sends while deltas rest
(where they rarely win, as in this moving world, the server stops keeping baselines for a while):
all of a worker's clients at once with numpy, or, where numpy does not load (a subinterpreter),
a client at a time (the next row; the bytes are checked to be the same).  It also times the
encoding alone with msgpack's C extension and with its pure-Python fallback, and the whole
snapshot inside a subinterpreter (where msgpack's extension does not load).

Figures are medians of interleaved repeats with min and max.  Run it once per interpreter; each
run writes snapshots-<version>[t].json into --out."""

PLAYERS = 1024
NPCS = 2000
VIEW_RADIUS = 128.0
SNAPSHOT_RATE = 20.0


def make_world(players: int, npcs: int) -> World:
    config = WorldConfig(regions_x=2, regions_y=2, view_radius=VIEW_RADIUS, seed=1)
    world = World(config, spawn(config, players + npcs, players=players))
    for _ in range(3):
        world.step(view=True)
    return world


def _timed_run(hook: SnapshotHook, world: World, jobs: list[tuple[int, int, str, int, int]],
               ) -> tuple[float, list[tuple[int, bytes | str]]]:
    """One ``hook.run`` on the world's current tick: (µs per snapshot built, the snapshots)."""
    t0 = time.perf_counter()
    out = hook.run(world.tick, world.shards, jobs)
    return (time.perf_counter() - t0) / max(1, len(out)) * 1e6, out


def _summary(samples: list[float]) -> dict[str, Any]:
    return {"median_us": statistics.median(samples), "min_us": min(samples),
            "max_us": max(samples), "samples_us": samples}


def measure(clients: int, repeats: int, players: int = PLAYERS, npcs: int = NPCS,
            ) -> dict[str, Any]:
    """Per-snapshot costs in microseconds: full, delta, and the encoding alone (C vs Python)."""
    world = make_world(players, npcs)
    hook = SnapshotHook(view_radius=VIEW_RADIUS, delta_window=1 << 30)  # always tries deltas
    lean = SnapshotHook(view_radius=VIEW_RADIUS, deltas=False)  # what a worker does at rest
    loop = SnapshotHook(view_radius=VIEW_RADIUS, deltas=False, batch=False)  # ... without numpy
    clients = min(clients, players)
    acked: dict[int, int] = {}
    samples: dict[str, list[float]] = {"full": [], "lean": [], "loop": [], "delta": [],
                                       "encode_c": [], "encode_python": []}
    sizes: list[int] = []
    entities: list[int] = []
    for _ in range(repeats):
        # Full snapshots: no baseline (a new client, or one whose baseline left the ring).
        jobs = [(eid, eid, SUBPROTOCOL_MSGPACK, -1, 0) for eid in range(clients)]
        us, out = _timed_run(hook, world, jobs)
        samples["full"].append(us)
        lean_us, lean_out = _timed_run(lean, world, jobs)
        if lean_out != out:
            raise AssertionError("full snapshots differ with and without baselines kept")
        samples["lean"].append(lean_us)
        loop_us, loop_out = _timed_run(loop, world, jobs)
        if loop_out != out:
            raise AssertionError("full snapshots differ built a batch and a client at a time")
        samples["loop"].append(loop_us)
        acked = {sid: world.tick for sid, _ in out}
        payloads = [p for _, p in out if isinstance(p, bytes)]
        sizes += [len(p) for p in payloads]
        maps = [msgpack.unpackb(p) for p in payloads]
        entities += [len(m["ents"]) for m in maps]
        # Deltas: the next snapshot tick (20 Hz on 30 Hz ticks: one or two ticks later), every
        # client having acknowledged the previous one.
        world.step(view=True)
        jobs = [(eid, eid, SUBPROTOCOL_MSGPACK, acked.get(eid, -1), 0)
                for eid in range(clients)]
        samples["delta"].append(_timed_run(hook, world, jobs)[0])
        world.step(view=True)
        for key, packer in (("encode_c", msgpack.Packer(use_bin_type=True)),
                            ("encode_python", msgpack.fallback.Packer(use_bin_type=True))):
            t0 = time.perf_counter()
            for m in maps:
                packer.pack(m)
            samples[key].append((time.perf_counter() - t0) / max(1, len(maps)) * 1e6)
    stats = {k: _summary(v) for k, v in samples.items()}
    return {"clients": clients, "repeats": repeats, "players": players, "npcs": npcs,
            "view_radius": VIEW_RADIUS,
            "entities_per_snapshot": statistics.median(entities) if entities else 0,
            "bytes_per_full_snapshot": statistics.median(sizes) if sizes else 0,
            "delta_share": hook.stats["delta"] / max(1, hook.stats["jobs"]),
            "costs": stats}


def hook_only(clients: int, repeats: int, players: int = PLAYERS, npcs: int = NPCS,
              ) -> dict[str, Any]:
    """Full snapshots through the hook only (what runs in a worker), µs per snapshot; also
    which msgpack implementation this interpreter loaded."""
    world = make_world(players, npcs)
    hook = SnapshotHook(view_radius=VIEW_RADIUS)
    clients = min(clients, players)
    jobs = [(eid, eid, SUBPROTOCOL_MSGPACK, -1, 0) for eid in range(clients)]
    samples = []
    for _ in range(repeats):
        samples.append(_timed_run(hook, world, jobs)[0])
        world.step(view=True)
    return {"msgpack": msgpack.Packer.__module__, **_summary(samples)}


_SUB_CODE = """
import json, sys
sys.path[:] = json.loads(PATH)
from bench.snapshots import hook_only
with open(OUT, "w") as f:
    json.dump(hook_only(*json.loads(ARGS)), f)
"""


def in_subinterpreter(clients: int, repeats: int, players: int = PLAYERS, npcs: int = NPCS,
                      ) -> dict[str, Any] | str:
    """:func:`hook_only` run inside a fresh subinterpreter (where msgpack's C extension does not
    load); returns the result, or a one-line reason when subinterpreters are unavailable."""
    import tempfile

    from server.runtime import interp

    if not interp.available():
        return "subinterpreters are not available on this interpreter"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        iid = interp.create()
        try:
            interp.bind_main(iid, {"PATH": json.dumps(sys.path), "OUT": str(out),
                                   "ARGS": json.dumps([clients, repeats, players, npcs])})
            err = interp.run(iid, _SUB_CODE)
        finally:
            interp.destroy(iid)
        if err is not None:
            return f"failed in the subinterpreter: {err.strip().splitlines()[-1]}"
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="3 repeats of 200 clients")
    p.add_argument("--clients", type=int, default=1000,
                   help="snapshots per batch (default 1000, at most the 1,024 players)")
    p.add_argument("--repeats", type=int, default=7, help="interleaved repeats (default 7)")
    schema.add_out_argument(p, quick=True)


def run(args: argparse.Namespace) -> int:
    from bench import env, schema
    from bench.builds import repo_root

    clients, repeats = (200, 3) if args.quick else (args.clients, args.repeats)
    if clients < 1 or repeats < 1:
        raise SetupError("--clients and --repeats must be positive")
    record = env.capture(repo_root())  # its driver is this interpreter, the one measured
    it = record["driver"]
    res = measure(clients, repeats)
    res["subinterpreter"] = in_subinterpreter(clients, repeats)
    c = res["costs"]
    print(f"snapshots: {res['clients']} clients, {res['players']} players + {res['npcs']} NPCs, "
          f"view radius {VIEW_RADIUS:g}; CPython {it['version']}"
          f"{' free-threaded' if it['py_gil_disabled'] else ''}"
          f"{' (quick)' if args.quick else ''}")
    print(f"entities per snapshot {res['entities_per_snapshot']:.0f}, "
          f"full snapshot {res['bytes_per_full_snapshot']:.0f} bytes, "
          f"a delta was the smaller message for {res['delta_share']:.1%} of the snapshots")
    print(f"{'cost per snapshot':<34} {'median':>9} {'min':>9} {'max':>9}   (µs, one thread)")
    labels = {"full": "full (AOI + quantise + encode)",
              "lean": "full, no baselines kept", "loop": "  the same, a client at a time",
              "delta": "delta vs acked baseline",
              "encode_c": "encoding only, msgpack C", "encode_python": "encoding only, pure Python"}
    for key, label in labels.items():
        s = c[key]
        print(f"{label:<34} {s['median_us']:9.1f} {s['min_us']:9.1f} {s['max_us']:9.1f}")
    sub = res["subinterpreter"]
    if isinstance(sub, dict):
        print(f"{'full, inside a subinterpreter':<34} {sub['median_us']:9.1f} {sub['min_us']:9.1f} "
              f"{sub['max_us']:9.1f}   (msgpack there: {sub['msgpack']})")
    else:
        print(f"{'full, inside a subinterpreter':<34} not measured: {sub}")
    per_s = 1000 * SNAPSHOT_RATE
    sub_cost = (f"{per_s * sub['median_us'] / 1e6:.2f} inside subinterpreters"
                if isinstance(sub, dict) else "subinterpreters not measured")
    print(f"1,000 bots at {SNAPSHOT_RATE:g} Hz = {per_s:,.0f} snapshots/s: "
          f"{per_s * c['delta']['median_us'] / 1e6:.2f} CPU-s/s as deltas, "
          f"{per_s * c['full']['median_us'] / 1e6:.2f} as full snapshots "
          f"({per_s * c['lean']['median_us'] / 1e6:.2f} while deltas rest), {sub_cost} "
          "(whole-message encoding would add "
          f"{per_s * (c['encode_python']['median_us'] - c['encode_c']['median_us']) / 1e6:.2f}"
          " there; the hook encodes each entity once per tick instead)")
    out = args.out or schema.results_dir(quick=args.quick)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"snapshots-{env.build_label()}.json"
    path.write_text(json.dumps({"quick": args.quick, "when": time.strftime("%FT%T%z"),
                                "environment": record, "result": res}, indent=2,
                               sort_keys=True) + "\n")
    print(f"wrote {path}")
    return 0

