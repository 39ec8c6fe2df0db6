"""Region geometry: which region owns a point, a region's neighbours, and the ghost bands.

Regions are numbered row-major: ``region = iy * regions_x + ix``.  Ownership is decided by one
formula, :meth:`Layout.region_of`, evaluated identically by every shard and kernel; two shards can
therefore never both adopt (or both drop) an entity on a handoff.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.config import WorldConfig


@dataclass(frozen=True)
class Rect:
    x0: float
    y0: float
    x1: float
    y1: float


class Layout:
    """The region grid of a :class:`WorldConfig`."""

    def __init__(self, config: WorldConfig) -> None:
        self.config = config
        self.nx = config.regions_x
        self.ny = config.regions_y
        self.rw = config.region_w
        self.rh = config.region_h

    def region_of(self, x: float, y: float) -> int:
        ix = int(x / self.rw)
        iy = int(y / self.rh)
        if ix >= self.nx:
            ix = self.nx - 1
        if iy >= self.ny:
            iy = self.ny - 1
        return iy * self.nx + ix

    def rect(self, region: int) -> Rect:
        iy, ix = divmod(region, self.nx)
        return Rect(ix * self.rw, iy * self.rh, (ix + 1) * self.rw, (iy + 1) * self.rh)

    def neighbours(self, region: int) -> tuple[int, ...]:
        """The up-to-eight regions around ``region``, ascending."""
        iy, ix = divmod(region, self.nx)
        out = []
        for jy in range(max(0, iy - 1), min(self.ny, iy + 2)):
            for jx in range(max(0, ix - 1), min(self.nx, ix + 2)):
                if (jx, jy) != (ix, iy):
                    out.append(jy * self.nx + jx)
        return tuple(out)

    def regions_near(self, x: float, y: float, margin: float) -> list[int]:
        """Regions whose rectangle, grown by ``margin``, contains (x, y) (conservative)."""
        ix0 = max(0, int((x - margin) / self.rw)) if x > margin else 0
        ix1 = min(self.nx - 1, int((x + margin) / self.rw))
        iy0 = max(0, int((y - margin) / self.rh)) if y > margin else 0
        iy1 = min(self.ny - 1, int((y + margin) / self.rh))
        return [jy * self.nx + jx for jy in range(iy0, iy1 + 1) for jx in range(ix0, ix1 + 1)]

    def assign(self, regions: int, workers: int) -> list[list[int]]:
        """Deterministic region -> worker rule: contiguous row-major blocks, sizes differing by 1.

        Contiguous blocks keep most neighbour pairs inside one worker, so fewer ghosts cross a
        channel.  Worker ``w`` gets regions ``[w*R//W, (w+1)*R//W)``.
        """
        workers = max(1, min(workers, regions))
        return [list(range(w * regions // workers, (w + 1) * regions // workers))
                for w in range(workers)]
