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
  (wrapping multiplies, xors and shifts); ``tests/sim/test_kernels.py`` checks it bit for bit.

Rows leaving the kernel (``rows()``, handoffs, ghosts, view rows) are converted with ``tolist()``
so they hold plain Python ints and floats: digests and msgpack bytes equal the python kernel's.

Storage is two shard-private arrays, ``F`` (float64, one row per float field) and ``I`` (int64,
one row per integer field), so dropping leavers or adopting arrivals is two array operations.

numpy refuses to load in a subinterpreter; this module is only imported by
:func:`sim.shard.make_shard`, which turns that failure into :class:`~sim.errors.KernelUnavailable`.
"""

from __future__ import annotations

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
from sim.kernels.python import CELL_SLACK, STRIDE
from sim.rng import GOLDEN, K_ID, K_LANE, K_TICK, M1, M2, MASK, TWO_M53
from sim.shard import INV_SCALE, SCALE, TAU, Border, Shard

PI = math.pi

# Float rows of F and integer rows of I.  x, y, r come first so that F[:3] is the contact input.
FX, FY, FR, FVX, FVY, FH, FTHR, FTRN = range(8)
IID, IKIND, ISCORE, IACT, ISEQ = range(5)
#: Row field index -> (array, row) of where the field lives; a Row is
#: (id, kind, x, y, vx, vy, radius, heading, score, thrust, turn, action, seq).
_FLOAT_FIELDS = (2, 3, 6, 4, 5, 7, 9, 10)  # row fields stored in F rows 0..7
_INT_FIELDS = (0, 1, 8, 11, 12)  # row fields stored in I rows 0..4

#: Cell-key offsets scanned from each entity: its own cell (later entries only) and the half
#: stencil of the python kernel (+x, +y, +x+y, +x-y), so every cell pair is visited once.
_OFFS = np.array([0, STRIDE, 1, STRIDE + 1, 1 - STRIDE], dtype=np.int64)[:, None]
_U11 = np.uint64(11)
_U27 = np.uint64(27)
_U30 = np.uint64(30)
_U31 = np.uint64(31)


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
    c = np.uint64((seed ^ (tick * K_TICK) ^ (lane * K_LANE)) & MASK)
    z = eids.astype(np.uint64) * np.uint64(K_ID)
    z ^= c
    z += np.uint64(GOLDEN)
    z ^= z >> _U30
    z *= np.uint64(M1)
    z ^= z >> _U27
    z *= np.uint64(M2)
    z ^= z >> _U31
    return (z >> _U11).astype(np.float64) * TWO_M53


def _split_rows(rows: Sequence[Sequence[Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Rows -> (F, I) arrays."""
    if not rows:
        return np.empty((8, 0), dtype=np.float64), np.empty((5, 0), dtype=np.int64)
    cols = list(zip(*rows, strict=True))
    f = np.array([cols[k] for k in _FLOAT_FIELDS], dtype=np.float64)
    i = np.array([cols[k] for k in _INT_FIELDS], dtype=np.int64)
    return f, i


def _to_rows(f: np.ndarray, i: np.ndarray) -> list[Row]:
    """(F, I) columns -> rows of plain Python values, in column order."""
    x, y, r, vx, vy, h, thr, trn = f.tolist()
    eid, kind, score, act, seq = i.tolist()
    return list(zip(eid, kind, x, y, vx, vy, r, h, score, thr, trn, act, seq, strict=True))


