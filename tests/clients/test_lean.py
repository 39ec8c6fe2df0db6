"""The lean bots' header reader agrees with the full decoder on every snapshot it accepts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clients.lean import snapshot_head
from server.protocol import CODECS, SERVER_MESSAGES, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, Bye
from server.protocol import Snapshot as SnapshotMsg

MP = CODECS[SUBPROTOCOL_MSGPACK]
JS = CODECS[SUBPROTOCOL_JSON]

ints = st.integers(min_value=0, max_value=2**63 - 1)
wire = st.tuples(st.integers(0, 2**31), st.integers(0, 3), st.integers(-2**20, 2**20),
                 st.integers(-2**20, 2**20), st.integers(-4096, 4096), st.integers(-4096, 4096),
                 st.integers(-3217, 3217), st.integers(0, 2**20))


@given(tick=ints, ack=st.integers(min_value=-1, max_value=2**63 - 1),
       base=st.none() | ints, ents=st.lists(wire, max_size=20),
       gone=st.lists(st.integers(0, 2**40), max_size=5))
def test_head_matches_the_full_decode(tick: int, ack: int, base: int | None,
                                      ents: list[tuple[int, ...]], gone: list[int]) -> None:
    frags = [MP.fragment(e) for e in ents]  # type: ignore[arg-type]
    data = MP.dumps_snapshot(tick, ack, base, frags, gone)
    full = MP.decode(data, accept=SERVER_MESSAGES, max_size=1 << 24)
    assert isinstance(full, SnapshotMsg)
    assert snapshot_head(data) == (full.tick, full.ack, full.base)


def test_other_frames_take_the_full_decode() -> None:
    assert snapshot_head(MP.encode(Bye("x"))) is None
    assert snapshot_head(JS.dumps_snapshot(1, 0, None, [], [])) is None  # text: JSON
    data = MP.dumps_snapshot(5, 3, None, [], [])
    assert snapshot_head(data[:20]) is None                              # truncated
    assert snapshot_head(data[:17] + b"\xc3" + data[18:]) is None          # tick not an int
