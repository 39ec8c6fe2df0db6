"""Messages (sans-I/O) and channels: bounded, counted, no deadlock on large crossing sends."""

from __future__ import annotations

import marshal
import threading
import time
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.runtime import ChannelClosed, ChannelFull, MessageError, channels, interp
from server.runtime import messages as m


def test_messages_round_trip_typed_with_tuple_fields() -> None:
    border = ([(1, 0, 1.5, 2.5, 0.0, 0.0, 4.0, 0.0, 0, 0.0, 0.0, 0, 0)], [1.0, 2.0, 4.0], [])
    data = m.encode(m.Borders(7, 2, [(0, 1, border)]))
    assert m.decode(data) == m.Borders(7, 2, ((0, 1, (tuple(border[0]), (1.0, 2.0, 4.0), ())),))
    assert m.decode(m.encode(m.Stop())) == m.Stop()


def test_wire_bytes_are_the_positional_array() -> None:
    """The typed messages kept the wire format: [VERSION, KIND, *fields in order]."""
    msg = m.Done(3, 41, {"ms": 1.5}, [(7, b"x")])
    assert m.encode(msg) == msgpack.packb((m.VERSION, 3, 3, 41, {"ms": 1.5}, [(7, b"x")]),
                                          use_bin_type=True)
    assert [t.KIND for t in m.TYPES] == list(range(10)) and m.name(2) == "Borders"


@pytest.mark.parametrize("data", [
    b"", b"\xc1", msgpack.packb([99, m.Stop.KIND]), msgpack.packb([m.VERSION, 42]),
    msgpack.packb([m.VERSION, m.Tick.KIND, 1]), msgpack.packb([m.VERSION, True]),
    msgpack.packb({"v": 1}), msgpack.packb(3)])
def test_bad_messages_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(MessageError):
        m.decode(data)


def test_encode_refuses_unencodable_fields() -> None:
    with pytest.raises(MessageError):
        m.encode(m.Ping(object()))
    with pytest.raises(TypeError):
        m.Tick(1)  # type: ignore[call-arg]  # the dataclass checks the arity


def test_thread_inbox_is_bounded_and_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channels, "SEND_TIMEOUT", 0.01)
    hub = channels.ThreadHub(2, maxsize=3)
    a, b = hub.endpoint(0), hub.endpoint(1)
    for i in range(3):
        a.send(1, bytes([i]) * 10)
    with pytest.raises(ChannelFull):
        a.send(1, b"overflow")
    assert a.statistics().full_events == 1
    assert a.statistics().messages_sent == 3 and a.statistics().bytes_sent == 30
    assert [b.recv(0) for _ in range(3)] == [bytes([i]) * 10 for i in range(3)]
    assert b.recv(0) is None
    assert b.statistics().messages_received == 3 and b.statistics().bytes_received == 30


def test_capacity_covers_the_lockstep_bound() -> None:
    for w in (1, 2, 16, 64):
        assert channels.capacity(w) >= w + 2  # one control + one border per peer + exit


def test_socket_mesh_large_crossing_sends_do_not_deadlock() -> None:
    mesh = channels.socket_mesh(2)
    a, b = channels.FdEndpoint(0, mesh[0]), channels.FdEndpoint(1, mesh[1])
    big = bytes(range(256)) * 8192  # 2 MiB, far beyond a socket buffer
    got: dict[str, bytes | None] = {}
    # Neither side reads before both have sent: each send then finds the other's buffer full
    # (with the other side already reading, the kernel could take 2 MiB in one send).
    both_sent = threading.Barrier(2, timeout=30)

    def side(ep: channels.FdEndpoint, dst: int, name: str) -> None:
        ep.send(dst, big)       # cannot complete until the other side reads...
        both_sent.wait()
        got[name] = ep.recv(30)  # ...which it does while waiting here
        assert ep.flush(30)      # our own frame may still be partly queued

    t = threading.Thread(target=side, args=(b, 0, "b"))
    t.start()
    side(a, 1, "a")
    t.join(30)
    assert got == {"a": big, "b": big}
    assert a.statistics().bytes_received == len(big)
    assert a.statistics().full_events >= 1
    b.close()
    with pytest.raises(ChannelClosed):
        a.recv(1)
    a.close()


