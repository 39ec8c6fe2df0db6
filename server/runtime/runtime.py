"""The coordinator: starts W workers on a backend, drives lockstep ticks, gathers results.

A :class:`Runtime` splits the world's regions over workers with
:meth:`sim.geometry.Layout.assign` (contiguous row-major blocks), starts one worker per block on
the chosen backend and, for each :meth:`Runtime.step`, broadcasts ``TICK t + inputs + jobs`` and
waits for every worker's ``DONE t`` (or a failure, or the watchdog).  Workers exchange borders
among themselves; the coordinator only sees control messages and reports.

With the threads backend and two workers or more the coordinator *leads* worker 0: the thread
calling :meth:`step` ticks worker 0's shards itself between sending the TICK and collecting the
other workers' DONE, as the inline backend ticks its one worker.  A coordinator of its own is
one thread more than there are workers: with a worker on every core it slept through each tick
and every tick paid two wake-ups (the TICK to each worker, the last DONE back), tens of
microseconds each on a VM; leading, it has worker 0's core and polls for the others' reports,
and they poll for the next TICK while ticks follow each other at once (coordination p50 on
arena-20k, 2 free-threaded workers on a 2-core VM: 166-173 -> 65-73 us with the numpy kernel,
237-264 -> 105-121 us with the python kernel).  Worker 0's borders and the other workers'
reports share one inbox (participant 0): :class:`_LeadEndpoint` hands worker 0 its borders and
sets the rest aside for the coordinator.  The watchdog names the other workers; a hang in worker
0's own shards or hook is the caller's, as with inline.  Where workers are pinned, the calling
thread is kept on worker 0's core while it steps (its mask is given back on close, or when
another thread steps).  Only threads: on the other backends the coordinator's thread shares the
main interpreter's GIL with the caller's other threads (a server's event loop), which worker
0's tick would then hold; worker threads under a GIL hold it anyway.

Lifecycle (:class:`State`)::

    RUNNING --step()--> RUNNING        (a worker failure moves to FAILED and raises)
    RUNNING --close()--> CLOSED        FAILED --close()--> CLOSED      CLOSED --close()--> CLOSED

The constructor starts the workers (there is no separate NEW state visible to callers); any other
transition raises :class:`~server.runtime.errors.InvalidState`.
"""

from __future__ import annotations

import contextlib
import enum
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from server.clock import TimeSource
from server.host import gil_enabled, hold_core, usable_cores, usable_cpus
from server.runtime import backends
from server.runtime import messages as m
from server.runtime.channels import (
    ChannelStats,
    Endpoint,
)
from server.runtime.errors import (
    ChannelClosed,
    InvalidState,
    MessageError,
    RuntimeConfigError,
    RuntimeFault,
    ShardFault,
    WorkerCrashed,
    WorkerError,
    WorkerTimeout,
)
from server.runtime.metrics import (
    DEFAULT_WINDOW,
    Rate,
    RuntimeMetrics,
    ShardMetrics,
    Window,
    WorkerMetrics,
)
from server.runtime.worker import CHECKPOINT_EVERY, WorkerCore
from sim.config import WorldConfig
from sim.entities import Row
from sim.errors import InvalidInput, KernelUnavailable
from sim.geometry import Layout
from sim.kernels import KERNELS
from sim.world import digest as rows_digest
from sim.world import normalise_inputs, partition
from sim.world import save as save_world

BACKENDS = ("inline", "threads", "interpreters", "processes")
#: Seconds the watchdog lets a worker take for one tick before naming it (WorkerTimeout).  Ticks
#: take milliseconds; 30 s only fires on a hang, yet leaves room for a loaded CI machine.
TICK_TIMEOUT = 30.0
#: Seconds a worker polls for its neighbours' borders before sleeping, where that pays
#: (:meth:`Runtime._spin`): longer than the usual skew between workers finishing their advance
#: on arena-20k, short enough that a late neighbour costs little CPU.
SPIN_S = 0.0005
#: Seconds the coordinator polls for a tick's reports, and a worker for its next TICK, while
#: ticks follow each other at once (flat out: the caller steps again within SPIN_S of the last
#: step's return; a worker's next TICK came within this of its last report), where each has a
#: core of its own: longer than the usual skew between workers' ticks (a few milliseconds with
#: the python kernel on arena-20k), so neither sleeps through the other's finish.  A paced run
#: sleeps between ticks as before.
FLAT_OUT_SPIN_S = 0.005
#: Seconds to wait for every worker's HELLO (spawned processes import the simulation first).
START_TIMEOUT = 120.0
#: Seconds close() waits for a worker to leave before abandoning (thread) or killing (process) it.
STOP_TIMEOUT = 5.0


