"""The connection rules without sockets: literal frames in, events out, time passed by hand."""

from __future__ import annotations

import json
from collections.abc import Callable

import msgpack
import pytest

from server.connection import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_REPLACED,
    CLOSE_TOO_BIG,
    CLOSE_TRY_LATER,
    CONNECTION_TRANSITIONS,
    FLOOD_FACTOR,
    ByeReceived,
    CloseConnection,
    Connection,
    ConnectionLimits,
    ConnectionPhase,
    ControlBudget,
    ControlLimits,
    Event,
    HelloReceived,
    InputReceived,
    SendMessage,
    TokenBucket,
)
from server.protocol import (
    CODECS,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Bye,
    Error,
    ErrorCode,
    Welcome,
)
from server.sessions import IllegalTransition, check_transition

MP = CODECS[SUBPROTOCOL_MSGPACK]
JS = CODECS[SUBPROTOCOL_JSON]
HELLO = msgpack.packb({"t": "hello", "v": 1, "name": "ann", "token": None})
HELLO_TOKEN = msgpack.packb({"t": "hello", "v": 1, "name": "ann", "token": "abc"})
BYE = msgpack.packb({"t": "bye", "reason": "done"})
WELCOME = Welcome(entity=3, token="tok", tick=7, tick_rate=30.0, snapshot_rate=20.0,
                  width=512.0, height=512.0, view_radius=64.0, resumed=False)


def inp(seq: int, ack: int | None = None) -> bytes:
    return msgpack.packb({"t": "input", "seq": seq, "thrust": 1.0, "turn": 0.0, "action": 0,
                          "ack": ack})


def conn(**limits: float) -> Connection:
    return Connection(MP, ConnectionLimits(**limits), now=0.0)  # type: ignore[arg-type]


def playing(**limits: float) -> Connection:
    c = conn(**limits)
    assert c.receive_frame(HELLO, 0.0) == [HelloReceived(MP.decode(HELLO))]  # type: ignore[arg-type]
    assert c.welcome(WELCOME) == [SendMessage(WELCOME)]
    return c


def errors(events: list[Event]) -> list[str]:
    return [e.message.code for e in events
            if isinstance(e, SendMessage) and isinstance(e.message, Error)]


def close(events: list[Event]) -> int | None:
    codes = [e.code for e in events if isinstance(e, CloseConnection)]
    assert len(codes) <= 1
    return codes[0] if codes else None


# ---- phases -------------------------------------------------------------------------------------
def test_hello_then_inputs_are_forwarded() -> None:
    c = playing()
    assert c.phase is ConnectionPhase.PLAYING
    (ev,) = c.receive_frame(inp(1, ack=5), 0.01)
    assert isinstance(ev, InputReceived) and ev.input.seq == 1 and ev.input.ack == 5
    assert c.counters["inputs"] == 1 and c.counters["messages_in"] == 2
    assert c.counters["bytes_in"] == len(HELLO) + len(inp(1, ack=5))


def test_input_before_hello_closes_1008() -> None:
    c = conn()
    events = c.receive_frame(inp(1), 0.0)
    assert errors(events) == ["hello_first"] and close(events) == CLOSE_POLICY
    assert c.phase is ConnectionPhase.CLOSING
    assert c.receive_frame(HELLO, 0.1) == []  # closing: drained, nothing happens


def test_second_hello_closes_1008() -> None:
    c = playing()
    events = c.receive_frame(HELLO, 0.1)
    assert errors(events) == ["duplicate_hello"] and close(events) == CLOSE_POLICY


def test_a_bad_token_refusal_lets_the_client_say_hello_again() -> None:
    c = conn()
    assert isinstance(c.receive_frame(HELLO_TOKEN, 0.0)[0], HelloReceived)
    events = c.refuse(ErrorCode.BAD_TOKEN, "unknown token")
    assert errors(events) == ["bad_token"] and close(events) is None
    assert c.phase is ConnectionPhase.AWAITING_HELLO
    assert isinstance(c.receive_frame(HELLO, 0.1)[0], HelloReceived)


def test_refusal_with_a_close_code() -> None:
    c = conn()
    c.receive_frame(HELLO, 0.0)
    events = c.refuse(ErrorCode.SERVER_FULL, "every player entity is in use", CLOSE_TRY_LATER)
    assert errors(events) == ["server_full"] and close(events) == CLOSE_TRY_LATER
    assert c.welcome(WELCOME) == []  # too late: the connection is closing


def test_bye_ends_the_session_and_closes_1000() -> None:
    c = playing()
    events = c.receive_frame(BYE, 0.2)
    assert events[0] == ByeReceived("done") and close(events) == CLOSE_NORMAL
    assert c.said_bye and c.close_reason == "bye"


def test_replaced_closes_4000_with_an_error() -> None:
    c = playing()
    events = c.replaced()
    assert errors(events) == ["replaced"] and close(events) == CLOSE_REPLACED == 4000
    assert "another connection" in c.close_reason