def test_socket_mesh_frames_keep_boundaries_and_order() -> None:
    mesh = channels.socket_mesh(3)
    eps = [channels.FdEndpoint(i, mesh[i]) for i in range(3)]
    msgs = [bytes([i]) * (i * 37 % 200) for i in range(100)]
    for msg in msgs:
        eps[1].send(0, msg)
    assert [eps[0].recv(5) for _ in msgs] == msgs
    assert eps[0].recv(0.01) is None
    for ep in eps:
        ep.close()


@pytest.mark.skipif(not interp.available(), reason="no subinterpreters on this interpreter")
def test_interpreter_queue_with_wakeup_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channels, "SEND_TIMEOUT", 0.01)
    hub = channels.InterpHub(2, maxsize=2)
    try:
        a, b = hub.endpoint(0), hub.endpoint(1)
        assert b.recv(0.01) is None
        a.send(1, b"one")
        a.send(1, b"two")
        with pytest.raises(ChannelFull):
            a.send(1, b"three")
        assert a.statistics().full_events == 1
        assert b.recv(1) == b"one" and b.recv(1) == b"two"

        def later() -> None:
            a.send(1, b"wake")

        t = threading.Timer(0.05, later)
        t.start()
        assert b.recv(10) == b"wake"  # woken by the pipe, not by polling
        t.join()
        assert b.statistics().messages_received == 3
    finally:
        hub.close()


@given(st.binary(max_size=200))
def test_decode_of_arbitrary_bytes_never_raises_anything_but_protocol_error(data: bytes) -> None:
    try:
        msg = m.decode(data)
    except MessageError:
        return
    assert isinstance(msg, m.TYPES)


@given(st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 2**31),
                          st.floats(allow_nan=False), st.floats(allow_nan=False),
                          st.integers(0, 255)), max_size=20))
def test_tick_messages_round_trip_exactly(inputs: list[tuple[int, int, float, float, int]]) -> None:
    assert m.decode(m.encode(m.Tick(3, inputs, True, []))) == m.Tick(3, tuple(inputs), True, ())


