"""Percentiles: the one definition behind every p50/p95/p99 paratick reports.

``/stats`` and ``/metrics``, the runtime's MSPT windows, the bots' input->ack latency and every
benchmark figure use :func:`percentile`, so a p99 means the same thing wherever it is read.

Method: linear interpolation between closest ranks (Hyndman & Fan type 7; the default of
``numpy.percentile`` (``method="linear"``) and ``statistics.quantiles(method="inclusive")``).
For sorted samples ``x[0..n-1]`` the p-th percentile sits at fractional index
``h = (n - 1) * p / 100``: ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``.
It is defined for any ``n >= 1``, equals the median at p = 50 and the extremes at p = 0 and
p = 100, and moves smoothly as samples arrive; over a few samples a p99 is an interpolation near
the maximum, not "the maximum" by decree.  Nearest-rank percentiles (always a real sample) were
used by the runtime before; they jump by whole samples and disagreed with the other three.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def _check(p: float) -> None:
    if not 0.0 <= p <= 100.0:  # also refuses NaN
        raise ValueError(f"percentile must be in [0, 100], got {p}")


def _at(xs: Sequence[float], p: float) -> float:
    h = (len(xs) - 1) * p / 100.0
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


def percentile(values: Iterable[float], p: float) -> float:
    """The ``p``-th percentile (0..100) of ``values`` (finite numbers); NaN when there are none.

    Raises:
        ValueError: ``p`` outside [0, 100].
    """
    _check(p)
    xs = sorted(values)
    return _at(xs, p) if xs else math.nan


def percentiles(values: Iterable[float], ps: Iterable[float]) -> dict[str, float]:
    """Several percentiles of one sample set (sorted once), keyed ``"p50"``, ``"p99.9"`` ...

    Raises:
        ValueError: a ``p`` outside [0, 100].
    """
    xs = sorted(values)
    out = {}
    for p in ps:
        _check(p)
        out[f"p{p:g}"] = _at(xs, p) if xs else math.nan
    return out
