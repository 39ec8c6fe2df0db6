"""The game server on nodes, over real sockets on loopback: a player crossing a node border, a
lost bus, and the command's options.

Every test that needs a bus starts the pinned nats-server on a free loopback port
(:func:`server.runtime.natsd.local_server`) and gives its world a name of its own.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from server.app import ServerSettings
from server.cli import main
from server.harness import ServerThread
from server.protocol import (
    CODECS,
    SERVER_MESSAGES,
    SUBPROTOCOL_MSGPACK,
    Bye,
    Hello,
    Input,
    Snapshot,
    Welcome,
)
from server.runtime import natsd
from server.runtime.bus import Link, Subjects
from server.runtime.recovery import ResilientNodes
from server.runtime.runtime import TickResult
from sim.config import WorldConfig

MP = CODECS[SUBPROTOCOL_MSGPACK]
#: Two regions side by side, one per node: the border between the nodes is x = 256.
WORLD = WorldConfig(width=512, height=256, regions_x=2, regions_y=1, view_radius=100.0,
                    max_speed=120.0)
BORDER = WORLD.width / 2
#: Seconds a player has to reach the other node's region (it needs about 5 at full thrust).
CROSS_TIMEOUT = 30.0
#: Snapshots the player must keep receiving once it is on the other node.
AFTER = 15
#: What `python -c` runs to start the command line in a child process.
BOOT = "import sys; from server.cli import main; sys.exit(main(sys.argv[1:]))"
_worlds = itertools.count()


def world_name() -> str:
    return f"serve{next(_worlds)}"


@pytest.fixture(scope="module")
def bus() -> Iterator[str]:
    with natsd.local_server() as url:
        yield url


class Tracked(ResilientNodes):
    """The server's nodes runtime, recording after every tick (on the ticker thread, the one
    that drives it) where each player entity is and which node answered each session's
    snapshot job."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()
        #: tick -> {player entity id: x}
        self.x: dict[int, dict[int, float]] = {}
        #: tick -> {session id: the worker whose hook returned its snapshot}
        self.served: dict[int, dict[int, int]] = {}
        self.players = 0

    def step(self, inputs: Iterable[Any] = (), view: bool = False,
             jobs: Sequence[Any] = ()) -> TickResult:
        res = super().step(inputs, view, jobs)
        xs = {r[0]: float(r[2]) for r in self.rows() if r[0] < self.players}
        by = {int(sid): w for w, results in enumerate(res.hook_results_by_worker)
              for sid, _ in results}
        with self.lock:
            self.x[res.tick] = xs
            if by:
                self.served[res.tick] = by
        return res


def tracked(players: int) -> Any:
    """A runtime factory with the server's signature: :class:`Tracked` for the nodes backend
    (the bus options arrive from the server's settings)."""

    def factory(config: WorldConfig, rows: Any, *, backend: str, **options: Any) -> Tracked:
        assert backend == "nodes"
        rt = Tracked(config, rows, **options)
        rt.players = players
        return rt

    return factory


def join(st: ServerThread) -> tuple[ClientConnection, Welcome]:
    ws = connect(st.url, subprotocols=[SUBPROTOCOL_MSGPACK]).__enter__()  # type: ignore[list-item]
    ws.send(MP.encode(Hello(name="crosser")))
    while True:
        msg = MP.decode(ws.recv(10), accept=SERVER_MESSAGES, max_size=1 << 24)
        if isinstance(msg, Welcome):
            return ws, msg


def session_of(st: ServerThread, entity: int) -> int:
    with st.server._lock:
        for c in st.server.by_sid.values():
            if c.session is not None and c.session.entity == entity:
                return int(c.session.sid)
    raise AssertionError(f"no session holds entity {entity}")


def steer(x: float, y: float, heading: float, target: tuple[float, float]) -> tuple[float, float]:
    """(thrust, turn) towards ``target``: turn towards it, thrust once roughly facing it."""
    want = math.atan2(target[1] - y, target[0] - x)
    off = (want - heading + math.pi) % (2 * math.pi) - math.pi
    return (1.0 if abs(off) < 0.6 else 0.2), max(-1.0, min(1.0, 3.0 * off))


