"""``paratick bench load``: server + bots, GIL vs free-threaded, under a real load.

Theory of operation
-------------------
For each build (interpreter) and parallel backend, a *probe* starts ``paratick serve`` as a
subprocess of that build's interpreter on a free loopback port, waits until ``GET /stats``
answers, runs ``paratick bots --json`` (same interpreter) for a fixed duration while polling
``/stats`` once a second, then stops the server with SIGINT.  A probe **holds** when (see
:func:`holds`): every bot connected and none dropped, the server's p99 MSPT stayed within the
tick budget (33.3 ms at 30 Hz), the bots' p99 input→acknowledgement latency is at most 100 ms,
and the measured tick rate never fell below 95 % of the target.

:func:`bounded_search` finds the largest passing value of one knob (entities with bots fixed,
then bots with entities fixed) by doubling from a start value while probes pass (halving while
they fail, so a start that is too high still finds the answer below it), then bisecting between
the last pass and the first fail for a bounded number of probes:
at most ``max_probes`` probes per search, so the run time is bounded whatever the machine.
Finally one probe at a fixed load records MSPT percentiles for every configuration, the
comparison readers want ("GIL vs no-GIL at the same load").

Every figure of a probe is taken over its *loaded window* (:func:`window`): from the first
``/stats`` sample in which every bot is playing to the last, so neither the bots' connecting
ramp nor their goodbyes dilute it.  MSPT percentiles are those of every tick in the window (the
server lists its newest tick durations, numbered, in ``/stats``; the poller stitches them
together), server CPU per second is the server's process group's CPU time across the window
over its length, and the tick rate is the window's tick count over its length.  The bots'
latency comes from the bots' report, over its own steady part (acks from a second after the
last bot started, :data:`clients.bots.STEADY_SETTLE_S`); the acks of the ramp before it are
recorded apart (``ack_ramp_ms``), not judged.  Server and bots run on the same machine, which
the report says plainly.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import itertools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import schema
from bench.builds import ALL_BUILDS, Build, find_venvs, make_build, repo_root, run_group
from bench.errors import CellError
from bench.summary import load_table
from server.cli import alias
from server.loops import LOOPS
from server.quantiles import percentiles
from server.runtime import BACKENDS
from sim.config import parse_grid
from sim.errors import ConfigError
from sim.kernels import KERNELS

DESCRIPTION = """\
Start `paratick serve` and `paratick bots` on this machine, for each interpreter build and
backend, and find the largest load that holds the tick rate.  A probe holds when every bot
connected and none was dropped, the server's p99 MSPT stayed within the 33.3 ms budget of 30 Hz,
the bots' p99 input->ack latency was at most 100 ms, and the tick rate never fell below 95 % of
30 Hz.

