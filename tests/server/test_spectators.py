"""Spectators without sockets: the wire messages on literal bytes, the connection rules on a
virtual clock, the hub's cap, the workers' samples and the view board."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest

from server.connection import (
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TRY_LATER,
    CloseConnection,
    Connection,
    ConnectionLimits,
    ConnectionPhase,
    HelloReceived,
    SendMessage,
    SpectateReceived,
)
from server.protocol import (
    CODECS,
    SERVER_MESSAGES,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Error,
    ErrorCode,
    InvalidField,
    Spectate,
    UnknownMessageType,
    UnsupportedVersion,
    View,
    Watching,
)
from server.spectators import (
    WORLD_SESSION,
    SpectatorHook,
    ViewBoard,
    live_stats,
    merge_samples,
    sample_shard,
    world_job,
)
from sim.entities import NPC, PLAYER

MP = CODECS[SUBPROTOCOL_MSGPACK]
JS = CODECS[SUBPROTOCOL_JSON]
SPECTATE = msgpack.packb({"t": "spectate", "v": 1})
HELLO = msgpack.packb({"t": "hello", "v": 1, "name": "ann", "token": None})
INPUT = msgpack.packb({"t": "input", "seq": 1, "thrust": 1.0, "turn": 0.0, "action": 0,
                       "ack": None})
BYE = msgpack.packb({"t": "bye", "reason": "done"})
WATCHING = Watching(tick=7, tick_rate=30.0, view_rate=5.0, width=512.0, height=512.0,
                    regions=((0.0, 0.0, 256.0, 512.0, 0), (256.0, 0.0, 512.0, 512.0, 1)),
                    workers=2, max_entities=2000, build="CPython 3.13.15, GIL on",
                    backend="threads (python kernel)")


# ---- the wire messages ------------------------------------------------------------------------
def test_spectate_decodes_from_literal_bytes_in_both_codecs() -> None:
    assert MP.decode(SPECTATE) == Spectate()
    assert JS.decode('{"t":"spectate","v":1}') == Spectate()
    assert JS.encode(Spectate()) == '{"t":"spectate","v":1}'
    with pytest.raises(UnsupportedVersion):
        JS.decode('{"t":"spectate","v":2}')
    with pytest.raises(InvalidField):
        JS.decode('{"t":"spectate","v":1,"name":"x"}')


def test_a_server_never_accepts_server_messages_from_a_client() -> None:
    with pytest.raises(UnknownMessageType):
        JS.decode('{"t":"view","tick":1,"ents":[],"total":0,"stats":{}}')


def test_watching_and_view_round_trip_through_both_codecs() -> None:
    view = View(tick=9, entities=((10, 20, 0, 1), (300, 40, 1, 3)), total=64,
                stats={"mspt": {"p50": 1.5, "p99": None}})
    for codec in (MP, JS):
        assert codec.decode(codec.encode(WATCHING), accept=SERVER_MESSAGES) == WATCHING
        back = codec.decode(codec.encode(view), accept=SERVER_MESSAGES)
        assert isinstance(back, View)
        assert back.entities == view.entities and back.total == 64 and back.stats == view.stats
    assert JS.encode(view) == ('{"t":"view","tick":9,"ents":[[10,20,0,1],[300,40,1,3]],'
                               '"total":64,"stats":{"mspt":{"p50":1.5,"p99":null}}}')
    with pytest.raises(InvalidField):
        JS.decode('{"t":"view","tick":1,"ents":[[1,2,3]],"total":0,"stats":{}}',
                  accept=SERVER_MESSAGES)
    with pytest.raises(InvalidField):
        JS.decode('{"t":"view","tick":1,"ents":[],"total":0,"stats":[]}', accept=SERVER_MESSAGES)


# ---- the connection rules ---------------------------------------------------------------------
def conn(**limits: float) -> Connection:
    return Connection(MP, ConnectionLimits(**limits), now=0.0)  # type: ignore[arg-type]


def watching(c: Connection) -> None:
    assert c.receive_frame(SPECTATE, 0.1) == [SpectateReceived(Spectate())]
    assert c.watching(WATCHING) == [SendMessage(WATCHING)]
    assert c.phase is ConnectionPhase.SPECTATING and c.spectating


def test_an_input_from_a_spectator_breaks_the_rules_1008() -> None:
    c = conn()
    watching(c)
    events = c.receive_frame(INPUT, 0.2)
    assert events == [SendMessage(Error(ErrorCode.SPECTATOR_INPUT,
                                        "spectators cannot send inputs")),
                      CloseConnection(CLOSE_POLICY, "spectators cannot send inputs")]
    assert c.counters["spectator_inputs"] == 1 and c.counters["inputs"] == 0
    assert c.receive_frame(INPUT, 0.3) == []  # closing: drained unread


@pytest.mark.parametrize("second", [HELLO, SPECTATE])
def test_a_spectator_cannot_say_hello_or_spectate_again(second: bytes) -> None:
    c = conn()
    watching(c)
    events = c.receive_frame(second, 0.2)
    assert isinstance(events[0], SendMessage) and isinstance(events[0].message, Error)
    assert events[0].message.code == ErrorCode.DUPLICATE_HELLO
    assert events[-1] == CloseConnection(CLOSE_POLICY, events[-1].reason)  # type: ignore[union-attr]


def test_a_player_cannot_become_a_spectator() -> None:
    c = conn()
    assert c.receive_frame(HELLO, 0.1) == [HelloReceived(c.codec.decode(HELLO))]  # type: ignore[arg-type]
    c.welcome(SimpleNamespace())  # type: ignore[arg-type]
    events = c.receive_frame(SPECTATE, 0.2)
    assert events[-1] == CloseConnection(CLOSE_POLICY, events[-1].reason)  # type: ignore[union-attr]


def test_a_spectator_may_say_bye() -> None:
    c = conn()
    watching(c)
    events = c.receive_frame(BYE, 0.2)
    assert events[-1] == CloseConnection(CLOSE_NORMAL, "bye")


def test_a_silent_spectator_is_not_idle_but_a_silent_connection_still_must_say_hello() -> None:
    c = conn(idle_timeout=5.0, hello_timeout=1.0)
    watching(c)
    assert c.deadline() is None
    assert c.check_timeouts(1e6) == []
    silent = conn(hello_timeout=1.0)
    assert silent.deadline() == 1.0
    assert silent.check_timeouts(1.0)[-1] == CloseConnection(CLOSE_POLICY, "no hello within 1 s")


def test_a_refused_spectator_gets_an_error_then_1013() -> None:
    c = conn()
    c.receive_frame(SPECTATE, 0.1)
    events = c.refuse(ErrorCode.SPECTATORS_FULL, "full; try again later", CLOSE_TRY_LATER)
    assert events == [SendMessage(Error(ErrorCode.SPECTATORS_FULL, "full; try again later")),
                      CloseConnection(CLOSE_TRY_LATER, "full; try again later")]
    assert c.phase is ConnectionPhase.CLOSING


# ---- the hub's cap (a GameServer that is not started: no socket, no worker) --------------------
def hub(max_spectators: int) -> Any:
    from server.app import GameServer, ServerSettings
    from sim.config import WorldConfig

    world = WorldConfig(width=512, height=512, regions_x=2, regions_y=1, view_radius=64.0)
    srv = GameServer(world, ServerSettings(max_spectators=max_spectators))
    srv.runtime = SimpleNamespace(owner=[0, 1], workers=2, backend="threads", kernel="python")
    return srv


def client(srv: Any) -> Any:
    c = SimpleNamespace(conn=conn(), spectator=False, session=None, addr="127.0.0.1",
                        gateway=SimpleNamespace(index=0))
    c.conn.receive_frame(SPECTATE, 0.1)
    return c


def test_the_hub_caps_spectators_and_frees_places_on_release() -> None:
    srv = hub(2)
    a, b, c = client(srv), client(srv), client(srv)
    for x in (a, b):
        (ev,) = srv.watch(x, Spectate())
        assert isinstance(ev, SendMessage) and isinstance(ev.message, Watching)
        assert ev.message.regions == ((0.0, 0.0, 256.0, 512.0, 0), (256.0, 0.0, 512.0, 512.0, 1))
    refused = srv.watch(c, Spectate())
    assert refused[0].message.code == ErrorCode.SPECTATORS_FULL  # type: ignore[union-attr]
    assert "try again later" in refused[0].message.reason  # type: ignore[union-attr]
    assert refused[-1].code == CLOSE_TRY_LATER  # type: ignore[union-attr]
    assert srv.spectators == 2 and srv.counters["rejected_spectators"] == 1
    srv.release(a, admitted=False)
    srv.release(c, admitted=False)  # never held a place: frees nothing
    assert srv.spectators == 1 and not a.spectator
    d = client(srv)
    assert isinstance(srv.watch(d, Spectate())[0].message, Watching)  # type: ignore[union-attr]


def test_no_spectators_at_all_with_a_cap_of_zero() -> None:
    srv = hub(0)
    events = srv.watch(client(srv), Spectate())
    assert events[-1].code == CLOSE_TRY_LATER  # type: ignore[union-attr]
    assert "admits no spectators" in events[0].message.reason  # type: ignore[union-attr]


# ---- the workers' samples and the board -------------------------------------------------------
def shard(region: int, n: int) -> Any:
    from sim.config import WorldConfig
    from sim.kernels import make_shard
    from sim.world import partition, spawn

    world = WorldConfig(width=512, height=512, regions_x=2, regions_y=2, view_radius=64.0)
    return make_shard(world, region, partition(world, spawn(world, n, players=4))[region],
                      kernel="python")


def test_a_shard_sample_is_strided_and_capped() -> None:
    s = shard(0, 800)
    n = len(s)
    owned, flat = sample_shard(s, 50)
    assert owned == n and 0 < len(flat) // 3 <= 50 and len(flat) % 3 == 0
    xs, ys, codes = flat[0::3], flat[1::3], flat[2::3]
    assert all(0 <= x <= 256 and 0 <= y <= 256 for x, y in zip(xs, ys, strict=True))
    ids = {r[0] for r in s.rows() if r[1] == PLAYER}
    assert all(c == NPC or (c < 0 and -1 - c in ids) for c in codes)  # players by id
    other = type("OtherKernel", (), {"rows": lambda self: s.rows(), "__len__": lambda self: n})
    owned, flat2 = sample_shard(other(), 50)  # a kernel without columns: through rows()
    assert owned == n and 0 < len(flat2) // 3 <= 50 and len(flat2) % 3 == 0


def test_the_hook_answers_the_world_job_beside_player_jobs() -> None:
    hook = SpectatorHook(view_radius=64.0)
    shards = [shard(0, 400), shard(1, 400)]
    out = hook.run(5, shards, [tuple(world_job(100, 4))])
    assert [sid for sid, _ in out] == [WORLD_SESSION, WORLD_SESSION]
    assert [(p[0], p[1]) for _, p in out] == [(5, 0), (5, 1)]
    assert all(len(p[3:]) // 3 <= 25 for _, p in out)
    assert hook.run(6, shards, []) == []


def test_merged_samples_keep_regions_and_respect_the_cap() -> None:
    samples = [[12, 1, 3, 10, 11, -1, 12, 13, 1], [12, 0, 2, 1, 2, 1]]
    tick, ents, total = merge_samples(samples, cap=2, players={0})
    assert (tick, total) == (12, 5)
    assert ents == ((1, 2, NPC, 0), (10, 11, PLAYER, 1))


def test_player_slots_nobody_holds_are_drawn_as_plain_entities() -> None:
    # entities 3 and 5 are players' entities (codes -4 and -6); only 5 is lent to a session
    samples = [[7, 0, 3, 1, 1, -4, 2, 2, -6, 3, 3, NPC]]
    _, ents, _ = merge_samples(samples, cap=10, players={5})
    assert [e[2] for e in ents] == [NPC, PLAYER, NPC]
    _, ents, _ = merge_samples(samples, cap=10)
    assert [e[2] for e in ents] == [NPC, NPC, NPC]


def test_the_board_builds_each_view_once_per_sample_and_codec() -> None:
    calls = []

    def stats() -> dict[str, Any]:
        calls.append(1)
        return {"tick": 3, "ticker": {"tick_rate_target": 30.0, "budget_ms": 33.3,
                                      "mspt_p50": 1.0, "mspt_p99": float("nan")}}

    board = ViewBoard(stats, lambda: 1, cap=10)
    assert board.payload(SUBPROTOCOL_JSON) is None
    board.publish([[3, 0, 1, 5, 6, 1]])
    tick, data = board.payload(SUBPROTOCOL_JSON)  # type: ignore[misc]
    assert board.payload(SUBPROTOCOL_JSON) == (tick, data)
    assert board.payload(SUBPROTOCOL_MSGPACK) is not None
    assert len(calls) == 1 and board.builds == 1
    view = json.loads(data)
    assert view["ents"] == [[5, 6, 1, 0]] and view["total"] == 1
    assert view["stats"]["mspt"] == {"p50": 1.0, "p99": None}  # NaN is not JSON: null
    board.publish([[4, 0, 1, 7, 8, 1]])
    assert board.payload(SUBPROTOCOL_JSON)[0] == 4  # type: ignore[index]
    assert len(calls) == 2


def test_live_stats_reuse_the_servers_figures() -> None:
    stats = {"tick": 90, "ticker": {"tick_rate_target": 30.0, "budget_ms": 33.3,
                                    "mspt_p50": 2.0, "mspt_p99": 9.0, "deadline_misses": 1},
             "runtime": {"backend": "threads", "kernel": "python", "ticks_per_s": 15.0,
                         "shards": [{"region": 0, "worker": 0, "entities": 7,
                                     "mspt": {"p50": 0.5, "p99": 0.9}}],
                         "workers": [{"worker": 0, "gil_enabled": False,
                                      "mspt": {"p50": 1.0, "p99": 2.0}}]},
             "connections": {"open": 5, "playing": 3},
             "gateways": [{"index": 0, "connections": 5}]}
    live = live_stats(stats, 2)
    assert live["dilation"] == 0.5 and live["mspt"] == {"p50": 2.0, "p99": 9.0}
    assert live["shards"] == [{"region": 0, "worker": 0, "entities": 7, "p50": 0.5, "p99": 0.9}]
    assert live["workers"] == [{"worker": 0, "gil_enabled": False, "p50": 1.0, "p99": 2.0}]
    assert (live["players"], live["spectators"], live["connections"]) == (3, 2, 5)
    assert live["gateways"] == [{"index": 0, "connections": 5}]
    assert set(live["build"]) == {"python", "free_threaded", "gil_enabled"}
    json.dumps(live, allow_nan=False)


# ---- a gateway pushing views (no loop needed: push_views is plain code on the gateway) ----------
def gateway(payload: Any) -> tuple[Any, Any, list[str]]:
    from server.gateway import Client, Gateway

    notes: list[str] = []
    hub = SimpleNamespace(board=SimpleNamespace(payload=payload),
                          log=SimpleNamespace(note=lambda kind, line: notes.append(line)))
    gw = Gateway(hub, 0)  # type: ignore[arg-type]
    c = Client(None, "127.0.0.1", conn(), gw, 2)
    c.spectator = True
    gw.spectators.add(c)
    return gw, c, notes


def test_each_view_is_queued_once_and_the_queue_drops_the_oldest() -> None:
    tick = [5]
    gw, c, _ = gateway(lambda name: (tick[0], f"view {tick[0]} {name}"))
    gw.push_views()
    gw.push_views()  # the same sample again: not queued twice
    assert list(c.snapshots) == ["view 5 paratick.msgpack.v1"]
    for t in (6, 7):
        tick[0] = t
        gw.push_views()
    assert list(c.snapshots) == ["view 6 paratick.msgpack.v1", "view 7 paratick.msgpack.v1"]
    assert gw.counters["views_dropped"] == 1


def test_a_view_that_fails_to_build_is_counted_logged_and_skipped() -> None:
    gw, c, notes = gateway(lambda name: 1 / 0)
    gw.push_views()
    assert gw.counters["view_errors"] == 1 and not c.snapshots
    assert "ZeroDivisionError" in notes[0]


@pytest.mark.parametrize("kernel", ["python", "numpy", "numpy-group"])
def test_every_kernel_is_sampled_from_its_columns_as_rows_would_give(kernel: str) -> None:
    """The strided column reads (:func:`server.spectators._columns`) pick entities that exist,
    with their kind, at most the cap, for each kernel and the numpy group's shards."""
    from server.spectators import _columns
    from sim.config import WorldConfig
    from sim.kernels import make_shard, make_shards
    from sim.world import partition, spawn

    world = WorldConfig(width=1024, height=1024, regions_x=2, regions_y=2, view_radius=64.0)
    per = partition(world, spawn(world, 3000, players=50))
    if kernel == "numpy-group":
        shards = make_shards(world, dict(enumerate(per)), kernel="numpy")
    else:
        shards = [make_shard(world, r, per[r], kernel=kernel) for r in range(4)]
    for s in shards:
        assert _columns(s, 3) is not None  # the fast path, not rows()
        owned, flat = sample_shard(s, 100)
        rows = s.rows()
        assert owned == len(rows) and 0 < len(flat) // 3 <= 100
        # a player's code is -1 - its id (the hub tells held slots from unused ones), an NPC's
        # its kind
        real = {(round(r[2]), round(r[3]), -1 - r[0] if r[1] == PLAYER else r[1]) for r in rows}
        assert set(zip(flat[0::3], flat[1::3], flat[2::3], strict=True)) <= real


