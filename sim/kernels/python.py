"""The pure-Python kernel.

Designed for free-threaded scaling as much as for single-thread speed: every list it touches is
owned by this shard (no shared mutable hot objects, so no refcount or lock contention between
worker threads), the hot loops read locals only, and the per-tick allocations are a handful of
lists plus one small tuple per entity for the contact sweep (the uniform grid kept as rows one
cell high, each sorted by x).  Columns ("struct of arrays") beat
``__slots__`` objects, and float columns as ``array('d')`` beat lists of floats, most of all on
the free-threaded build (about 1.3x there, a few percent with the GIL): measured on both builds
in ``bench/results/2026-11-25-vm-kernel-layouts/``.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sim.config import WorldConfig
from sim.entities import PLAYER, InputRow, Row
from sim.errors import SchemaError
from sim.rng import uniform
from sim.shard import INV_SCALE, SCALE, TAU, Border, Shard, ViewRow

PI = math.pi
#: Grid cells are a hair larger than the interaction range so that two entities in contact are
#: always in adjacent cells despite rounding in ``int(x / cell)``.
CELL_SLACK = 1.0 + 2.0**-20


#: A contact-sweep entry: (x, y, index); indices >= n are ghosts.  x first: rows sort by it
#: (ties broken by y, then index, so the order is total and deterministic).
Cand = tuple[float, float, int]
#: Row fields kept in ``array('d')`` columns (unboxed floats: fastest on both builds, see
#: bench/results/2026-11-25-vm-kernel-layouts/); the integer fields stay in lists.
FLOAT_FIELDS = frozenset((2, 3, 4, 5, 6, 7, 9, 10))


class PythonShard(Shard):
    kernel = "python"

    def __init__(self, config: WorldConfig, region: int, rows: Iterable[Row] = ()) -> None:
        super().__init__(config, region)
        self._load(list(rows), [])

    # ---- state -----------------------------------------------------------------------------
    def _load(self, rows: Sequence[Row], ghosts: Sequence[float]) -> None:
        data = list(zip(*rows, strict=True)) if rows else [() for _ in range(13)]
        self._set_cols([array("d", c) if k in FLOAT_FIELDS else list(c)
                        for k, c in enumerate(data)])
        self._ghosts: list[float] = list(ghosts)

    def _set_cols(self, cols: list[Any]) -> None:
        (self.ids, self.kinds, self.xs, self.ys, self.vxs, self.vys, self.rs, self.hs,
         self.scores, self.thr, self.trn, self.act, self.seq) = cols

    def _ghost_flat(self) -> list[float]:
        return self._ghosts

    def _cols(self) -> list[list[Any]]:
        return [self.ids, self.kinds, self.xs, self.ys, self.vxs, self.vys, self.rs, self.hs,
                self.scores, self.thr, self.trn, self.act, self.seq]

    def rows(self) -> list[Row]:
        return sorted(zip(*self._cols(), strict=True))

    def __len__(self) -> int:
        return len(self.ids)

    def checkpoint(self, reuse: Any = None) -> Any:
        """Copies of the columns, the pending ghosts and view rows (not :meth:`state`'s list
        per entity: cheaper to take, and nothing for the collector to walk while it is kept,
        which for 100,000 entities was 100,000 lists in every full collection)."""
        return (self.region, [c[:] for c in self._cols()], self._ghosts[:], self._view_in[:])

    def rollback(self, checkpoint: Any) -> None:
        region, cols, ghosts, view = checkpoint
        if region != self.region:
            raise SchemaError(f"checkpoint of region {region} given to {self.region}")
        self._set_cols([c[:] for c in cols])  # copies: the checkpoint stays valid
        self._ghosts = ghosts[:]
        self._view_in = view[:]

    def absorb(self, borders: Iterable[Border]) -> None:
        cols = self._cols()
        for hand, ghosts, view in borders:
            for row in hand:
                for col, value in zip(cols, row, strict=True):
                    col.append(value)
            self._ghosts.extend(ghosts)
            self._view_in.extend(view)

    # ---- the tick ----------------------------------------------------------------------------
    def advance(self, tick: int, inputs: Mapping[int, InputRow], *,
                view: bool = False) -> dict[int, Border]:
        cfg = self.config
        ids, kinds, xs, ys, vxs, vys, rs, hs = (self.ids, self.kinds, self.xs, self.ys,
                                                self.vxs, self.vys, self.rs, self.hs)
        n = len(ids)
        gh = self._ghosts

        # 1. Contacts (Jacobi: previous positions only) by a sweep over rows of the grid.
        #    Entities (own and ghosts) go into rows one cell high, each row is sorted by x, and
        #    a pair can only touch if both are in the same row or adjacent rows and less than
        #    a cell apart in x (rr <= 2*radius < cell).  Each unordered pair is visited once:
        #    within a row from the entity with the smaller position, across rows from the lower
        #    row, with a pointer into the next row that only moves forward.  Contacts add
        #    integers (quantized), so visiting order cannot change the result.
        #    No per-tick dict or per-cell lists: a handful of row lists and one tuple per
        #    entity.  The per-cell dict-of-lists grid this replaces slowed down 2x per region
        #    when 16 free threads ran it at once (bench/results/2026-11-26-device16/).
        trunc = int  # a local: a builtin is two dict lookups per call on 3.13t (no specialising)
        cell = 2.0 * cfg.radius * CELL_SLACK
        inv = 1.0 / cell
        gy = gh[1::3]
        ycols = [c for c in (ys, gy) if len(c)]
        row_lo = int(min(min(c) for c in ycols) * inv) if ycols else 0
        row_hi = int(max(max(c) for c in ycols) * inv) if ycols else 0
        # One spare empty row on top, so the last real row is swept as `below` too.
        rows: list[list[Cand]] = [[] for _ in range(row_hi - row_lo + 2)]
        for e in zip(xs, ys, range(n), strict=True):
            rows[trunc(e[1] * inv) - row_lo].append(e)
        for e in zip(gh[0::3], gy, range(n, n + len(gh) // 3), strict=True):
            rows[trunc(e[1] * inv) - row_lo].append(e)
        for row in rows:
            if len(row) > 1:
                row.sort()
        accx = [0] * n
        accy = [0] * n
        hits = [0] * n
        # w*dx*SCALE with SCALE folded into the stiffness: scaling by a power of two is exact,
        # so (stiff*SCALE)*(1 - d2/rr2)/rr*dx rounds to the same bits as stiff*(...)/rr*dx*SCALE.
        stiff_s = cfg.stiffness * SCALE
        # Radii stay out of the sweep entries: in the common case every radius here is the
        # same, rr = ri + rj is a constant and one test against it is exact.  Otherwise
        # (`mixed`) that test against the largest radii only filters, and the pair's own rr
        # decides (smaller entries, and no rr computed per candidate).
        gr = gh[2::3]
        rmax = max(max(rs, default=0.0), max(gr, default=0.0))
        mixed = min(rs, default=rmax) != rmax or min(gr, default=rmax) != rmax
        rad = [*rs, *gr] if mixed else []
        rr = rmax + rmax
        rr2m = rr2 = rr * rr
        # Row r is swept against itself (from the next entity on) and against row r + 1 (from a
        # pointer that only moves forward, since both rows are sorted by x), both in one visit
        # of each entity (the two inner loops are the same code on different rows: written out
        # twice, since this is the hottest loop of the kernel).
        below = rows[0]
        for here in rows[1:]:
            la = len(below)
            lb = len(here)
            lo = 0
            for a in range(la):
                xi, yi, i = below[a]
                own_i = i < n
                b = a + 1
                while b < la:
                    xj, yj, j = below[b]
                    dx = xj - xi
                    if dx >= cell:
                        break
                    b += 1
                    dy = yj - yi
                    d2 = dx * dx + dy * dy
                    if d2 < rr2m:
                        if mixed:
                            rr = rad[i] + rad[j]
                            rr2 = rr * rr
                            if d2 >= rr2:
                                continue
                        w = stiff_s * (1.0 - d2 / rr2) / rr
                        qx = trunc(w * dx)
                        qy = trunc(w * dy)
                        if own_i:
                            accx[i] -= qx
                            accy[i] -= qy
                            hits[i] += 1
                        if j < n:
                            accx[j] += qx
                            accy[j] += qy
                            hits[j] += 1
                lim = xi - cell
                while lo < lb and here[lo][0] <= lim:
                    lo += 1
                b = lo
                while b < lb:
                    xj, yj, j = here[b]
                    dx = xj - xi
                    if dx >= cell:
                        break
                    b += 1
                    dy = yj - yi
                    d2 = dx * dx + dy * dy
                    if d2 < rr2m:
                        if mixed:
                            rr = rad[i] + rad[j]
                            rr2 = rr * rr
                            if d2 >= rr2:
                                continue
                        w = stiff_s * (1.0 - d2 / rr2) / rr
                        qx = trunc(w * dx)
                        qy = trunc(w * dy)
                        if own_i:
                            accx[i] -= qx
                            accy[i] -= qy
                            hits[i] += 1
                        if j < n:
                            accx[j] += qx
                            accy[j] += qy
                            hits[j] += 1
            below = here

        # 2. Control, integration, walls, and 3. classification for the borders.
        seed = cfg.seed
        wp = cfg.wander_period
        kick = cfg.wander_kick
        dt = cfg.dt
        damp = 1.0 - cfg.drag * dt
        cap = cfg.max_speed
        cap2 = cap * cap
        accel_dt = cfg.player_accel * dt
        turn_dt = cfg.turn_rate * dt
        boost = cfg.boost
        W = cfg.width
        H = cfg.height
        g = cfg.ghost_range
        vr = cfg.view_radius if view else 0.0
        margin = max(g, vr) + 1.0
        rect = self.rect
        ix0, ix1, iy0, iy1 = rect.x0 + margin, rect.x1 - margin, rect.y0 + margin, rect.y1 - margin
        me = self.region
        out: dict[int, Border] = {nbr: ([], [], []) for nbr in self.neighbours}
        layout = self.layout
        near = layout.regions_near
        rw = layout.rw
        rh = layout.rh
        nx = layout.nx
        nx1 = nx - 1
        ny1 = layout.ny - 1
        thr, trn, act, seq, scores = self.thr, self.trn, self.act, self.seq, self.scores
        leavers: list[int] = []
        self_ghosts: list[float] = []
        cos = math.cos
        sin = math.sin
        phase = (-tick) % wp  # (eid + tick) % wp == 0  <=>  eid % wp == phase
        inv_s = INV_SCALE
        player = PLAYER
        for i, eid, kind, x, y, vx, vy, ax, ay, hit in zip(
                range(n), ids, kinds, xs, ys, vxs, vys, accx, accy, hits, strict=True):
            if kind == player:
                inp = inputs.get(eid)
                if inp is not None:
                    seq[i] = inp[1]
                    thr[i] = inp[2]
                    trn[i] = inp[3]
                    act[i] = inp[4]
                h = hs[i] + trn[i] * turn_dt
                if h > PI:
                    h -= TAU
                elif h < -PI:
                    h += TAU
                hs[i] = h
                a = thr[i] * accel_dt
                if act[i] & 1:
                    a = a * boost
                vx = (vx + cos(h) * a + ax * inv_s) * damp
                vy = (vy + sin(h) * a + ay * inv_s) * damp
            elif eid % wp == phase:
                vx = (vx + (uniform(seed, eid, tick, 0) - 0.5) * kick + ax * inv_s) * damp
                vy = (vy + (uniform(seed, eid, tick, 1) - 0.5) * kick + ay * inv_s) * damp
            elif hit:
                vx = (vx + 0.0 + ax * inv_s) * damp  # + 0.0 as for a zero kick (-0.0 -> 0.0)
                vy = (vy + 0.0 + ay * inv_s) * damp
            else:
                # No contact: a*inv_s is 0.0, and (v + 0.0) + 0.0 == v + 0.0 (never -0.0).
                vx = (vx + 0.0) * damp
                vy = (vy + 0.0) * damp
            s2 = vx * vx + vy * vy
            if s2 > cap2:
                f = cap / math.sqrt(s2)
                vx = vx * f
                vy = vy * f
            x = x + vx * dt
            y = y + vy * dt
            if hit:
                scores[i] += hit
            if ix0 < x < ix1 and iy0 < y < iy1:
                # Deep inside the region (margin > any radius, so no wall either): stays here,
                # nobody needs it as a ghost.  The common case, so it skips the rest.
                xs[i] = x
                ys[i] = y
                vxs[i] = vx
                vys[i] = vy
                continue
            r = rs[i]
            if x < r:
                x = r + (r - x)
                vx = -vx
            elif x > W - r:
                x = (W - r) - (x - (W - r))
                vx = -vx
            if y < r:
                y = r + (r - y)
                vy = -vy
            elif y > H - r:
                y = (H - r) - (y - (H - r))
                vy = -vy
            xs[i] = x
            ys[i] = y
            vxs[i] = vx
            vys[i] = vy
            # Layout.region_of(x, y) and Layout.regions_near(x, y, g) written out (the same
            # divisions and clamps, as the numpy kernel does): no calls, and no list when the
            # entity is near its owner's region only.  Calling them instead measured 0.97x on
            # both builds (arena-20k, VM); the sharded == unsharded tests cover the copy.
            ox = trunc(x / rw)
            oy = trunc(y / rh)
            if ox > nx1:
                ox = nx1
            if oy > ny1:
                oy = ny1
            owner = oy * nx + ox
            jx0 = trunc((x - g) / rw) if x > g else 0
            jx1 = trunc((x + g) / rw)
            if jx1 > nx1:
                jx1 = nx1
            jy0 = trunc((y - g) / rh) if y > g else 0
            jy1 = trunc((y + g) / rh)
            if jy1 > ny1:
                jy1 = ny1
            if jx0 != jx1 or jy0 != jy1 or jy0 * nx + jx0 != owner:
                for jy in range(jy0, jy1 + 1):
                    for jx in range(jx0, jx1 + 1):
                        dst = jy * nx + jx
                        if dst != owner:
                            if dst == me:
                                self_ghosts += (x, y, r)
                            else:
                                out[dst][1].extend((x, y, r))
            if owner != me:
                leavers.append(i)
                out[owner][0].append((eid, kinds[i], x, y, vx, vy, r, hs[i], scores[i],
                                      thr[i], trn[i], act[i], seq[i]))
            if vr:
                vrow = (eid, kinds[i], x, y, vx, vy, hs[i], scores[i])
                for dst in near(x, y, vr):
                    if dst != me and dst != owner:
                        out[dst][2].append(vrow)
        if leavers:
            # A few leavers per tick: deleting them in place, highest index first, keeps the
            # order and costs a memmove each (rebuilding every column cost ~30% of a tick).
            cols = self._cols()
            for i in reversed(leavers):
                for col in cols:
                    del col[i]
        self._ghosts = self_ghosts
        self._view_in: list[ViewRow] = []
        return out