class NumpyShard(Shard):
    """A region whose tick runs as a few dozen numpy operations over all its entities."""

    kernel = "numpy"

    def __init__(self, config: WorldConfig, region: int, rows: Iterable[Row] = ()) -> None:
        super().__init__(config, region)
        self._load(list(rows), [])
        cfg = config
        self._inv_cell = 1.0 / (2.0 * cfg.radius * CELL_SLACK)
        # Per-shard lookup of a region number -> slot in the outgoing borders (-1: not a
        # neighbour); the shard itself has the last slot (self-ghosts).
        nbrs = self.neighbours
        slot = np.full(config.regions, -1, dtype=np.int64)
        for k, nbr in enumerate(nbrs):
            slot[nbr] = k
        slot[region] = len(nbrs)
        self._slot = slot
        self._wh = np.array([[cfg.width], [cfg.height]], dtype=np.float64)

    # ---- state -----------------------------------------------------------------------------
    def _load(self, rows: Sequence[Row], ghosts: Sequence[float]) -> None:
        self._f, self._i = _split_rows(rows)
        self._ghosts: list[float] = list(ghosts)
        self._arrivals: list[Row] = []

    def _ghost_flat(self) -> list[float]:
        return self._ghosts

    def _settle(self) -> None:
        """Adopt the handoff rows received since the last advance."""
        if self._arrivals:
            f, i = _split_rows(self._arrivals)
            self._f = np.concatenate((self._f, f), axis=1)
            self._i = np.concatenate((self._i, i), axis=1)
            self._arrivals = []

    def rows(self) -> list[Row]:
        self._settle()
        order = np.argsort(self._i[IID], kind="stable")
        return _to_rows(self._f[:, order], self._i[:, order])

    def __len__(self) -> int:
        return self._f.shape[1] + len(self._arrivals)

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
        if gh:
            P = np.concatenate((F[:3], np.array(gh, dtype=np.float64).reshape(-1, 3).T), axis=1)
        else:
            P = F[:3]
        N = P.shape[1]

        # 1. Contacts (Jacobi: previous positions only).  Sort by cell key; for every entity
        #    find the index range of each stencil cell with searchsorted; expand the ranges
        #    into candidate pairs (src, dst) of sorted positions.
        C = (P[:2] * self._inv_cell).astype(np.int64)
        key = C[0] * STRIDE
        key += C[1]
        order = key.argsort()
        ks = key[order]
        Q = ks + _OFFS
        hi = ks.searchsorted(Q, "right")
        lo = ks.searchsorted(Q, "left")
        lo[0] = np.arange(1, N + 1)  # own cell: only later entries, so each pair once
        cnt = (hi - lo).ravel()
        tot = int(cnt.sum())
        acc = np.zeros((2, N))
        hits: np.ndarray
        if tot:
            ends = cnt.cumsum()
            src = np.repeat(np.arange(5 * N) % N, cnt)
            dst = np.repeat(lo.ravel() - (ends - cnt), cnt)
            dst += np.arange(tot)
            Ps = P[:, order]
            A = Ps[:, src]
            B = Ps[:, dst]
            d = B[:2] - A[:2]
            sq = d * d
            d2 = sq[0] + sq[1]
            rr = A[2] + B[2]
            rr2 = rr * rr
            sel = np.flatnonzero(d2 < rr2)
            if len(sel):
                rr = rr[sel]
                w = cfg.stiffness * (1.0 - d2[sel] / rr2[sel]) / rr
                q = np.trunc(w * d[:, sel] * SCALE)
                ij = np.concatenate((src[sel], dst[sel]))
                oij = order[ij]
                qq = np.concatenate((-q, q), axis=1)
                acc[0] = np.bincount(oij, qq[0], N)
                acc[1] = np.bincount(oij, qq[1], N)
                hits = np.bincount(oij, minlength=N)[:n]
            else:
                hits = np.zeros(n, dtype=np.int64)
        else:
            hits = np.zeros(n, dtype=np.int64)

        # 2. Control: players steered in Python (math.cos/sin, see the module docstring),
        #    NPC wander kicks drawn vectorised.
        dv = np.zeros((2, n))
        ids = I[IID]
        kinds = I[IKIND]
        players = np.flatnonzero(kinds == PLAYER)
        wp = cfg.wander_period
        wander = np.flatnonzero((ids + tick) % wp == 0)
        if len(players):
            wander = wander[kinds[wander] != PLAYER]
            self._steer(players, inputs, dv)
        if len(wander):
            wid = ids[wander]
            kick = cfg.wander_kick
            dv[0, wander] = (uniform(cfg.seed, wid, tick, 0) - 0.5) * kick
            dv[1, wander] = (uniform(cfg.seed, wid, tick, 1) - 0.5) * kick

        # 3. Integration, speed cap, walls.
        dt = cfg.dt
        V = F[FVX:FVY + 1] + dv
        V += acc[:, :n] * INV_SCALE
        V *= 1.0 - cfg.drag * dt
        sq = V * V
        s2 = sq[0] + sq[1]
        cap = cfg.max_speed
        over = np.flatnonzero(s2 > cap * cap)
        if len(over):
            f = cap / np.sqrt(s2[over])
            V[:, over] *= f
        Pn = F[:2] + V * dt
        r = F[FR]
        below = Pn < r
        lim = self._wh - r
        above = Pn > lim
        if below.any() or above.any():
            below_k = np.nonzero(below)
            Pn[below_k] = r[below_k[1]] + (r[below_k[1]] - Pn[below_k])
            V[below_k] = -V[below_k]
            above &= ~below
            above_k = np.nonzero(above)
            Pn[above_k] = lim[above_k] - (Pn[above_k] - lim[above_k])
            V[above_k] = -V[above_k]
        F[:2] = Pn
        F[FVX:FVY + 1] = V
        I[ISCORE] += hits

        # 4. Borders: only entities near the rectangle's edge can leave or be anyone's ghost.
        return self._borders(Pn, view)

    def _steer(self, players: np.ndarray, inputs: Mapping[int, InputRow], dv: np.ndarray) -> None:
        """The python kernel's player control, same operations, written into ``dv``."""
        cfg = self.config
        F = self._f
        I = self._i  # noqa: E741
        dt = cfg.dt
        accel_dt = cfg.player_accel * dt
        turn_dt = cfg.turn_rate * dt
        boost = cfg.boost
        cos = math.cos
        sin = math.sin
        for i in players.tolist():
            inp = inputs.get(int(I[IID, i]))
            if inp is not None:
                I[ISEQ, i] = inp[1]
                F[FTHR, i] = inp[2]
                F[FTRN, i] = inp[3]
                I[IACT, i] = inp[4]
            h = float(F[FH, i]) + float(F[FTRN, i]) * turn_dt
            if h > PI:
                h -= TAU
            elif h < -PI:
                h += TAU
            F[FH, i] = h
            a = float(F[FTHR, i]) * accel_dt
            if int(I[IACT, i]) & 1:
                a = a * boost
            dv[0, i] = cos(h) * a
            dv[1, i] = sin(h) * a

    def _borders(self, Pn: np.ndarray, view: bool) -> dict[int, Border]:
        cfg = self.config
        F = self._f
        I = self._i  # noqa: E741
        g = cfg.ghost_range
        vr = cfg.view_radius if view else 0.0
        margin = max(g, vr) + 1.0
        rect = self.rect
        nbrs = self.neighbours
        out: dict[int, Border] = {nbr: ([], [], []) for nbr in nbrs}
        inside = (Pn[0] > rect.x0 + margin) & (Pn[0] < rect.x1 - margin)
        inside &= Pn[1] > rect.y0 + margin
        inside &= Pn[1] < rect.y1 - margin
        edge = np.flatnonzero(~inside)
        if not len(edge):
            self._ghosts = []
            self._view_in = []
            return out
        me = self.region
        ex = Pn[0, edge]
        ey = Pn[1, edge]
        layout = self.layout
        nx = layout.nx
        rw = layout.rw
        rh = layout.rh
        ox = np.minimum((ex / rw).astype(np.int64), nx - 1)
        oy = np.minimum((ey / rh).astype(np.int64), layout.ny - 1)
        owner = oy * nx + ox
        slot = self._slot
        nslots = len(nbrs) + 1

        # Ghosts: (entity, region) pairs with the region near the entity and not its owner.
        ent, dst = self._near(ex, ey, g)
        keep = dst != owner[ent]
        ent = ent[keep]
        s = slot[dst[keep]]
        order = np.argsort(s, kind="stable")
        trip = F[:3, edge].T[ent[order]].ravel().tolist()
        bounds = (3 * np.bincount(s, minlength=nslots).cumsum()).tolist()
        start = 0
        for k, nbr in enumerate(nbrs):
            end = bounds[k]
            if end > start:
                out[nbr][1].extend(trip[start:end])
            start = end
        self._ghosts = trip[start:bounds[-1]]

        # Handoffs: entities whose owner is no longer this region.
        leave = np.flatnonzero(owner != me)
        if len(leave):
            gone = edge[leave]
            for row, o in zip(_to_rows(F[:, gone], I[:, gone]), owner[leave].tolist(),
                              strict=True):
                out[o][0].append(row)
            stay = np.ones(F.shape[1], dtype=bool)
            stay[gone] = False
            self._f = F[:, stay]
            self._i = I[:, stay]

        # View rows: every region within the view radius except the owner and this one.
        if vr:
            ent, dst = self._near(ex, ey, vr)
            keep = (dst != owner[ent]) & (dst != me)
            ent = ent[keep]
            dst = dst[keep]
            e = edge[ent]
            f = F[:, e].tolist()
            i = I[:, e].tolist()
            for eid, kind, x, y, vx, vy, h, score, d in zip(
                    i[IID], i[IKIND], f[FX], f[FY], f[FVX], f[FVY], f[FH], i[ISCORE],
                    dst.tolist(), strict=True):
                out[d][2].append((eid, kind, x, y, vx, vy, h, score))
        self._view_in = []
        return out

    def _near(self, x: np.ndarray, y: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
        """All (entity, region) pairs of :meth:`sim.geometry.Layout.regions_near`, vectorised.

        ``max(0, int((x - m) / rw)) if x > m else 0`` equals ``max(0, trunc((x - m) / rw))``
        for every x, so the branch needs no mask.
        """
        layout = self.layout
        rw = layout.rw
        rh = layout.rh
        nx = layout.nx
        ix0 = np.maximum(((x - margin) / rw).astype(np.int64), 0)
        ix1 = np.minimum(((x + margin) / rw).astype(np.int64), nx - 1)
        iy0 = np.maximum(((y - margin) / rh).astype(np.int64), 0)
        iy1 = np.minimum(((y + margin) / rh).astype(np.int64), layout.ny - 1)
        cx = ix1 - ix0 + 1
        per = cx * (iy1 - iy0 + 1)
        ent = np.repeat(np.arange(len(x)), per)
        k = np.arange(len(ent)) - np.repeat(per.cumsum() - per, per)
        cxe = cx[ent]
        dst = (iy0[ent] + k // cxe) * nx + ix0[ent] + k % cxe
        return ent, dst
