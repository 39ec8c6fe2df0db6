"""The numpy kernel: the python kernel's arithmetic, vectorised, bit for bit.

Theory of operation
-------------------
Every float this kernel produces is computed by the same IEEE-754 operations, in the same order,
as :mod:`sim.kernels.python` computes it; numpy's elementwise ``+ - * /``, ``sqrt`` and ``trunc``
are correctly rounded exactly like CPython's, so the results are the same bits.  Three places
need care:

* **Contact sums.**  Each contact impulse is quantised (``trunc(w*dx*SCALE)``) and the integers
  are summed with ``np.bincount``; integer-valued float64 sums are exact below ``2**53`` (an
  impulse is at most ``stiffness * SCALE`` ~ ``2**29``), so the summation order -- which differs
  from the python kernel's -- cannot change a bit.  The contact *set* is the same: all pairs
  closer than the sum of their radii, found through a uniform grid whose cells are wider than
  any contact.  Ghost-ghost pairs are not skipped here: they only add to ghost slots, which are
  thrown away.
* **Trigonometry.**  ``np.cos``/``np.sin`` may differ from libm's ``math.cos``/``math.sin`` by
  an ulp, so the few players are steered in a Python loop with :mod:`math`.
* **Random draws.**  :func:`uniform` re-implements :func:`sim.rng.uniform` on ``uint64`` arrays
  (wrapping multiplies, xors and shifts); ``tests/sim/test_rng.py`` checks it bit for bit.

Rows leaving the kernel (``rows()``, handoffs, ghosts, view rows) are converted with ``tolist()``
so they hold plain Python ints and floats: digests and msgpack bytes equal the python kernel's.

Storage is two shard-private arrays, ``F`` (float64, one row per float field) and ``I`` (int64,
one row per integer field), so dropping leavers or adopting arrivals is two array operations.

Two layouts.  :class:`NumpyShard` is one region: about a hundred numpy calls per region and
tick, plus ghosts, handoffs and view rows for its neighbours, so at ~1,250 entities per region
it is bound by numpy's per-call overhead.  :class:`NumpyGroup` is every region one thread owns
(:class:`sim.world.World`, a runtime worker): one set of array operations over all their
entities, regions as labels, and borders only to regions outside the group;
:func:`sim.kernels.make_shards` picks it.  On arena-20k the whole-world group is 5x faster than 16
:class:`NumpyShard` (``paratick bench kernels``).  Both give the python kernel's bits.

One thread ticks a group.  Splitting each of its array operations in halves between two free
threads (a spinning barrier between phases) was measured instead of a second worker and not
built: on the 2-core AMD EPYC VM with 3.13.15t at commit 709d008, a tick's worth of elementwise
phases ran 1.07-1.13x one thread's pace at 10,000 entities, 1.31-1.46x at 20,000 and 1.9-2.2x at
200,000 (numpy's per-call cost does not halve).  The contact sweep's sort (a quarter of
arena-20k's 1.36 ms tick) and the Python between calls do not split, so arena-20k would gain
about 1.2x over one free thread: about 1.1x one thread of the GIL build (1.30 ms a tick).

numpy refuses to load in a subinterpreter (or may be missing); importing this module then raises
:class:`~sim.errors.KernelUnavailable` instead of ImportError, so :func:`sim.kernels.make_shard`
reports a clear error.  Nothing else in :mod:`sim` imports numpy.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

try:
    import numpy as np
except ImportError as exc:  # pragma: no cover - depends on the interpreter
    from sim.errors import KernelUnavailable

    raise KernelUnavailable(f"the numpy kernel needs numpy, which cannot be imported here: {exc}"
                            ) from exc

from sim.config import WorldConfig
from sim.entities import PLAYER, InputRow, Row
from sim.errors import SimError
from sim.geometry import Layout
from sim.kernels.python import CELL_SLACK
from sim.rng import GOLDEN, K_ID, K_LANE, K_TICK, M1, M2, MASK, TWO_M53
from sim.shard import INV_SCALE, SCALE, TAU, Border, Shard, ViewRow

PI = math.pi

# Float rows of F and integer rows of I.  x, y, r come first so that F[:3] is the contact input.
FX, FY, FR, FVX, FVY, FH, FTHR, FTRN = range(8)
#: I rows: the five integer row fields, then two per-entity constants of the wander draw: the
#: phase ``id % wander_period`` and ``id * K_ID mod 2**64`` (stored as int64 bits).
IID, IKIND, ISCORE, IACT, ISEQ, IPHASE, IKID = range(7)
_FLOAT_FIELDS = (2, 3, 6, 4, 5, 7, 9, 10)  # row fields stored in F rows 0..7
_INT_FIELDS = (0, 1, 8, 11, 12)  # row fields stored in I rows 0..4

#: Shifts of the SplitMix64 finaliser, as uint64 so numpy keeps the dtype.
_U11 = np.uint64(11)
_U27 = np.uint64(27)
_U30 = np.uint64(30)
_U31 = np.uint64(31)
#: Largest local contact grid (cells) scanned densely each tick; beyond it, binary searches.
#: 2**17 cells is a 1 MiB count array, about what a 2048 x 2048 world in one region needs.
DENSE_GRID_MAX = 1 << 17
#: Bit positions 0..8 of the 3x3 neighbourhood masks (see :meth:`NumpyShard._borders`).
_BITS9 = np.arange(9, dtype=np.uint16)[:, None]


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays, in place; returns floats in [0, 1)."""
    z += np.uint64(GOLDEN)
    z ^= z >> _U30
    z *= np.uint64(M1)
    z ^= z >> _U27
    z *= np.uint64(M2)
    z ^= z >> _U31
    u = (z >> _U11).astype(np.float64)
    u *= TWO_M53
    return u


def uniform(seed: int, eids: np.ndarray, tick: int, lane: int) -> np.ndarray:
    """:func:`sim.rng.uniform` for an array of entity ids, bit for bit.

    Args:
        seed: world seed.
        eids: entity ids (non-negative int64).
        tick: tick number (may be negative, as spawn draws are).
        lane: which independent draw.

    Returns:
        float64 array in [0, 1), one value per id.
    """
    z = eids.astype(np.uint64) * np.uint64(K_ID)
    z ^= np.uint64(_lane_const(seed, tick, lane))
    return _mix(z)


def _lane_const(seed: int, tick: int, lane: int) -> int:
    """The part of the RNG input that does not depend on the entity: ``(seed ^ t*K ^ l*K)``."""
    return (seed ^ (tick * K_TICK) ^ (lane * K_LANE)) & MASK


