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
