"""The wire codec: literal bytes, validation of everything a peer sends, round trips."""

from __future__ import annotations

import contextlib
import json
import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server import protocol
from server.protocol import (
    CLIENT_MESSAGES,
    CODECS,
    HEADING_SCALE,
    POS_SCALE,
    SERVER_MESSAGES,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Bye,
    Error,
    ErrorCode,
    FrameTooLarge,
    FrameTypeError,
    Hello,
    Input,
    InvalidField,
    JsonCodec,
    MalformedMessage,
    MsgpackCodec,
    ProtocolError,
    Snapshot,
    SnapshotGap,
    UnknownMessageType,
    UnsupportedVersion,
    Welcome,
    apply_snapshot,
    codec_for,
    dequantise,
    pack_int,
    quantise,
    snapshot_map,
)

MP = MsgpackCodec()
JS = JsonCodec()

INPUT_MSGPACK = (b"\x86\xa1t\xa5input\xa3seq\x01\xa6thrust\xcb?\xe0\x00\x00\x00\x00\x00\x00"
                 b"\xa4turn\xcb\x00\x00\x00\x00\x00\x00\x00\x00\xa6action\x00\xa3ack\xc0")
INPUT_JSON = '{"t":"input","seq":1,"thrust":0.5,"turn":0.0,"action":0,"ack":null}'
HELLO_MSGPACK = b"\x84\xa1t\xa5hello\xa1v\x01\xa4name\xa3ann\xa5token\xc0"


# ---- literal bytes ------------------------------------------------------------------------------
def test_input_encodes_to_literal_msgpack_bytes() -> None:
    assert MP.encode(Input(seq=1, thrust=0.5)) == INPUT_MSGPACK


def test_input_encodes_to_literal_json_text() -> None:
    assert JS.encode(Input(seq=1, thrust=0.5)) == INPUT_JSON


def test_literal_frames_decode() -> None:
    assert MP.decode(INPUT_MSGPACK) == Input(seq=1, thrust=0.5)
    assert JS.decode(INPUT_JSON) == Input(seq=1, thrust=0.5)
    assert MP.decode(HELLO_MSGPACK) == Hello(name="ann")
    assert JS.decode('{"t":"hello","v":1,"name":"ann"}') == Hello(name="ann")
    assert JS.decode('{"t":"bye"}') == Bye()


def test_snapshot_wire_form_is_quantised_integers() -> None:
    snap = Snapshot(tick=7, ack=3, entities=((5, 1, 10.5, 2.0, -1.25, 0.0, 0.5, 9),))
    assert JS.encode(snap) == ('{"t":"snapshot","tick":7,"ack":3,"base":null,'
                               '"ents":[[5,1,168,32,-20,0,512,9]],"gone":[]}')


def test_every_strict_prefix_of_a_frame_is_rejected() -> None:
    for cut in range(len(INPUT_MSGPACK)):
        with pytest.raises(ProtocolError):
            MP.decode(INPUT_MSGPACK[:cut])
    for cut in range(len(INPUT_JSON)):
        with pytest.raises(ProtocolError):
            JS.decode(INPUT_JSON[:cut])


