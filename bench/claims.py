"""``paratick bench claims``: common claims about subinterpreters and free threading, measured.

Each claim is measured in a fresh subprocess of each build (``python -m bench.claims --probe``)
and printed next to the value usually quoted, with a verdict:

* **start-up** -- ``_interpreters.create()`` (isolated config, own GIL: PEP 684) timed one at a
  time, and N created at once from N threads; plus what a paratick worker really pays (create +
  ``import sim.world``), a process start and a thread start for comparison.  Claim: ~50 ms per
  interpreter.
* **memory** -- resident memory added per interpreter (bare, and with paratick's worker imports),
  per worker process (its proportional set size, PSS, so shared library pages are split fairly),
  and per thread.  Claim: ~1 MB per interpreter.
* **message cost** -- one-way latency of a 1 KB and a 64 KB ``bytes`` message, measured as half a
  ping-pong round trip: between two threads over ``queue.Queue``; between the main interpreter and
  a subinterpreter over ``_interpqueues`` (3.13's private cross-interpreter queue; the public
  ``interpreters.queues.Queue.get`` polls with a 10 ms sleep, so we busy-poll ``get_count`` to
  measure the transport, not that sleep); and between processes over an OS pipe.  Claim: < 1 ms.
* **single-thread overhead** -- the tick kernel (arena-20k ticked by :class:`sim.world.World`
  in one thread) under the free-threaded build vs the GIL build, repeats interleaved.
  Claim: 5–8 % slower.

The private modules are 3.13's (``_interpreters``, ``_interpqueues``); PEP 734 made them public as
``concurrent.interpreters`` in 3.14.

Each claim names its **source** and the **CPython version it speaks of** (:data:`CLAIMS`), and,
where CPython's own documentation states a figure for the same thing, quotes it with its URL:
the 5–8 % single-thread slowdown, for instance, is the range PEP 703 reported for its 2023
prototype; CPython's free-threading HOWTO says "about 40%" for 3.13 and "about 1% on macOS
aarch64 to 8% on x86-64 Linux" for 3.14.  A figure measured on 3.13 speaks to 3.13 only.

Verdicts use :func:`bench.stats.verdict`: a claim *holds* when the whole 95 % bootstrap interval
of the measured figure is within its bound, *does not hold* when the whole interval is outside,
and is *undecided* otherwise.  Figures measured once (memory, message cost: one average over many
rounds) have no interval and say so ("measured once, no interval").
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import schema, stats
from bench.ceiling import StartLine, released_together
from bench.errors import StatsError
from bench.summary import claims_table
from server.cli import alias

DESCRIPTION = """\
Common claims about subinterpreters and free threading, measured on this machine and printed
next to the value usually quoted, with a verdict.  Each claim is measured in a fresh process of
each interpreter build:

  start-up       creating a subinterpreter (own GIL, PEP 684) one at a time and N at once from
                 N threads, plus what a paratick worker pays (create + import the world), a
                 process start and a thread start.  Claim: ~50 ms per interpreter.
  memory         resident memory added per interpreter (bare and with paratick's imports), per
                 worker process (proportional set size) and per thread.  Claim: ~1 MB each.
  message cost   one-way latency of a 1 KB and a 64 KB message, half a ping-pong round trip:
                 thread to thread, main interpreter to subinterpreter (3.13's private queue,
                 busy-polled so the transport is measured, not the public queue's 10 ms sleep),
                 and process to process over a pipe.  Claim: < 1 ms.
  overhead       the tick kernel on arena-20k in one thread, free-threaded build against the
                 GIL build, repeats interleaved.  Claim: 5-8 % slower.

Each claim is printed with its source and the CPython version it speaks of, and where CPython's
documentation gives its own figure, that figure and its URL.  A claim holds when the whole 95 %
bootstrap interval of the measured figure is within its bound, does not hold when the whole
interval is outside, and is undecided otherwise; figures measured once say so.

results.json and report.md go to --out."""

#: The free-threading HOWTO and What's New pages whose figures are quoted beside the claims.
HOWTO_313 = "https://docs.python.org/3.13/howto/free-threading-python.html"
HOWTO_314 = "https://docs.python.org/3.14/howto/free-threading-python.html"
WHATSNEW_314 = "https://docs.python.org/3.14/whatsnew/3.14.html"
PEP_703 = "https://peps.python.org/pep-0703/"


@dataclass(frozen=True)
class Claim:
    """A claim as usually quoted, the bound it is judged against, and where it comes from."""

    text: str
    unit: str
    #: the bound the verdict rule checks (a "~50 ms" is read as "at most 50 ms")
    target: float
    want: stats.Want
    #: who said it
    who: str
    #: which CPython the claim speaks of
    cpython: str
    url: str | None = None
    #: what CPython's own documentation says about the same figure: (version, quote, url)
    official: tuple[tuple[str, str, str], ...] = ()

    def source(self) -> dict[str, Any]:
        return {"who": self.who, "cpython": self.cpython, "url": self.url,
                "official": [{"cpython": v, "says": q, "url": u} for v, q, u in self.official]}


#: Claims as usually quoted, with the bound we judge them against and their sources.
CLAIMS: dict[str, Claim] = {
    "startup_ms": Claim(
        "~50 ms start-up per interpreter", "ms", 50.0, "at most",
        who="seed article (a figure commonly quoted for subinterpreters; CPython's "
            "documentation states none)",
        cpython="3.12+ subinterpreters with their own GIL (PEP 684); measured here on 3.13"),
    "memory_mb": Claim(
        "~1 MB per interpreter", "MB", 1.0, "at most",
        who="seed article (commonly quoted; CPython's documentation states no figure)",
        cpython="3.12+ subinterpreters (PEP 684); measured here on 3.13"),
    "message_ms": Claim(
        "<1 ms per message", "ms", 1.0, "at most",
        who="seed article (commonly quoted; CPython's documentation states no figure)",
        cpython="any CPython for thread queues and pipes; subinterpreter queues as in 3.13 "
                "(private _interpqueues; public in 3.14, PEP 734); measured here on 3.13"),
    "ft_overhead_pct": Claim(
        "5–8% single-thread overhead", "%", 8.0, "at most",
        who="seed article; the range PEP 703 reported for its --disable-gil prototype (6 % "
            "Intel Skylake, 5 % AMD Zen 3 single-threaded; 8 % / 7 % multi-threaded, "
            "pyperformance)",
        cpython="PEP 703's 2023 prototype, before 3.13; not 3.13t (measured here)",
        url=PEP_703,
        official=(
            ("3.13", "In 3.13, this overhead is about 40% on the pyperformance suite. [...] "
                     "The largest impact is because the specializing adaptive interpreter "
                     "(PEP 659) is disabled in the free-threaded build.", HOWTO_313),
            ("3.14", "On the pyperformance benchmark suite, the average overhead ranges from "
                     "about 1% on macOS aarch64 to 8% on x86-64 Linux systems.", HOWTO_314),
            ("3.14", "The performance penalty on single-threaded code in free-threaded mode "
                     "is now roughly 5-10%, depending on the platform and C compiler used.",
             WHATSNEW_314),
        )),
}

#: The verdict rule's answers as a claim's verdict.
CLAIM_WORDS = {stats.MET: "holds", stats.NOT_MET: "does not hold",
               stats.UNDECIDED: "undecided"}

_clock = time.perf_counter


def _round_trips(a: Any, payload: bytes, rounds: int) -> float:
    """Seconds for ``rounds`` exchanges on endpoint ``a``: send to participant 1, wait for
    its echo."""
    t0 = _clock()
    for _ in range(rounds):
        a.send(1, payload)
        a.recv(timeout=30)
    return _clock() - t0


# --- probes: run inside the interpreter under test ---------------------------------------------


def _rss_kib(pid: int | str = "self", field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


WORKER_IMPORTS = "import msgpack, sim.world, sim.shard"


def probe_startup(n: int, repeats: int) -> dict[str, Any]:
    import _interpreters  # private in 3.13; public as concurrent.interpreters in 3.14 (PEP 734)

    def one(code: str | None) -> float:
        t = _clock()
        iid = _interpreters.create()
        if code:
            _interpreters.exec(iid, code)
        dt = _clock() - t
        _interpreters.destroy(iid)
        return dt * 1000

    bare = [one(None) for _ in range(repeats)]
    worker = [one(WORKER_IMPORTS) for _ in range(repeats)]
    # N at once: N threads each create one interpreter, released together.
    barrier = StartLine(n + 1, _clock)
    ids: list[int] = []
    lock = threading.Lock()

    def make() -> None:
        barrier.wait()
        iid = _interpreters.create()
        with lock:
            ids.append(iid)

    together = released_together([threading.Thread(target=make) for _ in range(n)], barrier,
                                 _clock) * 1000
    for iid in ids:
        _interpreters.destroy(iid)
    procs = []
    for _ in range(repeats):
        t1 = _clock()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        procs.append((_clock() - t1) * 1000)
    thr = []
    for _ in range(repeats):
        t1 = _clock()
        th = threading.Thread(target=lambda: None)
        th.start()
        th.join()
        thr.append((_clock() - t1) * 1000)
    return {"interpreter_ms": stats.median(bare), "interpreter_samples_ms": bare,
            "interpreter_worker_ms": stats.median(worker),
            "n": n, "n_together_ms": together, "process_ms": stats.median(procs),
            "thread_ms": stats.median(thr)}


def probe_memory(k: int) -> dict[str, Any]:
    import _interpreters

    def per_interp(code: str | None) -> float:
        before = _rss_kib()
        ids = [_interpreters.create() for _ in range(k)]
        if code:
            for iid in ids:
                _interpreters.exec(iid, code)
        added = _rss_kib() - before
        for iid in ids:
            _interpreters.destroy(iid)
        return added / k / 1024

    bare = per_interp(None)
    worker = per_interp(WORKER_IMPORTS)
    code = f"{WORKER_IMPORTS}\nimport sys\nprint('ready', flush=True)\nsys.stdin.readline()\n"
    children = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(k)]
    try:
        for c in children:
            assert c.stdout is not None
            c.stdout.readline()
        pss = [_pss_kib(c.pid) / 1024 for c in children]
        rss = [_rss_kib(c.pid) / 1024 for c in children]
    finally:
        for c in children:
            assert c.stdin is not None
            c.stdin.close()
            c.wait(timeout=30)
    stop = threading.Event()
    before = _rss_kib()
    threads = [threading.Thread(target=stop.wait) for _ in range(k)]
    for t in threads:
        t.start()
    thread_mb = (_rss_kib() - before) / k / 1024
    stop.set()
    for t in threads:
        t.join()
    return {"k": k, "interpreter_mb": bare, "interpreter_worker_mb": worker,
            "process_pss_mb": stats.median(pss), "process_rss_mb": stats.median(rss),
            "thread_mb": thread_mb}


def _pingpong_threads(payload: bytes, rounds: int) -> float:
    a: queue.Queue[bytes] = queue.Queue(maxsize=1)
    b: queue.Queue[bytes] = queue.Queue(maxsize=1)

    def echo() -> None:
        for _ in range(rounds):
            b.put(a.get())

    t = threading.Thread(target=echo)
    t.start()
    t0 = _clock()
    for _ in range(rounds):
        a.put(payload)
        b.get()
    dt = _clock() - t0
    t.join()
    return dt


def _pingpong_interp(payload: bytes, rounds: int) -> float:
    import _interpqueues as Q  # private in 3.13 (PEP 734)
    import _interpreters

    # fmt 0 = pass the bytes' data across, unboundop 1 = remove items of a destroyed interpreter
    qa, qb = Q.create(1, 0, 1), Q.create(1, 0, 1)
    iid = _interpreters.create()
    code = (f"import _interpqueues as Q\n"
            f"for _ in range({rounds}):\n"
            f"    while Q.get_count({qa}) == 0:\n"
            f"        pass\n"
            f"    obj = Q.get({qa})[0]\n"
            f"    Q.put({qb}, obj, 0, 1)\n")
    th = threading.Thread(target=_interpreters.exec, args=(iid, code))
    th.start()
    t0 = _clock()
    for _ in range(rounds):
        Q.put(qa, payload, 0, 1)
        while Q.get_count(qb) == 0:
            pass
        Q.get(qb)
    dt = _clock() - t0
    th.join()
    _interpreters.destroy(iid)
    Q.destroy(qa)
    Q.destroy(qb)
    return dt


def _pingpong_process(payload: bytes, rounds: int) -> float:
    code = ("import sys\nr, w = sys.stdin.buffer, sys.stdout.buffer\n"
            f"for _ in range({rounds}):\n"
            "    n = int.from_bytes(r.read(4), 'little')\n"
            "    data = r.read(n)\n"
            "    w.write(len(data).to_bytes(4, 'little') + data)\n"
            "    w.flush()\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    assert p.stdin is not None and p.stdout is not None
    frame = len(payload).to_bytes(4, "little") + payload
    t0 = _clock()
    for _ in range(rounds):
        p.stdin.write(frame)
        p.stdin.flush()
        n = int.from_bytes(p.stdout.read(4), "little")
        p.stdout.read(n)
    dt = _clock() - t0
    p.stdin.close()
    p.wait(timeout=30)
    return dt


def _runtime_channels() -> Any:
    """server.runtime.channels when the runtime is installed, else None (primitives are used)."""
    try:
        from server.runtime import channels
    except ImportError:
        return None
    return channels


def _rt_pingpong_threads(payload: bytes, rounds: int) -> float:
    ch = _runtime_channels()
    hub = ch.ThreadHub(2, ch.capacity(1))
    a, b = hub.endpoint(0), hub.endpoint(1)

    def echo() -> None:
        for _ in range(rounds):
            b.send(0, b.recv())

    t = threading.Thread(target=echo)
    t.start()
    t0 = _clock()
    for _ in range(rounds):
        a.send(1, payload)
        a.recv()
    dt = _clock() - t0
    t.join()
    return dt


def _rt_pingpong_interp(payload: bytes, rounds: int) -> float:
    import _interpreters

    ch = _runtime_channels()
    hub = ch.InterpHub(2, ch.capacity(1))
    a = hub.endpoint(0)
    iid = _interpreters.create()
    code = ("from server.runtime.channels import InterpEndpoint\n"
            f"ep = InterpEndpoint(1, {hub.describe()!r})\n"
            f"for _ in range({rounds}):\n"
            "    ep.send(0, ep.recv())\n")
    # No ep.close() in the echo: it would release the queues' references before the main
    # interpreter has taken the last reply; destroying the interpreter afterwards releases them.
    errors: list[object] = []
    th = threading.Thread(target=lambda: errors.append(_interpreters.exec(iid, code)))
    th.start()
    dt = _round_trips(a, payload, rounds)
    th.join()
    _interpreters.destroy(iid)
    hub.close()
    if errors and errors[0] is not None:
        raise RuntimeError(f"echo interpreter failed: {errors[0]}")
    return dt


def _rt_pingpong_process(payload: bytes, rounds: int) -> float:
    ch = _runtime_channels()
    mesh = ch.socket_mesh(2)
    child_sock = mesh[1][0]
    code = ("import socket, sys\n"
            "from server.runtime.channels import FdEndpoint\n"
            f"sock = socket.socket(fileno={child_sock.fileno()})\n"
            "ep = FdEndpoint(1, {0: sock})\n"
            f"for _ in range({rounds}):\n"
            "    ep.send(0, ep.recv())\n"
            "ep.close()\n")
    p = subprocess.Popen([sys.executable, "-c", code], pass_fds=(child_sock.fileno(),))
    child_sock.close()
    a = ch.FdEndpoint(0, {1: mesh[0][1]})
    dt = _round_trips(a, payload, rounds)
    a.close()
    p.wait(timeout=30)
    return dt


def probe_messages(rounds: int) -> dict[str, Any]:
    """One-way message latency per transport and size: the runtime's own channels when
    ``server.runtime`` is importable (what the tick loop really pays), else the primitives."""
    runtime = _runtime_channels() is not None
    out: dict[str, Any] = {"rounds": rounds,
                           "transport": "server.runtime.channels" if runtime else "primitives"}
    kinds: dict[str, Callable[[bytes, int], float]] = (
        {"thread_queue": _rt_pingpong_threads, "interp_queue": _rt_pingpong_interp,
         "process_pipe": _rt_pingpong_process} if runtime else
        {"thread_queue": _pingpong_threads, "interp_queue": _pingpong_interp,
         "process_pipe": _pingpong_process})
    for size in (1024, 65536):
        payload = os.urandom(size)
        for name, fn in kinds.items():
            fn(payload, max(1, rounds // 10))  # warm-up
            out[f"{name}_{size}_ms"] = fn(payload, rounds) / rounds / 2 * 1000
    return out


def probe_kernel(entities: int, ticks: int) -> dict[str, Any]:
    from server.host import gil_enabled
    from sim.config import WorldConfig
    from sim.world import World, spawn

    config = WorldConfig(regions_x=4, regions_y=4, radius=4.0, seed=1)
    world = World(config, spawn(config, entities))
    world.step()  # warm-up
    t0 = _clock()
    for _ in range(ticks):
        world.step()
    return {"ticks_per_s": ticks / (_clock() - t0), "gil_enabled": gil_enabled(),
            "digest": world.digest()}


def probe(quick: bool) -> dict[str, Any]:
    from server.host import gil_enabled, usable_cores

    n = max(2, usable_cores())
    return {"gil_enabled": gil_enabled(),
            "startup": probe_startup(n, 3 if quick else 10),
            "memory": probe_memory(4 if quick else 8),
            "messages": probe_messages(200 if quick else 2000)}


# --- driver --------------------------------------------------------------------------------


def _judged(key: str, measured: float, ci: stats.Interval | None) -> dict[str, Any]:
    """The claim's fields of a row: its text, source, interval and verdict (module docstring)."""
    claim = CLAIMS[key]
    if ci is None:
        word = stats.verdict((measured, measured), claim.target, claim.want)
        verdict = f"{CLAIM_WORDS[word]} ({stats.MEASURED_ONCE})"
    else:
        verdict = CLAIM_WORDS[stats.verdict(ci, claim.target, claim.want)]
    return {"claimed": claim.text, "unit": claim.unit, "measured": measured,
            "ci": None if ci is None else ci.to_dict(), "verdict": verdict,
            "source": claim.source()}


def _median_ci(samples: list[float] | None) -> stats.Interval | None:
    try:
        return stats.median_ci(samples) if samples else None
    except StatsError:  # one sample: measured once
        return None


def judge(per_build: dict[str, dict[str, Any]], kernel: dict[str, list[dict[str, Any]]],
          ) -> list[dict[str, Any]]:
    """Turn probe answers into claim rows (pure; tested with synthetic probes)."""
    rows: list[dict[str, Any]] = []
    for build, p in per_build.items():
        s, m, msg = p["startup"], p["memory"], p["messages"]
        ci = _median_ci(s.get("interpreter_samples_ms"))
        rows.append({"name": f"start-up per interpreter [{build}]",
                     **_judged("startup_ms", ci.estimate if ci else s["interpreter_ms"], ci),
                     "detail": (f"median of {ci.n[0] if ci else 'the'} interpreters created "
                                f"one at a time; with worker imports "
                                f"{s['interpreter_worker_ms']:.1f} ms; "
                                f"{s['n']} at once {s['n_together_ms']:.1f} ms; process "
                                f"{s['process_ms']:.1f} ms; thread {s['thread_ms']:.3f} ms"),
                     "values": s})
        rows.append({"name": f"memory per interpreter [{build}]",
                     **_judged("memory_mb", m["interpreter_mb"], None),
                     "detail": (f"RSS added by {m['k']} interpreters, per interpreter; with "
                                f"worker imports {m['interpreter_worker_mb']:.1f} MB; "
                                f"worker process PSS {m['process_pss_mb']:.1f} MB (RSS "
                                f"{m['process_rss_mb']:.1f}); thread {m['thread_mb']:.2f} MB"),
                     "values": m})
        names = {"interp_queue": "subinterpreter channel", "thread_queue": "thread queue",
                 "process_pipe": "process pipe"}
        via = msg.get("transport", "primitives")
        for size in (1024, 65536):
            for key, label in names.items():
                value = msg[f"{key}_{size}_ms"]
                rows.append({"name": f"{size // 1024} KB message, {label}, one way [{build}]",
                             **_judged("message_ms", value, None),
                             "detail": (f"half a ping-pong round trip over {via}, mean of "
                                        f"{msg.get('rounds', 'many')} rounds"),
                             "values": {"size": size, "transport": via}})
    if "gil" in kernel and "ft" in kernel:
        gs = [r["ticks_per_s"] for r in kernel["gil"]]
        fs = [r["ticks_per_s"] for r in kernel["ft"]]
        g, f = stats.median(gs), stats.median(fs)
        pct = (g / f - 1.0) * 100.0
        # the slowdown is median(gil) / median(ft) - 1: the ratio's interval, shifted and scaled
        try:
            ratio = stats.ratio_ci(gs, fs)
            pct_ci: stats.Interval | None = stats.Interval(
                estimate=pct, low=(ratio.low - 1.0) * 100.0, high=(ratio.high - 1.0) * 100.0,
                confidence=ratio.confidence, resamples=ratio.resamples, n=ratio.n)
        except StatsError:
            pct_ci = None
        extra = ""
        if "ft-gil" in kernel:
            fg = stats.median(r["ticks_per_s"] for r in kernel["ft-gil"])
            extra = f"; 3.13t with PYTHON_GIL=1: {(g / fg - 1.0) * 100.0:.1f}%"
        rows.append({"name": "free-threaded single-thread slowdown (tick kernel)",
                     **_judged("ft_overhead_pct", pct, pct_ci),
                     "detail": (f"GIL build {g:.2f} ticks/s, free-threaded {f:.2f} ticks/s "
                                f"(medians of {len(gs)}, interleaved){extra}; "
                                "both builds without PGO; 3.13t runs without the specializing "
                                "adaptive interpreter (PEP 659), which the 3.13 free-threading "
                                "HOWTO names as the largest impact"),
                     "values": {"gil": g, "ft": f}})
    return rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="fewer repeats and rounds")
    p.add_argument("--builds", default=None, help="comma list (default gil,ft,ft-gil)")
    p.add_argument("--venvs", default=None, help="folder holding gil/ and ft/ venvs")
    entities = p.add_argument("--entities", type=int, default=20_000, metavar="N",
                              help="entities in the world of the single-thread comparison "
                                   "(default 20000: arena-20k)")
    alias(p, "--kernel-entities", of=entities)
    schema.add_out_argument(p, quick=True)
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--probe", choices=("all", "kernel"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--ticks", type=int, default=None, help=argparse.SUPPRESS)