Every configuration first plays a fixed load (--npcs NPCs and --bots bots: GIL against
free-threaded at the same load); then two bounded searches find the most NPCs that hold with
--search-bots bots, and the most bots that hold with --npcs NPCs (doubling from a start while
probes hold, halving while they fail, then bisecting; at most --max-probes probes each).  Each bot
also adds a player entity to the world.  The server's figures (every tick's MSPT, the tick rate,
its CPU per bot-second) are taken while every bot is playing, not while they connect or leave.
Server and bots share this machine's cores, which the report says.  With --time-budget no probe
starts once the budget is spent; Ctrl-C (or SIGINT from a time limit) stops the probe under way.
Either way, what the probes before it measured is saved and the report says the run stopped
early.  results.json, report.md and the plots go to --out."""

#: Backends probed by default: every one with workers beside the server's event loop.
PARALLEL_BACKENDS = tuple(b for b in BACKENDS if b != "inline")
#: Goals: 30 Hz ticks, 20 snapshots a second per bot, p99 MSPT within the 33.3 ms budget, p99
#: input->ack within 100 ms (a tenth of a second is where players start to feel input lag).
TICK_RATE = 30.0
SNAPSHOT_RATE = 20.0
MSPT_BUDGET_MS = 1000.0 / TICK_RATE
ACK_P99_MS = 100.0
#: the tick rate (and the bots' snapshot rate) may dip this much below target before the probe
#: fails
RATE_TOLERANCE = 0.95
#: seconds to wait for the server's /stats to answer before declaring the start failed
#: (spawning 100k+ entities and starting workers takes a few seconds on 2 cores)
START_TIMEOUT_S = 90.0
#: serve's default world, which load runs use: its side and view radius (``--regions auto``)
WORLD_SIZE = 2048.0
VIEW_RADIUS = 128.0
#: seconds the server ticks before the bots start, so start-up ticks (imports, first border
#: exchange) weigh less in its rolling MSPT window
SETTLE_S = 5.0


@dataclass(frozen=True)
class Criteria:
    """What "holds the tick rate" means; defaults are the goals."""

    mspt_p99_ms: float = MSPT_BUDGET_MS
    ack_p99_ms: float = ACK_P99_MS
    min_rate: float = TICK_RATE * RATE_TOLERANCE
    min_snapshot_rate: float = SNAPSHOT_RATE * RATE_TOLERANCE


def holds(bots_report: dict[str, Any], expected_bots: int,
          criteria: Criteria = Criteria(), *, tick_rate: float | None = None,
          mspt_p99: float | None = None) -> tuple[bool, list[str]]:
    """Whether one probe met every criterion, and the reasons it did not (pure).

    ``tick_rate`` and ``mspt_p99`` are measured over the probe's loaded window (see
    :func:`window`); without them the bots' lowest sample of the server's since-start rate and
    highest sample of its rolling p99 are used.
    """
    why: list[str] = []
    if bots_report.get("connected") != expected_bots:
        why.append(f"{bots_report.get('connected')} of {expected_bots} bots connected")
    if bots_report.get("dropped"):
        why.append(f"{bots_report['dropped']} bots dropped")
    srv = bots_report.get("server") or {}
    p99 = mspt_p99 if mspt_p99 is not None else srv.get("mspt_p99_max")
    if p99 is None:
        why.append("no server MSPT sample")
    elif p99 > criteria.mspt_p99_ms:
        why.append(f"p99 MSPT {p99:.1f} ms > {criteria.mspt_p99_ms:.1f} ms")
    rate = tick_rate if tick_rate is not None else srv.get("tick_rate_min")
    if rate is not None and rate < criteria.min_rate:
        why.append(f"tick rate fell to {rate:.1f} Hz")
    # over the steady part where the bots report it (as every other figure), else the whole run
    snaps = bots_report.get("steady_snapshots_per_bot_s")
    if snaps is None:
        snaps = bots_report.get("snapshots_per_bot_s")
    if snaps is not None and snaps < criteria.min_snapshot_rate:
        why.append(f"{snaps:.1f} snapshots/s per bot < {criteria.min_snapshot_rate:g}")
    lat = (bots_report.get("latency_ms") or {}).get("p99")
    if lat is None:
        why.append("no input->ack latency sample")
    elif lat > criteria.ack_p99_ms:
        why.append(f"p99 input->ack {lat:.1f} ms > {criteria.ack_p99_ms:.0f} ms")
    return not why, why


def bounded_search(passes: Callable[[int], bool], *, start: int, limit: int,
                   max_probes: int) -> tuple[int | None, list[tuple[int, bool]]]:
    """Largest ``n`` in [1, limit] with ``passes(n)``, assuming monotonicity (pure).

    From ``start`` it doubles while probes pass (up to ``limit``) or halves while they fail
    (down to 1), until it has a passing and a failing value, then bisects between them; it never
    calls ``passes`` more than ``max_probes`` times.  Returns the best measured passing value
    (None if every probe failed) and the trail of (value, passed) probes.
    """
    if start < 1 or limit < start or max_probes < 1:
        raise ValueError(f"bad search bounds: start={start} limit={limit} probes={max_probes}")
    trail: list[tuple[int, bool]] = []

    def probe(n: int) -> bool:
        ok = passes(n)
        trail.append((n, ok))
        return ok

    best: int | None = None
    fail: int | None = None
    n = start
    while len(trail) < max_probes:
        if probe(n):
            best = n
            if fail is not None or n >= limit:
                break
            n = min(limit, n * 2)
        else:
            fail = n
            if best is not None or n <= 1:
                break
            n //= 2
    if best is None or fail is None:
        return best, trail
    lo, hi = best, fail
    while len(trail) < max_probes and hi - lo > max(1, lo // 20):  # stop at ~5 % resolution
        mid = (lo + hi) // 2
        if probe(mid):
            lo = mid
        else:
            hi = mid
    return lo, trail


# --- running a probe ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_stats(port: int, timeout: float = 2.0) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=timeout) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data
    except (OSError, ValueError):
        return None


def _tail(log: Any, n: int = 400) -> str:
    log.flush()
    log.seek(0)
    return str(log.read())[-n:].strip()



def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid`` (the server
    and its worker processes; from /proc, 0.0 where there is none)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "pid (comm)": state, ppid, pgrp, ...
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def probe_load(build: Build, *, backend: str, workers: int | None, kernel: str, entities: int,
               bots: int, duration: float, root: Path,
               program: list[str] | None = None, settle: float = SETTLE_S,
               gateways: int = 0, bots_build: Build | None = None,
               gateway_backend: str = "threads", bots_nice: int = 0,
               regions: str = "auto", loop: str = "auto") -> dict[str, Any]:
    """One server + bots run; returns the bots' report plus /stats samples and timings.

    ``program`` is the command that takes ``serve ...`` and ``bots ...`` arguments; by default
    ``<build python> -m server.cli`` (tests substitute a stand-in).  ``bots_build`` runs the bots
    under another build (the load generator may use whichever is fastest for it; the GIL build
    has picows); by default they run under ``build``.  ``bots_nice`` lowers the bots' CPU
    priority (``paratick bots --nice``).  ``loop`` is the server's event loop (``serve --loop``).

    Raises:
        CellError: the server did not start, or the bots printed no report.
    """
    from server.settings import ServerSettings  # not at import: it loads websockets

    port = free_port()
    env = build.environ(root)
    prog = program or [build.python, "-m", "server.cli"]
    # Room for every bot, past serve's default cap on connections where the probe needs it
    # (5,000 bots on a many-core machine), and for the /stats polls beside them.
    cap = max(ServerSettings.max_connections, bots + 64)
    serve = [*prog, "serve", "--port", str(port),
             "--tick-rate", f"{TICK_RATE:g}", "--snapshot-rate", f"{SNAPSHOT_RATE:g}",
             "--regions", regions, "--npcs", str(entities),
             "--players", str(bots + 16), "--max-per-address", str(bots + 16),
             "--max-connections", str(cap),
             "--backend", backend, "--kernel", kernel, "--gateways", str(gateways),
             "--loop", loop]
    if gateways:
        serve += ["--gateway-backend", gateway_backend]
    if workers:
        serve += ["--workers", str(workers)]
    # The server's output goes to a file, not a pipe nobody reads while it runs: a chatty
    # server must never block on a full pipe in the middle of a probe.
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as log:
        server = subprocess.Popen(serve, env=env, cwd=root, stdout=log, stderr=log,
                                  start_new_session=True)
        samples: list[dict[str, Any]] = []
        stop = threading.Event()
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while get_stats(port) is None:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise CellError(f"server did not start ({' '.join(serve[2:])}): {_tail(log)}")
                time.sleep(0.2)

            time.sleep(settle)

            def poll() -> None:
                while not stop.wait(1.0):
                    s = get_stats(port)
                    if s is not None:
                        samples.append({"t": time.monotonic(), "tick": s.get("tick"),
                                        "loop": s.get("loop"),
                                        "ticker": s.get("ticker", {}),
                                        "playing": (s.get("connections") or {}).get("playing"),
                                        "gc": s.get("gc"),
                                        "cpu": group_cpu_seconds(server.pid)})

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            bprog = prog if program is not None or bots_build is None \
                else [bots_build.python, "-m", "server.cli"]
            benv = env if bots_build is None else bots_build.environ(root)
            cmd = [*bprog, "bots", "--url", f"ws://127.0.0.1:{port}",
                   "--bots", str(bots), "--duration", f"{duration:g}", "--json", "--quiet"]
            if bots_nice:
                cmd += ["--nice", str(bots_nice)]
            cpu0, t0 = group_cpu_seconds(server.pid), time.monotonic()
            code, out, err = run_group(cmd, env=benv, cwd=root,
                                       timeout=duration + 120 + bots / 50)
            server_cpu = group_cpu_seconds(server.pid) - cpu0
            wall = time.monotonic() - t0
            stop.set()
            poller.join(timeout=5)
            try:
                report: dict[str, Any] = json.loads(out)
            except ValueError as exc:
                raise CellError(f"bots printed no JSON (exit {code}): "
                                f"{err.strip()[-400:]}") from exc
        finally:
            stop.set()
            if server.poll() is None:
                server.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError):  # workers or a stuck server: all of it
                os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        return {"bots_report": report, "stats_samples": samples,
                "server_cpu_s_per_s": server_cpu / wall if wall > 0 else None}


def window(samples: list[dict[str, Any]], bots: int | None = None) -> dict[str, Any]:
    """The probe's figures over its loaded window of ``/stats`` samples (pure).

    The window runs from the first sample in which ``bots`` players are playing to the last
    (every sample if ``bots`` is None or no sample has them all).  It gives the tick rate and
    deadline misses (from the server's counters at its ends), the server's CPU seconds per
    second (``cpu``: its process group's CPU time, read with each sample) and ``tick_ms``,
    every tick's duration in order, stitched from the samples' ``recent_ms`` lists (numbered
    by ``ticks``); ``ticks_unseen`` counts ticks that fell between two samples' lists; and
    ``gc``, the server's garbage collections from its start to the window's end (the collector
    may run in full as the bots leave: that is not load).
    """
    ok = [s for s in samples if isinstance(s.get("tick"), int)]
    full = [k for k, s in enumerate(ok) if bots is not None and s.get("playing") == bots]
    if len(full) >= 2:
        ok = ok[full[0]:full[-1] + 1]
    if len(ok) < 2 or ok[-1]["t"] <= ok[0]["t"]:
        return {}
    a, b = ok[0], ok[-1]
    seconds = b["t"] - a["t"]
    out: dict[str, Any] = {"seconds": seconds, "loaded": len(full) >= 2,
                           "tick_rate": (b["tick"] - a["tick"]) / seconds, "gc": b.get("gc")}
    ma, mb = a["ticker"].get("deadline_misses"), b["ticker"].get("deadline_misses")
    if isinstance(ma, int) and isinstance(mb, int):
        out["deadline_misses"] = float(mb - ma)
    ca, cb = a.get("cpu"), b.get("cpu")
    if isinstance(ca, (int, float)) and isinstance(cb, (int, float)):
        out["server_cpu_s_per_s"] = (cb - ca) / seconds
    tick_ms: list[float] = []
    unseen = 0
    for prev, cur in itertools.pairwise(ok):
        n0, n1 = prev["ticker"].get("ticks"), cur["ticker"].get("ticks")
        recent = cur["ticker"].get("recent_ms")
        if not (isinstance(n0, int) and isinstance(n1, int) and isinstance(recent, list)):
            continue
        new = max(0, n1 - n0)
        seen = min(new, len(recent))
        tick_ms.extend(recent[len(recent) - seen:])
        unseen += new - seen
    if tick_ms:
        q = percentiles(tick_ms, (50, 99))
        out.update(tick_ms=tick_ms, ticks_unseen=unseen, mspt_p50_ms=q["p50"],
                   mspt_p99_ms=q["p99"], mspt_max_ms=max(tick_ms))
    return out


def outcome(rec: dict[str, Any]) -> str:
    """A probe record as its progress line: the verdict, why not, and the loaded window's
    figures where it has them (pure)."""
    head = "holds" if rec.get("holds") else "fails: " + "; ".join(rec.get("why") or ["?"])
    figs = []
    p50, p99 = rec.get("mspt_p50_ms"), rec.get("mspt_p99_ms")
    if p50 is not None and p99 is not None:
        figs.append(f"MSPT p50/p99 {p50:.1f}/{p99:.1f} ms")
    ack = (rec.get("ack_ms") or {}).get("p99")
    if ack is not None:
        figs.append(f"ack p99 {ack:.0f} ms")
    cpu = rec.get("server_cpu_ms_per_bot_s")
    if cpu is not None:
        figs.append(f"server {cpu:.2f} ms CPU per bot-second")
    return f"{head} ({', '.join(figs)})" if figs else head


def run_probe(build: Build, backend: str, workers: int | None, kernel: str, entities: int,
              bots: int, duration: float, root: Path, criteria: Criteria,
              program: list[str] | None = None, settle: float = SETTLE_S,
              gateways: int = 0, bots_build: Build | None = None,
              gateway_backend: str = "threads", bots_nice: int = 0,
              regions: str = "auto", loop: str = "auto") -> dict[str, Any]:
    """A probe as a results record (schema: load.runs[*]); failures become records too.

    ``loop`` names the server's event loop as asked (``auto``...); the record's ``loop`` is the
    one the server reported running (the asked one when it did not start), ``ticker_on`` where
    its ticks ran (``thread`` or ``loop``; None when it did not say)."""
    rec: dict[str, Any] = {"build": build.name, "backend": backend, "workers": workers,
                           "kernel": kernel, "entities": entities, "bots": bots,
                           "duration_s": duration, "gateways": gateways,
                           "gateway_backend": gateway_backend if gateways else None,
                           "bots_build": (bots_build or build).name, "bots_nice": bots_nice,
                           "regions": regions, "loop": loop}
    try:
        out = probe_load(build, backend=backend, workers=workers, kernel=kernel,
                         entities=entities, bots=bots, duration=duration, root=root,
                         program=program, settle=settle, gateways=gateways,
                         bots_build=bots_build, gateway_backend=gateway_backend,
                         bots_nice=bots_nice, regions=regions, loop=loop)
    except (CellError, subprocess.TimeoutExpired, OSError) as exc:
        rec.update(ok=False, holds=False, why=[f"{type(exc).__name__}: {exc}"])
        return rec
    rep = out["bots_report"]
    rec["loop"] = next((s["loop"] for s in out["stats_samples"] if s.get("loop")), loop)
    rec["ticker_on"] = next((s["ticker"]["on"] for s in out["stats_samples"]
                             if (s.get("ticker") or {}).get("on")), None)
    win = window(out["stats_samples"], bots)
    # the server process's garbage collections from its start to the loaded window's end
    # (else to the last reading)
    rec["gc"] = win.pop("gc", None) or next(
        (s["gc"] for s in reversed(out["stats_samples"]) if s.get("gc")), None)
    tick_ms = win.pop("tick_ms", None)
    ok, why = holds(rep, bots, criteria, tick_rate=win.get("tick_rate"),
                    mspt_p99=win.get("mspt_p99_ms"))
    srv = rep.get("server") or {}
    cpu = win.get("server_cpu_s_per_s", out.get("server_cpu_s_per_s"))
    rec.update(ok=True, holds=ok, why=why,
               mspt_p50_ms=win.get("mspt_p50_ms", srv.get("mspt_p50_median")),
               mspt_p99_ms=win.get("mspt_p99_ms", srv.get("mspt_p99_max")),
               tick_rate_min=srv.get("tick_rate_min"), window=win,
               ack_ms=rep.get("latency_ms"), ack_ramp_ms=rep.get("ramp_latency_ms"),
               connected=rep.get("connected"),
               dropped=rep.get("dropped"),
               server_cpu_s_per_s=cpu,
               server_cpu_ms_per_bot_s=cpu / bots * 1e3 if cpu else None,
               # the bots' whole run, connecting and leaving included (figures before the
               # loaded window was measured were these)
               run_cpu_s_per_s=out.get("server_cpu_s_per_s"),
               bot_cpu_us_per_message=rep.get("bot_cpu_us_per_message"),
               bot_cpu_us_per_received=rep.get("bot_cpu_us_per_received"),
               steady_bot_cpu_us_per_message=rep.get("steady_bot_cpu_us_per_message"),
               steady_bot_cpu_us_per_received=rep.get("steady_bot_cpu_us_per_received"),
               bots_client=rep.get("client"),
               # every tick of the loaded window: the MSPT distribution plot
               tick_ms=[round(t, 3) for t in tick_ms] if tick_ms else None,
               bots_report=rep)
    return rec


class _BudgetSpent(Exception):
    """The run's time budget is spent: no probe starts any more."""


def positive_float(text: str) -> float:
    """argparse type of the benchmarks' seconds and densities: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="gil+ft, threads only, 6 s probes, 3 probes per search (~4 min); the "
                        "default run (2 builds x 3 backends, 9 probes each) takes ~15-17 min")
    c = p.add_argument_group("configurations")
    c.add_argument("--builds", default=None, help="comma list (default gil,ft)")
    backend = c.add_argument("--backend", default=None,
                             help=f"one or a comma list (default: {','.join(PARALLEL_BACKENDS)};"
                                  " threads with --quick)")
    alias(c, "--backends", of=backend)
    c.add_argument("--workers", type=int, default=None, metavar="W",
                   help="worker count (default: usable cores, capped at the region count)")
    c.add_argument("--regions", default="auto", metavar="RXxRY",
                   help="the server's region grid (serve --regions); auto (the default): one "
                        "region per worker, as square a grid as the count allows (2x1 on 2 "
                        "cores, 4x4 on 16)")
    c.add_argument("--gateways", default="0",
                   help="comma list of gateway counts to compare (serve --gateways; 0: every "
                        "client on the server's main event loop; default %(default)s)")
    c.add_argument("--gateway-backend", default="threads",
                   help="comma list of where gateways run, for each count > 0: threads, "
                        "processes (serve --gateway-backend; default %(default)s)")
    c.add_argument("--loop", default="auto",
                   help="comma list of the server's event loops to compare (serve --loop): "
                        "auto, asyncio, uvloop (uvloop: GIL build only; default %(default)s: "
                        "uvloop where the build has it)")
    c.add_argument("--kernel", default="auto", choices=("auto", *KERNELS),
                   help="tick kernel; auto (the default) is what `paratick serve` runs by "
                        "default: numpy, or python on subinterpreters")
    c.add_argument("--bots-build", default="gil", choices=("gil", "same"),
                   help="the interpreter the bots run on: gil (the GIL build, whose venv has the "
                        "picows client, the cheapest load generator) or same (the server's build;"
                        " default %(default)s)")
    c.add_argument("--bots-nice", type=int, default=0, metavar="N",
                   help="run the bots N nice levels below the server (0-19; `paratick bots "
                        "--nice`): on a machine whose cores the bots share with the server, the "
                        "server then gets a core first, as it would with the bots elsewhere "
                        "(default 0: equal priority)")
    f = p.add_argument_group("fixed load")
    npcs = f.add_argument("--npcs", type=int, default=5000, metavar="N",
                          help="NPCs in the fixed-load run and during the bot search; the bots' "
                               "players come on top (default 5000)")
    alias(f, "--entities-fixed", of=npcs)
    bots = f.add_argument("--bots", type=int, default=200, metavar="N",
                          help="bots in the fixed-load run (default 200)")
    alias(f, "--fixed-bots", of=bots)
    f.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="seconds of play per probe (default 10; 6 with --quick)")
    s = p.add_argument_group("searches")
    s.add_argument("--no-search", action="store_true", help="only the fixed-load run")
    s.add_argument("--max-probes", type=int, default=None,
                   help="probes per bounded search (default 4; 3 with --quick)")
    start = s.add_argument("--npcs-start", type=int, default=2500, metavar="N",
                           help="NPC search: first count tried (default 2500; doubled while "
                                "probes hold, halved while they fail)")
    alias(s, "--entities-start", of=start)
    limit = s.add_argument("--npcs-limit", type=int, default=160_000, metavar="N",
                           help="NPC search: the most NPCs tried (default 160000)")
    alias(s, "--entities-limit", of=limit)
    held = s.add_argument("--search-bots", type=int, default=100, metavar="N",
                          help="NPC search: bots playing during it (default 100)")
    alias(s, "--bots-fixed", of=held)
    s.add_argument("--bots-start", type=int, default=250, metavar="N",
                   help="bot search: first count tried (default 250; doubled while probes "
                        "hold, halved while they fail)")
    s.add_argument("--bots-limit", type=int, default=2000, metavar="N",
                   help="bot search: the most bots tried (default 2000)")
    s.add_argument("--time-budget", type=positive_float, default=None, metavar="SECONDS",
                   help="start no probe after SECONDS; what was measured is saved and the "
                        "report says the run stopped early")
    o = p.add_argument_group("output")
    o.add_argument("--note", default=None,
                   help="a line about the machine for the report (e.g. 'lent 16-core box')")
    o.add_argument("--venvs", default=None, help="folder holding gil/ and ft/ venvs")
    schema.add_out_argument(o, quick=True)
    o.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args: argparse.Namespace) -> int:
    from bench import env, report, schema

    root = repo_root()
    quick = bool(args.quick)
    names = tuple(x for x in (args.builds or "gil,ft").split(",") if x)
    for n in names:
        if n not in (*ALL_BUILDS, "current"):
            raise CellError(f"unknown build {n!r}")
    if not 0 <= args.bots_nice <= 19:
        raise CellError(f"--bots-nice must be in 0..19, got {args.bots_nice}")
    if args.regions != "auto":
        try:
            parse_grid(args.regions)
        except ConfigError as exc:
            raise CellError(str(exc)) from None
    venvs = find_venvs(root, args.venvs)
    builds = [make_build(n, venvs) for n in names]
    bots_build = make_build("gil", venvs) if args.bots_build == "gil" else None
    backends = (tuple(x for x in args.backend.split(",") if x) if args.backend
                else ("threads",) if quick else PARALLEL_BACKENDS)
    duration = args.duration or (6.0 if quick else 10.0)
    max_probes = args.max_probes or (3 if quick else 4)
    criteria = Criteria()
    runs: list[dict[str, Any]] = []
    best: list[dict[str, Any]] = []

    try:
        gateway_counts = [int(x) for x in args.gateways.split(",") if x.strip()]
    except ValueError:
        raise CellError(f"--gateways takes a comma list of integers, got {args.gateways!r}") \
            from None
    if not gateway_counts or min(gateway_counts) < 0:
        raise CellError("--gateways needs one or more counts >= 0")
    kinds = [x.strip() for x in args.gateway_backend.split(",") if x.strip()]
    if not kinds or set(kinds) - {"threads", "processes"}:
        raise CellError("--gateway-backend takes a comma list of threads and processes, got "
                        f"{args.gateway_backend!r}")
    gateway_configs = [(g, k) for g in gateway_counts for k in (kinds if g else ["threads"])]
    loop_names = [x.strip() for x in args.loop.split(",") if x.strip()]
    if not loop_names or set(loop_names) - set(LOOPS):
        raise CellError(f"--loop takes a comma list of auto, asyncio and uvloop, got "
                        f"{args.loop!r}")

    def say(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    t0 = time.monotonic()

    def probe(build: Build, backend: str, entities: int, bots: int, phase: str,
              gateways: int = 0, kind: str = "threads", loop: str = "auto") -> bool:
        if args.time_budget is not None and time.monotonic() - t0 >= args.time_budget:
            raise _BudgetSpent
        where = f" on {kind}" if gateways else ""
        on = "" if loop == "auto" else f", {loop} loop"
        say(f"load: {build.name} {backend} {gateways} gateways{where}{on} {entities} NPCs "
            f"{bots} bots ({phase}) ...")
        # not at import: server.settings loads websockets
        from server.settings import auto_regions, default_kernel

        kernel = default_kernel(backend) if args.kernel == "auto" else args.kernel
        # serve's own rule for --regions auto, named in the record
        rx, ry = auto_regions(backend, args.workers, WORLD_SIZE, WORLD_SIZE, VIEW_RADIUS) \
            if args.regions == "auto" else parse_grid(args.regions)
        regions = f"{rx}x{ry}"
        rec = run_probe(build, backend, args.workers, kernel, entities, bots, duration,
                        root, criteria, gateways=gateways, bots_build=bots_build,
                        gateway_backend=kind, bots_nice=args.bots_nice, regions=regions,
                        loop=loop)
        rec["phase"] = phase
        runs.append(rec)
        say(f"      -> {outcome(rec)}")
        return bool(rec["holds"])

    configs = [(b, k, g, kind, lp) for b in builds for k in backends
               for g, kind in gateway_configs for lp in loop_names]
    stopped: str | None = None
    for i, (build, backend, g, kind, lp) in enumerate(configs):
        try:
            probe(build, backend, args.npcs, args.bots, "fixed load", g, kind, lp)
            fixed = runs[-1]
            if args.no_search:
                continue

            def by_entities(n: int, b: Build = build, k: str = backend, gw: int = g,
                            gk: str = kind, lo: str = lp) -> bool:
                return probe(b, k, n, args.search_bots, "entity search", gw, gk, lo)

            def by_bots(n: int, b: Build = build, k: str = backend, gw: int = g,
                        gk: str = kind, lo: str = lp) -> bool:
                return probe(b, k, args.npcs, n, "bot search", gw, gk, lo)

            ents, _ = bounded_search(by_entities, start=args.npcs_start,
                                     limit=args.npcs_limit, max_probes=max_probes)
            nbots, _ = bounded_search(by_bots, start=args.bots_start, limit=args.bots_limit,
                                      max_probes=max_probes)
        except (KeyboardInterrupt, _BudgetSpent) as exc:
            kept = f"{len(runs)} probe" + ("" if len(runs) == 1 else "s")
            why = ("interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt)
                   else f"time budget of {args.time_budget:g} s spent")
            stopped = f"{why} in configuration {i + 1} of {len(configs)}; {kept} kept"
            break
        best.append({"build": build.name, "backend": backend, "gateways": g,
                     "gateway_backend": kind if g else None, "loop": fixed["loop"],
                     "entities": ents,
                     "bots_fixed": args.search_bots, "bots": nbots,
                     "entities_fixed": args.npcs})
    section = {"created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
               "command": ["paratick", "bench", "load", *sys.argv[3:]],
               "environment": env.capture_builds(root, builds),
               "params": {"tick_rate": TICK_RATE, "snapshot_rate": SNAPSHOT_RATE,
                          "mspt_budget_ms": MSPT_BUDGET_MS,
                          "settle_s": SETTLE_S,
                          "ack_p99_ms": ACK_P99_MS, "duration_s": duration,
                          "max_probes": max_probes, "regions": args.regions, "kernel": args.kernel,
                          "workers": args.workers, "quick": quick,
                          "bots_build": args.bots_build, "bots_nice": args.bots_nice,
                          "gateways": gateway_counts, "gateway_backends": kinds,
                          "loops": loop_names, "time_budget_s": args.time_budget},
               "runs": runs, "best": best, "stopped_early": stopped, "note": args.note}
    out = args.out or schema.results_dir(quick=quick)
    schema.save_section(out, "load", section)
    print(load_table(section))
    for path in report.write(out, plots=True):
        print(path)
    if stopped:
        print(f"stopped early: {stopped}", file=sys.stderr)
    return 0
