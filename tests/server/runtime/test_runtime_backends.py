"""Worker kinds behind one entry point, and the crews that host them."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest

from server.host import gil_enabled, usable_cpus
from server.runtime import Runtime, backends
from server.runtime import messages as m
from server.runtime import worker as worker_mod
from server.runtime.backends.threads import ThreadCrew
from server.runtime.channels import Endpoint, ThreadHub
from sim.world import World
from tests.server.runtime.runtime_helpers import inputs_for, reference_digest, small_world


class EchoWorker:
    """A kind of worker for the test: answers Ping with Ping, leaves on Stop."""

    def __init__(self, spec: Mapping[str, Any], ep: Endpoint, coord: int) -> None:
        self.ep, self.coord = ep, coord
        self.info = {"kind": "echo", "w": spec["w"]}

    def serve(self) -> None:
        while True:
            data = self.ep.recv(5.0)
            if data is None:
                continue
            msg = m.decode(data)
            if isinstance(msg, m.Stop):
                return
            assert isinstance(msg, m.Ping)
            self.ep.send(self.coord, m.encode(m.Ping(("echo", msg.payload))))


def test_run_worker_builds_the_kind_the_spec_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(worker_mod.KINDS, "echo", f"{__name__}:EchoWorker")
    hub = ThreadHub(2, 8)
    coord, mine = hub.endpoint(1), hub.endpoint(0)
    t = threading.Thread(target=worker_mod.run_worker, args=({"w": 0, "kind": "echo"}, mine, 1))
    t.start()
    try:
        hello = m.decode(coord.recv(5.0))  # type: ignore[arg-type]
        assert hello == m.Hello(0, {"kind": "echo", "w": 0})
        coord.send(0, m.encode(m.Ping(7)))
        assert m.decode(coord.recv(5.0)) == m.Ping(("echo", 7))  # type: ignore[arg-type]
        coord.send(0, m.encode(m.Stop()))
        t.join(5.0)
        assert not t.is_alive()
    finally:
        hub.close()


def test_an_unknown_kind_is_reported_as_a_failure() -> None:
    hub = ThreadHub(2, 8)
    coord, mine = hub.endpoint(1), hub.endpoint(0)
    worker_mod.run_worker({"w": 0, "kind": "nope"}, mine, 1)  # returns: it never raises
    fail = m.decode(coord.recv(5.0))  # type: ignore[arg-type]
    assert isinstance(fail, m.Fail) and fail.error == "MessageError"
    assert "unknown worker kind 'nope'" in fail.traceback
    hub.close()


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_a_crew_starts_shard_workers_and_joins_them(backend: str) -> None:
    cfg, _ = small_world()
    spec = {"config": cfg.to_dict(), "owner": [0] * (cfg.regions_x * cfg.regions_y),
            "kernel": "python", "tick": 0, "hook": None, "hook_args": {}, "fault_at": None,
            "checkpoint": False, "checkpoint_every": 32, "recv_timeout": 10.0, "w": 0,
            "rows": [(r, []) for r in range(cfg.regions_x * cfg.regions_y)]}
    crew = backends.start(backend, [spec])
    try:
        hello = m.decode(crew.ep.recv(60.0))  # type: ignore[arg-type]
        assert isinstance(hello, m.Hello) and hello.worker == 0 and crew.dead() == []
        crew.ep.send(0, m.encode(m.Stop()))
        crew.join(time.monotonic() + 10.0)
        assert crew.dead() == [0]
    finally:
        crew.close()
    with pytest.raises(ValueError):
        backends.start("inline", [spec])


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_workers_with_a_core_each_are_pinned_and_not_otherwise(backend: str) -> None:
    cpus = usable_cpus() or []
    if len(cpus) < 2:
        pytest.skip("needs two usable cores")
    cfg, rows = small_world()
    # one GIL shared by worker threads: no spinning, so no pinning either
    expect = [None, None] if backend == "threads" and gil_enabled() else cpus[:2]
    for pin, want in ((True, expect), (False, [None, None])):
        with Runtime(cfg, rows, backend=backend, workers=2, pin=pin) as rt:
            for t in range(3):
                rt.step(inputs_for(t))
            assert rt.worker_cpus() == want
            assert rt.metrics().to_dict()["workers"][0]["cpu"] == want[0]
            assert rt.digest() == reference_digest(cfg, rows, 3)


def test_threads_backend_ticks_worker_0_on_the_calling_thread() -> None:
    cfg, rows = small_world()
    with Runtime(cfg, rows, backend="threads", workers=3,
                 hook="tests.server.runtime.runtime_helpers:ThreadName") as rt:
        for t in range(3):
            res = rt.step(inputs_for(t), jobs=[1])
        names = [name for (name,) in res.hook_results_by_worker]
        assert names[0] == threading.current_thread().name
        assert names[1:] == ["paratick-worker-1", "paratick-worker-2"]
        assert rt.digest() == reference_digest(cfg, rows, 3)
        assert rt.worker_pids() == [os.getpid()] * 3


def _threads_that_spin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make a threads run spin and pin as on a free-threaded build with a core per worker."""
    from server.runtime import runtime as rt_mod

    monkeypatch.setattr(rt_mod, "gil_enabled", lambda: False)
    monkeypatch.setattr(rt_mod, "usable_cores", lambda: 2)


