"""bench.ceiling: the parallel loop runs on every backend and rejects nonsense."""

from __future__ import annotations

import pytest

from bench import ceiling


def test_spin_is_deterministic_and_pure() -> None:
    assert ceiling.spin(1000) == ceiling.spin(1000)
    assert ceiling.spin(1000) != ceiling.spin(1001)


@pytest.mark.parametrize("backend", ["inline", "threads", "interpreters", "processes"])
def test_every_backend_times_the_parallel_section(backend: str) -> None:
    workers = 1 if backend == "inline" else 2
    ticks = iter([10.0, 10.5])  # injected clock: start and end of the timed section
    assert ceiling.run(backend, workers, 2000, clock=lambda: next(ticks)) == pytest.approx(0.5)


@pytest.mark.parametrize(("backend", "workers", "iters"),
                         [("inline", 2, 10), ("threads", 0, 10), ("threads", 1, 0),
                          ("fibers", 1, 10)])
def test_bad_arguments_raise(backend: str, workers: int, iters: int) -> None:
    with pytest.raises(ValueError):
        ceiling.run(backend, workers, iters)


@pytest.mark.parametrize(("backend", "workers"), [("inline", 1), ("threads", 2)])
def test_every_worker_warms_up_before_the_clock_starts(
        backend: str, workers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, int]] = []
    monkeypatch.setattr(ceiling, "spin", lambda n: events.append(("spin", n)) or 0)

    def clock() -> float:
        events.append(("clock", 0))
        return float(len(events))

    ceiling.run(backend, workers, 1000, clock=clock)
    first_clock = events.index(("clock", 0))
    assert events[:first_clock] == [("spin", 100)] * workers  # a tenth, in each worker
    assert events[first_clock + 1:-1] == [("spin", 1000)] * workers
    assert events[-1] == ("clock", 0)


def test_the_report_flags_a_reference_loop_beaten_by_the_loop_it_was_meant_to_bound() -> None:
    """Synthetic data where the tick loop scales 1.8x and the reference loop only 1.2x (tight
    repeats): the reference is no upper bound there, and the table and headlines say so."""
    from bench.summary import aggregate, headlines, scaling_table
    from tests.bench.synthetic import BUILDS, cell, section, standard_cells

    cells = standard_cells()
    cells[2] = cell("arena", "ft", "threads", 1, [9.0, 9.1, 8.9, 9.0], False)
    cells[3] = cell("arena", "ft", "threads", 2, [16.2, 16.3, 16.1, 16.2], False)
    cells[4] = cell("reference", "ft", "threads", 1, [4.0, 4.02, 3.98, 4.0], False)
    cells[5] = cell("reference", "ft", "threads", 2, [4.8, 4.82, 4.78, 4.8], False)
    sums = aggregate(cells, BUILDS)
    assert sums[3]["vs_reference"] == pytest.approx(1.5, rel=1e-2)
    assert sums[3]["vs_reference_ci"]["low"] > 1.0 and sums[3]["beats_reference"] is True
    sec = section(cells)
    assert "beats the reference loop" in scaling_table(sec)
    assert any("beat the reference loop" in line for line in headlines(sec))
    # an old file's "ceiling" rows are the same reference loop
    for c in cells[4:]:
        c["workload"] = "ceiling"
    assert aggregate(cells, BUILDS)[3]["beats_reference"] is True