def _run_probe(python: str, env: dict[str, str], root: Path, args: list[str]) -> dict[str, Any]:
    from bench.errors import CellError

    proc = subprocess.run([python, "-m", "bench.claims", *args], capture_output=True, text=True,
                          env=env, cwd=root, timeout=600, check=False)
    if proc.returncode != 0:
        raise CellError(f"claims probe failed under {python}: {proc.stderr.strip()[-400:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run(args: argparse.Namespace) -> int:
    if args.probe == "all":
        print(json.dumps(probe(args.quick)))
        return 0
    if args.probe == "kernel":
        print(json.dumps(probe_kernel(args.entities, args.ticks or 5)))
        return 0
    from bench import env, report, schema
    from bench.builds import ALL_BUILDS, find_venvs, make_build, repo_root

    root = repo_root()
    names = tuple(x for x in (args.builds or ",".join(ALL_BUILDS)).split(",") if x)
    venvs = find_venvs(root, args.venvs)
    builds = [make_build(n, venvs) for n in names]
    per_build: dict[str, dict[str, Any]] = {}

    def say(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    for b in builds:
        if b.name == "ft-gil":
            continue  # same binary as ft: start-up/memory/messages differ only by the GIL
        say(f"claims: probing {b.label} ...")
        per_build[b.name] = _run_probe(b.python, b.environ(root), root,
                                       ["--probe", "all"] + (["--quick"] if args.quick else []))
    kernel: dict[str, list[dict[str, Any]]] = {b.name: [] for b in builds}
    reps = 3 if args.quick else 5
    ticks = 3 if args.quick else 8
    for r in range(reps):  # interleaved: gil ft ft-gil, gil ft ft-gil, ...
        for b in builds:
            say(f"claims: tick kernel round {r + 1}/{reps} on {b.label}")
            kernel[b.name].append(_run_probe(
                b.python, b.environ(root), root,
                ["--probe", "kernel", "--entities", str(args.entities),
                 "--ticks", str(ticks)]))
    rows = judge(per_build, kernel)
    section = {"created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
               "command": ["paratick", "bench", "claims", *sys.argv[3:]],
               "environment": env.capture_builds(root, builds), "claims": rows,
               "raw": {"probes": per_build, "kernel": kernel}}
    out = args.out or schema.results_dir(quick=args.quick)
    schema.save_section(out, "claims", section)
    print(claims_table(section))
    for path in report.write(out, plots=True):
        print(path)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.claims")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