def test_the_thread_leading_worker_0_keeps_its_core_while_it_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cpus = usable_cpus() or []
    if len(cpus) < 2:
        pytest.skip("needs two usable cores")
    _threads_that_spin(monkeypatch)
    before = os.sched_getaffinity(0)
    cfg, rows = small_world()
    with Runtime(cfg, rows, backend="threads", workers=2) as rt:
        rt.step()
        assert os.sched_getaffinity(0) == {cpus[0]}
        assert rt.worker_cpus() == cpus[:2]
        other = threading.Thread(target=rt.step)  # another thread takes over: ours is let go
        other.start()
        other.join(30)
        assert os.sched_getaffinity(0) == before
        rt.step()
        assert os.sched_getaffinity(0) == {cpus[0]}
    assert os.sched_getaffinity(0) == before  # closing gives it back
    with Runtime(cfg, rows, backend="threads", workers=2, pin=False) as rt:
        rt.step()
        assert os.sched_getaffinity(0) == before and rt.worker_cpus() == [None, None]


def test_worker_threads_poll_for_the_next_tick_only_while_ticks_come_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Free-threaded: while the caller steps flat out; under a GIL never (a poller holds the
    GIL its neighbour needs)."""
    from server.runtime import runtime as rt_mod

    monkeypatch.setattr(rt_mod, "usable_cores", lambda: 2)
    polls = not gil_enabled()
    cfg, rows = small_world()
    with Runtime(cfg, rows, backend="threads", workers=2, pin=False) as rt:
        crew = rt._crew
        assert isinstance(crew, ThreadCrew)

        def polls_soon() -> bool:
            """Whether worker 1 polls its inbox within 50 ms of the last step's return."""
            end = time.monotonic() + 0.05
            while time.monotonic() < end:
                if crew.hub.spinning[1]:
                    return True
                time.sleep(0)
            return False

        # two steps at once: the second TICK came right after the first report
        assert any(rt.step() and rt.step() and polls_soon() for _ in range(10)) is polls
        for _ in range(3):  # paced: TICKs 30 ms after the reports before them
            time.sleep(0.03)
            rt.step()
        assert not polls_soon()
        world = World(cfg, rows)
        for _ in range(rt.tick):
            world.step()
        assert rt.digest() == world.digest()


@pytest.mark.parametrize("kernel", ["python", "numpy"])
def test_worker_threads_keep_no_object_per_initial_row(kernel: str) -> None:
    """Once the shards are built, nothing holds the rows the workers were started with (the
    coordinator's spec, the worker's own decoded copy): the collector would walk a container
    per entity in every full collection for the whole run, tens of milliseconds at 200,000."""
    import gc

    from sim.config import WorldConfig
    from sim.world import spawn

    config = WorldConfig(width=1024.0, height=1024.0, regions_x=2, regions_y=2, seed=5)
    with Runtime(config, spawn(config, 10), backend="threads", workers=2, kernel=kernel) as rt:
        rt.step()  # everything a run imports is imported (numpy alone is thousands of objects)
    n = 8000
    rows = spawn(config, n)
    gc.collect()
    before = len(gc.get_objects())
    with Runtime(config, rows, backend="threads", workers=2, kernel=kernel) as rt:
        del rows
        for _ in range(3):
            rt.step()
        gc.collect()
        grown = len(gc.get_objects()) - before
    assert grown < n // 4, f"{grown} more objects tracked with {n} entities in the workers"
