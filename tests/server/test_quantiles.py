"""server.quantiles: the one percentile definition (type 7, linear between closest ranks)."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.quantiles import percentile, percentiles

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


def test_linear_interpolation_between_ranks() -> None:
    xs = [50.0, 10.0, 40.0, 20.0, 30.0]  # order does not matter
    assert percentile(xs, 0) == 10.0
    assert percentile(xs, 100) == 50.0
    assert percentile(xs, 25) == 20.0
    assert percentile(xs, 50) == 30.0
    # h = 4 * 0.9 = 3.6 -> 40 + 0.6 * 10
    assert percentile(xs, 90) == pytest.approx(46.0)
    # p99 of 1..100: h = 99 * 0.99 = 98.01 -> 99 + 0.01 (nearest rank would say 99)
    values = list(range(1, 101))
    random.Random(4).shuffle(values)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0], 50) == 1.5  # the median of an even count


def test_no_samples_is_nan_and_p_is_checked() -> None:
    assert math.isnan(percentile([], 50))
    assert all(math.isnan(v) for v in percentiles([], (50, 99)).values())
    for bad in (-1, 101, float("nan")):
        with pytest.raises(ValueError):
            percentile([1.0], bad)
        with pytest.raises(ValueError):
            percentiles([1.0], (50, bad))


def test_percentiles_keys_and_values() -> None:
    xs = [3.0, 1.0, 2.0, 4.0]
    got = percentiles(xs, (50, 99, 99.9))
    assert list(got) == ["p50", "p99", "p99.9"]
    assert got == {f"p{p:g}": percentile(xs, p) for p in (50, 99, 99.9)}


@given(st.lists(finite, min_size=2, max_size=60))
def test_same_as_numpy_linear_and_statistics_inclusive(xs: list[float]) -> None:
    q = statistics.quantiles(xs, n=100, method="inclusive")
    for k in (1, 25, 50, 75, 99):
        assert percentile(xs, k) == pytest.approx(q[k - 1], rel=1e-9, abs=1e-6)
    np = pytest.importorskip("numpy")
    for k in (0, 37.5, 100):
        assert percentile(xs, k) == pytest.approx(float(np.percentile(xs, k)), rel=1e-9,
                                                  abs=1e-6)


@given(st.lists(finite, min_size=1, max_size=40))
def test_monotonic_in_p_and_within_the_samples(xs: list[float]) -> None:
    values = [percentile(xs, p) for p in (0, 10, 50, 90, 99, 100)]
    assert all(a <= b + 1e-6 for a, b in itertools.pairwise(values))
    assert values[0] == min(xs) and values[-1] == max(xs)