def _split_rows(rows: Sequence[Sequence[Any]], wp: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows -> (F, I) arrays (I gains the wander phase and id-hash rows)."""
    if not rows:
        return np.empty((8, 0), dtype=np.float64), np.empty((7, 0), dtype=np.int64)
    cols = list(zip(*rows, strict=True))
    f = np.array([cols[k] for k in _FLOAT_FIELDS], dtype=np.float64)
    i = np.empty((7, len(rows)), dtype=np.int64)
    i[:5] = [cols[k] for k in _INT_FIELDS]
    ids = i[IID]
    i[IPHASE] = ids % wp
    i[IKID] = (ids.astype(np.uint64) * np.uint64(K_ID)).view(np.int64)
    return f, i


def _to_rows(f: np.ndarray, i: np.ndarray) -> list[Row]:
    """(F, I) columns -> rows of plain Python values, in column order."""
    x, y, r, vx, vy, h, thr, trn = f.tolist()
    eid, kind, score, act, seq = i[:5].tolist()
    return list(zip(eid, kind, x, y, vx, vy, r, h, score, thr, trn, act, seq, strict=True))


def _view_array(f: np.ndarray, i: np.ndarray, idx: np.ndarray,
                view_in: Sequence[ViewRow]) -> np.ndarray:
    """The view rows of columns ``idx`` then ``view_in`` as an ``(n, 8)`` float64 array: what
    a numpy shard's ``view_rows()`` lists (:func:`sim.shard._view` of each row), as numbers."""
    own = np.empty((len(idx), 8))
    for col, src in enumerate((i[IID], i[IKIND], f[FX], f[FY], f[FVX], f[FVY], f[FH],
                               i[ISCORE])):
        own[:, col] = src.take(idx)
    if not view_in:
        return own
    return np.concatenate((own, np.array(view_in, np.float64).reshape(-1, 8)))


def _neighbourhood_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lookup tables indexed by the per-axis codes of :meth:`NumpyShard._borders`.

    A code describes one axis of one entity relative to this region's column ``m``: the first
    and last columns within the margin (``l``, ``h``) and the owner's column ``o``, each as
    0, 1, 2 for ``m-1, m, m+1``; ``code = l + 3*h + 9*o``.  Indexed by ``[code_x, code_y]``:

    * ghosts: bit ``b*3 + a`` set for every cell (a, b) of the 3x3 block within the margin,
      except the owner's (it has the entity itself);
    * views: the same without the centre (this region has the entity or just handed it off);
    * owner: the owner's slot ``oy*3 + ox`` (4 = this region).
    """
    ghost = np.zeros((27, 27), dtype=np.uint16)
    view = np.zeros((27, 27), dtype=np.uint16)
    owner = np.zeros((27, 27), dtype=np.int64)
    for cx in range(27):
        for cy in range(27):
            lx, hx, ox = cx % 3, cx // 3 % 3, cx // 9
            ly, hy, oy = cy % 3, cy // 3 % 3, cy // 9
            for a in range(lx, hx + 1):
                for b in range(ly, hy + 1):
                    if (a, b) != (ox, oy):
                        ghost[cx, cy] |= 1 << (b * 3 + a)
                        if (a, b) != (1, 1):
                            view[cx, cy] |= 1 << (b * 3 + a)
            owner[cx, cy] = oy * 3 + ox
    return ghost, view, owner


_GHOST_TABLE, _VIEW_TABLE, _OWNER_TABLE = _neighbourhood_tables()
#: Column and row offsets (a, b) of the 9 cells of a 3x3 block, one per row, in (b, a) order.
_BLOCK_A = np.array([[0], [1], [2]] * 3, dtype=np.int64)
_BLOCK_B = np.repeat(np.arange(3, dtype=np.int64), 3)[:, None]
#: Weights of (l, h, o) in a code.
_CODE_W = np.array([1, 3, 9], dtype=np.int64)


def _integrate(cfg: WorldConfig, F: np.ndarray, I: np.ndarray, tick: int,  # noqa: E741
               inputs: Mapping[int, InputRow], acc: np.ndarray | None, hits: np.ndarray | None,
               *, players: int, walls: bool, wander: np.ndarray | None = None) -> None:
    """Control, integration, speed cap, walls and scores of one tick, in place on ``F``/``I``.

    Args:
        acc: summed quantised contact impulses (2, n), or None without contacts.
        hits: contact counts (n,), or None.
        players: how many players there are (0 skips the steering loop).
        walls: whether any entity can reach a world edge (False skips the wall tests).
        wander: indices of the NPCs that draw a kick this tick, if the caller knows them.
    """
    if wander is None:
        wander = (I[IPHASE] == (-tick) % cfg.wander_period).nonzero()[0]
        if players:
            wander = wander[I[IKIND, wander] != PLAYER]
    V = F[FVX:FVY + 1]
    # Kicks: players steered in Python (math.cos/sin, see the module docstring), NPC wander
    # kicks drawn vectorised.  v + kick for the kicked few, v + 0.0 for everyone else (the
    # python kernel adds a zero kick: -0.0 + 0.0 is +0.0); the kicked sums are taken from the
    # old velocities before the bulk "+ 0.0", so they are exactly v + kick.
    idx: list[np.ndarray] = []
    kicks: list[np.ndarray] = []
    if players:
        pi, pdv = _steer(cfg, F, I, inputs)
        idx.append(pi)
        kicks.append(pdv)
    if len(wander):
        z = I[IKID, wander].view(np.uint64) ^ np.array(
            [[_lane_const(cfg.seed, tick, 0)], [_lane_const(cfg.seed, tick, 1)]],
            dtype=np.uint64)
        u = _mix(z)
        u -= 0.5
        u *= cfg.wander_kick
        idx.append(wander)
        kicks.append(u)
    if idx:
        k = np.concatenate(idx) if len(idx) > 1 else idx[0]
        kick = np.concatenate(kicks, axis=1) if len(kicks) > 1 else kicks[0]
        kx = V[0].take(k)
        kx += kick[0]
        ky = V[1].take(k)
        ky += kick[1]
        V += 0.0
        V[0, k] = kx
        V[1, k] = ky
    else:
        V += 0.0

    # Integration (in place: old velocities are not needed again), speed cap, walls.
    dt = cfg.dt
    if acc is not None:
        acc *= INV_SCALE
        V += acc
    V *= 1.0 - cfg.drag * dt
    sq = V * V
    s2 = sq[0] + sq[1]
    cap = cfg.max_speed
    over = (s2 > cap * cap).nonzero()[0]
    if len(over):
        V[:, over] *= cap / np.sqrt(s2[over])
    Pn = F[:2]
    Pn += V * dt
    if walls:
        # The python kernel's "if x < r: reflect  elif x > W - r: reflect", per axis.  Radii are
        # at most cfg.radius, so only positions that close to a wall are tested exactly.
        r = F[FR]
        rad = cfg.radius
        for a, size in ((0, cfg.width), (1, cfg.height)):
            p = Pn[a]
            lo = (p < rad).nonzero()[0]
            if len(lo):
                lo = lo[p[lo] < r[lo]]
            hi = (p > size - rad).nonzero()[0]
            if len(hi):
                lim = size - r[hi]
                keep = p[hi] > lim
                hi, lim = hi[keep], lim[keep]
            # No position is both: WorldConfig keeps 4 * radius below the world's size, so the
            # python kernel's "elif" never has to choose.
            if len(lo):
                rl = r[lo]
                p[lo] = rl + (rl - p[lo])
                V[a, lo] = -V[a, lo]
            if len(hi):
                p[hi] = lim - (p[hi] - lim)
                V[a, hi] = -V[a, hi]
    if hits is not None:
        I[ISCORE] += hits


def _steer(cfg: WorldConfig, F: np.ndarray, I: np.ndarray,  # noqa: E741
           inputs: Mapping[int, InputRow]) -> tuple[np.ndarray, np.ndarray]:
    """The python kernel's player control, same operations: (player indices, kicks (2, p)).

    The inputs are looked up per player and stored as columns; the heading, its wrap and the
    thrust are array operations (each the same IEEE operation as the python kernel's scalar
    one); only cos and sin are taken per player, with :mod:`math` (module docstring).
    """
    pi = (I[IKIND] == PLAYER).nonzero()[0]
    if inputs:
        get = inputs.get
        got = [(k, inp) for k, inp in enumerate(map(get, I[IID].take(pi).tolist()))
               if inp is not None]
        if got:
            at = pi.take([k for k, _ in got])
            I[ISEQ, at] = [inp[1] for _, inp in got]
            F[FTHR, at] = [inp[2] for _, inp in got]
            F[FTRN, at] = [inp[3] for _, inp in got]
            I[IACT, at] = [inp[4] for _, inp in got]
    h = F[FTRN].take(pi)
    h *= cfg.turn_rate * cfg.dt
    h += F[FH].take(pi)
    h[h > PI] -= TAU
    h[h < -PI] += TAU
    F[FH, pi] = h
    a = F[FTHR].take(pi)
    a *= cfg.player_accel * cfg.dt
    boosted = (I[IACT].take(pi) & 1).nonzero()[0]
    a[boosted] *= cfg.boost
    hl = h.tolist()
    dv = np.array([list(map(math.cos, hl)), list(map(math.sin, hl))]).reshape(2, len(hl))
    dv *= a
    return pi, dv


def _pair_impulses(A: np.ndarray, B: np.ndarray, stiffness: float, rr: float | None = None,
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """Candidate pairs (x, y, r rows of each side) -> (indices in contact, impulses (2, k)).

    ``q = trunc(w * (B - A) * SCALE)`` with ``w = stiff * (1 - d2/rr2) / rr``, in the python
    kernel's order of operations; None when no pair touches.  ``rr``: every pair's sum of radii
    when all are the same (then the sides need only their x, y rows; the same operations on a
    scalar give the same bits).
    """
    d = B[:2] - A[:2]
    sq = d * d
    d2 = sq[0] + sq[1]
    if rr is None:
        rrs = A[2] + B[2]
        rr2s = rrs * rrs
        sel = (d2 < rr2s).nonzero()[0]
        if not len(sel):
            return None
        w = d2[sel]
        w /= rr2s[sel]
        w = 1.0 - w
        w = stiffness * w
        w /= rrs[sel]
    else:
        rr2 = rr * rr
        sel = (d2 < rr2).nonzero()[0]
        if not len(sel):
            return None
        w = d2[sel]
        w /= rr2
        w = 1.0 - w
        w = stiffness * w
        w /= rr
    q = w * d.take(sel, axis=1)
    q *= SCALE
    np.trunc(q, out=q)
    return sel, q


def _sum_impulses(i: np.ndarray, j: np.ndarray, q: np.ndarray, N: int, n: int,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Exact sums per entity: ``-q`` to each ``i``, ``+q`` to each ``j``; rows ``< n`` kept.

    Returns (summed impulses (2, n), contact counts (n,)).
    """
    k = len(i)
    ij = np.empty(2 * k, dtype=np.int64)
    ij[:k] = i
    ij[k:] = j
    qq = np.empty((2, 2 * k))
    np.negative(q, out=qq[:, :k])
    qq[:, k:] = q
    acc = np.empty((2, n))
    acc[0] = np.bincount(ij, qq[0], N)[:n]
    acc[1] = np.bincount(ij, qq[1], N)[:n]
    return acc, np.bincount(ij, minlength=N)[:n]


def _key_scale(extent: float, bits: int) -> float:
    """The quantum of :meth:`NumpyGroup._contacts`' sort keys: the largest power of two up to
    1024 per unit that maps keys ``extent`` apart to fewer than ``2**bits`` integers."""
    scale = 1024.0
    while scale > 2.0 ** -60 and (extent + 1.0) * scale >= 2.0 ** bits:
        scale /= 2.0
    return scale


def expand_ranges(lo: np.ndarray, cnt: np.ndarray, arange: np.ndarray | None = None,
            ) -> tuple[np.ndarray, np.ndarray]:
    """Every position of the ranges ``[lo[k], lo[k] + cnt[k])``, with the number ``k`` of its
    range: (range numbers, positions), ranges in order and positions ascending within each.

    Only the non-empty ranges are expanded (``repeat`` costs per entry); ``arange``, if given,
    is a ready ``np.arange`` at least as long as the result.
    """
    nz = cnt.nonzero()[0]
    c = cnt.take(nz)
    cs = c.cumsum()
    tot = int(cs[-1]) if len(cs) else 0
    at = (lo.take(nz) - (cs - c)).repeat(c)
    at += arange[:tot] if arange is not None else np.arange(tot)
    return nz.repeat(c), at


def _copy_into(old: Any, v: np.ndarray) -> np.ndarray:
    """A copy of ``v`` (an array of one or more dimensions, entities along the last) in the
    buffer behind ``old`` when it fits, else in a new one with an eighth to spare: a
    checkpoint's memory, reused by the next one while the entity count moves a little."""
    buf = old.base if isinstance(old, np.ndarray) and old.base is not None else old
    n = v.shape[-1]
    if not (isinstance(buf, np.ndarray) and buf.dtype == v.dtype and buf.ndim == v.ndim
            and buf.shape[:-1] == v.shape[:-1] and buf.shape[-1] >= n
            and buf.flags.c_contiguous and not np.may_share_memory(buf, v)):
        buf = np.empty((*v.shape[:-1], n + max(64, n // 8)), dtype=v.dtype)
    out = buf[..., :n]
    np.copyto(out, v)
    return out


def _arange(self: Any, n: int) -> np.ndarray:
    """``np.arange(n)`` as a slice of one kept in ``self._ar`` (grown by doubling): a method of
    the shard and the group, each with its own (slices of it are free)."""
    if len(self._ar) < n:
        self._ar = np.arange(max(n, 2 * len(self._ar)))
    return self._ar[:n]


class NumpyShard(Shard):
    """A region whose tick runs as about a hundred numpy operations over all its entities."""

    kernel = "numpy"

    def __init__(self, config: WorldConfig, region: int, rows: Iterable[Row] = ()) -> None:
        super().__init__(config, region)
        cfg = config
        self._wp = cfg.wander_period
        self._load(list(rows), [])
        layout = self.layout
        rect = self.rect
        g = cfg.ghost_range
        # The contact grid: a dense local grid covering the rectangle, the ghost band and two
        # spare cells each side, with a one-cell empty border so stencil offsets never wrap.
        # Cells are a hair wider than the largest contact (CELL_SLACK), so contacts are always
        # in adjacent cells; keys are clamped to the grid, which keeps adjacent cells adjacent.
        cell = 2.0 * cfg.radius * CELL_SLACK
        self._inv_cell = 1.0 / cell
        pad = g + 2.0 * cell
        self._grid_org = np.array([[rect.x0 - pad], [rect.y0 - pad]])
        gx = int((rect.x1 - rect.x0 + 2 * pad) / cell) + 3
        gy = int((rect.y1 - rect.y0 + 2 * pad) / cell) + 3
        self._grid_max = np.array([[gx - 2.0], [gy - 2.0]])
        self._grid_mul = np.array([gy, 1], dtype=np.int64)
        self._grid_cells = gx * gy
        # Cell runs come from a bincount over the dense grid, unless the grid is so large
        # (a huge world split into few regions) that a per-tick pass over it would cost more
        # than binary searches in the sorted keys.
        self._dense = gx * gy <= DENSE_GRID_MAX
        # uint16 keys sort with numpy's radix sort (stable sort of <= 16-bit integers).
        self._key_dtype = np.uint16 if gx * gy <= 0xFFFF else np.int64
        self._offs = np.array([0, gy, 1, gy + 1, 1 - gy], dtype=np.int64)[:, None]
        # Border classification (see _borders).
        iy, ix = divmod(region, layout.nx)
        self._rwh = np.array([[layout.rw], [layout.rh]])
        self._col_max = np.array([[layout.nx - 1], [layout.ny - 1]], dtype=np.int64)
        self._col_base = np.array([[ix - 1], [iy - 1]], dtype=np.int64)
        self._inner: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        self._margins: dict[float, np.ndarray] = {}
        # 3x3 slot (b*3 + a) -> region number (or -1 outside the grid).
        self._slot_region = [
            (iy + b - 1) * layout.nx + (ix + a - 1)
            if 0 <= ix + a - 1 < layout.nx and 0 <= iy + b - 1 < layout.ny else -1
            for b in range(3) for a in range(3)]
        # Walls: only regions that touch the world's edge (within one step and a radius, with a
        # unit of slack) can see an entity cross it; the others skip the checks.
        reach = cfg.max_speed * cfg.dt + cfg.radius + 1.0
        self._walls = (rect.x0 <= reach or rect.y0 <= reach or rect.x1 >= cfg.width - reach
                       or rect.y1 >= cfg.height - reach)
        self._ar = np.arange(0)

    _arange = _arange

    # ---- state -----------------------------------------------------------------------------
    def _load(self, rows: Sequence[Row], ghosts: Sequence[float]) -> None:
        self._f, self._i = _split_rows(rows, self._wp)
        self._players = sum(1 for r in rows if r[1] == PLAYER)
        self._ghosts: list[float] = list(ghosts)
        self._arrivals: list[Row] = []

    def _ghost_flat(self) -> list[float]:
        return self._ghosts

    def _settle(self) -> None:
        """Adopt the handoff rows received since the last advance."""
        if self._arrivals:
            f, i = _split_rows(self._arrivals, self._wp)
            self._players += sum(1 for r in self._arrivals if r[1] == PLAYER)
            self._f = np.concatenate((self._f, f), axis=1)
            self._i = np.concatenate((self._i, i), axis=1)
            self._arrivals = []

    def rows(self) -> list[Row]:
        self._settle()
        order = np.argsort(self._i[IID], kind="stable")
        return _to_rows(self._f.take(order, axis=1), self._i.take(order, axis=1))

    def __len__(self) -> int:
        return self._f.shape[1] + len(self._arrivals)

    def view_array(self) -> np.ndarray:
        """:meth:`view_rows` as an ``(n, 8)`` float64 array, the same rows in the same order,
        without a Python object per row (what batched snapshots read)."""
        self._settle()
        return _view_array(self._f, self._i, np.argsort(self._i[IID], kind="stable"),
                           self._view_in)

    def absorb(self, borders: Iterable[Border]) -> None:
        for hand, ghosts, view in borders:
            if hand:
                self._arrivals.extend(hand)
            if ghosts:
                self._ghosts.extend(ghosts)
            if view:
                self._view_in.extend(view)

    # ---- the tick ----------------------------------------------------------------------------
    def advance(self, tick: int, inputs: Mapping[int, InputRow], *,
                view: bool = False) -> dict[int, Border]:
        self._settle()
        cfg = self.config
        F = self._f
        I = self._i  # noqa: E741 - F and I name the two storage arrays throughout
        n = F.shape[1]
        gh = self._ghosts
        P = np.concatenate((F[:3], np.array(gh).reshape(-1, 3).T), axis=1) if gh else F[:3]
        N = P.shape[1]
        acc, hits = self._contacts(P, n, N)

        # 2-3. Control, integration, speed cap, walls, scores.
        _integrate(cfg, F, I, tick, inputs, acc, hits, players=self._players,
                   walls=self._walls)

        # 4. Borders: only entities near the rectangle's edge can leave or be anyone's ghost.
        return self._borders(view)

    def _contacts(self, P: np.ndarray, n: int, N: int
                  ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Summed quantised impulses (2, n) and contact counts (n,) of the owned entities.

        Sort entities by cell key (radix sort on uint16 keys); a cell's range in the sorted
        order comes from a bincount + cumsum over the dense grid; each entity's candidates are
        the later entries of its own cell and the entries of the four half-stencil cells; the
        ranges are expanded into (src, dst) pairs with ``repeat``.
        """
        if N < 2:
            return None, None
        T = P[:2] - self._grid_org
        T *= self._inv_cell
        np.maximum(T, 1.0, out=T)
        np.minimum(T, self._grid_max, out=T)
        kt = self._key_dtype  # uint16 only when every key fits, so uint16 arithmetic is exact
        C = T.astype(kt)
        key = C[0] * kt(self._grid_mul[0])
        key += C[1]
        order = key.argsort(kind="stable")
        ks = key.take(order)
        # Layout (5, N): row k holds every entity's k-th stencil cell; hi/lo are the end and
        # start of that cell's run in the sorted order.
        Q = ks + self._offs
        if self._dense:
            ends = np.bincount(ks, minlength=self._grid_cells).cumsum()
            hi = ends.take(Q)
            Q -= 1
            lo = ends.take(Q)
        else:
            hi = ks.searchsorted(Q, "right")
            lo = ks.searchsorted(Q, "left")
        ar = self._arange(5 * N + 1)
        lo[0] = ar[1:N + 1]  # own cell: only later entries, so each pair is seen once
        cnt = (hi - lo).ravel()
        tot = int(cnt.sum())
        if not tot:
            return None, None
        src, dst = expand_ranges(lo.ravel(), cnt, self._arange(tot))
        src %= N
        Ps = P.take(order, axis=1)
        hit = _pair_impulses(Ps.take(src, axis=1), Ps.take(dst, axis=1), self.config.stiffness)
        if hit is None:
            return None, None
        sel, q = hit
        return _sum_impulses(order.take(src.take(sel)), order.take(dst.take(sel)), q, N, n)

    def _borders(self, view: bool) -> dict[int, Border]:
        """Handoffs, ghosts and view rows for the neighbours, from the new positions.

        Only entities outside the inner rectangle (the margin plus one unit, as in the python
        kernel) can leave or be anyone's ghost.  For those, :meth:`_codes` evaluates
        ``regions_near`` and ``region_of`` per axis relative to this region's column, and
        table lookups turn the two codes into the 3x3 block of destinations and the owner.
        """
        cfg = self.config
        F = self._f
        I = self._i  # noqa: E741
        g = cfg.ghost_range
        vr = cfg.view_radius if view else 0.0
        margin = max(g, vr) + 1.0
        rect = self.rect
        nbrs = self.neighbours
        out: dict[int, Border] = {nbr: ([], [], []) for nbr in nbrs}
        Pn = F[:2]
        inner = self._inner.get(margin)
        if inner is None:
            inner = self._inner[margin] = (
                np.array([[rect.x0 + margin], [rect.y0 + margin]]),
                np.array([[rect.x1 - margin], [rect.y1 - margin]]))
        t = Pn <= inner[0]
        t |= Pn >= inner[1]
        edge = (t[0] | t[1]).nonzero()[0]
        self._view_in = []
        if not len(edge):
            self._ghosts = []
            return out
        E = Pn.take(edge, axis=1)
        slots = self._slot_region
        code = self._codes(E, g)
        mask = _GHOST_TABLE[code[0], code[1]]
        slot, ent = ((mask >> _BITS9) & 1).nonzero()
        bounds = (3 * np.bincount(slot, minlength=9).cumsum()).tolist()
        trip = F[:3].take(edge.take(ent), axis=1).T.ravel().tolist()
        start = 0
        for s in range(9):
            end = bounds[s]
            if end > start and s != 4:
                out[slots[s]][1].extend(trip[start:end])
            start = end
        self._ghosts = trip[bounds[3]:bounds[4]]

        # Handoffs: entities owned by another column or row now.
        oslot = _OWNER_TABLE[code[0], code[1]]
        leave = (oslot != 4).nonzero()[0]
        if len(leave):
            gone = edge.take(leave)
            owners = [slots[s] for s in oslot.take(leave).tolist()]
            rows = _to_rows(F.take(gone, axis=1), I.take(gone, axis=1))
            for row, o in zip(rows, owners, strict=True):
                out[o][0].append(row)
            self._players -= sum(1 for r in rows if r[1] == PLAYER)
            stay = np.ones(F.shape[1], dtype=bool)
            stay[gone] = False
            self._f = F.compress(stay, axis=1)
            self._i = I.compress(stay, axis=1)

        # View rows: every region within the view radius except the owner and this one.
        if vr:
            code = self._codes(E, vr)
            mask = _VIEW_TABLE[code[0], code[1]]
            slot, ent = ((mask >> _BITS9) & 1).nonzero()
            if len(ent):
                e = edge[ent]
                f = F.take(e, axis=1).tolist()
                i = I.take(e, axis=1).tolist()
                for eid, kind, x, y, vx, vy, h, score, s in zip(
                        i[IID], i[IKIND], f[FX], f[FY], f[FVX], f[FVY], f[FH], i[ISCORE],
                        slot.tolist(), strict=True):
                    out[slots[s]][2].append((eid, kind, x, y, vx, vy, h, score))
        return out

    def _codes(self, E: np.ndarray, margin: float) -> np.ndarray:
        """Per-axis neighbourhood codes (see :func:`_neighbourhood_tables`) of positions ``E``.

        The same divisions as :meth:`sim.geometry.Layout.regions_near` and ``region_of``:
        ``max(0, int((x - m)/rw)) if x > m else 0`` equals ``max(0, trunc((x - m)/rw))`` for
        every x (and ``x + -m`` is ``x - m`` exactly), ``min(nx - 1, int((x + m)/rw))``, and
        ``min(nx - 1, int(x/rw))`` (``x + 0.0`` is ``x`` for positions, which are positive).
        """
        offs = self._margins.get(margin)
        if offs is None:
            offs = self._margins[margin] = np.array([[[-margin]], [[margin]], [[0.0]]])
        V = E + offs
        V /= self._rwh
        C = V.astype(np.int64)
        np.maximum(C, 0, out=C)
        np.minimum(C, self._col_max, out=C)
        C -= self._col_base
        if C.min() < 0 or C.max() > 2:
            raise AssertionError(f"region {self.region}: an entity is beyond the neighbouring "
                                 "regions (moved further than the configuration allows)")
        return (_CODE_W @ C.reshape(3, -1)).reshape(2, -1)


#: NumpyGroup's checkpoint bookkeeping, never part of a checkpoint itself.
_BOOKKEEPING = frozenset({"_ckpt_cache", "_version", "_rolled_back", "_rollback_version",
                          "_fbuf", "_ibuf"})
#: NumpyGroup's caches, rebuilt after a rollback instead of copied into every checkpoint: the
#: sweep's last order (a hint: any order gives the same contacts), the wander kickers and the
#: kept ``arange``.
_CACHES = frozenset({"_perm", "_wander", "_ar"})


class NumpyGroup:
    """The regions one thread owns, in one array set, ticked as one.

    Per-region shards pay numpy's per-call overhead once per region (about a hundred calls each)
    and exchange ghosts, handoffs and view rows between regions that the same thread ticks.  A
    group ticks all its entities with one set of array operations instead: each region is a
    :class:`GroupShard` facade (the :class:`~sim.shard.Shard` contract: rows, length, state,
    restore, view rows, borders), and an entity's region is a label that changes when it moves.
    Borders between regions of the group are empty; borders to regions outside it (other
    workers) carry exactly what per-region shards would send: handoffs, ghosts and view rows,
    from the entity's region before the tick.  Results are the same bits as per-region shards
    of either kernel: the contact set is the same (every pair closer than the sum of the radii)
    and the contact sums are exact integers (see the module docstring).

    Ghosts from outside: a neighbour sends an entity's ghost to every region it is near, so a
    group may receive it once per region of its own.  It keeps the copy addressed to the
    lowest-numbered of its regions the ghost is near (the same ``regions_near`` arithmetic the
    sender used) and drops ghosts of entities it owns itself (handed over this very tick).

    Contacts come from a sweep instead of a cell grid: owned entities are sorted by (row band,
    x), where a band is one contact cell high, together with a copy of each moved one band down;
    then sorted neighbours ``k = 1, 2, ...`` apart are compared while any pair is still less
    than a cell apart in the sort key.  Original-original pairs are same-band candidates,
    original-copy pairs are pairs of adjacent bands, copy-copy pairs are skipped (the originals
    meet in their own band), so each unordered candidate pair is found exactly once.  Ghosts
    from outside find their owned candidates by binary search in the sorted keys.  The sort
    starts from the previous tick's order (entities move a little per tick, so the keys are
    nearly sorted and a stable sort of them costs a few passes); arrivals join at the end.  It
    sorts int64 values, each a key quantised to 1/1024 unit (coarser only for worlds too big
    for that) above its entry's number, rather than the float keys indirectly: the candidates
    then include pairs up to two quanta further apart, which the exact distance test drops.
    That sort is a quarter of arena-20k's tick on either build and 30 % of a 300,000-entity
    world's on the GIL build (3.13.15 and 3.13.15t, 2-core AMD EPYC VM, commit 709d008).
    Sorting only the originals (their copies, one band down, are then already in order, or
    nearly) and merging the two sorted halves was no faster: numpy merges them with a two-run
    stable sort about as costly as the whole sort, or with ``searchsorted``, costlier.
    """

    def __init__(self, config: WorldConfig, rows_by_region: Mapping[int, Iterable[Row]]) -> None:
        self.config = config
        self.layout = layout = Layout(config)
        self.regions = sorted(rows_by_region)
        if not self.regions or not set(self.regions) <= set(range(config.regions)):
            raise SimError(f"a NumpyGroup needs regions of the world, got {self.regions}")
        self._member = np.zeros(config.regions, dtype=bool)
        self._member[self.regions] = True
        #: Own regions with a neighbour outside the group (only their entities reach outsiders).
        self._frontier = np.zeros(config.regions, dtype=bool)
        for r in self.regions:
            self._frontier[r] = any(not self._member[n] for n in layout.neighbours(r))
        self._foreign = bool(self._frontier.any())
        #: Regions whose entities may reach outsiders: the frontier, and every region outside
        #: the group (entities just handed there).
        self._reach = self._frontier | ~self._member
        self._first_table = self._first_members()
        self._wp = config.wander_period
        rows: list[Row] = []
        labels: list[int] = []
        for region in self.regions:
            got = list(rows_by_region[region])
            rows.extend(got)
            labels.extend([region] * len(got))
        #: Bumped by every change of state: a checkpoint is taken once per version.
        self._version = 0
        self._ckpt_cache: tuple[int, dict[str, Any]] | None = None
        self._rolled_back: dict[str, Any] | None = None
        self._rollback_version = -1
        self._set(rows, np.array(labels, dtype=np.int64))
        cell = 2.0 * config.radius * CELL_SLACK
        self._cell = cell
        self._inv_cell = 1.0 / cell
        # Band width of the sort key: a power of two well beyond the world's width plus a few
        # cells (positions, ghosts' included, lie in the world), so keys of different bands
        # never come within a cell of each other.
        self._span = float(2 ** math.ceil(math.log2(config.width + 4.0 * cell + 1.0)))
        self._rw = layout.rw
        self._rh = layout.rh
        self._ar = np.arange(0)
        self._pending: set[int] = set()
        self._at = -1
        self._out: dict[int, dict[int, Border]] = {}
        #: region -> ghost triples received from outside the group for the next tick
        self._gin: dict[int, list[float]] = {r: [] for r in self.regions}
        self.shards = [GroupShard(self, region) for region in self.regions]
        self._by_region = {s.region: s for s in self.shards}
        #: The borders of a group without outside neighbours: all empty, the same every tick
        #: (receivers only read borders).
        self._empty: dict[int, dict[int, Border]] = {
            s.region: {nbr: ([], [], []) for nbr in s.neighbours} for s in self.shards}

    # ---- state -----------------------------------------------------------------------------
    def _set(self, rows: Sequence[Row], labels: np.ndarray) -> None:
        self._f, self._i = _split_rows(rows, self._wp)
        #: the buffers ``_f``/``_i`` are the first columns of, when they have spare columns
        self._fbuf: np.ndarray | None = None
        self._ibuf: np.ndarray | None = None
        self._lab_now: np.ndarray | None = labels
        self._counts: dict[int, int] | None = None
        self._players = int((self._i[IKIND] == PLAYER).sum())
        #: last tick's sweep order of the owned entities (copy of entity e coded e + n)
        self._perm: np.ndarray | None = None
        #: tick phase -> indices of the NPCs that draw a wander kick (until storage changes)
        self._wander: dict[int, np.ndarray] = {}
        self._arrivals: list[Row] = []
        self._arrival_lab: list[int] = []
        #: entities handed to outsiders, still in storage until the next _settle
        self._gone: np.ndarray | None = None
        #: (view, borders) of :meth:`emit` for the current state
        self._emitted: tuple[bool, dict[int, dict[int, Border]]] | None = None

    @property
    def _lab(self) -> np.ndarray:
        """Region of every owned entity, computed when first needed after a tick."""
        self._settle()
        lab = self._lab_now
        if lab is None:
            lab = self._lab_now = self._region_of(self._f[FX], self._f[FY])
        return lab

    _arange = _arange

    def _settle(self) -> None:
        """Drop the entities handed to outsiders and adopt the rows received from them.

        Arrivals take the leavers' slots; leftover leavers are filled from the end of the
        storage (swap-remove), leftover arrivals appended, so the cost follows the handful that
        move rather than the storage size.  Slot order does not matter to the results.
        """
        gone = self._gone
        if gone is None and not self._arrivals:
            return
        F, I = self._f, self._i  # noqa: E741
        lab = self._lab_now
        if lab is None:
            lab = self._region_of(F[FX], F[FY])
        n0 = F.shape[1]
        holes = gone if gone is not None else np.empty(0, dtype=np.int64)
        self._gone = None
        a = len(self._arrivals)
        perm = self._perm
        if a:
            f, i = _split_rows(self._arrivals, self._wp)
            al = np.array(self._arrival_lab, dtype=np.int64)
            self._players += sum(1 for r in self._arrivals if r[1] == PLAYER)
            self._arrivals = []
            self._arrival_lab = []
            r = min(a, len(holes))
            if r:
                put = holes[:r]
                F[:, put] = f[:, :r]
                I[:, put] = i[:, :r]
                lab[put] = al[:r]
                holes = holes[r:]
                f, i, al = f[:, r:], i[:, r:], al[r:]
        if len(holes):
            n1 = n0 - len(holes)
            dead = np.zeros(n0, dtype=bool)
            dead[holes] = True
            low = holes[holes < n1]
            tail = (~dead[n1:]).nonzero()[0] + n1
            F[:, low] = F[:, tail]
            I[:, low] = I[:, tail]
            lab[low] = lab[tail]
            F, I, lab = F[:, :n1], I[:, :n1], lab[:n1]  # noqa: E741
            if perm is not None:
                # One lookup renames every sweep entry: moved entities to their new slots,
                # copies to the new count's numbering, the dropped to -1.
                lut = np.empty(2 * n0, dtype=np.int64)
                own = lut[:n0]
                own[:] = np.arange(n0)
                own[tail] = low
                np.add(own, n1, out=lut[n0:])
                lut[holes] = -1
                lut[holes + n0] = -1
                perm = lut.take(perm)
                perm = perm.compress(perm >= 0)
        elif a and f.shape[1]:  # leftover arrivals (there are leftover holes only without)
            n = n0 + f.shape[1]
            F, I = self._append(F, I, f, i)  # noqa: E741
            lab = np.concatenate((lab, al))
            if perm is not None:
                perm = perm + (perm >= n0) * (n - n0)
                perm = np.concatenate((perm, np.arange(n0, n), np.arange(n + n0, 2 * n)))
        self._perm = perm
        self._f, self._i, self._lab_now = F, I, lab
        self._counts = None
        self._wander = {}
        self._emitted = None

    def _append(self, F: np.ndarray, I: np.ndarray, f: np.ndarray, i: np.ndarray,  # noqa: E741
                ) -> tuple[np.ndarray, np.ndarray]:
        """``F``/``I`` with the columns ``f``/``i`` after them: written into spare columns of the
        storage's buffers when it has them (no copy of the whole storage), else into new
        buffers with an eighth to spare.  Storage is the first columns of its buffers, so it
        is often not contiguous: gathers from it index (``F[:, idx]``), because ``take`` along
        axis 1 first copies a non-contiguous array whole."""
        n0 = F.shape[1]
        n = n0 + f.shape[1]
        fb, ib = self._fbuf, self._ibuf
        if fb is None or ib is None or F.base is not fb or I.base is not ib or fb.shape[1] < n:
            cap = n + max(64, n // 8)
            fb = np.empty((F.shape[0], cap))
            ib = np.empty((I.shape[0], cap), dtype=np.int64)
            fb[:, :n0] = F
            ib[:, :n0] = I
            self._fbuf, self._ibuf = fb, ib
        fb[:, n0:n] = f
        ib[:, n0:n] = i
        return fb[:, :n], ib[:, :n]

    def rows_of(self, region: int) -> list[Row]:
        """Rows of one region, sorted by id."""
        self._settle()  # every reader settles first: the storage it reads is then current
        idx = self._sorted_of(region)
        return _to_rows(self._f[:, idx], self._i[:, idx])

    def view_array_of(self, region: int, view_in: Sequence[ViewRow]) -> np.ndarray:
        """One region's view rows (its entities by id, then ``view_in``) as an array."""
        self._settle()
        return _view_array(self._f, self._i, self._sorted_of(region), view_in)

    def _sorted_of(self, region: int) -> np.ndarray:
        """Columns of one region's entities, by id."""
        idx = (self._lab == region).nonzero()[0]
        return idx.take(self._i[IID].take(idx).argsort(kind="stable"))

    def count(self, region: int) -> int:
        counts = self._counts
        if counts is None:
            c = np.bincount(self._lab, minlength=self.config.regions)
            counts = self._counts = {r: int(c[r]) for r in self.regions}
        return counts[region]

    #: What a checkpoint leaves out: set once in __init__ and never changed after (the
    #: configuration, the layout and its tables, the facades).
    _FIXED = frozenset({"config", "layout", "regions", "shards", "_by_region", "_member",
                        "_frontier", "_foreign", "_reach", "_first_table", "_wp", "_cell",
                        "_inv_cell", "_span", "_rw", "_rh", "_empty"})

    def checkpoint(self, reuse: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything that changes as the group ticks, copied (numpy arrays by memcpy): taken
        once per state however many facades ask (:meth:`GroupShard.checkpoint`).

        ``reuse``: an earlier checkpoint nobody needs any more (:meth:`sim.shard.Shard.
        checkpoint`); its arrays of the right shape are overwritten and become this one's.
        """
        cached = self._ckpt_cache
        if cached is not None and cached[0] == self._version:
            return cached[1]
        self._ckpt_cache = None  # its memory is free for this copy once the caller drops it too
        if reuse is not None and self._rolled_back is reuse:
            self._rolled_back = None  # about to be overwritten: a rollback to it must copy
        memo: dict[int, Any] = {}
        state: dict[str, Any] = {}
        for k, v in vars(self).items():
            if k in self._FIXED or k in _BOOKKEEPING or k in _CACHES:
                continue
            if isinstance(v, np.ndarray) and v.ndim:
                state[k] = _copy_into(reuse.get(k) if reuse is not None else None, v)
            else:
                state[k] = copy.deepcopy(v, memo)
        self._ckpt_cache = (self._version, state)
        return state

    def rollback(self, state: dict[str, Any]) -> None:
        """Return to :meth:`checkpoint`'s ``state`` (copied again: it stays valid); the first
        facade to ask does it, the others find the group there already."""
        if self._rolled_back is state and self._version == self._rollback_version:
            return
        memo: dict[int, Any] = {}
        for k, v in state.items():
            setattr(self, k, copy.deepcopy(v, memo))
        self._perm = None
        self._wander = {}
        self._version += 1
        self._rolled_back = state
        self._rollback_version = self._version
        self._ckpt_cache = None

    def replace_region(self, region: int, rows: Sequence[Row], ghosts: Sequence[float]) -> None:
        """Make ``rows`` the entities of ``region`` (restore from a checkpoint).

        Of the ghosts, only those of entities owned outside the group are kept: the others are
        copies of entities the group holds.
        """
        self._version += 1
        keep = self._lab != region
        old = _to_rows(self._f.compress(keep, axis=1), self._i.compress(keep, axis=1))
        labels = np.concatenate((self._lab.compress(keep),
                                 np.full(len(rows), region, dtype=np.int64)))
        self._set(old + list(rows), labels)
        g = np.array(ghosts, dtype=np.float64).reshape(-1, 3).T
        if g.shape[1]:
            g = g.compress(~self._member[self._region_of(g[0], g[1])], axis=1)
        self._gin[region] = g.T.ravel().tolist()
        self._pending = set()

    def ghosts_of(self, region: int) -> list[float]:
        """The ghost triples a per-region shard of ``region`` would hold now (for checkpoints):
        those of the group's other entities near it, then those received from outside."""
        self._settle()
        dst, ent = self._near(self.config.ghost_range, None)
        lo, hi = dst.searchsorted(region), dst.searchsorted(region, "right")
        own = self._f[:3, ent[lo:hi]].T.ravel().tolist()
        return own + self._gin[region]

    # ---- the tick ----------------------------------------------------------------------------
    def absorb(self, region: int, borders: Iterable[Border]) -> list[ViewRow]:
        """Take borders addressed to ``region``; returns their view rows."""
        self._version += 1
        views: list[ViewRow] = []
        gin = self._gin[region]
        for hand, ghosts, view in borders:
            if hand:
                self._arrivals.extend(hand)
                self._arrival_lab.extend([region] * len(hand))
            if ghosts:
                gin.extend(ghosts)
            if view:
                views.extend(view)
        return views

    def step(self, region: int, tick: int, inputs: Mapping[int, InputRow], view: bool,
             ) -> dict[int, Border]:
        """Advance ``region``: the first region of a tick advances the whole group."""
        self._version += 1
        if not self._pending:
            self._out = self._tick(tick, inputs, view)
            self._at = tick
            self._pending = set(self.regions)
        elif tick != self._at:
            raise SimError(f"region {region} asked to advance tick {tick} while tick {self._at} "
                           "is half done")
        if region not in self._pending:
            raise SimError(f"region {region} advanced twice in tick {tick}")
        self._pending.discard(region)
        return self._out[region]

    def _tick(self, tick: int, inputs: Mapping[int, InputRow], view: bool,
              ) -> dict[int, dict[int, Border]]:
        cfg = self.config
        self._settle()
        self._emitted = None
        old = self._lab if (view or self._foreign) else None
        F = self._f
        I = self._i  # noqa: E741
        phase = (-tick) % cfg.wander_period
        wander = self._wander.get(phase)
        if wander is None:
            wander = (I[IPHASE] == phase).nonzero()[0]
            wander = self._wander[phase] = wander[I[IKIND, wander] != PLAYER]
        acc, hits = self._contacts(F[:3], self._take_ghosts())
        _integrate(cfg, F, I, tick, inputs, acc, hits, players=self._players, walls=True,
                   wander=wander)
        # Labels and counts are recomputed when something asks for them.
        self._lab_now = None
        self._counts = None
        if not self._foreign:
            self._set_views(old if view else None)
            return self._empty
        out: dict[int, dict[int, Border]] = {
            r: {nbr: ([], [], []) for nbr in self._by_region[r].neighbours} for r in self.regions}
        assert old is not None
        self._send(out, old, view)
        self._set_views(old if view else None)
        self._drop_leavers(out, old)
        return out

    def _take_ghosts(self) -> np.ndarray:
        """The ghosts from outside for this tick, one per entity, as (3, m); clears the inbox."""
        parts = []
        recv = []
        for region in self.regions:
            g = self._gin[region]
            if g:
                parts.append(g)
                recv.append(np.full(len(g) // 3, region, dtype=np.int64))
                self._gin[region] = []
        if not parts:
            return np.empty((3, 0))
        G = np.array([v for p in parts for v in p], dtype=np.float64).reshape(-1, 3).T
        to = np.concatenate(recv)
        if len(self.regions) == 1:
            return G
        # Keep the copy addressed to the lowest-numbered own region the ghost is near, and
        # none of entities the group owns (handed over to it this tick).
        first = self._first_member_near(G[0], G[1], self.config.ghost_range)
        keep = (first == to) & ~self._member[self._region_of(G[0], G[1])]
        return G.compress(keep, axis=1)

    def _first_member_near(self, x: np.ndarray, y: np.ndarray, m: float) -> np.ndarray:
        """Lowest-numbered region of the group within ``regions_near(x, y, m)`` (or -1).

        A block of regions is its corner and its size (up to 3 x 3), so one lookup in a table
        of every block's answer replaces nine membership tests.
        """
        c0, c1, r0, r1 = self._blocks(x, y, m)
        key = r0 * self.layout.nx
        key += c0
        key *= 9
        c1 -= c0
        c1 *= 3
        key += c1
        r1 -= r0
        key += r1
        return self._first_table.take(key)

    def _first_members(self) -> np.ndarray:
        """The table of :meth:`_first_member_near`: [(corner * 3 + width - 1) * 3 + height - 1]."""
        layout = self.layout
        table = np.full(self.config.regions * 9, -1, dtype=np.int64)
        for corner in range(self.config.regions):
            cy, cx = divmod(corner, layout.nx)
            for dw in range(3):
                for dh in range(3):
                    for jy in range(cy, min(cy + dh + 1, layout.ny)):
                        hit = [jy * layout.nx + jx for jx in range(cx, min(cx + dw + 1, layout.nx))
                               if self._member[jy * layout.nx + jx]]
                        if hit:
                            table[corner * 9 + dw * 3 + dh] = hit[0]
                            break
        return table

    def _send(self, out: dict[int, dict[int, Border]], before: np.ndarray, view: bool) -> None:
        """Ghosts and view rows for regions outside the group, into ``out`` (sent from each
        entity's region ``before`` the tick; handoffs are :meth:`_drop_leavers`)."""
        self._outsider_ghosts(out, before)
        if view:
            vdst, vent = self._near(self.config.view_radius, before, frontier=True)
            far = ~self._member[vdst]
            self._view_rows_into(vdst.compress(far), vent.compress(far), before, out)

    def _outsider_ghosts(self, out: dict[int, dict[int, Border]], src: np.ndarray) -> None:
        """Ghost triples to every region outside the group near an entity (except its owner),
        sent from the entity's region in ``src``."""
        dst, ent = self._near(self.config.ghost_range, None, frontier=True)
        far = ~self._member[dst]
        dst, ent = dst.compress(far), ent.compress(far)
        if len(ent):
            trip = self._f[:3, ent].T.tolist()
            for s, d, t in zip(src.take(ent).tolist(), dst.tolist(), trip, strict=True):
                out[s][d][1].extend(t)

    def _drop_leavers(self, out: dict[int, dict[int, Border]], before: np.ndarray) -> None:
        """Hand entities now owned outside the group to their owners (rows into ``out``)."""
        F = self._f
        I = self._i  # noqa: E741
        now = self._lab
        gone = (~self._member[now]).nonzero()[0]
        if len(gone):
            # Still near own regions: they stay as ghosts there (a per-region sender keeps
            # such "self ghosts" too), like ghosts received from outside.
            layout = self.layout
            x, y = F[FX].take(gone), F[FY].take(gone)
            trip = F[:3, gone].T.tolist()
            c0, c1, r0, r1 = self._blocks(x, y, self.config.ghost_range)
            # The 3x3 block at once, cell by cell in (b, a) order as in _near.
            cx = c0 + _BLOCK_A
            cy = r0 + _BLOCK_B
            ok = cx <= c1
            ok &= cy <= r1
            dst = cy * layout.nx
            dst += cx
            ok[ok] = self._member[dst[ok]]
            ks = np.broadcast_to(np.arange(len(gone)), ok.shape)[ok]
            for k, d in zip(ks.tolist(), dst[ok].tolist(), strict=True):
                self._gin[d].extend(trip[k])
            rows = _to_rows(F[:, gone], I[:, gone])
            for row, s, o in zip(rows, before.take(gone).tolist(), now.take(gone).tolist(),
                                 strict=True):
                out[s][o][0].append(row)
            self._players -= sum(1 for r in rows if r[1] == PLAYER)
            self._gone = gone  # removed by the next _settle, with the arrivals

    def _view_rows_into(self, dst: np.ndarray, ent: np.ndarray, before: np.ndarray,
                        out: dict[int, dict[int, Border]]) -> None:
        f = self._f[:, ent].tolist()
        i = self._i[:, ent].tolist()
        for s, d, eid, kind, x, y, vx, vy, h, score in zip(
                before.take(ent).tolist(), dst.tolist(), i[IID], i[IKIND], f[FX], f[FY],
                f[FVX], f[FVY], f[FH], i[ISCORE], strict=True):
            out[s][d][2].append((eid, kind, x, y, vx, vy, h, score))

    def _region_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """:meth:`sim.geometry.Layout.region_of`, vectorised (same divisions and clamps)."""
        layout = self.layout
        ix = (x / self._rw).astype(np.int64)  # positions are >= 0: int() truncation
        np.minimum(ix, layout.nx - 1, out=ix)
        iy = (y / self._rh).astype(np.int64)
        np.minimum(iy, layout.ny - 1, out=iy)
        iy *= layout.nx
        iy += ix
        return iy

    def _set_views(self, before: np.ndarray | None) -> None:
        """View rows from the group's regions to each other (``None``: no views this tick).

        A shard sends an entity's view row to every region within ``view_radius`` of the
        entity's new position (:meth:`~sim.geometry.Layout.regions_near`) except itself (the
        region before the tick, ``before``) and the new owner.
        """
        views: dict[int, list[ViewRow]] = {}
        if before is not None and len(before):
            dst, ent = self._near(self.config.view_radius, before)
            near = self._member[dst]
            dst, ent = dst.compress(near), ent.compress(near)
            f = self._f[:, ent].tolist()
            i = self._i[:, ent].tolist()
            for d, eid, kind, x, y, vx, vy, h, score in zip(
                    dst.tolist(), i[IID], i[IKIND], f[FX], f[FY], f[FVX], f[FVY], f[FH],
                    i[ISCORE], strict=True):
                views.setdefault(d, []).append((eid, kind, x, y, vx, vy, h, score))
        for shard in self.shards:
            shard._view_in = views.get(shard.region, [])

    def emit(self, view: bool) -> dict[int, dict[int, Border]]:
        """Borders of the current state (first exchange): ghosts (and views) for outsiders.

        Every facade asks in turn: computed once per state and reused until the state changes.
        """
        self._settle()
        cached = self._emitted
        if cached is not None and cached[0] == view:
            return cached[1]
        out: dict[int, dict[int, Border]] = {
            r: {nbr: ([], [], []) for nbr in self._by_region[r].neighbours} for r in self.regions}
        lab = self._lab
        if self._foreign:
            self._outsider_ghosts(out, lab)
            if view:
                vdst, vent = self._near(self.config.view_radius, None, frontier=True)
                far = ~self._member[vdst]
                self._view_rows_into(vdst.compress(far), vent.compress(far), lab, out)
        if view:
            self._set_views(lab)
        self._emitted = (view, out)
        return out

    def _blocks(self, x: np.ndarray, y: np.ndarray, m: float,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Column and row ranges of :meth:`~sim.geometry.Layout.regions_near`, vectorised.

        ``max(0, int((x - m)/rw)) if x > m else 0 == trunc(max(0, (x - m)/rw))``.
        """
        layout = self.layout
        c0 = np.maximum((x - m) / self._rw, 0.0).astype(np.int64)
        c1 = np.minimum(((x + m) / self._rw).astype(np.int64), layout.nx - 1)
        r0 = np.maximum((y - m) / self._rh, 0.0).astype(np.int64)
        r1 = np.minimum(((y + m) / self._rh).astype(np.int64), layout.ny - 1)
        return c0, c1, r0, r1

    def _near(self, m: float, before: np.ndarray | None, *, frontier: bool = False,
              ) -> tuple[np.ndarray, np.ndarray]:
        """(destination region, entity index) pairs: regions within ``m`` of each entity.

        :meth:`~sim.geometry.Layout.regions_near` vectorised, minus the entity's owner and, if
        given, its region ``before`` the tick.  Sorted by destination (stable).  ``frontier``:
        only entities now in regions next to outsiders or outside (the others reach no
        outsider).
        """
        layout = self.layout
        lab = self._lab  # first: it may settle the storage
        F = self._f
        if frontier:
            cand = self._reach[lab].nonzero()[0]
            c0, c1, r0, r1 = self._blocks(F[FX].take(cand), F[FY].take(cand), m)
            pick = ((c0 != c1) | (r0 != r1)).nonzero()[0]
            sel = cand.take(pick)
        else:
            c0, c1, r0, r1 = self._blocks(F[FX], F[FY], m)
            sel = pick = ((c0 != c1) | (r0 != r1)).nonzero()[0]
        c0, c1, r0, r1 = c0.take(pick), c1.take(pick), r0.take(pick), r1.take(pick)
        now = lab.take(sel)
        was = before.take(sel) if before is not None else now
        # The 3x3 block at once: row j of these (9, k) arrays is block cell (a, b) = (j % 3,
        # j // 3), so the masked, row-major flattening lists the pairs cell by cell in (b, a)
        # order and entities in order within a cell, and the stable sort by destination below
        # keeps that order among equal destinations.
        col = c0 + _BLOCK_A
        row = r0 + _BLOCK_B
        dst = row * layout.nx
        dst += col
        ok = col <= c1
        ok &= row <= r1
        ok &= dst != was
        ok &= dst != now
        dst = dst[ok]
        ent = np.broadcast_to(sel, ok.shape)[ok]
        order = dst.argsort(kind="stable")
        return dst.take(order), ent.take(order)

    def _contacts(self, P: np.ndarray, G: np.ndarray,
                  ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Summed quantised impulses (2, n) and contact counts (n,) of the owned entities.

        ``P``: owned (x, y, r), ``G``: ghosts (x, y, r) from outside.  The band sweep finds the
        owned pairs; each ghost looks up its owned candidates with binary searches in the sorted
        keys (:meth:`_ghost_pairs`), so the sweep's order depends on the owned entities only and
        carries over from tick to tick whatever ghosts come and go.
        """
        n = P.shape[1]
        m = G.shape[1]
        if not n:
            return None, None
        span = self._span
        key = np.empty(2 * n)
        top = key[:n]
        np.multiply(P[1], self._inv_cell, out=top)
        np.floor(top, out=top)
        top *= span
        top += P[0]
        np.subtract(top, span, out=key[n:])  # the copies, one band down
        gkey = None
        if m:
            gkey = G[1] * self._inv_cell
            np.floor(gkey, out=gkey)
            gkey *= span
            gkey += G[0]
        lo_key = float(top.min()) - span  # the lowest key is a copy's
        hi_key = float(top.max())
        # Keys round: allow a few ulps beyond a cell (extra candidates are filtered exactly).
        big = max(abs(lo_key), abs(hi_key))
        if gkey is not None:
            big = max(big, float(np.abs(gkey).max()))
        lim = self._cell + 8.0 * float(np.spacing(big))
        # Sorted as int64 "composites": the key quantised (a monotone map, so sorted composites
        # list the keys in order) above the entry's number (which makes each composite unique
        # and carries the order out).  Sorting values is ~2.5x faster than numpy's indirect
        # argsort of the float keys; candidates are then pairs of quantised keys less than
        # ``width`` apart, a superset of the pairs less than ``lim`` apart: one quantum of
        # slack for each floor.
        bits = max(1, (2 * n - 1).bit_length())
        scale = _key_scale(hi_key - lo_key, 62 - bits)
        width = math.ceil(lim * scale) + 2
        key -= lo_key  # in place: the float keys are not needed again
        key *= scale
        q = key.astype(np.int64)  # >= 0: truncation is floor
        q <<= bits
        q |= self._arange(2 * n)
        perm = self._perm
        if perm is None or len(perm) != 2 * n:
            q.sort()
        else:
            # Last tick's order: the keys are nearly sorted in it (timsort's best case).
            q = q.take(perm)
            q.sort(kind="stable")
        order = q & ((1 << bits) - 1)
        self._perm = order
        ks = q
        ks >>= bits  # the quantised keys, in order
        us: list[np.ndarray] = []
        vs: list[np.ndarray] = []
        idx = ((ks[1:] - ks[:-1]) < width).nonzero()[0]  # k = 1 (slices: no gather)
        if len(idx):
            us.append(idx)
            vs.append(idx + 1)
        k = 2
        while len(idx):
            idx = idx[:idx.searchsorted(2 * n - k)]
            near = (ks.take(idx + k) - ks.take(idx)) < width
            idx = idx.compress(near)
            if len(idx):
                us.append(idx)
                vs.append(idx + k)
            k += 1
        if us:
            u = order.take(np.concatenate(us))
            v = order.take(np.concatenate(vs))
            keep = (u < n) | (v < n)  # copy-copy: the originals meet in their own band
            u = u.compress(keep)
            v = v.compress(keep)
            u %= n  # copies -> their entities
            v %= n
        else:
            u = v = np.empty(0, dtype=np.int64)
        if gkey is not None:
            gu, gv = self._ghost_pairs(gkey, lo_key, scale, ks, order, width, n)
            u = np.concatenate((u, gu))
            v = np.concatenate((v, gv))
        if not len(u):
            return None, None
        # One radius for all (spawned entities share the configured one): pairs need only
        # positions, and rr is that radius twice, the sum the pair's own radii would give.
        rad = float(P[2, 0])
        same = bool((P[2] == rad).all()) and (not m or bool((G[2] == rad).all()))
        rows = 2 if same else 3
        # take() along axis 1 copies a non-contiguous array whole first: the storage's rows
        # may be the first columns of wider buffers.
        PG = (np.concatenate((P[:rows], G[:rows]), axis=1) if m
              else np.ascontiguousarray(P[:rows]))
        hit = _pair_impulses(PG.take(u, axis=1), PG.take(v, axis=1), self.config.stiffness,
                             rad + rad if same else None)
        if hit is None:
            return None, None
        sel, q = hit
        return _sum_impulses(u.take(sel), v.take(sel), q, n + m, n)

    def _ghost_pairs(self, gkey: np.ndarray, lo_key: float, scale: float, ks: np.ndarray,
                     order: np.ndarray, width: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Candidate (ghost, owned) pairs: ghost ``g`` numbered ``n + g``, owned entity index.

        A ghost in band b meets owned entities of bands b-1, b and b+1: owned originals within
        ``width`` of its quantised key (band b), owned copies within ``width`` of it (originals
        of band b+1), and owned originals within ``width`` of its key one band down (band
        b-1).  The three windows never overlap, so each pair is a candidate once; ghost-ghost
        pairs are not needed (they only add to ghost slots, which are thrown away).
        ``ks``: the owned quantised keys in order (:meth:`_contacts`), ``lo_key`` and
        ``scale`` their quantisation.
        """
        down = gkey - self._span
        q = np.concatenate((gkey, down))
        q -= lo_key
        q *= scale
        qi = np.floor(q).astype(np.int64)  # below the owned keys, a ghost's may be negative
        lo = ks.searchsorted(qi - width, "right")  # lo <= hi
        src, at = expand_ranges(lo, ks.searchsorted(qi + width, "left") - lo)
        code = order.take(at)
        m = len(gkey)
        # The down window pairs the ghost with originals only: with a copy it would meet an
        # entity of its own band a second time.
        keep = (src < m) | (code < n)
        src = src.compress(keep)
        code = code.compress(keep)
        src %= m
        src += n
        code %= n
        return src, code


class GroupShard(Shard):
    """One region of a :class:`NumpyGroup`: the shard contract over the shared arrays."""

    kernel = "numpy"

    def __init__(self, group: NumpyGroup, region: int) -> None:
        super().__init__(group.config, region)
        self._group = group
        #: Every border this shard sends or receives is empty when the group is the world.
        self.internal_borders = not group._foreign

    def rows(self) -> list[Row]:
        return self._group.rows_of(self.region)

    def __len__(self) -> int:
        return self._group.count(self.region)

    def view_array(self) -> np.ndarray:
        """:meth:`view_rows` as an ``(n, 8)`` float64 array, the same rows in the same order,
        without a Python object per row (what batched snapshots read)."""
        return self._group.view_array_of(self.region, self._view_in)

    def _ghost_flat(self) -> list[float]:
        # What a per-region shard would hold, so that any kernel can restore the checkpoint.
        return self._group.ghosts_of(self.region)

    def _load(self, rows: Sequence[Row], ghosts: Sequence[float]) -> None:
        self._group.replace_region(self.region, rows, ghosts)

    def absorb(self, borders: Iterable[Border]) -> None:
        self._view_in.extend(self._group.absorb(self.region, borders))

    def advance(self, tick: int, inputs: Mapping[int, InputRow], *,
                view: bool = False) -> dict[int, Border]:
        return self._group.step(self.region, tick, inputs, view)

    def emit(self, *, view: bool = False) -> dict[int, Border]:
        return self._group.emit(view)[self.region]

    def checkpoint(self, reuse: Any = None) -> Any:
        # The group's arrays, copied once for all its facades, and this region's view rows.
        return self._group.checkpoint(reuse[0] if reuse is not None else None), \
            list(self._view_in)

    def rollback(self, checkpoint: Any) -> None:
        state, view_in = checkpoint
        self._group.rollback(state)
        self._view_in = list(view_in)
