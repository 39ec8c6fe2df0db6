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

Intervals and verdicts
----------------------

A median of five repeats is one draw; two cells whose medians differ by 5 % may not differ at
all.  Every figure that is compared with another, or with a target, therefore carries a **95 %
confidence interval** from the percentile bootstrap (Efron & Tibshirani, *An Introduction to the
Bootstrap*, ch. 13):

* :func:`median_ci`: resample one cell's repeats with replacement (same count), take the median
  of each resample; the interval runs from the 2.5th to the 97.5th percentile (type 7, as above)
  of those medians (widened, in the rare skewed case where it would not, to include the
  observed figure, so a table never prints an estimate outside its own interval).
* :func:`ratio_ci` (a speedup: the ratio of two cells' medians): resample *each cell
  independently* (the repeats of two cells are separate processes, not pairs), take the ratio of
  the two medians each time.  :func:`medians_ci` is the general form behind both: any function
  of several cells' medians (e.g. a speedup divided by another speedup).
* The randomness is injected: pass a ``random.Random`` (``rng``); by default each interval draws
  from a fresh ``random.Random(DEFAULT_SEED)``, so the same results file always yields the same
  intervals, whatever order they are computed in.  ``resamples`` defaults to
  :data:`DEFAULT_RESAMPLES` (2,000: the end points move by well under 1 % between seeds at our
  sample counts).
* **Fewer than 2 samples in any cell raise** :class:`~bench.errors.StatsError`: one repeat says
  nothing about spread, and a zero-width interval would pass for certainty.  Callers show such a
  figure as "measured once, no interval".
* With few repeats the percentile bootstrap of a median can only land on sample values and
  covers the true median somewhat less often than 95 % (with 5 repeats, [min, max] covers it
  94 % of the time); treat the interval as the spread this run showed, and repeat more to narrow
  it.

The **verdict rule** (:func:`verdict`) turns an interval and a target into a word, never a
point estimate and a slack factor: for a target "at least T" the answer is ``met`` when the
whole interval is at or above T (``low >= T``), ``not met`` when the whole interval is below T
(``high < T``), else ``undecided``; "at most T" mirrors it (``met`` when ``high <= T``, ``not
met`` when ``low > T``).  A figure measured once has no interval, and :func:`point_verdict`
says so in its answer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

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


# --- confidence intervals (see "Intervals and verdicts" in the module docstring) ----------------

#: Bootstrap resamples per interval: at 5-15 repeats per cell the interval's end points move by
#: well under 1 % between seeds with 2,000, and an interval costs ~20 ms of pure Python.
DEFAULT_RESAMPLES = 2000
#: The seed of each interval's own ``random.Random`` when none is injected: fixed, so a results
#: file always reports the same intervals (the date the project's bench statistics were settled).
DEFAULT_SEED = 20261205
#: Coverage of every reported interval.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    resamples: int
    #: sample count of each cell that went in (one for a median, two for a ratio, ...)
    n: tuple[int, ...]

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def to_dict(self) -> dict[str, float | int | list[int]]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high,
                "confidence": self.confidence, "resamples": self.resamples, "n": list(self.n)}

    def format(self, spec: str = ".2f", unit: str = "") -> str:
        """``1.66× [1.58, 1.71]`` for ``format(".2f", "×")``."""
        return (f"{format(self.estimate, spec)}{unit} "
                f"[{format(self.low, spec)}, {format(self.high, spec)}]")


def _median_sorted(xs: list[float]) -> float:
    n = len(xs)
    mid = n // 2
    return xs[mid] if n % 2 else (xs[mid - 1] + xs[mid]) / 2.0