# ---- rejection --------------------------------------------------------------------------------
@pytest.mark.parametrize(("codec", "data", "error"), [
    (MP, INPUT_JSON, FrameTypeError),
    (JS, INPUT_MSGPACK, FrameTypeError),
    (MP, b"\xc1", MalformedMessage),
    (JS, "{not json", MalformedMessage),
    (MP, msgpack.packb([1, 2, 3]), MalformedMessage),
    (JS, '"hello"', MalformedMessage),
    (JS, '{"type":"input"}', MalformedMessage),
    (JS, '{"t":5}', MalformedMessage),
    (MP, msgpack.packb(msgpack.ExtType(1, b"x")), MalformedMessage),
    (MP, msgpack.packb({"t": "input", "x": msgpack.ExtType(3, b"")}), MalformedMessage),
    (JS, '{"t":"teleport"}', UnknownMessageType),
    (JS, '{"t":"snapshot","tick":1,"ack":0,"ents":[],"gone":[]}', UnknownMessageType),
    (JS, '{"t":"input","seq":1,"thrust":0,"turn":0}', InvalidField),
    (JS, '{"t":"input","seq":1,"thrust":0,"turn":0,"action":0,"warp":1}', InvalidField),
    (JS, '{"t":"input","seq":"1","thrust":0,"turn":0,"action":0}', InvalidField),
    (JS, '{"t":"input","seq":true,"thrust":0,"turn":0,"action":0}', InvalidField),
    (JS, '{"t":"input","seq":-1,"thrust":0,"turn":0,"action":0}', InvalidField),
    (JS, '{"t":"input","seq":1,"thrust":"x","turn":0,"action":0}', InvalidField),
    (JS, '{"t":"input","seq":1,"thrust":NaN,"turn":0,"action":0}', MalformedMessage),
    (JS, '{"t":"input","seq":1,"thrust":Infinity,"turn":0,"action":0}', MalformedMessage),
    (JS, '{"t":"input","seq":1,"thrust":1e999,"turn":0,"action":0}', InvalidField),
    (JS, '{"t":"input","seq":1,"thrust":1.5,"turn":0,"action":0}', InvalidField),
    (JS, '{"t":"input","seq":1,"thrust":0,"turn":0,"action":256}', InvalidField),
    (JS, '{"t":"input","seq":1,"thrust":0,"turn":0,"action":0,"ack":-3}', InvalidField),
    (JS, '{"t":"hello","v":2,"name":"x"}', UnsupportedVersion),
    (JS, '{"t":"hello","v":1,"name":' + json.dumps("x" * 65) + "}", InvalidField),
    (MP, msgpack.packb({"t": "hello", "v": 1, "name": b"bytes"}), InvalidField),
    (MP, msgpack.packb({"t": "input", "seq": 1, "thrust": math.nan, "turn": 0, "action": 0}),
     InvalidField),
    (MP, msgpack.packb({"t": "input", "seq": 1, "thrust": 0, "turn": -math.inf, "action": 0}),
     InvalidField),
    (MP, msgpack.packb({"t": "input", "seq": 2**64 - 1, "thrust": 0, "turn": 0, "action": 0}),
     InvalidField),
])
def test_bad_frames_raise_the_specific_error(codec: object, data: bytes | str,
                                             error: type[ProtocolError]) -> None:
    with pytest.raises(error) as info:
        codec.decode(data)  # type: ignore[attr-defined]
    assert info.value.code == error.code
    assert isinstance(info.value, ValueError)


def test_size_limit_is_checked_before_parsing() -> None:
    big = JS.encode(Hello(name="x" * 60))
    with pytest.raises(FrameTooLarge) as info:
        JS.decode(big, max_size=len(big) - 1)
    assert info.value.code is ErrorCode.TOO_LARGE
    assert JS.decode(big, max_size=len(big)) == Hello(name="x" * 60)


def test_direction_is_enforced() -> None:
    frame = MP.encode(Welcome(entity=1, token="t", tick=0, tick_rate=30, snapshot_rate=20,
                              width=1, height=1, view_radius=1))
    with pytest.raises(UnknownMessageType):
        MP.decode(frame, accept=CLIENT_MESSAGES)
    assert isinstance(MP.decode(frame, accept=SERVER_MESSAGES), Welcome)


