"""Many view rows quantised and msgpack-encoded at once, with numpy.

The same integers as :func:`server.protocol.quantise` and the same bytes as packing each wire
entity alone with msgpack (``msgpack.packb(entity)``, what :meth:`MsgpackCodec.fragment
<server.protocol.MsgpackCodec.fragment>` caches), for a whole shard's view rows in a few array
operations instead of a call or two per entity.  A worker's batched snapshots use it
(:meth:`server.snapshots.SnapshotHook._full_batch`); tests compare it with the per-entity
functions, edges of every integer width included.

msgpack writes an integer in the shortest of its forms: a one-byte fixint for -32..127, else a
type byte and 1, 2, 4 or 8 big-endian bytes (unsigned forms for positive values, signed ones
for negative).  A wire entity is an array of 8 integers: ``0x98`` then the 8 fields.

Imported only where numpy loads (not in a subinterpreter).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from server.protocol import HALF_TURN, HEADING_SCALE, POS_SCALE

#: Fields of a view row / wire entity.
_FIELDS = 8
#: Where a value falls among msgpack's integer forms: ``np.searchsorted(_EDGES, v, "right")``
#: is 0 for int64 ... 3 for int8, 4 for a fixint (-32..127), 5 for uint8 ... 8 for uint64.
_EDGES = np.array([-(1 << 31), -(1 << 15), -(1 << 7), -32, 1 << 7, 1 << 8, 1 << 16, 1 << 32],
                  np.int64)
#: By form: the type byte (a fixint's is its value) and the payload bytes after it.
_TYPE = np.array([0xD3, 0xD2, 0xD1, 0xD0, 0, 0xCC, 0xCD, 0xCE, 0xCF], np.uint8)
_PAYLOAD = np.array([8, 4, 2, 1, 0, 1, 2, 4, 8])
#: By form: which of a field's 9 bytes (type byte, then 8 big-endian bytes) it writes.
_WRITTEN = np.arange(9) >= 9 - _PAYLOAD[:, None]
_WRITTEN[:, 0] = True
_FIXINT = 4


def quantise_rows(rows: np.ndarray) -> np.ndarray:
    """``(n, 8)`` float64 view rows (id, kind, x, y, vx, vy, heading, score) -> ``(n, 8)``
    int64 wire entities: :func:`server.protocol.quantise` of every row.

    Python's ``round`` and ``%`` on floats and numpy's ``rint`` and ``remainder`` round half to
    even and take the divisor's sign alike, so the integers are the same.
    """
    q = np.empty(rows.shape, np.int64)
    q[:, 0] = rows[:, 0]
    q[:, 1] = rows[:, 1]
    q[:, 7] = rows[:, 7]
    q[:, 2:6] = np.rint(rows[:, 2:6] * POS_SCALE)
    two_pi = 2 * math.pi
    h = np.rint((np.remainder(rows[:, 6] + math.pi, two_pi) - math.pi) * HEADING_SCALE)
    q[:, 6] = (h.astype(np.int64) + HALF_TURN) % (2 * HALF_TURN) - HALF_TURN
    return q


class Packed(NamedTuple):
    """Entities packed by :func:`pack_entities`: entity ``i``'s msgpack bytes are
    ``rows[i, :size[i]]`` (rows zero-padded to the longest)."""

    rows: np.ndarray
    size: np.ndarray


def pack_entities(q: np.ndarray) -> Packed:
    """``(n, 8)`` int64 wire entities -> each one's msgpack bytes."""
    n = len(q)
    form = np.searchsorted(_EDGES, q, "right")
    # Per entity 9 slots of 9 bytes: the array header, then each field's type byte and its
    # 8 big-endian bytes, of which the form keeps the last 0 to 8.
    slot = np.empty((n, 1 + _FIELDS, 9), np.uint8)
    slot[:, 0, 0] = 0x90 | _FIELDS
    slot[:, 1:, 0] = np.where(form == _FIXINT, q & 0xFF, _TYPE.take(form))
    slot[:, 1:, 1:] = q.astype(">i8").view(np.uint8).reshape(n, _FIELDS, 8)
    keep = np.empty(slot.shape, bool)
    keep[:, 0] = _WRITTEN[_FIXINT]
    keep[:, 1:] = _WRITTEN.take(form, axis=0)
    size = np.count_nonzero(keep.reshape(n, -1), axis=1)
    width = int(size.max()) if n else 0
    rows = np.zeros((n, width), np.uint8)
    rows[np.arange(width) < size[:, None]] = slot[keep]
    return Packed(rows, size)


def gather(packed: Packed, which: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The bytes of entities ``which`` (indices, repeats allowed) one after another, and each
    one's size: two row gathers and a compress, where slicing a flat buffer entity by entity
    costs an index per byte."""
    rows = packed.rows.take(which, axis=0)
    size = packed.size.take(which)
    return rows[np.arange(rows.shape[1]) < size[:, None]].tobytes(), size