# ---- the ticker's side: world jobs only while someone watches, at the view rate -----------------
class FakeRuntime:
    """Records each step's view flag and jobs; ticks by one."""

    def __init__(self) -> None:
        self.tick = 0
        self.calls: list[tuple[bool, list[Any]]] = []

    def step(self, inputs: Any, view: bool, jobs: Any) -> Any:
        self.calls.append((view, list(jobs)))
        self.tick += 1
        return SimpleNamespace(tick=self.tick, hook_results=[(WORLD_SESSION, [self.tick, 0, 0])]
                               if any(j[1] == WORLD_SESSION for j in jobs) else [],
                               hook_errors=[])


def test_world_jobs_only_while_spectators_watch_and_at_the_view_rate() -> None:
    srv = hub(8)
    rt = srv.runtime = FakeRuntime()
    for _ in range(30):
        assert srv._tick_once() == []  # nobody watches: no job, nothing returned
    assert all(not jobs for _, jobs in rt.calls)
    srv.spectators = 1
    results = [srv._tick_once() for _ in range(30)]  # 1 s at 30 Hz: VIEW_RATE samples
    world = [jobs for _, jobs in rt.calls[30:] if jobs]
    assert len(world) == 5 and all(j[0][1] == WORLD_SESSION for j in world)
    assert not any(view for view, _ in rt.calls)  # no player: no view-row exchange either
    assert sum(1 for r in results if r) == 5


def test_a_published_sample_wakes_only_the_gateways_with_spectators() -> None:
    srv = hub(8)
    woken: list[int] = []

    def gw(index: int, spectators: set[object]) -> Any:
        return SimpleNamespace(spectators=spectators, push_views=None, counters={},
                               errors_sent={}, call_soon=lambda fn, *a: woken.append(index),
                               stats=lambda: {"index": index, "connections": 0, "playing": 0})

    srv.gateways = [gw(1, {object()}), gw(2, set())]
    srv._post([(WORLD_SESSION, [3, 0, 1, 5, 6, 1])])
    assert woken == [1]
    assert srv.board.payload(SUBPROTOCOL_JSON) is not None