def test_snapshot_size_caps() -> None:
    snap = Snapshot(tick=1, ack=0, entities=tuple((i, 1, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
                                                  for i in range(10)))
    with pytest.raises(InvalidField):
        MP.decode(MP.encode(snap), accept=SERVER_MESSAGES, max_entities=9)


def test_codec_for_subprotocols() -> None:
    assert codec_for(SUBPROTOCOL_MSGPACK).binary
    assert not codec_for(SUBPROTOCOL_JSON).binary
    assert codec_for(None) is CODECS[SUBPROTOCOL_JSON]


# ---- quantisation and deltas -----------------------------------------------------------------
def test_quantisation_is_idempotent_and_wraps_heading() -> None:
    w = quantise((3, 1, 100.03, 7.0, 1.0, -2.0, 3 * math.pi, 4))
    assert w[2] == round(100.03 * POS_SCALE)
    assert abs(w[6]) <= math.pi * HEADING_SCALE + 1
    assert quantise(dequantise(w)) == w


def test_apply_snapshot_full_delta_and_gap() -> None:
    a = (1, 0, 1.0, 1.0, 0.0, 0.0, 0.0, 0)
    b = (2, 1, 2.0, 2.0, 0.0, 0.0, 0.0, 0)
    b2 = (2, 1, 3.0, 2.0, 0.0, 0.0, 0.0, 0)
    c = (3, 1, 4.0, 4.0, 0.0, 0.0, 0.0, 0)
    s10 = apply_snapshot({}, Snapshot(tick=10, ack=0, entities=(a, b)))
    assert s10 == {1: a, 2: b}
    s12 = apply_snapshot({10: s10}, Snapshot(tick=12, ack=0, entities=(b2, c), removed=(1,),
                                             base=10))
    assert s12 == {2: b2, 3: c}
    assert s10 == {1: a, 2: b}, "the baseline must not be modified"
    with pytest.raises(SnapshotGap):
        apply_snapshot({10: s10}, Snapshot(tick=13, ack=0, base=11))


# ---- round trips --------------------------------------------------------------------------------
ints = st.integers(0, 2**63 - 1)
unit = st.floats(-1.0, 1.0, allow_nan=False)
text = st.text(max_size=64)
q = st.integers(-(2**40), 2**40)
wire_entities = st.tuples(st.integers(0, 2**40), st.integers(0, 1), q, q, q, q,
                          st.integers(-3217, 3216), st.integers(0, 2**40))
messages = st.one_of(
    st.builds(Hello, name=text, token=st.none() | st.text(max_size=64)),
    st.builds(Input, seq=ints, thrust=unit, turn=unit, action=st.integers(0, 255),
              ack=st.none() | ints),
    st.builds(Bye, reason=st.text(max_size=256)),
    st.builds(Error, code=st.sampled_from([str(c) for c in ErrorCode]), reason=text),
    st.builds(Welcome, entity=ints, token=st.text(max_size=64), tick=ints,
              tick_rate=st.floats(0, 1e6), snapshot_rate=st.floats(0, 1e6),
              width=st.floats(0, 1e9), height=st.floats(0, 1e9), view_radius=st.floats(0, 1e9),
              resumed=st.booleans()),
    st.builds(Snapshot, tick=ints, ack=st.integers(-1, 2**63 - 1),
              entities=st.lists(wire_entities.map(dequantise), max_size=20).map(tuple),
              removed=st.lists(ints, max_size=20).map(tuple), base=st.none() | ints),
)
ALL = CLIENT_MESSAGES | SERVER_MESSAGES


@given(messages, st.sampled_from([MP, JS]))
@settings(max_examples=150)
def test_round_trip(msg: object, codec: object) -> None:
    data = codec.encode(msg)  # type: ignore[attr-defined]
    assert codec.decode(data, accept=ALL) == msg  # type: ignore[attr-defined]


@given(st.binary(max_size=200))
@settings(max_examples=500)
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        MP.decode(data, accept=ALL)


@given(st.text(max_size=200))
@settings(max_examples=300)
def test_random_text_raises_only_protocol_errors(data: str) -> None:
    with contextlib.suppress(ProtocolError):
        JS.decode(data, accept=ALL)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                             max_size=4), max_leaves=10)


@given(st.sampled_from(sorted(ALL)), st.dictionaries(
    st.sampled_from(["v", "name", "token", "seq", "thrust", "turn", "action", "ack", "tick",
                     "ents", "gone", "base", "code", "reason", "entity", "resumed", "x"]),
    json_values, max_size=8))
@settings(max_examples=200)
def test_random_fields_raise_only_protocol_errors(t: str, fields: dict[str, object]) -> None:
    for codec in (MP, JS):
        try:
            data = codec.dumps({"t": t, **fields})
        except (ValueError, OverflowError):
            continue  # NaN in JSON, ints beyond 64 bits in msgpack: nothing a peer could send
        with contextlib.suppress(ProtocolError):
            codec.decode(data, accept=ALL)


@given(st.lists(wire_entities, max_size=40), st.lists(ints, max_size=20), ints, ints,
       st.none() | ints, st.sampled_from([MP, JS]))