def medians_ci(groups: Sequence[Iterable[float]], combine: Callable[[Sequence[float]], float],
               *, confidence: float = CONFIDENCE, resamples: int = DEFAULT_RESAMPLES,
               rng: random.Random | None = None) -> Interval:
    """Percentile-bootstrap interval of ``combine(medians of groups)``.

    Each group (one cell's repeats) is resampled with replacement independently of the others,
    ``resamples`` times; the interval is the central ``confidence`` part of the resulting
    distribution of ``combine(...)``, the estimate ``combine`` of the observed medians.

    Args:
        groups: the samples of each cell; each needs at least 2 finite values.
        combine: maps the list of medians (one per group, in order) to the figure of interest.
        confidence: coverage, strictly between 0 and 1 (default 0.95).
        resamples: bootstrap resamples, at least 100 (default :data:`DEFAULT_RESAMPLES`).
        rng: the randomness; default a fresh ``random.Random(DEFAULT_SEED)`` (reproducible).

    Raises:
        StatsError: no group, a group with fewer than 2 samples or a non-finite one, a bad
            ``confidence`` or ``resamples``, or ``combine`` undefined on the data (e.g. a zero
            baseline).
    """
    if not 0.0 < confidence < 1.0:  # also refuses NaN
        raise StatsError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 100:
        raise StatsError(f"need at least 100 resamples for an interval, got {resamples}")
    cells = [sorted(_clean(g)) for g in groups]
    if not cells:
        raise StatsError("no samples")
    small = [len(c) for c in cells if len(c) < 2]
    if small:
        raise StatsError(f"a confidence interval needs at least 2 samples per cell, got "
                         f"{[len(c) for c in cells]}: measured once, no interval")
    rng = random.Random(DEFAULT_SEED) if rng is None else rng

    def figure(medians: Sequence[float]) -> float:
        try:
            value = float(combine(medians))
        except ZeroDivisionError as exc:
            raise StatsError(f"figure undefined for medians {list(medians)}") from exc
        if not math.isfinite(value):
            raise StatsError(f"figure undefined for medians {list(medians)}: {value}")
        return value

    estimate = figure([_median_sorted(c) for c in cells])
    draws = []
    for _ in range(resamples):
        draws.append(figure([_median_sorted(sorted(rng.choices(c, k=len(c)))) for c in cells]))
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = quantiles.percentile(draws, tail), quantiles.percentile(draws, 100.0 - tail)
    return Interval(estimate=estimate, low=min(lo, estimate), high=max(hi, estimate),
                    confidence=confidence, resamples=resamples, n=tuple(len(c) for c in cells))


def median_ci(samples: Iterable[float], *, confidence: float = CONFIDENCE,
              resamples: int = DEFAULT_RESAMPLES, rng: random.Random | None = None) -> Interval:
    """Bootstrap interval of the median of one cell's repeats (see :func:`medians_ci`).

    Raises:
        StatsError: fewer than 2 samples, a non-finite sample, bad ``confidence``/``resamples``.
    """
    return medians_ci([samples], lambda m: m[0], confidence=confidence, resamples=resamples,
                      rng=rng)


def ratio_ci(numerator: Iterable[float], denominator: Iterable[float], *,
             confidence: float = CONFIDENCE, resamples: int = DEFAULT_RESAMPLES,
             rng: random.Random | None = None) -> Interval:
    """Bootstrap interval of ``median(numerator) / median(denominator)``, each cell resampled
    independently: the interval of a speedup between two cells.

    Raises:
        StatsError: either cell with fewer than 2 samples or a non-finite sample, a
            non-positive denominator median in the data or a resample, bad
            ``confidence``/``resamples``.
    """
    def ratio(m: Sequence[float]) -> float:
        if m[1] <= 0:
            raise StatsError(f"cannot divide by a median of {m[1]}")
        return m[0] / m[1]

    return medians_ci([numerator, denominator], ratio, confidence=confidence,
                      resamples=resamples, rng=rng)


# --- the verdict rule ---------------------------------------------------------------------

MET, NOT_MET, UNDECIDED = "met", "not met", "undecided"
#: Which side of the target a figure must fall on.
Want = Literal["at least", "at most"]


def verdict(ci: Interval | tuple[float, float], target: float, want: Want) -> str:
    """``met`` / ``not met`` / ``undecided`` for an interval against a target (module docstring).

    "at least T": met when ``low >= T``, not met when ``high < T``; "at most T": met when
    ``high <= T``, not met when ``low > T``; otherwise (the interval straddles T) undecided.

    Raises:
        StatsError: ``want`` is neither "at least" nor "at most", a non-finite bound or
            target, or ``low > high``.
    """
    low, high = (ci.low, ci.high) if isinstance(ci, Interval) else ci
    if not all(math.isfinite(v) for v in (low, high, target)):
        raise StatsError(f"verdict of non-finite figures: [{low}, {high}] vs {target}")
    if low > high:
        raise StatsError(f"not an interval: [{low}, {high}]")
    if want == "at least":
        return MET if low >= target else NOT_MET if high < target else UNDECIDED
    if want == "at most":
        return MET if high <= target else NOT_MET if low > target else UNDECIDED
    raise StatsError(f"want must be 'at least' or 'at most', got {want!r}")


#: How a verdict on a single measurement says that it has no interval.
MEASURED_ONCE = "measured once, no interval"


def point_verdict(value: float, target: float, want: Want) -> str:
    """The verdict of one measurement (a degenerate interval), saying it was measured once:
    ``"met (measured once, no interval)"`` and so on; never ``undecided``."""
    return f"{verdict((value, value), target, want)} ({MEASURED_ONCE})"
