"""bench.stats: the definitions every reported figure relies on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import stats
from bench.errors import StatsError
from server import quantiles

finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)


def test_median_odd_and_even_counts() -> None:
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    assert stats.median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert stats.median([7.0]) == 7.0


@given(st.lists(finite, min_size=1, max_size=60), st.floats(min_value=0, max_value=100))
def test_percentile_is_the_servers_definition(xs: list[float], p: float) -> None:
    # One definition (server.quantiles, type 7); bench only refuses bad samples more loudly.
    assert stats.percentile(xs, p) == quantiles.percentile(xs, p)
    assert stats.percentiles(xs, (50, 99)) == quantiles.percentiles(xs, (50, 99))


def test_percentiles_keys() -> None:
    assert set(stats.percentiles([1.0, 2.0], (50, 99, 99.9))) == {"p50", "p99", "p99.9"}


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf")]])
def test_bad_samples_raise(bad: list[float]) -> None:
    with pytest.raises(StatsError):
        stats.median(bad)


@pytest.mark.parametrize("p", [-1, 101, float("nan")])
def test_bad_percentile_raises(p: float) -> None:
    with pytest.raises(StatsError):
        stats.percentile([1.0], p)


def test_summarise_reports_median_min_max_and_count() -> None:
    s = stats.summarise([5.0, 1.0, 9.0, 3.0])
    assert (s.median, s.min, s.max, s.n) == (4.0, 1.0, 9.0, 4)
    assert s.to_dict() == {"median": 4.0, "min": 1.0, "max": 9.0, "n": 4}


def test_speedup_and_efficiency() -> None:
    assert stats.speedup(18.0, 10.0) == pytest.approx(1.8)
    assert stats.efficiency(stats.speedup(18.0, 10.0), 2) == pytest.approx(0.9)
    assert stats.efficiency(1.0, 1) == 1.0


@pytest.mark.parametrize(("rate", "base"), [(1.0, 0.0), (1.0, -2.0), (float("nan"), 1.0),
                                            (-1.0, 1.0)])
def test_speedup_rejects_meaningless_inputs(rate: float, base: float) -> None:
    with pytest.raises(StatsError):
        stats.speedup(rate, base)


def test_efficiency_rejects_zero_workers() -> None:
    with pytest.raises(StatsError):
        stats.efficiency(1.0, 0)


def test_best_single_core_picks_fastest_one_worker_rate_only() -> None:
    assert stats.best_single_core([(1, 9.0), (2, 30.0), (1, 11.0)]) == 11.0
    assert stats.best_single_core([(2, 30.0)]) is None


def test_interleave_is_round_major() -> None:
    order = stats.interleave(["A", "B"], 3)
    assert [c for _, c in order] == ["A", "B", "A", "B", "A", "B"]
    assert [r for r, _ in order] == [0, 0, 1, 1, 2, 2]


@given(st.integers(min_value=1, max_value=6), st.integers(min_value=1, max_value=5))
def test_interleave_never_lets_a_cell_run_ahead(n_cells: int, repeats: int) -> None:
    order = stats.interleave(list(range(n_cells)), repeats)
    assert len(order) == n_cells * repeats
    seen = dict.fromkeys(range(n_cells), 0)
    for _, c in order:
        seen[c] += 1
        assert max(seen.values()) - min(seen.values()) <= 1


def test_interleave_rejects_zero_repeats() -> None:
    with pytest.raises(StatsError):
        stats.interleave(["A"], 0)