def test_socket_endpoint_refuses_a_corrupt_length_and_an_endless_inbox(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import socket as socket_

    a, b = socket_.socketpair()
    ep = channels.FdEndpoint(0, {1: a})
    try:
        b.sendall((channels.MAX_FRAME_BYTES + 1).to_bytes(4, "little") + b"xx")
        with pytest.raises(MessageError, match="corrupt"):
            ep.recv(2.0)
    finally:
        ep.close()
        b.close()
    monkeypatch.setattr(channels, "MAX_INBOX", 3)
    a, b = socket_.socketpair()
    ep = channels.FdEndpoint(0, {1: a})
    try:
        b.sendall(b"".join(channels.frame(b"m%d" % i) for i in range(5)))
        with pytest.raises(MessageError, match="unread messages"):
            ep.recv(2.0)
        assert ep.stats.max_inbox == 3
    finally:
        ep.close()
        b.close()


@pytest.mark.parametrize("transport", ["threads", "sockets"])
def test_recv_soon_takes_what_arrives_while_it_polls_then_blocks_like_recv(transport: str,
                                                                          ) -> None:
    if transport == "threads":
        hub = channels.ThreadHub(2, maxsize=8)
        a, b = hub.endpoint(0), hub.endpoint(1)
        close = [hub.close]
    else:
        mesh = channels.socket_mesh(2)
        a, b = channels.FdEndpoint(0, mesh[0]), channels.FdEndpoint(1, mesh[1])
        close = [a.close, b.close]
    try:
        later = threading.Timer(0.01, b.send, args=(0, b"borders"))
        later.start()
        assert a.recv_soon(5.0, spin=1.0) == b"borders"  # arrived during the spin
        later.join()
        later = threading.Timer(0.05, b.send, args=(0, b"late"))
        later.start()
        assert a.recv_soon(5.0, spin=0.001) == b"late"    # after the spin: the blocking wait
        later.join()
        assert a.recv_soon(0.05, spin=0.01) is None       # nothing: None after the timeout
        assert a.statistics().messages_received == 2
    finally:
        for c in close:
            c()


def test_workers_spin_only_with_a_core_each_and_no_shared_gil(monkeypatch: pytest.MonkeyPatch,
                                                               ) -> None:
    from server.runtime import runtime as rt_mod

    rt = rt_mod.Runtime.__new__(rt_mod.Runtime)
    monkeypatch.setattr(rt_mod, "usable_cores", lambda: 2)
    for gil, backend, workers, want in [
        (True, "threads", 2, 0.0),           # one GIL: a spinner stalls its neighbour
        (False, "threads", 2, rt_mod.SPIN_S),
        (True, "processes", 2, rt_mod.SPIN_S),
        (True, "interpreters", 2, rt_mod.SPIN_S),
        (False, "threads", 3, 0.0),          # more workers than cores
        (False, "inline", 1, 0.0),
    ]:
        monkeypatch.setattr(rt_mod, "gil_enabled", lambda g=gil: g)
        rt.workers = workers
        assert rt._spin(backend, "python") == want, (gil, backend, workers)


def _two_workers(monkeypatch: pytest.MonkeyPatch, backend: str, cores: int) -> Any:
    """A 2-worker runtime of a tiny world, unpinned, on a machine said to have ``cores``."""
    from server.runtime import runtime as rt_mod
    from sim.config import WorldConfig
    from sim.world import spawn

    monkeypatch.setattr(rt_mod, "usable_cores", lambda: cores)
    config = WorldConfig(width=256.0, height=256.0, regions_x=2, regions_y=1)
    return rt_mod.Runtime(config, spawn(config, 40), backend=backend, workers=2, pin=False)


def _spied_spins(monkeypatch: pytest.MonkeyPatch, rt: Any) -> list[float]:
    """Every ``spin`` the coordinator passes to its endpoint's ``recv_message`` from now on."""
    spins: list[float] = []
    ep = rt._ep
    assert ep is not None
    recv = ep.recv_message

    def spy(timeout: float | None, spin: float = 0.0) -> object:
        spins.append(spin)
        return recv(timeout, spin)

    monkeypatch.setattr(ep, "recv_message", spy)
    return spins


@pytest.mark.parametrize(("cores", "coordinator_polls"), [(2, False), (3, True)])
def test_a_coordinator_of_its_own_polls_for_reports_only_with_a_core_left_over(
        monkeypatch: pytest.MonkeyPatch, cores: int, coordinator_polls: bool) -> None:
    """Processes: with a worker on every core, the coordinator sleeps until each report
    arrives: polling there takes the core of the worker it waits for."""
    with _two_workers(monkeypatch, "processes", cores) as rt:
        spins = _spied_spins(monkeypatch, rt)
        rt.step()
        assert len(spins) >= 2 and spins[0] == 0.0  # the first report: always asleep
        assert (max(spins[1:]) > 0) is coordinator_polls


def test_a_coordinator_leading_worker_0_polls_longer_only_while_stepped_flat_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads: the coordinator ticks worker 0 itself, so it has that worker's core and polls
    for the others' reports from the start; while its caller steps again at once it polls for
    up to FLAT_OUT_SPIN_S, else SPIN_S."""
    from server.runtime import runtime as rt_mod

    monkeypatch.setattr(rt_mod, "gil_enabled", lambda: False)
    with _two_workers(monkeypatch, "threads", 2) as rt:
        spins = _spied_spins(monkeypatch, rt)
        rt.step()
        time.sleep(0.02)  # paced
        rt.step()
        paced = list(spins)
        spins.clear()
        rt.step()  # at once
        # (worker 0's own waits for borders pass here too, polling SPIN_S)
        assert paced and set(paced) == {rt_mod.SPIN_S}
        assert rt_mod.FLAT_OUT_SPIN_S in spins


def test_thread_endpoints_hand_message_objects_over_and_bytes_on_request() -> None:
    hub = channels.ThreadHub(2, maxsize=8)
    a, b = hub.endpoint(0), hub.endpoint(1)
    try:
        assert a.in_memory and not channels.Endpoint.in_memory
        borders = m.Borders(3, 0, [(1, 2, ([], [0.5, 1.5, 4.0], []))])
        a.send_message(1, borders)
        assert b.recv_message(1.0) is borders          # the object itself: nothing encoded
        a.send(1, m.encode(m.Stop()))
        assert b.recv_message(1.0) == m.Stop()          # bytes sent as bytes are decoded
        a.send_message(1, m.Ping(b"x"))
        assert b.recv(1.0) == m.encode(m.Ping(b"x"))    # the byte API still gets bytes
        assert a.statistics().messages_sent == 3
        assert a.statistics().bytes_sent == len(m.encode(m.Stop()))
    finally:
        hub.close()


def test_a_receiver_that_stops_spinning_never_misses_an_unwoken_message() -> None:
    """Senders skip the wake-up byte while the receiver spins; racing that against the end of
    the spin, every message still arrives, in order, without waiting for a timeout."""
    hub = channels.ThreadHub(2, maxsize=4096)
    a, b = hub.endpoint(0), hub.endpoint(1)
    n = 3000
    sender = threading.Thread(target=lambda: [
        (a.send_message(1, m.Ping(i)), time.sleep(0.0002 if i % 7 == 0 else 0))
        for i in range(n)])
    try:
        start = time.monotonic()
        sender.start()
        got = []
        for i in range(n):
            # alternate tiny spins (which end mid-burst) with plain blocking receives
            msg = b.recv_message(5.0, spin=1e-5 if i % 2 else 0.0)
            assert isinstance(msg, m.Ping)
            got.append(msg.payload)
        assert got == list(range(n))
        assert time.monotonic() - start < 5.0  # no message waited for a timeout
        assert hub.spinning == [False, False]
    finally:
        sender.join(10)
        hub.close()


LOCAL_SAMPLES = [
    m.Hello(1, {"gil": False, "pid": 7, "interp": 2, "cmsgpack": False, "python": "3.13.15"}),
    m.Tick(4, [(0, 3, 1.0, -0.5, 1)], True, [(1, "job")]),
    m.Borders(7, 2, [(0, 1, ([(1, 0, 1.5, 2.5, 0.0, 0.0, 4.0, 0.0, 0, 0.0, 0.0, 0, 0)],
                             [1.0, 2.0, 4.0], []))]),
    m.Done(3, 41, {"ms": 1.5, "adv": [0.1, 0.2], "ch": {"messages_sent": 3}}, [(7, b"x")]),
    m.Rows(), m.RowsOk(0, [(1, 0, 2.0)]), m.Fail(1, "ShardFault", "Traceback ..."), m.Stop(),
    m.Exited(2, ""), m.Ping(b"\x00" * 64),
]


@pytest.mark.parametrize("msg", LOCAL_SAMPLES, ids=lambda msg: m.name(msg))
def test_local_messages_round_trip_keeping_the_senders_types(msg: m.Message) -> None:
    got = m.decode_local(m.encode_local(msg))
    assert got == msg and type(got) is type(msg)
    if isinstance(msg, m.Borders):
        assert isinstance(got.borders, list) and isinstance(got.borders[0][2][1], list)


@pytest.mark.parametrize("data", [
    b"", b"\x00garbage", marshal.dumps((99, m.Stop.KIND)), marshal.dumps((m.VERSION, 42)),
    marshal.dumps((m.VERSION, m.Tick.KIND, 1)), marshal.dumps([m.VERSION, m.Stop.KIND]),
    marshal.dumps(3)])
def test_bad_local_messages_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(MessageError):
        m.decode_local(data)


def test_encode_local_refuses_what_marshal_cannot_carry() -> None:
    with pytest.raises(MessageError, match="cannot cross interpreters"):
        m.encode_local(m.Ping(object()))


def test_interpreter_endpoints_carry_messages_as_marshal() -> None:
    hub = channels.InterpHub(2, maxsize=8)
    try:
        a, b = hub.endpoint(0), hub.endpoint(1)
        assert not a.in_memory and not a.msgpack_types
        a.send_message(1, LOCAL_SAMPLES[2])
        got = b.recv_message(1.0)
        assert got == LOCAL_SAMPLES[2]
        a.send_message(1, m.Stop())
        assert marshal.loads(b.recv(1.0)) == (m.VERSION, m.Stop.KIND)  # the bytes on the queue
    finally:
        hub.close()
