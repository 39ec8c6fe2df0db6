"""The worker: owns a fixed set of shards and ticks them in lockstep with its peers.

Importable in a thread, a subinterpreter or a spawned process: no numpy at module level (numpy
refuses to load in a subinterpreter), only the standard library, msgpack and :mod:`sim`.

One tick (message ``TICK t``)::

    advance the own shards that border another worker's, t -> t+1
    send their borders to other workers: one BORDERS message per peer, sent now
    advance the other own shards          (fault: restore every own shard, retry; see below)
    keep the borders between own shards in memory
    receive one BORDERS message from every peer for tick t (early ones are stashed)
    absorb, per own shard, the borders from all its neighbours in ascending source-region order
    log (inputs, borders), run the hook if there are jobs, report DONE (a hook that raises
    costs that worker's results for the tick, reported as a hook error)
    every CHECKPOINT_EVERY ticks: checkpoint own shards instead of logging, after DONE

Sending the borders peers need before advancing the shards they do not need overlaps the
exchange with that interior work: a peer's borders are usually waiting when the interior is
done, so a worker does not sleep on them and its peer does not have to wake it.  A shard's
advance reads only its own state, so the order in which a worker advances its shards cannot
change a byte.  The order of absorption matches :class:`sim.world.World`, so the digest of a
sharded run equals the reference's.

Faults: an exception raised while advancing or absorbing is caught with its traceback; every own
shard is restored from its last checkpoint, the ticks completed since are replayed from the log
of their inputs and inbound borders, and the tick is recomputed (a tick is a pure function of
state, inputs, borders and tick number, so the retry gives the same bytes and borders already
sent stay valid: they are not sent again).  After ``MAX_RETRIES`` failures the worker reports
FAIL and the coordinator raises :class:`~server.runtime.errors.ShardFault`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from server.host import gil_enabled, pin_thread, tune, tune_gc
from server.runtime import messages as m
from server.runtime.channels import Endpoint
from server.runtime.errors import RuntimeFault
from sim.config import WorldConfig
from sim.entities import IN_ENTITY
from sim.kernels import make_shards
from sim.shard import Border, Shard

#: Attempts at a failing tick after the first (a deterministic bug fails every time; a transient
#: one - memory pressure, an injected fault - passes on the first retry).
MAX_RETRIES = 2
#: Ticks between shard checkpoints.  ``shard.checkpoint()`` copies the shard's state (each
#: kernel its own columns or arrays); between checkpoints the worker logs each tick's inputs and
#: inbound borders (references it holds anyway) and a recovery replays them from the checkpoint.
#: 32 ticks (~1 s at 30 Hz) makes the copy ~1 % of the run and bounds the replay.  The copy is
#: taken after the worker has reported the tick (:meth:`WorkerCore.after_report`), in the time
#: before the next one: at 30 Hz it is off the tick's critical path, where it used to set the
#: p99 (a 150,000-entity numpy group copies in ~2.5 ms, tens of ms while the heap still grows,
#: and 1 tick in 32 is above the 99th percentile).  Flat out, the next tick waits for it.
CHECKPOINT_EVERY = 32
#: Environment variable ``"region:tick"`` injecting one fault (test tuning, like ``fault_at``).
FAULT_ENV = "PARATICK_FAULT_AT"
#: Future ticks whose borders a worker may hold (policy: a peer is at most one tick ahead in the
#: lockstep, so more is a protocol bug and raises).
STASH_TICKS = 2


class InjectedFault(RuntimeFault):
    """The test fault raised by ``fault_at``; never raised unless asked for."""


class Stop(RuntimeFault):
    """The coordinator asked the worker to leave its loop."""


def load_hook(spec: str, args: Mapping[str, Any] | None) -> Any:
    """Import ``"module:Class"`` and instantiate it with ``**args``.

    A hook is code that runs inside each worker after a tick, next to the shards it owns (the
    server's :class:`server.snapshots.SnapshotHook` builds client snapshots this way).  It is
    named by string so that a subinterpreter or a spawned process can import it, instantiated
    once per worker, and called as ``run(tick, shards, jobs)`` after every tick that carries
    jobs; it returns a list of msgpack-able results, and the coordinator concatenates every
    worker's list in :attr:`~server.runtime.runtime.TickResult.hook_results`.  Jobs are
    broadcast to every worker, so a hook answers only for what its own shards hold.  Hooks read
    shards and must not change them; a hook that raises loses that worker's results for the
    tick (the traceback is in ``TickResult.hook_errors``) and the world ticks on.
    """
    modname, _, clsname = spec.partition(":")
    cls = getattr(importlib.import_module(modname), clsname)
    return cls(**dict(args or {}))


class WorkerCore:
    """Shards of one worker and the tick logic, independent of the transport.

    Args:
        spec: plain dict (msgpack-able): ``w`` worker index, ``config`` WorldConfig dict, ``rows``
            list of (region, rows) for the own regions, ``owner`` worker index per region,
            ``kernel``, ``tick``, ``hook``, ``hook_args``, ``fault_at`` ([region, tick] or None),
            ``checkpoint`` (bool), ``checkpoint_every`` (ticks), ``recv_timeout`` (seconds a
            worker waits for borders).
        endpoint: channels to peers and coordinator (None for the inline backend).
        coord: the coordinator's participant index on ``endpoint``.
    """

    def __init__(self, spec: Mapping[str, Any], endpoint: Endpoint | None = None,
                 coord: int = -1) -> None:
        self.w: int = spec["w"]
        self.coord = coord
        self.config = WorldConfig.from_dict(dict(spec["config"]))
        self.owner: list[int] = list(spec["owner"])
        self.tick: int = spec["tick"]
        self.ep = endpoint
        self.recv_timeout: float = spec.get("recv_timeout", 60.0)
        #: seconds to poll for a neighbour's borders before sleeping (see Runtime: only where
        #: no GIL is shared and every worker has a core)
        self.spin: float = float(spec.get("spin", 0.0))
        #: seconds to poll for the next TICK after reporting one, where the coordinator has a
        #: core of its own (see Runtime); used only while ticks follow each other within it
        #: (flat out), so a paced run sleeps between ticks as before
        self.tick_spin: float = float(spec.get("tick_spin", 0.0))
        self.checkpointing: bool = spec.get("checkpoint", True)
        self.checkpoint_every: int = max(1, int(spec.get("checkpoint_every", CHECKPOINT_EVERY)))
        kernel = spec["kernel"]
        own = {region: [tuple(r) for r in rows] for region, rows in spec["rows"]}
        self.shards: dict[int, Shard] = {
            s.region: s for s in make_shards(self.config, own, kernel=kernel)}
        self.regions = sorted(self.shards)
        peers = {self.owner[n] for r in self.regions for n in self.shards[r].neighbours}
        peers.discard(self.w)
        self.peers = sorted(peers)
        #: own regions in advance order: those with a neighbour on another worker first (their
        #: borders are sent as soon as they are advanced), then the interior ones
        edge = [r for r in self.regions
                if any(self.owner[n] != self.w for n in self.shards[r].neighbours)]
        self._order = edge + [r for r in self.regions if r not in edge]
        self._edge = len(edge)
        self._edge_set = frozenset(edge)
        #: the last tick whose borders went to the peers (a retried tick does not send again)
        self._sent = self.tick - 2
        #: A whole-world group (sim.kernels.make_shards) only exchanges empty borders.
        self._internal = not self.peers and all(s.internal_borders
                                                for s in self.shards.values())
        fault = spec.get("fault_at")
        env = os.environ.get(FAULT_ENV)
        if fault is None and env:
            region, _, tick = env.partition(":")
            fault = (int(region), int(tick))
        self.fault_at = tuple(fault) if fault is not None else None
        self.hook = load_hook(spec["hook"], spec.get("hook_args")) if spec.get("hook") else None
        self._stash: dict[int, list[Any]] = {}
        self._ckpt: dict[int, dict[str, Any]] = {}
        self._ckpt_tick = self.tick
        #: a checkpoint of the current state is due (see :meth:`after_report`), or was taken
        #: after the last report (the next report says so: it may have delayed this tick)
        self._ckpt_due = False
        self._after_ckpt = False
        #: (tick, inputs, view, inbound borders) of every tick completed since the checkpoint
        self._log: list[tuple[int, Mapping[int, Any], bool, dict[int, list[Any]]]] = []
        self.faults_recovered = 0
        self.hook_errors = 0
        self.last_fault = ""
        self.info = {"w": self.w, "gil": gil_enabled(), "pid": os.getpid(),
                     "interp": _interp_id(), "cmsgpack": m.cmsgpack(),
                     "python": sys.version.split()[0], "kernel": kernel,
                     "regions": self.regions}
        # First exchange: borders of the initial state, as World does on construction.
        self._exchange(self.tick - 1, {r: self.shards[r].emit() for r in self.regions})

    # ---- one tick ----------------------------------------------------------------------------
    def step(self, tick: int, inputs: Any, view: bool, jobs: Any) -> tuple[dict[str, Any], list]:
        """Run tick ``tick`` (-> ``tick + 1``); returns (report, hook results)."""
        if tick != self.tick:
            raise m.MessageError(f"worker {self.w} is at tick {self.tick}, asked for {tick}")
        self.after_report()  # a checkpoint still due (a caller that did not call it)
        t0 = time.perf_counter()
        norm = {row[IN_ENTITY]: tuple(row) for row in inputs}
        adv_ms: list[float] = []
        attempt = 0
        while True:
            try:
                out, adv_ms = self._advance(tick, norm, view, inject=attempt == 0, send=True)
                break
            except Exception as exc:
                attempt = self._recover(exc, attempt)
        t1 = time.perf_counter()
        inbound = self._exchange(tick, out, absorb=False)
        t2 = time.perf_counter()
        while True:
            try:
                self._absorb(inbound)
                break
            except Exception as exc:  # restore, recompute our advance, absorb again
                attempt = self._recover(exc, attempt)
                self._advance(tick, norm, view, inject=False)
        self.tick = tick + 1
        if self.checkpointing:
            if self.tick - self._ckpt_tick >= self.checkpoint_every:
                self._ckpt_due = True  # taken by after_report, once the tick is reported
            else:
                self._log.append((tick, norm, view, inbound))
        results: list[Any] = []
        hook_error = ""
        if jobs and self.hook is not None:
            # A hook reads shards, it does not own them: its bug costs this tick's results, not
            # the world (reported with the traceback; the shards are untouched).
            try:
                results = list(self.hook.run(self.tick, [self.shards[r] for r in self.regions],
                                             list(jobs)))
            except Exception as exc:
                hook_error = "".join(traceback.format_exception(exc))
                self.hook_errors += 1
        # Counted inside the tick's compute: the numpy group settles the tick's handoffs when
        # first asked (work the next advance would do otherwise), which is not coordination.
        counts = [len(self.shards[r]) for r in self.regions]
        t3 = time.perf_counter()
        after_ckpt, self._after_ckpt = self._after_ckpt, False
        report = {"ms": (t3 - t0) * 1e3, "wait_ms": (t2 - t1) * 1e3, "adv": adv_ms,
                  "after_ckpt": after_ckpt,
                  "hook_error": hook_error, "hook_errors": self.hook_errors,
                  # every tick: an extension imported later (by a hook) can re-enable the GIL
                  "gil": gil_enabled(),
                  "n": counts,
                  "faults": self.faults_recovered, "fault_tb": self.last_fault,
                  "ch": self.ep.statistics().to_dict() if self.ep is not None else {}}
        return report, results

    def _advance(self, tick: int, norm: Mapping[int, Any], view: bool, *, inject: bool,
                 send: bool = False) -> tuple[dict[int, dict[int, Border]], list[float]]:
        """Advance every own shard; with ``send``, the peers get their borders of ``tick`` as
        soon as the shards next to them are advanced (once per tick, whatever the retries).
        Returns the borders by source region and each region's advance time in ms."""
        out: dict[int, dict[int, Border]] = {}
        ms: dict[int, float] = {}
        clock = time.perf_counter
        send = send and bool(self.peers) and self._sent != tick
        edge = self._edge
        for i, r in enumerate(self._order):
            if send and i == edge:
                self._send(tick, out)
            s = clock()
            out[r] = self.shards[r].advance(tick, norm, view=view)
            ms[r] = (clock() - s) * 1e3
            if inject and self.fault_at == (r, tick):
                # After the advance: the shard is already at tick+1, so only a real restore
                # from the checkpoint makes the retry give the right bytes.
                self.fault_at = None
                raise InjectedFault(f"injected fault in region {r} at tick {tick}")
        if send and edge == len(self._order):
            self._send(tick, out)
        return out, [ms[r] for r in self.regions]

    def _send(self, tick: int, out: Mapping[int, Mapping[int, Border]]) -> None:
        """One BORDERS message to every peer: the borders ``out`` holds for its regions."""
        assert self.ep is not None
        remote: dict[int, list[tuple[int, int, Border]]] = {p: [] for p in self.peers}
        owner, me = self.owner, self.w
        for src, borders in out.items():
            for dst, border in borders.items():
                w = owner[dst]
                if w != me:
                    remote[w].append((src, dst, border))
        for peer in self.peers:
            self.ep.send_message(peer, m.Borders(tick, me, remote[peer]))
        self._sent = tick

    def after_report(self) -> None:
        """Take the checkpoint :meth:`step` found due, if any: called once the tick's report is
        on its way, so the copy runs while the coordinator and the peers finish the tick."""
        if self._ckpt_due:
            self._checkpoint()
            self._after_ckpt = True

    def _checkpoint(self) -> None:
        self._ckpt_due = False
        # The last checkpoint is handed back for the copy to reuse its memory (two live copies
        # would grow the heap, and fresh memory faults in page by page: tens of milliseconds
        # at 150,000 entities, enough to make the next tick late).
        old, self._ckpt = self._ckpt, {}
        self._ckpt = {r: self.shards[r].checkpoint(old.pop(r, None)) for r in self.regions}
        self._ckpt_tick = self.tick
        self._log.clear()

    def _recover(self, exc: BaseException, attempt: int) -> int:
        """Bring every own shard back to the start of the current tick, or re-raise."""
        self.last_fault = "".join(traceback.format_exception(exc))
        if attempt >= MAX_RETRIES or not (self.checkpointing and self._ckpt):
            raise exc
        for r in self.regions:
            self.shards[r].rollback(self._ckpt[r])
        # Replay the ticks completed since the checkpoint from the message log: same state,
        # inputs and borders give the same bytes (the borders they emit were sent already).
        for tick, inputs, view, inbound in self._log:
            self._advance(tick, inputs, view, inject=False)
            self._absorb(inbound)
        self.faults_recovered += 1
        return attempt + 1

    def _absorb(self, inbound: dict[int, list[tuple[int, Border]]]) -> None:
        for r in self.regions:
            borders = inbound[r]
            borders.sort(key=lambda item: item[0])
            self.shards[r].absorb([b for _, b in borders])

    def _exchange(self, tick: int, out: Mapping[int, Mapping[int, Border]], *,
                  absorb: bool = True) -> dict[int, list[tuple[int, Border]]]:
        """Route borders: keep local ones, send remote ones (unless :meth:`_advance` sent them
        already), collect every peer's."""
        inbound: dict[int, list[tuple[int, Border]]] = {r: [] for r in self.regions}
        owner, me = self.owner, self.w
        for src in () if self._internal else self.regions:
            for dst, border in out[src].items():
                if owner[dst] == me:
                    inbound[dst].append((src, border))
                elif src not in self._edge_set:
                    raise m.MessageError(f"region {src} of worker {me} sent a border to region "
                                          f"{dst} of another worker, which is not its neighbour")
        if self.peers:
            assert self.ep is not None
            if self._sent != tick:
                self._send(tick, out)
            got = self._stash.pop(tick, [])
            while len(got) < len(self.peers):
                msg = self._recv(self.spin)
                if isinstance(msg, m.Borders):
                    if msg.tick == tick:
                        got.append(msg.borders)
                    else:
                        self._keep(msg)
                elif isinstance(msg, m.Stop):
                    raise Stop
                else:
                    raise m.MessageError(f"worker {me} got {m.name(msg)} while waiting "
                                          f"for borders of tick {tick}")
            for items in got:
                for src, dst, border in items:
                    inbound[dst].append((src, border))
            # Peers still waiting for the tail of a large border get it now, not after our
            # absorb (socket transport only; queue transports hand over on send).
            if not self.ep.flush(self.recv_timeout):
                raise TimeoutError(f"worker {me} could not deliver its borders of tick {tick}")
        if absorb:
            self._absorb(inbound)
            if self.checkpointing:
                self._checkpoint()
        return inbound

    def _recv(self, spin: float = 0.0) -> m.Message:
        assert self.ep is not None
        msg = self.ep.recv_message(self.recv_timeout, spin)
        if msg is None:
            raise TimeoutError(f"worker {self.w} received nothing for {self.recv_timeout} s")
        return msg

    def rows(self) -> list[Any]:
        return [row for r in self.regions for row in self.shards[r].rows()]

    # ---- the loop ----------------------------------------------------------------------------
    def serve(self) -> None:
        """Answer the coordinator until STOP (or until a message cannot be handled)."""
        ep = self.ep
        assert ep is not None
        coord = self.coord
        clock = time.perf_counter
        spin = self.tick_spin
        idle = spin  # the last wait for a TICK, from the report before it
        reported = clock()
        while True:
            try:
                msg = self._recv(spin if idle < spin else 0.0)
            except TimeoutError:
                continue  # idle between ticks is fine: the coordinator owns the watchdog
            if isinstance(msg, m.Tick):
                idle = clock() - reported
                report, results = self.step(msg.tick, msg.inputs, msg.view, msg.jobs)
                if ep.in_memory:  # as a byte channel would deliver them, here in parallel
                    results = m.as_sent(results)
                ep.send_message(coord, m.Done(self.w, msg.tick, report, results))
                self.after_report()
                reported = clock()
            elif isinstance(msg, m.Borders):
                self._keep(msg)
            elif isinstance(msg, m.Rows):
                ep.send_message(coord, m.RowsOk(self.w, self.rows()))
            elif isinstance(msg, m.Stop):
                return
            else:
                raise m.MessageError(f"worker {self.w} cannot handle {m.name(msg)}")

    def _keep(self, msg: m.Borders) -> None:
        """Borders of a later tick (a peer is ahead by one tick at most, the lockstep's bound):
        kept until that tick.  More ticks ahead than :data:`STASH_TICKS` is a bug, not load."""
        if msg.tick not in self._stash and len(self._stash) >= STASH_TICKS:
            raise m.MessageError(f"worker {self.w} holds borders of {len(self._stash)} future "
                                  f"ticks; a peer cannot be that far ahead in lockstep")
        self._stash.setdefault(msg.tick, []).append(msg.borders)


def _interp_id() -> int:
    try:
        from server.runtime import interp
        return interp.current_id()
    except Exception:
        return -1


#: Kinds of worker a backend can host, by the name a spec gives in ``"kind"`` (default
#: ``"shard"``): ``"module:Class"``, imported inside the worker (a subinterpreter or process
#: imports only what its kind needs).  A kind takes ``(spec, endpoint, coordinator index)``, has
#: an ``info`` dict for the Hello and ``serve()``, which returns when told to stop.
KINDS: dict[str, str] = {"shard": "server.runtime.worker:WorkerCore"}


class Worker(Protocol):
    """What a worker kind provides (see :data:`KINDS`)."""

    info: dict[str, Any]

    def serve(self) -> None: ...


def worker_kind(name: str) -> Callable[[Mapping[str, Any], Endpoint, int], Worker]:
    """The class of worker kind ``name``.

    Raises:
        MessageError: no such kind (a spec from another version).
    """
    target = KINDS.get(name)
    if target is None:
        raise m.MessageError(f"unknown worker kind {name!r}; known: {', '.join(sorted(KINDS))}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def run_worker(spec: Mapping[str, Any], ep: Endpoint, coord: int) -> None:
    """Build the worker of the spec's kind, say Hello, serve until Stop; report any failure as
    Fail.

    Shared by every backend's entry point; never raises (the coordinator learns what happened).
    """
    w = spec["w"]
    try:
        cpu = spec.get("cpu")
        pinned = cpu is not None and pin_thread(cpu)
        core = worker_kind(spec.get("kind", "shard"))(spec, ep, coord)
        # The spec's rows (a list per entity) are in the shards now.  Kept alive, the collector
        # would walk them in every full collection for the whole run: 46 ms a collection with
        # 200,000 entities in one process, a late tick at 30 Hz.  Callers pass the spec as
        # the only reference (see thread_main), so this frees it.
        del spec
        ep.send_message(coord, m.Hello(w, dict(core.info, cpu=cpu) if pinned else core.info))
        core.serve()
    except Stop:
        pass
    except BaseException as exc:
        kind = type(exc).__name__
        with contextlib.suppress(Exception):
            ep.send_message(coord, m.Fail(w, kind, "".join(traceback.format_exception(exc))))


# ---- entry points, one per backend ---------------------------------------------------------------
def thread_main(spec: Mapping[str, Any], ep: Endpoint, coord: int) -> None:
    """Entry point of a worker thread.

    The spec is decoded again *inside* the thread, as the other backends do, so the config's
    floats and the rows' ints the kernel touches every tick are objects this thread created:
    on the free-threaded build, reference counting on another thread's objects is atomic.
    (On a 16-core machine this alone did not measurably change the per-region slowdown at 16
    threads: bench/results/2026-11-26-device16/diagnostics.md.)
    """
    import msgpack

    data = msgpack.packb(dict(spec), use_bin_type=True)
    del spec  # the coordinator's copy: run_worker must hold the only reference (it drops it)
    run_worker(msgpack.unpackb(data, raw=False, strict_map_key=False), ep, coord)


def process_main(index: int, coord: int, fds_json: str) -> None:
    """Entry point of a worker process (``python -c`` boot line, see the runtime).

    ``fds_json`` maps peer index -> inherited socket fd; the first frame from the coordinator
    is this worker's spec.
    """
    import json
    import socket

    import msgpack

    from server.runtime.channels import FdEndpoint, read_frame
    tune()
    socks = {int(peer): socket.socket(fileno=fd) for peer, fd in json.loads(fds_json).items()}
    try:
        # Read the spec from the coordinator's socket itself (blocking): a peer that started
        # sooner may already have sent its first borders on another socket.
        data = read_frame(socks[coord])
    except OSError as exc:
        print(f"paratick worker {index}: no spec from the coordinator: {exc}", file=sys.stderr)
        return
    ep = FdEndpoint(index, socks)
    try:
        run_worker(msgpack.unpackb(data, raw=False, strict_map_key=False), ep, coord)
    except Exception as exc:  # before the spec arrived: nobody to report to but stderr
        print(f"paratick worker {index}: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        ep.close()


def interp_main(spec_bytes: bytes, index: int, desc_bytes: bytes, coord: int) -> None:
    """Called by the boot script inside a worker subinterpreter."""
    import msgpack

    from server.runtime.channels import InterpEndpoint
    tune_gc()  # each interpreter has a collector of its own
    desc = msgpack.unpackb(desc_bytes, raw=False, strict_map_key=False)
    ep = InterpEndpoint(index, desc)
    try:
        run_worker(msgpack.unpackb(spec_bytes, raw=False, strict_map_key=False), ep, coord)
    finally:
        ep.close()