def test_shutdown_says_bye_then_1001() -> None:
    c = playing()
    events = c.shutdown("server shutting down")
    assert events[0] == SendMessage(Bye("server shutting down"))
    assert close(events) == CLOSE_GOING_AWAY
    assert c.shutdown("again") == []


def test_closed_is_final() -> None:
    c = playing()
    c.closed()
    assert c.phase is ConnectionPhase.CLOSED and c.close_code == CLOSE_NORMAL
    assert c.welcome(WELCOME) == [] and c.receive_frame(inp(1), 1.0) == []
    c.closed()  # idempotent
    for old, new in [(ConnectionPhase.CLOSED, ConnectionPhase.PLAYING),
                     (ConnectionPhase.CLOSING, ConnectionPhase.PLAYING),
                     (ConnectionPhase.PLAYING, ConnectionPhase.AWAITING_HELLO)]:
        with pytest.raises(IllegalTransition):
            check_transition(CONNECTION_TRANSITIONS, old, new)


@pytest.mark.parametrize(("code", "close_by"), [
    (1008, lambda c: c.receive_frame(HELLO, 0.1)),                  # a second hello
    (1009, lambda c: c.receive_frame(b"\x80" + b"x" * 64, 0.1)),   # over max_frame
    (1000, lambda c: c.receive_frame(BYE, 0.1)),
    (1001, lambda c: c.shutdown("server shutting down")),
    (1011, lambda c: c.abort(CLOSE_INTERNAL, "internal error")),
    (4000, lambda c: c.replaced()),
], ids=["policy", "too-big", "normal", "going-away", "internal", "replaced"])
def test_only_a_peer_that_broke_the_rules_is_cut_off(
        code: int, close_by: Callable[[Connection], list[Event]]) -> None:
    """1008 and 1009: the I/O layer reads nothing more from the peer and does not wait for its
    close frame; every other close is a closing handshake."""
    c = playing(max_frame=64)
    assert not c.cut_off
    (ev,) = [e for e in close_by(c) if isinstance(e, CloseConnection)]
    assert ev.code == c.close_code == code
    assert ev.cut_off is c.cut_off is (code in (1008, 1009))
    c.closed()
    assert c.cut_off is (code in (1008, 1009))  # the decision stands once the transport is gone


# ---- bad frames ---------------------------------------------------------------------------------
def test_oversize_frame_closes_1009() -> None:
    c = playing(max_frame=64)
    events = c.receive_frame(b"\x80" + b"x" * 64, 0.1)
    assert errors(events) == ["too_large"] and close(events) == CLOSE_TOO_BIG


@pytest.mark.parametrize(("frame", "code"), [
    (b"\xc1", "malformed"),
    (msgpack.packb([1, 2]), "malformed"),
    (msgpack.packb({"t": "teleport"}), "unknown_type"),
    (msgpack.packb({"t": "input", "seq": -1, "thrust": 0.0, "turn": 0.0, "action": 0}),
     "invalid_field"),
    ("{}", "frame_type"),
])
def test_bad_frames_get_an_error_and_the_connection_stays(frame: bytes | str,
                                                          code: str) -> None:
    c = playing()
    events = c.receive_frame(frame, 0.1)
    assert errors(events) == [code] and close(events) is None
    assert c.counters["bad_messages"] == 1 and c.errors_sent[code] == 1


def test_strikes_close_1008_and_a_good_frame_resets_them() -> None:
    c = playing(max_strikes=3)
    for t in range(2):
        assert close(c.receive_frame(b"\xc1", 0.1 * t)) is None
    assert isinstance(c.receive_frame(inp(1), 0.3)[0], InputReceived)  # resets the count
    for t in range(2):
        assert close(c.receive_frame(b"\xc1", 0.4 + 0.1 * t)) is None
    events = c.receive_frame(b"\xc1", 0.7)
    assert errors(events) == ["too_many_errors"] and close(events) == CLOSE_POLICY


def test_json_duplicate_keys_and_nan_are_malformed() -> None:
    c = Connection(JS, ConnectionLimits(), now=0.0)
    c.receive_frame(json.dumps({"t": "hello", "v": 1, "name": "a", "token": None}), 0.0)
    c.welcome(WELCOME)
    dup = '{"t":"input","seq":1,"seq":2,"thrust":0,"turn":0,"action":0}'
    events = c.receive_frame(dup, 0.1)
    assert errors(events) == ["malformed"]
    assert "duplicate key 'seq'" in events[0].message.reason  # type: ignore[union-attr]
    assert errors(c.receive_frame('{"t":"input","seq":NaN}', 0.2)) == ["malformed"]