class _PeerDown(RuntimeFault):
    """A worker's FAIL or EXITED reached the led worker while it waited for borders: its step
    stops, and the coordinator names the worker from the message set aside."""


class _LeadEndpoint(Endpoint):
    """Participant 0 as the worker the coordinator leads sees it (threads backend).

    The inbox holds worker 0's borders and the other workers' reports: borders and STOP are
    the worker's, everything else is set aside in :attr:`aside` for the coordinator, which reads
    it before its inbox (:meth:`Runtime._collect`).  A worker's failure ends the wait for its
    borders at once (:class:`_PeerDown`), as the coordinator's watchdog would have named it.
    """

    in_memory = True
    msgpack_types = False

    def __init__(self, inner: Endpoint) -> None:
        super().__init__(inner.index)
        self.inner = inner
        self.aside: deque[m.Message] = deque()

    def send(self, dst: int, data: bytes) -> None:
        self.inner.send(dst, data)

    def send_message(self, dst: int, msg: m.Message) -> None:
        self.inner.send_message(dst, msg)

    def recv_message(self, timeout: float | None, spin: float = 0.0) -> m.Message | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            msg = self.inner.recv_message(left, spin)
            if msg is None or isinstance(msg, (m.Borders, m.Stop)):
                return msg
            self.aside.append(msg)
            if isinstance(msg, (m.Fail, m.Exited)):
                raise _PeerDown(f"worker {getattr(msg, 'worker', -1)} is down")

    def statistics(self) -> ChannelStats:
        return self.inner.statistics()

    def flush(self, timeout: float) -> bool:
        return self.inner.flush(timeout)


class State(enum.Enum):
    RUNNING = "running"
    FAILED = "failed"
    CLOSED = "closed"


#: Allowed (state, operation) pairs -> next state.
TRANSITIONS: dict[tuple[State, str], State] = {
    (State.RUNNING, "step"): State.RUNNING,
    (State.RUNNING, "query"): State.RUNNING,
    (State.RUNNING, "fail"): State.FAILED,
    (State.RUNNING, "close"): State.CLOSED,
    (State.FAILED, "close"): State.CLOSED,
    (State.FAILED, "fail"): State.FAILED,
    (State.CLOSED, "close"): State.CLOSED,
}


@dataclass
class TickResult:
    """What one :meth:`Runtime.step` produced.

    Attributes:
        tick: the tick the world reached (``rt.tick`` after the step).
        hook_results: every worker's ``hook.run`` results concatenated in worker order.
        hook_results_by_worker: the same, one list per worker.
        hook_errors: ``(worker, traceback)`` for every worker whose hook raised this tick (its
            results are missing; the world is unaffected and the runtime keeps running).
        mspt: coordinator wall milliseconds for the whole lockstep tick.
    """

    tick: int
    hook_results: list[Any] = field(default_factory=list)
    hook_results_by_worker: list[list[Any]] = field(default_factory=list)
    hook_errors: list[tuple[int, str]] = field(default_factory=list)
    mspt: float = 0.0