@settings(max_examples=150)
def test_snapshot_from_fragments_is_the_plain_encoding(
        ents: list[tuple[int, ...]], gone: list[int], tick: int, ack: int, base: int | None,
        codec: object) -> None:
    plain = codec.dumps(snapshot_map(tick, ack, ents, gone, base))  # type: ignore[attr-defined]
    frags = [codec.fragment(w) for w in ents]  # type: ignore[attr-defined]
    assert codec.dumps_snapshot(tick, ack, base, frags, gone) == plain  # type: ignore[attr-defined]


@pytest.mark.parametrize("n", [15, 16, 0xFFFF, 0x10000])
def test_snapshot_from_fragments_at_array_header_boundaries(n: int) -> None:
    ents = [(i, 0, i, 0, 0, 0, 0, 0) for i in range(n)]
    frag = MP.fragment(ents[0])
    data = MP.dumps_snapshot(1, 0, None, [MP.fragment(w) for w in ents], ())
    assert data == MP.dumps(snapshot_map(1, 0, ents, (), None))
    assert len(msgpack.unpackb(data)["ents"]) == n and frag.startswith(b"\x98")


def test_welcome_names_the_gateway_only_when_there_is_one() -> None:
    base = {"entity": 1, "token": "t", "tick": 0, "tick_rate": 30.0, "snapshot_rate": 20.0,
            "width": 1.0, "height": 1.0, "view_radius": 1.0}
    plain = Welcome(**base)  # type: ignore[arg-type]
    for codec in (MP, JS):
        assert "gateway" not in str(codec.encode(plain))
        assert codec.decode(codec.encode(plain), accept=SERVER_MESSAGES) == plain
        routed = Welcome(**base, gateway=3)  # type: ignore[arg-type]
        assert codec.decode(codec.encode(routed), accept=SERVER_MESSAGES) == routed


_EDGES = [-1, 256, 2**63 - 1, 2**63, -1.2, 1.0000001, -1.0, 1.0, -0.0, 0, 1, math.nan, math.inf,
          True, None, "1", KeyError]
_ODD = st.floats() | st.integers(-3, 2**64) | st.text(max_size=2) | st.sampled_from(_EDGES)


def _judged_alike(codec: MsgpackCodec | JsonCodec, m: dict[str, object]) -> None:
    """``m`` decodes, or fails with the same error, as with the general checks alone."""
    import server.protocol as protocol

    try:
        data = codec.dumps(m)
    except (TypeError, ValueError, OverflowError):
        return  # not encodable (e.g. an integer past 64 bits): nothing to decode
    general = protocol._plain_input
    try:
        protocol._plain_input = lambda m: None  # type: ignore[assignment]
        try:
            want: object = codec.decode(data)
        except ProtocolError as exc:
            want = (type(exc), str(exc))
    finally:
        protocol._plain_input = general
    try:
        got: object = codec.decode(data)
    except ProtocolError as exc:
        got = (type(exc), str(exc))
    assert got == want
    if isinstance(got, Input):
        assert isinstance(want, Input)
        assert [type(v) for v in (got.seq, got.thrust, got.turn, got.action, got.ack)] == \
            [type(v) for v in (want.seq, want.thrust, want.turn, want.action, want.ack)]


def _changed(plain: dict[str, object], key: str, value: object) -> dict[str, object]:
    m = {"t": "input", **plain}
    if value is KeyError:
        m.pop(key, None)
    else:
        m[key] = value
    return m


@pytest.mark.parametrize("codec", [MP, JS], ids=["msgpack", "json"])
@pytest.mark.parametrize("key", ["seq", "thrust", "turn", "action", "ack", "extra"])
def test_an_input_with_an_edge_value_decodes_as_the_general_checks_decide(codec, key):
    """Inputs take a short path (plain, in-range values); an input with any one field at an
    edge (or removed) decodes, or fails with the same error, as with the general checks."""
    for value in _EDGES:
        _judged_alike(codec, _changed({"seq": 7, "thrust": 0.5, "turn": -0.5, "action": 1},
                                      key, value))