# ---- (a) a player across the node border ---------------------------------------------------------
def test_a_player_keeps_playing_across_the_border_between_two_nodes(bus: str) -> None:
    settings = ServerSettings(port=0, players=2, npcs=20, backend="nodes", workers=2, bus=bus,
                              bus_world=world_name(), local_nodes=2, gateways=0)
    st = ServerThread(WORLD, settings, runtime_factory=tracked(settings.players)).start()
    try:
        rt = st.server.runtime
        assert isinstance(rt, Tracked) and rt.backend == "nodes"
        assert rt.owner == [0, 1] and len(set(rt.nodes)) == 2 and len(set(rt.worker_pids())) == 2
        ws, welcome = join(st)
        sid = session_of(st, welcome.entity)
        seq = 0
        start_left: bool | None = None
        crossed_at: tuple[int, int] | None = None   # (snapshot index, seq sent by then)
        acks: list[int] = []
        xs: list[float] = []
        deadline = time.monotonic() + CROSS_TIMEOUT
        while crossed_at is None or len(acks) < crossed_at[0] + AFTER:
            assert time.monotonic() < deadline, (
                f"after {CROSS_TIMEOUT:g} s: start {'left' if start_left else 'right'}, "
                f"x {xs[-5:]}, {len(acks)} snapshots")
            msg = MP.decode(ws.recv(10), accept=SERVER_MESSAGES, max_size=1 << 24)
            if not isinstance(msg, Snapshot):
                continue
            acks.append(msg.ack)
            me = next((e for e in msg.entities if e[0] == welcome.entity), None)
            if me is None:  # a delta that does not list us: we did not move
                continue
            _, _, x, y, _, _, heading, _ = me
            xs.append(x)
            if start_left is None:
                start_left = x < BORDER
            if crossed_at is None and (x < BORDER) != start_left:
                crossed_at = (len(acks), seq)
            target = (WORLD.width - 48.0 if start_left else 48.0, WORLD.height / 2)
            thrust, turn = steer(x, y, heading, target)
            seq += 1
            ws.send(MP.encode(Input(seq=seq, thrust=thrust, turn=turn, ack=msg.tick)))
        ws.send(MP.encode(Bye("done")))
        ws.close()
        index, seq_then = crossed_at
        after = acks[index:]
        # Inputs kept being applied on the new node: acks never went back and moved past every
        # input sent before the handoff.
        assert all(a <= b for a, b in itertools.pairwise(acks)), acks
        assert len(after) >= AFTER and after[-1] > seq_then, (seq_then, after)
        with rt.lock:
            trail = dict(rt.x)
            served = dict(rt.served)
        # The server's own rows: the entity went from one node's region to the other's ...
        sides = [at[welcome.entity] < BORDER for _, at in sorted(trail.items())]
        assert sides[0] == start_left and sides[-1] != start_left
        home, away = (0, 1) if start_left else (1, 0)
        # ... and the node that built its snapshots changed with it.
        nodes = [by[sid] for _, by in sorted(served.items()) if sid in by]
        assert nodes[0] == home and nodes[-1] == away
        assert nodes.count(away) >= AFTER // 2
    finally:
        st.stop()


def test_serve_backend_nodes_takes_a_node_started_elsewhere(bus: str,
                                                           capsys: pytest.CaptureFixture[str],
                                                           ) -> None:
    """`paratick serve --backend nodes --bus --bus-world --local-nodes` end to end: one node
    here, one started by hand with `paratick node`, which leaves when the server stops."""
    name = world_name()
    node = subprocess.Popen([sys.executable, "-c", BOOT, "node", "--bus", bus, "--world", name,
                             "--id", "far", "--quiet", "--wait", "60"], stdin=subprocess.DEVNULL)
    try:
        rc = main(["serve", "--backend", "nodes", "--bus", bus, "--bus-world", name,
                   "--local-nodes", "1", "--workers", "2", "--regions", "2x1", "--world-size",
                   "512", "--players", "2", "--npcs", "20", "--port", "0", "--gateways", "0",
                   "--duration", "1.5"])
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        final = json.loads(captured.out)
        assert final["runtime"]["backend"] == "nodes" and len(final["runtime"]["workers"]) == 2
        assert final["tick"] > 0 and final["ticker"]["fault"] is None
        assert f"paratick node --bus {bus} --world {name}" in captured.err
        assert f"2 nodes, world '{name}' on {bus}" in captured.err
        assert node.wait(15) == 0  # the server's stop ends the node
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()


# ---- (b) a lost bus --------------------------------------------------------------------------
def restart_broker(url: str, stack: contextlib.ExitStack) -> None:
    """Start the pinned nats-server again on ``url``'s port (what an operator's restart does)."""
    port = int(url.rsplit(":", 1)[1])
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="paratick-natsd-")))
    conf = tmp / "nats.conf"
    conf.write_text(natsd.server_config(client_port=port, store_dir=tmp / "jetstream"))
    stack.enter_context(natsd.running([str(natsd.nats_server_binary()), "-c", str(conf)], [port],
                                      tmp / "nats.log", start_timeout=natsd.START_TIMEOUT))