# ---- the rate limit -----------------------------------------------------------------------------
def test_rate_limit_drops_extra_frames_with_one_error_per_second() -> None:
    c = playing(input_rate=10.0, input_burst=2.0)  # the hello took one token
    got = [c.receive_frame(inp(i), 0.0) for i in range(1, 6)]
    forwarded = sum(1 for e in got if e and isinstance(e[0], InputReceived))
    assert forwarded == 1  # burst 2, one spent on hello
    assert [errors(e) for e in got if e and not isinstance(e[0], InputReceived)] == \
        [["rate_limited"]]  # one error, not one per dropped frame
    assert c.counters["rate_limited"] == 4
    assert isinstance(c.receive_frame(inp(9), 0.1)[0], InputReceived)  # refilled at 10/s
    assert c.receive_frame(inp(10), 0.1) == [] and c.counters["rate_limited"] == 5
    later = [c.receive_frame(inp(i), 1.0) for i in (11, 12, 13)]  # the burst again, then over
    assert [errors(e) for e in later] == [[], [], ["rate_limited"]]  # a second on: an error again


def test_a_flood_far_over_the_rate_limit_closes_1008() -> None:
    c = playing(input_rate=10.0, input_burst=1.0)
    budget = int(10.0 * FLOOD_FACTOR)
    events: list[Event] = []
    sent = 0
    while close(events) is None and sent < 1000:
        events = c.receive_frame(inp(sent + 1), 0.0)
        sent += 1
    assert close(events) == CLOSE_POLICY and c.counters["floods"] == 1
    assert sent == budget + 1  # every frame beyond the burst was dropped until the budget ran out


def test_a_steady_client_at_the_limit_is_never_closed() -> None:
    c = playing(input_rate=64.0, input_burst=4.0)
    for i in range(64 * 30):  # 30 s at exactly the allowed rate (a power of two: exact sums)
        events = c.receive_frame(inp(i + 1), (i + 1) / 64)
        assert events and isinstance(events[0], InputReceived)


# ---- timeouts -----------------------------------------------------------------------------------
def test_hello_timeout_closes_1008() -> None:
    c = conn(hello_timeout=10.0)
    assert c.deadline() == 10.0
    assert c.check_timeouts(9.99) == []
    events = c.check_timeouts(10.0)
    assert errors(events) == ["hello_timeout"] and close(events) == CLOSE_POLICY
    assert c.counters["hello_timeouts"] == 1 and c.deadline() is None


def test_idle_timeout_counts_from_the_last_frame() -> None:
    c = playing(idle_timeout=60.0)
    assert c.deadline() == 60.0
    c.receive_frame(inp(1), 50.0)
    assert c.check_timeouts(100.0) == []  # 50 s since the input
    c.receive_frame(b"\xc1", 90.0)        # any frame counts, even a bad one
    assert c.check_timeouts(149.0) == []
    events = c.check_timeouts(150.0)
    assert errors(events) == ["idle_timeout"] and close(events) == CLOSE_POLICY
    assert c.counters["idle_timeouts"] == 1


# ---- token buckets ------------------------------------------------------------------------------
def test_token_bucket_rate_and_burst() -> None:
    b = TokenBucket(rate=64.0, burst=10.0, now=0.0)  # powers of two: exact clock sums
    assert sum(b.take(0.0) for _ in range(100)) == 10
    assert sum(b.take(0.5) for _ in range(100)) == 10  # refilled, capped at the burst
    got = sum(b.take(0.5 + (i + 1) / 64) for i in range(64))  # one second at the rate
    assert got == 64
    assert sum(b.take(1.5) for _ in range(5)) == 0  # ... and nothing saved up either
    assert not b.take(1.5, 0.5)


def test_control_budget_counts_frames_and_bytes() -> None:
    lim = ControlLimits(rate=4.0, burst=16.0, bytes_rate=1024.0, bytes_burst=4096.0)
    b = ControlBudget(lim, 0.0)
    assert b.allow(16, 0, 0.0)           # a burst of 16 empty pings is fine
    assert not b.allow(1, 0, 0.0)        # the 17th is not
    b = ControlBudget(ControlLimits(rate=4.0, burst=16.0, bytes_rate=100.0, bytes_burst=1000.0),
                      0.0)
    assert b.allow(8, 1000, 0.0)         # 8 frames of 125 bytes: all the byte budget
    assert not b.allow(1, 125, 0.0)      # frames are left, bytes are not
    b = ControlBudget(lim, 0.0)
    assert not b.allow(1, 5000, 0.0)     # bytes over the bucket
    b = ControlBudget(lim, 0.0)
    for t in range(1, 61):               # a ping every second for a minute: always fine
        assert b.allow(1, 125, float(t))


@pytest.mark.parametrize("bad", [{"input_rate": 0.0}, {"max_frame": 0}, {"hello_timeout": -1.0},
                                 {"idle_timeout": 0.0}, {"max_strikes": 0}])
def test_limits_are_validated(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ConnectionLimits(**bad)  # type: ignore[arg-type]