@settings(max_examples=300)
@given(st.fixed_dictionaries({"seq": st.integers(0, 2**63 - 1), "thrust": st.floats(-1.0, 1.0),
                              "turn": st.floats(-1.0, 1.0), "action": st.integers(0, 255)},
                             optional={"ack": st.none() | st.integers(0, 2**63 - 1)}),
       st.none() | st.tuples(st.sampled_from(["seq", "thrust", "turn", "action", "ack", "extra"]),
                             _ODD),
       st.sampled_from([MP, JS]))
def test_an_input_decodes_as_the_general_checks_decide(plain, change, codec):
    """As above, for plain inputs and inputs with one field changed to something odd."""
    _judged_alike(codec, {"t": "input", **plain} if change is None else _changed(plain, *change))


_INT_EDGES = [b + d for b in (0, 32, 127, 128, 255, 256, 2**15, 2**16, 2**31, 2**32, 2**63)
              for d in (-1, 0, 1)]


@pytest.mark.parametrize("n", sorted({*_INT_EDGES, *(-n for n in _INT_EDGES), 2**64 - 1,
                                      -(2**63)} - {2**63 + 1, -(2**63) - 1}))
def test_pack_int_writes_what_msgpack_writes_at_every_width_edge(n):
    assert pack_int(n) == msgpack.packb(n)


@given(st.integers(-(2**63), 2**64 - 1))
def test_pack_int_writes_what_msgpack_writes(n):
    assert pack_int(n) == msgpack.packb(n)


@given(st.integers(0, 2**32), st.floats(allow_nan=False) | st.integers(-1, 1),
       st.floats(-4.0, 4.0), st.integers(0, 255), st.none() | st.integers(-1, 2**31))
def test_input_bytes_are_what_encode_writes(seq, thrust, turn, action, ack):
    """The bots' input encoder writes the same bytes as encoding the message (an integer
    thrust takes the general path)."""
    got = MsgpackCodec.input_bytes(seq, thrust, turn, action, ack)
    assert got == MP.encode(Input(seq, thrust, turn, action, ack))


# ---- a snapshot's entities, checked all at once ----------------------------------------------
def _one_by_one(v: list[object]) -> object:
    """What entity-by-entity decoding gives: the entities, or the error's type and message."""
    try:
        return tuple(map(dequantise, map(protocol._entity, v)))  # type: ignore[arg-type]
    except ProtocolError as exc:
        return type(exc), str(exc)


def _batched(v: list[object]) -> object:
    try:
        return protocol._entities(v)
    except ProtocolError as exc:
        return type(exc), str(exc)


field = st.one_of(st.integers(-(2**63) - 2, 2**64), st.booleans(), st.floats(-1e6, 1e6),
                  st.none(), st.text(max_size=2))
entity = st.one_of(wire_entities.map(list), wire_entities,
                   st.lists(field, min_size=7, max_size=9), field)


@given(st.lists(wire_entities.map(list), max_size=30))
@settings(max_examples=200)
def test_batched_entities_equal_one_by_one(v: list[list[int]]) -> None:
    assert _batched(v) == _one_by_one(v)
    assert all(type(x) is float for e in _batched(v) for x in e[2:7])  # type: ignore[attr-defined]


@given(st.lists(entity, max_size=12))
@settings(max_examples=500)
def test_batched_entities_fail_as_one_by_one(v: list[object]) -> None:
    """Any list, valid or not: the same entities, or the same error naming the first bad one."""
    assert _batched(v) == _one_by_one(v)


@pytest.mark.parametrize("bad", [
    [True, 1, 0, 0, 0, 0, 0, 0],            # a bool is not an integer here
    [1, 1, 0.5, 0, 0, 0, 0, 0],             # nor a float
    [-1, 1, 0, 0, 0, 0, 0, 0],              # ids are >= 0
    [1, 1, 2**63, 0, 0, 0, 0, 0],           # beyond the range
    [1, 1, -(2**63), 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0, 0],                  # seven fields
    "12345678",                             # not a list
])
def test_one_bad_entity_among_good_ones_is_named(bad: object) -> None:
    good = [[k, 1, 16 * k, 0, 0, 0, 0, 0] for k in range(20)]
    with pytest.raises(InvalidField) as info:
        protocol._entities([*good[:10], bad, *good[10:]])
    assert _one_by_one([bad]) == (InvalidField, str(info.value))