@pytest.mark.parametrize("comes_back", [False, True], ids=["stays-down", "comes-back"])
def test_a_lost_bus_stops_the_world_with_one_line(comes_back: bool) -> None:
    """The broker stops while `paratick run --backend nodes` ticks: the run exits with status 1
    and one line naming the bus, whether or not the broker comes back on the same port."""
    name = world_name()
    with contextlib.ExitStack() as after:
        with contextlib.ExitStack() as broker:
            url = broker.enter_context(natsd.local_server())
            watch = Link(url)
            broker.callback(watch.close)
            done: queue.SimpleQueue[bytes] = queue.SimpleQueue()
            watch.subscribe(Subjects(name).coord, lambda subject, data: done.put(data))
            proc = subprocess.Popen(
                [sys.executable, "-c", BOOT, "run", "--backend", "nodes", "--bus", url,
                 "--world", name, "--workers", "2", "--ticks", "100000", "--entities", "100",
                 "--regions", "2x1", "--size", "400", "--quiet"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            after.callback(lambda: proc.kill() if proc.poll() is None else None)
            for _ in range(20):  # Hellos, then Done messages: the world is ticking
                done.get(timeout=60)
            assert proc.poll() is None
        # The broker is gone (terminated, its port closed).
        if comes_back:
            restart_broker(url, after)
        _, err_b = proc.communicate(timeout=60)
    err = err_b.decode()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    *nodes, last = err.strip().splitlines()
    assert last.startswith(f"paratick run: error: lost the bus at {url} at tick "), err
    assert last.endswith("(the connection closed); the world stopped")
    # Each local node left at once, saying why in one line of its own (not at the driver's
    # 5 s stop timeout, which would have killed it silently).
    assert len(nodes) == 2, err
    assert all(line.startswith(f"paratick node: error: node {name}-e0-n") and
               line.endswith(f"left world '{name}': lost the bus at {url}") for line in nodes), err


def test_a_lost_bus_stops_the_server() -> None:
    """The broker stops under `paratick serve --backend nodes`: the server stops serving and
    exits with status 1; its final statistics name the lost bus as the ticker's fault."""
    with contextlib.ExitStack() as after:
        with natsd.local_server() as url:
            proc = subprocess.Popen(
                [sys.executable, "-c", BOOT, "serve", "--backend", "nodes", "--bus", url,
                 "--workers", "2", "--regions", "2x1", "--world-size", "512", "--players", "2",
                 "--npcs", "20", "--port", "0", "--gateways", "0"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            after.callback(lambda: proc.kill() if proc.poll() is None else None)
            assert proc.stderr is not None
            first = proc.stderr.readline().decode()  # blocks until the server listens
            assert first.startswith("paratick: serving ws://127.0.0.1:"), first
        out, err_b = proc.communicate(timeout=60)
    assert proc.returncode == 1, err_b.decode()
    fault = json.loads(out)["ticker"]["fault"]
    assert fault.startswith(f"BusLost: lost the bus at {url} at tick "), fault


# ---- (c) the options ---------------------------------------------------------------------------
@pytest.mark.parametrize(("argv", "says"), [
    (["--bus", "nats://127.0.0.1:4222"], "need --backend nodes"),
    (["--bus-world", "arena"], "need --backend nodes"),
    (["--local-nodes", "1"], "need --backend nodes"),
    (["--backend", "nodes", "--local-nodes", "-1", "--bus", "nats://x:1"], "must be >= 0"),
    (["--backend", "nodes", "--local-nodes", "1", "--workers", "2"], "needs --bus"),
    (["--backend", "nodes", "--bus", "nats://x:1", "--bus-world", "a.b"], "world name"),
])
def test_bad_node_options_are_one_line(argv: list[str], says: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["serve", *argv, "--port", "0", "--duration", "0.1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("paratick serve: ") and says in err


def test_an_unreachable_bus_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"nats://127.0.0.1:{natsd.free_port()}"
    rc = main(["serve", "--backend", "nodes", "--bus", url, "--port", "0", "--duration", "0.1"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 1 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"paratick serve: no NATS server at {url}")


def test_help_documents_the_node_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in ("--bus URL", "--bus-world NAME", "--local-nodes K", "nodes"):
        assert flag in out


def test_the_settings_refuse_bus_options_without_the_nodes_backend() -> None:
    with pytest.raises(ValueError, match="need backend 'nodes'"):
        ServerSettings(backend="threads", bus="nats://127.0.0.1:4222")
    assert ServerSettings(backend="nodes", bus="nats://127.0.0.1:4222").bus_world is None
