"""server.wirearrays: the same integers as quantise() and the same bytes as msgpack, in arrays."""

from __future__ import annotations

import math
import random

import msgpack
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from server.protocol import quantise
from server.wirearrays import gather, pack_entities, quantise_rows

#: Both sides of every edge between msgpack's integer forms.
EDGES = [0, 1, 31, 32, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**62,
         -1, -31, -32, -33, -127, -128, -129, -32767, -32768, -32769,
         -(2**31) + 1, -(2**31), -(2**31) - 1, -(2**62)]


def test_every_integer_form_packs_as_msgpack_does() -> None:
    rng = random.Random(3)
    q = [[rng.choice(EDGES) for _ in range(8)] for _ in range(2000)] + [EDGES[:8], EDGES[-8:]]
    packed = pack_entities(np.array(q, np.int64))
    for i, row in enumerate(q):
        assert packed.rows[i, :packed.size[i]].tobytes() == msgpack.packb(tuple(row)), row
    assert set(packed.rows.shape) >= {len(q), int(packed.size.max())}


@given(st.lists(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=8, max_size=8),
                min_size=1, max_size=40))
def test_any_int64_entity_packs_as_msgpack_does(q: list[list[int]]) -> None:
    packed = pack_entities(np.array(q, np.int64))
    assert [packed.rows[i, :packed.size[i]].tobytes() for i in range(len(q))] == \
        [msgpack.packb(tuple(r)) for r in q]


def test_gather_joins_the_entities_asked_for_repeats_included() -> None:
    q = np.array([[k, 1, 300 * k, -40 * k, 0, 5, -2, 70000 * k] for k in range(6)], np.int64)
    body, sizes = gather(pack_entities(q), np.array([3, 0, 3, 5, 1], np.int64))
    want = [msgpack.packb(tuple(q[k].tolist())) for k in (3, 0, 3, 5, 1)]
    assert body == b"".join(want) and sizes.tolist() == [len(w) for w in want]
    assert gather(pack_entities(q), np.array([], np.int64))[0] == b""


def test_quantised_rows_are_quantise_of_each_row() -> None:
    rng = random.Random(7)
    headings = [math.pi, -math.pi, 3 * math.pi, 2 * math.pi, -2 * math.pi, 0.0, -0.0,
                math.pi / 2, 1e-12, -1e-12, math.pi - 1e-15, -math.pi + 1e-15]
    rows = []
    for k in range(20000):
        h = rng.choice(headings) if k % 3 == 0 else rng.uniform(-20.0, 20.0)
        # exact halves of a position unit (round half to even) as well as arbitrary floats
        x = rng.randrange(0, 2 * 16 * 2048) / 32 if k % 2 else rng.uniform(0.0, 2048.0)
        rows.append((rng.randrange(10**6), rng.randrange(3), x, rng.uniform(0.0, 2048.0),
                     rng.uniform(-300.0, 300.0), rng.randrange(-64, 64) / 32, h,
                     rng.randrange(10**5)))
    got = quantise_rows(np.array(rows, np.float64))
    assert got.dtype == np.int64
    assert got.tolist() == [list(quantise(r)) for r in rows]
