"""Statistics for benchmark figures: pure functions, no I/O, no clocks.

Every figure paratick reports comes through here so that one definition holds everywhere:

* **Percentiles** are :func:`server.quantiles.percentile` (linear interpolation between closest
  ranks, Hyndman & Fan type 7, numpy's default; documented there), the definition the server's
  ``/stats``, the runtime's metrics and the bots use too.  Here they refuse to summarise no
  samples or a non-finite one (:class:`~bench.errors.StatsError`) instead of answering NaN.
* **Speedup vs 1 worker**: ``rate(W) / rate(1)`` for the same build, backend and kernel.
* **Speedup vs best single core**: ``rate / max(rate of every valid 1-worker cell of any build and
  backend)``; this is the honest number because it charges the free-threaded build's single-thread
  cost to it.
* **Parallel efficiency**: ``speedup vs 1 worker / workers`` (1.0 is perfect scaling).
* **Interleaving**: repeats run round by round (A B C, A B C, ...) so slow drift on a shared
  machine hits every cell alike instead of penalising whichever cell ran last.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from bench.errors import StatsError
from server import quantiles

T = TypeVar("T")


def _clean(samples: Iterable[float]) -> list[float]:
    values = [float(v) for v in samples]
    if not values:
        raise StatsError("no samples")
    if any(not math.isfinite(v) for v in values):
        raise StatsError(f"non-finite sample in {values!r}")
    return values


def percentile(samples: Iterable[float], p: float) -> float:
    """The ``p``-th percentile (0..100) of checked samples (:func:`server.quantiles.percentile`).

    Raises:
        StatsError: no samples, a non-finite sample, or ``p`` outside [0, 100].
    """
    if not 0.0 <= p <= 100.0:  # also refuses NaN
        raise StatsError(f"percentile must be in [0, 100], got {p}")
    return quantiles.percentile(_clean(samples), p)


def percentiles(samples: Iterable[float], ps: Sequence[float]) -> dict[str, float]:
    """Several percentiles at once, keyed ``"p50"``, ``"p99"``, ``"p99.9"`` ..."""
    xs = _clean(samples)
    return {f"p{p:g}": percentile(xs, p) for p in ps}


def median(samples: Iterable[float]) -> float:
    """The median (the 50th percentile; the mean of the middle two for an even count)."""
    return percentile(samples, 50.0)


@dataclass(frozen=True)
class Summary:
    """Median, extremes and count of one cell's repeats."""

    median: float
    min: float
    max: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "min": self.min, "max": self.max, "n": self.n}


def summarise(samples: Iterable[float]) -> Summary:
    """Median with min and max: what a table shows for each cell."""
    xs = _clean(samples)
    return Summary(median=median(xs), min=min(xs), max=max(xs), n=len(xs))


def speedup(rate: float, baseline: float) -> float:
    """How many times ``rate`` beats ``baseline`` (both throughputs, higher is better).

    Raises:
        StatsError: a non-positive or non-finite baseline or rate.
    """
    if not (math.isfinite(rate) and math.isfinite(baseline)) or baseline <= 0 or rate < 0:
        raise StatsError(f"cannot compare rate {rate} with baseline {baseline}")
    return rate / baseline


def efficiency(speedup_vs_one: float, workers: int) -> float:
    """Parallel efficiency: speedup per worker; 1.0 means every added core did full work."""
    if workers < 1:
        raise StatsError(f"workers must be >= 1, got {workers}")
    return speedup_vs_one / workers


def best_single_core(rates: Iterable[tuple[int, float]]) -> float | None:
    """Largest rate among ``(workers, rate)`` pairs with ``workers == 1``; None if none."""
    ones = [r for w, r in rates if w == 1]
    return max(ones) if ones else None


def interleave[T](cells: Sequence[T], repeats: int) -> list[tuple[int, T]]:
    """The run order for ``repeats`` rounds over ``cells``: ``(round, cell)`` pairs, round-major.

    ``interleave([A, B], 3)`` is ``A B A B A B``; every cell has had ``r`` runs before any cell
    starts its ``r + 2``-th, so a machine that slows down mid-run hurts all cells about equally.
    """
    if repeats < 1:
        raise StatsError(f"repeats must be >= 1, got {repeats}")
    return [(r, c) for r in range(repeats) for c in cells]
