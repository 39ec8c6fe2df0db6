"""Metrics: percentiles over bounded windows, JSON-ready runtime stats."""

from __future__ import annotations

import json
import math
import random

import pytest

from server.quantiles import percentile
from server.runtime import Runtime
from server.runtime.metrics import Rate, Window
from tests.server.runtime.runtime_helpers import small_world


def test_window_summary_uses_the_shared_percentile() -> None:
    w = Window(100)
    values = [float(v) for v in range(1, 101)]
    random.Random(4).shuffle(values)
    for v in values:
        w.add(v)
    s = w.summary()
    assert s == {"p50": percentile(values, 50), "p95": percentile(values, 95),
                 "p99": percentile(values, 99), "max": 100.0, "mean": 50.5, "n": 100}
    assert s["p99"] == pytest.approx(99.01)  # interpolated, as /stats and the benchmarks do
    empty = Window().summary()
    assert empty["n"] == 0 and all(math.isnan(v) for k, v in empty.items() if k != "n")


def test_window_is_bounded_and_forgets_old_samples() -> None:
    w = Window(10)
    for v in range(1000):
        w.add(float(v))
    assert len(w.samples) == 10
    assert w.count == 1000
    s = w.summary()
    assert s["max"] == 999.0
    assert s["p50"] >= 990.0
    assert s["n"] == 10


def test_rate_counts_events_per_second() -> None:
    r = Rate(100)
    for i in range(31):
        r.add(i / 30)
    assert r.per_second() == pytest.approx(30.0)
    assert math.isnan(Rate().per_second())


def test_runtime_metrics_are_json_ready_and_consistent() -> None:
    cfg, rows = small_world()
    with Runtime(cfg, rows, backend="threads", workers=2, metrics_window=3) as rt:
        for _ in range(5):
            rt.step()
        m = rt.metrics()
        d = json.loads(json.dumps(m.to_dict()))
        assert d["tick"] == 5 and d["ticks"] == 5
        assert d["entities"] == len(rows)
        assert [s["region"] for s in d["shards"]] == list(range(cfg.regions))
        assert all(s["mspt"]["n"] == 3 for s in d["shards"])  # the window, not all ticks
        for s in d["shards"]:
            assert s["mspt"]["p50"] <= s["mspt"]["p95"] <= s["mspt"]["p99"] <= s["mspt"]["max"]
        for w in d["workers"]:
            # a worker's tick contains its shards' advances
            own = [s for s in d["shards"] if s["worker"] == w["worker"]]
            assert w["mspt"]["max"] >= max(s["mspt"]["max"] for s in own)
            assert w["channel"]["messages_sent"] > 0
            assert w["channel"]["messages_received"] > 0
            # threads hand message objects over: nothing is encoded, no bytes counted
            assert w["channel"]["bytes_received"] == 0
        assert d["ticks_per_s"] > 0
        sched = {"deadline_misses": 0, "dilation": 1.0}
        assert rt.metrics(scheduler=sched).to_dict()["scheduler"] == sched


def test_metrics_snapshot_does_not_change_and_is_safe_from_another_thread() -> None:
    import threading
    cfg, rows = small_world()
    with Runtime(cfg, rows, backend="threads", workers=2) as rt:
        rt.step()
        snap = rt.metrics()
        before = snap.to_dict()
        errors: list[BaseException] = []
        stop = threading.Event()

        def reader() -> None:
            try:
                while not stop.is_set():
                    json.dumps(rt.metrics().to_dict())
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=reader)
        t.start()
        for _ in range(5):
            rt.step()
        stop.set()
        t.join()
        assert errors == []
        assert snap.to_dict() == before
        assert rt.metrics().to_dict()["ticks"] == 6


@pytest.mark.parametrize("backend", ["inline", "threads"])
def test_coordination_cost_is_wall_time_less_the_slowest_worker(backend: str) -> None:
    cfg, rows = small_world()
    with Runtime(cfg, rows, backend=backend, workers=None if backend == "inline" else 2) as rt:
        walls = [rt.step().mspt for _ in range(12)]
        coord = rt.metrics().to_dict()["coordination_ms"]
    if backend == "inline":
        assert coord == {} or coord.get("n", 0) == 0  # one thread: no lockstep to pay for
    else:
        assert coord["n"] == 12
        assert 0 <= coord["max"] <= max(walls)  # a part of the step, never more