class Runtime:
    """A sharded world ticked by W workers on one backend.

    One thread drives it (``step``, ``rows``, ``digest``, ``save``, ``close``); ``metrics()``
    and ``worker_gil()`` may be called from any thread.

    Args:
        config: the world.
        rows: initial entities (validated like :class:`sim.world.World` does).
        validate: False skips checking each row: for rows :func:`sim.world.spawn` just made
            (a benchmark's world of a million entities spends seconds on the checks).
        backend: ``inline`` (calling thread, one worker), ``threads``, ``interpreters`` (one
            subinterpreter per worker, each with its own GIL) or ``processes`` (spawned).
        workers: worker count; default usable cores, always capped at the number of regions.
        kernel: shard kernel, ``python`` or ``numpy`` (numpy cannot load in subinterpreters).
        hook: ``"module:Class"`` instantiated once per worker with ``**hook_args``; its
            ``run(tick, shards, jobs) -> list`` is called after ticks that carry jobs.
        hook_args: msgpack-able keyword arguments for the hook.
        tick: the tick number of ``rows`` (a loaded save starts later than 0).
        tick_timeout: watchdog; a worker silent for this long during a tick -> WorkerTimeout.
        start_timeout: how long workers may take to start.
        checkpoint: keep shard checkpoints and a log of later ticks' inputs and borders, so a
            failed tick can be restored, replayed and retried (False: a fault is fatal).
        checkpoint_every: ticks between checkpoints (the log covers the ticks in between).
        fault_at: ``(region, tick)``: inject one exception in that region's advance (tests).
        metrics_window: ticks kept in the sliding MSPT windows.
        pin: pin worker ``w`` to the ``w``-th usable core (and ``SCHED_BATCH``) where every worker
            has a core of its own and spinning pays (:meth:`_spin`); a thread stepping a led
            worker 0 is kept on the first core while it does, its policy unchanged.  False
            leaves placement to the OS.  :meth:`worker_cpus` says what each worker did.
        clock: monotonic seconds (injected for tests; ``time.perf_counter`` by default).

    Raises:
        RuntimeConfigError: bad backend/workers/hook arguments.
        BackendUnavailable: the backend does not exist on this interpreter.
        KernelUnavailable: ``kernel="numpy"`` with ``backend="interpreters"``.
        InvalidInput: a bad entity row.
        WorkerCrashed / WorkerTimeout: a worker failed to start.
    """

    def __init__(self, config: WorldConfig, rows: Iterable[Row] = (), *,
                 backend: str = "inline", workers: int | None = None, kernel: str = "python",
                 hook: str | None = None, hook_args: dict[str, Any] | None = None,
                 tick: int = 0, tick_timeout: float = TICK_TIMEOUT,
                 start_timeout: float = START_TIMEOUT, checkpoint: bool = True,
                 checkpoint_every: int = CHECKPOINT_EVERY,
                 fault_at: tuple[int, int] | None = None,
                 metrics_window: int = DEFAULT_WINDOW, pin: bool = True,
                 clock: TimeSource = time.perf_counter, validate: bool = True) -> None:
        if backend not in BACKENDS:
            raise RuntimeConfigError(f"unknown backend {backend!r}; choose one of "
                                     f"{', '.join(BACKENDS)}")
        if kernel not in KERNELS:
            raise RuntimeConfigError(f"unknown kernel {kernel!r}; choose one of "
                                     f"{', '.join(KERNELS)}")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                    or workers < 1):
            raise RuntimeConfigError(f"workers must be an integer >= 1, got {workers!r}")
        if hook is not None and (not isinstance(hook, str) or hook.count(":") != 1):
            raise RuntimeConfigError(f"hook must look like 'module:Class', got {hook!r}")
        if tick_timeout <= 0 or start_timeout <= 0:
            raise RuntimeConfigError("tick_timeout and start_timeout must be > 0")
        if backend == "interpreters":
            from server.runtime import interp
            interp.require()
            if kernel == "numpy":
                raise KernelUnavailable(
                    "the numpy kernel cannot run in subinterpreters (numpy refuses to load in "
                    "them); use --kernel python with --backend interpreters, or another backend")
        if backend == "inline":
            if workers not in (None, 1):
                raise RuntimeConfigError("backend 'inline' ticks every region in the calling "
                                         f"thread: workers must be 1, got {workers}")
            workers = 1
        self.config = config
        self.backend = backend
        self.kernel = kernel
        self.tick = tick
        self.tick_timeout = tick_timeout
        self._clock = clock
        layout = Layout(config)
        self.workers = min(workers or usable_cores(), config.regions)
        self.assignment: list[list[int]] = layout.assign(config.regions, self.workers)
        self.owner = [0] * config.regions
        for w, regions in enumerate(self.assignment):
            for r in regions:
                self.owner[r] = w
        per = partition(config, rows, validate=validate)
        self._window = metrics_window
        self._shard_m = [ShardMetrics(r, self.owner[r], Window(metrics_window), len(per[r]))
                         for r in range(config.regions)]
        self._worker_m = [WorkerMetrics(w, Window(metrics_window), Window(metrics_window),
                                        regions=list(self.assignment[w]))
                          for w in range(self.workers)]
        self._metrics_lock = threading.Lock()
        self._step_ms = Window(metrics_window)
        #: Per tick: the step's wall time minus the slowest worker's own compute (its tick less
        #: its wait for borders): what the lockstep itself costs (channels, encode/decode,
        #: barrier).  Inline runs have none.
        self._coord_ms = Window(metrics_window)
        self._rate = Rate(metrics_window)
        self._ticks = 0
        self._state = State.RUNNING
        self._core: WorkerCore | None = None
        self._ep: Endpoint | None = None
        self._crew: backends.Crew | None = None
        #: the worker this coordinator ticks itself (threads backend, see the module docstring)
        self._lead: WorkerCore | None = None
        self._lead_ep: _LeadEndpoint | None = None
        leads = backend == "threads" and self.workers >= 2
        #: seconds the workers poll for borders (0: sleep at once), see _spin
        spin = self._spin(backend, kernel)
        #: seconds this coordinator polls for a tick's reports, and the workers for the next
        #: tick: only where the coordinator has a core too (see _spin), its worker's or one left
        #: over
        own_core = leads or self.workers < usable_cores()
        self._coord_spin_s = spin if own_core else 0.0
        #: whether the caller stepped again at once (see FLAT_OUT_SPIN_S), and when it returned
        self._flat_out = False
        self._returned = -1.0
        #: worker -> the core it is pinned to, where every worker has a core of its own (the
        #: same rule as spinning; see server.host.pin_thread), else None: the OS places it.
        cpus = usable_cpus() if pin and spin else None
        self._cpus: list[int | None] = (list(cpus[:self.workers]) if cpus and
                                        len(cpus) >= self.workers else [None] * self.workers)
        #: the core the thread leading worker 0 is kept on while it does, that thread's
        #: ident and how to give it back its mask (see _hold)
        self._lead_cpu = self._cpus[0] if leads else None
        self._held: tuple[int, Callable[[], None]] | None = None
        if leads:
            self._cpus[0] = None
        base = {"config": config.to_dict(), "owner": self.owner, "kernel": kernel,
                "tick": tick, "hook": hook, "hook_args": dict(hook_args or {}),
                "fault_at": list(fault_at) if fault_at is not None else None,
                "checkpoint": checkpoint, "checkpoint_every": checkpoint_every,
                "recv_timeout": max(tick_timeout, 1.0) * 2,
                "spin": spin, "tick_spin": FLAT_OUT_SPIN_S if spin and own_core else 0.0}
        specs = [dict(base, w=w, cpu=self._cpus[w],
                      rows=[(r, per[r]) for r in self.assignment[w]]) for w in range(self.workers)]
        try:
            if backend == "inline":
                self._start_inline(specs)
            elif leads:
                self._start_led(specs, start_timeout)
            else:
                self._start_crew(specs)
            if self._core is None:
                hellos = self._collect(m.Hello, None, start_timeout)
                for w, hello in hellos.items():
                    assert isinstance(hello, m.Hello)
                    self._hello(w, dict(hello.info))
        except BaseException:
            self._state = State.FAILED
            self.close()
            raise

    def _spin(self, backend: str, kernel: str) -> float:
        """Seconds a worker polls for its neighbours' borders before sleeping (0: it sleeps at
        once).  Spinning saves a wake-up per tick, but only pays where the spinner holds no GIL
        another worker needs (not threads under a GIL) and every worker has a core of its own
        (else it takes CPU from a neighbour still computing).

        The coordinator (the thread calling :meth:`step`) polls for the last reports of a tick
        only where a core is left over for it too: with a worker on every core, a polling
        coordinator sat on the core of the worker it was waiting for, and that worker (pinned,
        ``SCHED_BATCH``) got its core back only when the poll ended (a tenth of the ticks
        waited the whole poll: coordination p90 0.73 ms, 0.27-0.46 ms with it asleep;
        python kernel, arena-20k, 2 free-threaded workers on a 2-core VM)."""
        if self.workers < 2 or backend == "inline":
            return 0.0
        if backend == "threads" and gil_enabled():
            return 0.0
        if self.workers > usable_cores():
            return 0.0
        return SPIN_S

    # ---- start-up per backend ------------------------------------------------------------------
    def _start_inline(self, specs: list[dict[str, Any]]) -> None:
        self._core = WorkerCore(specs[0])
        self._hello(0, self._core.info)

    def _start_crew(self, specs: list[dict[str, Any]]) -> None:
        self._crew = crew = backends.start(self.backend, specs)
        self._ep = crew.ep

    def _start_led(self, specs: list[dict[str, Any]], start_timeout: float) -> None:
        """Threads for workers 1..W-1, worker 0 here (its first border exchange waits for
        theirs, so it is built once they run)."""
        self._crew = crew = backends.start(self.backend, specs, lead=True)
        self._ep = crew.ep
        self._lead_ep = lead_ep = _LeadEndpoint(crew.ep)
        try:
            self._lead = WorkerCore(dict(specs[0], recv_timeout=start_timeout), lead_ep, 0)
        except _PeerDown:  # its FAIL or EXITED is set aside: _collect names the worker
            self._collect(m.Hello, None, start_timeout)
            raise
        except TimeoutError:  # a worker's first borders did not come: name it
            self._collect(m.Hello, None, start_timeout, overdue=True)
            raise
        except Exception as exc:  # as a worker thread's FAIL at start-up would be reported
            detail = "".join(traceback.format_exception(exc))
            raise WorkerCrashed(f"worker 0 failed with {type(exc).__name__}; its traceback:\n"
                                f"{detail}", worker=0, detail=detail) from exc
        self._lead.recv_timeout = self.tick_timeout  # the watchdog of the other workers
        self._hello(0, self._lead.info)

    # ---- the tick --------------------------------------------------------------------------------
    def step(self, inputs: Iterable[Any] = (), view: bool = False,
             jobs: Sequence[Any] = ()) -> TickResult:
        """Advance the world one lockstep tick; returns when every worker is done.

        Args:
            inputs: player inputs ``(entity id, seq, thrust, turn, action)``, validated here and
                broadcast to every worker (shards ignore entities they do not own).
            view: exchange view rows too, so ``view_rows()`` is complete after the tick.
            jobs: msgpack-able work items for the hook, broadcast to every worker.

        Raises:
            InvalidInput: a malformed input (nothing was sent; the runtime stays usable).
            InvalidState: the runtime is closed or failed.
            WorkerCrashed / WorkerTimeout / ShardFault: a worker failed; the runtime is FAILED.
        """
        self._transition("step")
        norm = list(normalise_inputs(inputs).values())
        jobs = list(jobs)
        t = self.tick
        if self._lead is not None:
            self._hold()
            self._flat_out = self._clock() - self._returned < SPIN_S
            # Between ticks, as a worker thread takes its checkpoint after reporting the last
            # tick: the caller has had the last tick's results; this tick is not yet timed.
            try:
                self._lead.after_report()
            except BaseException:
                self._fail()
                raise
        t0 = self._clock()
        try:
            if self._core is not None:
                report, results = self._core.step(t, norm, bool(view), jobs)
                self._core.after_report()
                done = {0: (report, m.as_sent(results))}
            elif self._lead is not None:
                done = self._step_led(t, norm, bool(view), jobs)
            else:
                ep = self._ep
                assert ep is not None
                # where payloads keep the sender's types, jobs and results are given the shape
                # (and the msgpack check) they would have crossing as msgpack: jobs here, results
                # by each worker thread in parallel (threads), or here where a worker has only
                # msgpack's pure-Python fallback (subinterpreters)
                native = not ep.msgpack_types
                here = native and not ep.in_memory
                tick = self._tick(t, norm, bool(view), jobs, shape=native)
                try:
                    payload = tick if ep.in_memory else ep.encode(tick)
                except MessageError as exc:  # jobs msgpack cannot encode (nothing was sent)
                    raise InvalidInput(f"jobs must be msgpack-able: {exc}") from exc
                self._broadcast(payload)
                msgs = self._collect(m.Done, t, self.tick_timeout)
                done = {w: (msg.report, m.as_sent(msg.results) if here else msg.results)
                        for w, msg in msgs.items() if isinstance(msg, m.Done)}
        except InvalidInput:
            raise
        except BaseException:
            self._fail()
            raise
        now = self._clock()
        ms = (now - t0) * 1e3
        by_worker: list[list[Any]] = []
        errors: list[tuple[int, str]] = []
        with self._metrics_lock:  # metrics() may be called from another thread (a stats page)
            self.tick = t + 1
            self._ticks += 1
            self._rate.add(now)
            self._step_ms.add(ms)
            # A tick that may have waited for a worker's checkpoint (taken after the worker
            # reported the tick before) measures the checkpoint, not the lockstep: left out.
            if self._core is None and not any(done[w][0]["after_ckpt"]
                                              for w in range(self.workers)):
                slowest = max(done[w][0]["ms"] - done[w][0]["wait_ms"]
                              for w in range(self.workers))
                self._coord_ms.add(max(0.0, ms - slowest))
            for w in range(self.workers):
                report, results = done[w]
                self._account(w, report)
                by_worker.append(list(results))
                if report["hook_error"]:
                    errors.append((w, report["hook_error"]))
        self._returned = self._clock()
        return TickResult(tick=self.tick, hook_results=[r for rs in by_worker for r in rs],
                          hook_results_by_worker=by_worker, hook_errors=errors, mspt=ms)

    @staticmethod
    def _tick(t: int, norm: list[Any], view: bool, jobs: list[Any], *, shape: bool) -> m.Tick:
        """The TICK message; ``shape``: give the jobs the shape (and the msgpack check) they
        would have crossing as msgpack, where the transport keeps the sender's types.

        Raises:
            InvalidInput: the jobs are not msgpack-able (nothing was sent).
        """
        try:
            return m.Tick(t, norm, view, m.as_sent(jobs) if shape else jobs)
        except MessageError as exc:
            raise InvalidInput(f"jobs must be msgpack-able: {exc}") from exc

    def _step_led(self, t: int, norm: list[Any], view: bool, jobs: list[Any],
                  ) -> dict[int, tuple[dict[str, Any], Any]]:
        """One tick with the coordinator leading worker 0: TICK to the others, worker 0's
        tick here, then their DONE.  A failure of worker 0 is reported as a worker thread's
        would be (ShardFault naming worker 0); one of another worker's, by _collect."""
        lead = self._lead
        assert lead is not None
        tick = self._tick(t, norm, view, jobs, shape=True)
        self._broadcast(tick)
        try:
            report, results = lead.step(t, norm, view, tick.jobs)
        except _PeerDown:  # its FAIL or EXITED is set aside: _collect names it
            self._collect(m.Done, t, self.tick_timeout)
            raise
        except TimeoutError:  # a peer's borders did not come: the watchdog's verdict
            self._collect(m.Done, t, self.tick_timeout, overdue=True)
            raise
        except Exception as exc:
            detail = "".join(traceback.format_exception(exc))
            raise ShardFault(f"worker 0 failed with {type(exc).__name__}; its traceback:\n"
                             f"{detail}", worker=0, detail=detail) from exc
        msgs = self._collect(m.Done, t, self.tick_timeout)
        done: dict[int, tuple[dict[str, Any], Any]] = {0: (report, m.as_sent(results))}
        for w, msg in msgs.items():
            assert isinstance(msg, m.Done)
            done[w] = (msg.report, msg.results)
        return done

    def _hold(self) -> None:
        """Keep the thread stepping a led worker on worker 0's core (where workers are pinned)
        while it does; a thread that takes over gives the last one its mask back."""
        if self._lead_cpu is None:
            return
        me = threading.get_ident()
        if self._held is not None:
            if self._held[0] == me:
                return
            self._held[1]()
            self._held = None
        undo = hold_core(self._lead_cpu)
        if undo is not None:
            self._held = (me, undo)
        self._worker_m[0].cpu = self._lead_cpu if undo is not None else None

    def _account(self, w: int, report: dict[str, Any]) -> None:
        wm = self._worker_m[w]
        wm.mspt.add(report["ms"])
        wm.wait.add(report["wait_ms"])
        wm.channel = dict(report["ch"])
        wm.faults_recovered = report["faults"]
        wm.last_fault = report["fault_tb"]
        wm.hook_errors = report["hook_errors"]
        wm.gil = bool(report["gil"])
        for r, ms, n in zip(self.assignment[w], report["adv"], report["n"], strict=True):
            sm = self._shard_m[r]
            sm.mspt.add(ms)
            sm.entities = n

    def _broadcast(self, msg: bytes | m.Message) -> None:
        """Send to every worker (a message object, or its bytes encoded once for all by
        ``Endpoint.encode``); a closed channel means that worker died."""
        ep = self._ep
        assert ep is not None
        for w in range(1 if self._lead is not None else 0, self.workers):
            try:
                if isinstance(msg, bytes):
                    ep.send(w, msg)
                else:
                    ep.send_message(w, msg)
            except ChannelClosed as exc:
                dead = self._dead() or [w]
                raise WorkerCrashed(f"worker {dead[0]} is gone: its channel closed "
                                    f"({self.backend} backend)", worker=dead[0]) from exc

    def _collect(self, kind: type[m.Message], tick: int | None, timeout: float, *,
                 overdue: bool = False) -> dict[int, m.Message]:
        """Wait for one ``kind`` message from every worker (but a led one), or raise naming
        the culprit; ``overdue``: the ``timeout`` has passed already (read what arrived)."""
        ep = self._ep
        assert ep is not None
        aside = self._lead_ep.aside if self._lead_ep is not None else None
        pending = set(range(1 if self._lead is not None else 0, self.workers))
        got: dict[int, m.Message] = {}
        deadline = self._clock() + (0.0 if overdue else timeout)
        # Poll once one worker reported the tick: the others are about to (where a core is
        # left over for this thread, see _spin).  A led worker's tick is over when this starts:
        # poll from the start, and longer while the caller ticks flat out.
        later = self._coord_spin_s
        if self._lead is not None and self._flat_out and later:
            later = FLAT_OUT_SPIN_S
        first = later if self._lead is not None else 0.0
        msg: m.Message | None
        while pending:
            remaining = deadline - self._clock()
            if aside:
                msg = aside.popleft()
            elif remaining <= 0:
                dead = self._dead()
                if dead:
                    raise WorkerCrashed(f"worker {dead[0]} died", worker=dead[0])
                what = "start" if tick is None else f"finish tick {tick}"
                names = ", ".join(map(str, sorted(pending)))
                raise WorkerTimeout(f"worker {names} did not {what} within {timeout:g} s "
                                    f"({self.backend} backend)", worker=min(pending))
            else:
                try:
                    msg = ep.recv_message(remaining, later if got else first)
                except ChannelClosed as exc:
                    peer = getattr(exc, "peer", -1)
                    dead = self._dead() or [peer]
                    raise WorkerCrashed(f"worker {dead[0]} is gone: its channel closed "
                                        f"({self.backend} backend)", worker=dead[0]) from exc
            if msg is None:
                continue
            w = getattr(msg, "worker", -1)
            if isinstance(msg, kind) and (tick is None or getattr(msg, "tick", None) == tick):
                got[w] = msg
                pending.discard(w)
            elif isinstance(msg, m.Fail):
                symptom = msg.error in ("ChannelClosed", "TimeoutError")
                if symptom:  # a peer's death seen from worker w: name the dead one
                    dead = [d for d in self._dead() if d != w]
                    if dead:
                        raise WorkerCrashed(f"worker {dead[0]} died (worker {w} saw: "
                                            f"{msg.error})", worker=dead[0],
                                            detail=msg.traceback)
                cls = ShardFault if tick is not None and not symptom else WorkerCrashed
                raise cls(f"worker {w} failed with {msg.error}; its traceback:\n"
                          f"{msg.traceback}", worker=w, detail=msg.traceback)
            elif isinstance(msg, m.Exited):
                raise WorkerCrashed(f"worker {w} exited unexpectedly" +
                                    (f":\n{msg.detail}" if msg.detail else ""), worker=w,
                                    detail=msg.detail)
            else:
                raise MessageError(f"coordinator expected {m.name(kind)}, got "
                                    f"{m.name(msg)} from worker {w}")
        return got

    def _dead(self) -> list[int]:
        """Workers known to be gone (process exited, thread ended)."""
        return self._crew.dead() if self._crew is not None else []

    def _hello(self, w: int, info: dict[str, Any]) -> None:
        wm = self._worker_m[w]
        wm.gil = bool(info["gil"])
        wm.cmsgpack = bool(info["cmsgpack"])
        wm.pid = int(info["pid"])
        wm.interp = int(info["interp"])
        wm.cpu = info.get("cpu")

    # ---- queries ---------------------------------------------------------------------------------
    def rows(self) -> list[Row]:
        """Every entity, sorted by id (asks every worker)."""
        self._transition("query")
        if self._core is not None:
            return sorted(self._core.rows())
        assert self._ep is not None
        try:
            self._broadcast(m.Rows())
            got = self._collect(m.RowsOk, None, self.tick_timeout)
        except BaseException:
            self._fail()
            raise
        rows = [tuple(r) for msg in got.values() if isinstance(msg, m.RowsOk)
                for r in msg.rows]
        if self._lead is not None:
            rows += self._lead.rows()
        return sorted(rows)

    def digest(self) -> str:
        """Same digest as :meth:`sim.world.World.digest` for the same world and tick."""
        return rows_digest(self.rows(), self.tick)

    def save(self) -> bytes:
        """The world as :meth:`sim.world.World.save` writes it (``World.load`` reads it back,
        and ``Runtime(config, rows, tick=...)`` can resume from the loaded world)."""
        return save_world(self.config, self.tick, self.rows())

    def worker_gil(self) -> list[bool]:
        """``sys._is_gil_enabled()`` as each worker saw it: at start-up (after importing its
        kernel and hook), then at the end of every tick (the GIL, once re-enabled by an
        extension, stays on, so the last value covers the whole run)."""
        return [bool(w.gil) for w in self._worker_m]

    def worker_cpus(self) -> list[int | None]:
        """The core each worker is pinned to (None: not pinned)."""
        return [w.cpu for w in self._worker_m]

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._worker_m]

    def metrics(self, scheduler: dict[str, Any] | None = None) -> RuntimeMetrics:
        """A snapshot of the metrics (``.to_dict()`` for JSON); ``scheduler`` stats are merged.

        Safe to call from another thread while :meth:`step` runs: the windows are copied under
        a lock, so the snapshot never changes afterwards.
        """
        ch = self._ep.statistics().to_dict() if self._ep is not None else {}
        with self._metrics_lock:
            return RuntimeMetrics(
                backend=self.backend, kernel=self.kernel, tick=self.tick, ticks=self._ticks,
                ticks_per_s=self._rate.per_second(), step=self._step_ms.summary(),
                coordination=self._coord_ms.summary(),
                shards=[replace(s, mspt=s.mspt.copy()) for s in self._shard_m],
                workers=[replace(w, mspt=w.mspt.copy(), wait=w.wait.copy(),
                                 channel=dict(w.channel), regions=list(w.regions))
                         for w in self._worker_m],
                channel=ch, scheduler=scheduler)

    @property
    def state(self) -> State:
        return self._state

    # ---- lifecycle -------------------------------------------------------------------------------
    def _transition(self, op: str) -> None:
        nxt = TRANSITIONS.get((self._state, op))
        if nxt is None:
            raise InvalidState(f"cannot {op} a runtime that is {self._state.value}")
        self._state = nxt

    def _fail(self) -> None:
        """Enter FAILED and ask every worker to stop; joining waits for :meth:`close` (a hung
        worker would otherwise delay the exception by ``STOP_TIMEOUT``)."""
        self._state = State.FAILED
        self._signal_stop()

    def close(self) -> None:
        """Stop every worker and release channels, interpreters, processes (idempotent)."""
        self._transition("close")
        self._state = State.CLOSED
        if self._held is not None:
            self._held[1]()
            self._held = None
        self._stop_workers()
        if self._crew is not None:
            self._crew.close()
        elif self._ep is not None:
            self._ep.close()

    def _signal_stop(self) -> None:
        if self._ep is not None:
            for w in range(1 if self._lead is not None else 0, self.workers):
                with contextlib.suppress(RuntimeFault):  # that worker is gone already
                    self._ep.send_message(w, m.Stop())

    def _stop_workers(self) -> None:
        self._signal_stop()
        if self._crew is not None:
            self._crew.join(time.monotonic() + STOP_TIMEOUT)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Runtime(backend={self.backend!r}, workers={self.workers}, "
                f"kernel={self.kernel!r}, tick={self.tick}, state={self._state.value})")


__all__ = ["BACKENDS", "Runtime", "State", "TickResult", "WorkerError"]
