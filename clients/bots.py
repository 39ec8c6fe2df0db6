"""Bot clients: many websocket players measuring what a real player would feel.

Each bot connects with ``paratick.msgpack.v1``, says hello, then sends inputs at a fixed rate
(controls chosen by its behaviour from the entities it sees) and applies every snapshot, full or
delta, with :func:`server.protocol.apply_snapshot`.  The *input -> ack latency* of input ``seq`` is
the time from sending it to receiving the first snapshot whose ``ack`` is >= ``seq``: it includes
the wait for the next tick boundary, the tick (whose snapshot carries the ack when the server's
snapshot budget for the client allows, else a later one: :mod:`server.pacing`) and both network
legs, which is what a player feels.  A fleet reports it over its *steady* part, from
:data:`STEADY_SETTLE_S` after its last bot started (the load the server holds, the window a
load test judges), and apart from it over the ramp before, when the server is also answering
handshakes and taking in every new connection's objects.

A fleet runs its bots as asyncio tasks in one process; :func:`run_fleet` spreads a large fleet
over several processes (``multiprocessing`` spawn) so that the bots are not the bottleneck, and
polls the server's ``GET /stats`` once per second for its MSPT.  Randomness comes from
``random.Random(seed, bot index)``; the clock is injected.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from clients.inputs import InputClock
from clients.wsbot import run_bot
from server import loops
from server.clock import TimeSource
from server.protocol import (
    Entity,
)
from server.quantiles import percentile

BEHAVIOURS = ("wander", "chase", "idle")
#: Bots per process before the fleet spreads over more processes.  Measured on the 2-core VM:
#: 100 bots in one process used 0.55 of a core while receiving only 12 of their 20 snapshots/s
#: (decode, delta application, behaviour and 20 inputs/s each), so a process of 250 bots at full
#: rate needs more than one core there and a few hundred per loop is too many to keep the bots
#: from being the bottleneck on a machine with cores to spare.
PER_PROCESS = 100
#: Fraction of a fleet that validates every message (decodes and applies every snapshot); the
#: rest read snapshot headers only, so that the bots, the load generator, cost the machine
#: little next to the server they measure.
VALIDATE = 0.05
#: Pending-input sequence numbers tracked for latency; older unacked ones are forgotten
#: (counted as lost), so a server that never acks cannot grow a bot's memory.
MAX_PENDING = 256
#: Seconds after a fleet's last bot started from which its acks count as the steady load's
#: (its last handshakes done; at most half the run).
STEADY_SETTLE_S = 1.0


@dataclass
class BotResult:
    """What one bot measured (msgpack/pickle-friendly plain data)."""

    index: int
    connected: bool = False
    failed: str | None = None        # could not connect / no welcome
    dropped: str | None = None       # connection lost before the end of the run
    snapshots: int = 0
    deltas: int = 0
    inputs: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0             # time connected
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)  # acks at or after ``steady``
    ramp_latencies_ms: list[float] = field(default_factory=list)  # acks before it
    lost_acks: int = 0
    validating: bool = True          # decoded and applied every snapshot (else: headers only)
    gateway: int | None = None       # the server's gateway that served it (from welcome)
    messages_in: int = 0             # every frame received


def choose(behaviour: str, me: Entity | None, seen: dict[int, Entity], rng: random.Random,
           memory: dict[str, float]) -> tuple[float, float, int]:
    """Controls (thrust, turn, action) for one input.

    wander: a new random heading change about once a second; chase: steer toward the nearest
    other entity (wander until the bot knows where it is); idle: no thrust (still sends inputs,
    so its latency is measured too).
    """
    if behaviour == "idle":
        return 0.0, 0.0, 0
    if behaviour == "chase" and me is not None:
        best, bd = None, math.inf
        for e in seen.values():
            if e[0] == me[0]:
                continue
            d = (e[2] - me[2]) ** 2 + (e[3] - me[3]) ** 2
            if d < bd:
                best, bd = e, d
        if best is not None:
            want = math.atan2(best[3] - me[3], best[2] - me[2])
            diff = (want - me[6] + math.pi) % (2 * math.pi) - math.pi
            turn = max(-1.0, min(1.0, 2.0 * diff))
            return (1.0 if abs(diff) < 1.0 else 0.3), turn, 0
    if rng.random() < 0.05 or "turn" not in memory:
        memory["turn"] = rng.uniform(-1.0, 1.0)
        memory["thrust"] = rng.uniform(0.3, 1.0)
    return memory["thrust"], memory["turn"], 0


# ---- fleets -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FleetSpec:
    url: str
    bots: int
    behaviour: str = "mix"          # wander | chase | idle | mix (cycled by bot index)
    seed: int = 1
    ramp: float = 200.0             # bots started per second
    duration: float = 10.0          # seconds every bot plays after the last one started
    input_rate: float = 20.0        # inputs per second per bot
    validate: float = VALIDATE      # fraction of bots that decode and apply every snapshot
    first_index: int = 0            # this slice's first bot index (multi-process fleets)
    total: int = 0                  # bots in the whole fleet (0: this slice is the fleet)
    client: str = "auto"            # lean bots' client: auto | picows | websockets


#: ``--client`` choices: which library the lean (non-validating) bots use.
CLIENTS = ("auto", "picows", "websockets")


def lean_client(choice: str) -> str:
    """The library the lean bots of a fleet use here: ``picows`` or ``websockets``.

    Raises:
        ValueError: ``picows`` was asked for and does not load in this interpreter.
    """
    from clients import fastws
    if choice not in CLIENTS:
        raise ValueError(f"unknown client {choice!r}; choose one of {', '.join(CLIENTS)}")
    if choice == "websockets" or (choice == "auto" and not fastws.available()):
        return "websockets"
    if not fastws.available():
        raise ValueError("picows does not load in this interpreter (it publishes wheels for "
                         "the GIL build only); use --client websockets or auto")
    return "picows"


def run_loop(main: Any, client: str) -> Any:
    """``asyncio.run(main)``, on uvloop when the lean bots use picows and uvloop installs."""
    return loops.run(main, "auto" if client == "picows" else "asyncio")


def _validates(spec: FleetSpec, index: int) -> bool:
    """Whether bot ``index`` is in the validating sample (spread evenly over the fleet; the
    first bot always is)."""
    if spec.validate >= 1.0:
        return True
    if spec.validate <= 0.0:
        return False
    return int(index * spec.validate) != int((index - 1) * spec.validate) or index == 0


def _behaviour(spec: FleetSpec, index: int) -> str:
    return BEHAVIOURS[index % len(BEHAVIOURS)] if spec.behaviour == "mix" else spec.behaviour


async def run_local_fleet(spec: FleetSpec, *, t0: float, clock: TimeSource = time.perf_counter,
                          window: dict[str, float] | None = None) -> list[BotResult]:
    """``spec.bots`` bots as tasks of this loop; ``t0`` is the fleet's common start time.

    ``window``, when given, gets this process's CPU seconds and its bots' messages received and
    inputs sent over the fleet's steady part (from its ``steady`` time to its end, while every
    bot plays: ``cpu_s``, ``received``, ``sent``), the span whose acks the report judges, and
    the snapshots its bots received then with the bot-seconds of the bots playing at its start
    (``snapshots``, ``bot_s``); nothing is added where the fleet ended before then.
    """
    client = lean_client(spec.client)
    total_ramp = spec.first_index / spec.ramp if spec.ramp > 0 else 0.0
    # Every bot of the whole fleet stops at the same time: duration after the last one started.
    until = t0 + (spec.total or spec.bots) / spec.ramp + spec.duration if spec.ramp > 0 \
        else t0 + spec.duration
    steady = until - spec.duration + min(STEADY_SETTLE_S, spec.duration / 2)
    live: list[BotResult] = []
    marks: dict[str, tuple[float, int, int, float, int]] = {}
    # the bots playing when the steady part began, and how many snapshots each had then: the
    # steady snapshot rate counts these alone (a bot still connecting then has no steady start)
    playing: dict[int, int] = {}

    def mark(name: str) -> None:
        if name == "steady":
            playing.update(steady_start(live))
        marks[name] = (time.process_time(), sum(r.messages_in for r in live),
                       sum(r.inputs for r in live), clock(), snapshots_since(live, playing))

    loop = asyncio.get_running_loop()
    inputs = InputClock(1.0 / spec.input_rate, clock=loop.time, call_at=loop.call_at)
    timers = [loop.call_later(max(0.0, at - clock()), mark, name)
              for name, at in (("steady", steady), ("end", until))] if window is not None else []

    async def start(i: int) -> BotResult:
        delay = t0 + total_ramp + (i / spec.ramp if spec.ramp > 0 else 0.0) - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        idx = spec.first_index + i
        validate = _validates(spec, idx)
        if not validate and client == "picows":
            from clients.fastws import run_lean_bot
            res = BotResult(idx, validating=False)
            live.append(res)
            await run_lean_bot(spec.url, res, seed=spec.seed, inputs=inputs,
                               until=until, clock=clock, max_pending=MAX_PENDING, choose=choose,
                               steady=steady)
            return res
        res = BotResult(idx, validating=validate)
        live.append(res)
        await run_bot(spec.url, res, behaviour=_behaviour(spec, idx), seed=spec.seed,
                      inputs=inputs, until=until, clock=clock, max_pending=MAX_PENDING,
                      choose=choose, validate=validate, steady=steady)
        return res

    tasks = [asyncio.create_task(start(i)) for i in range(spec.bots)]
    results = list(await asyncio.gather(*tasks))
    inputs.close()
    for t in timers:
        t.cancel()
    if window is not None and "steady" in marks and "end" in marks:
        (c0, r0, s0, t0s, _), (c1, r1, s1, t1s, snapshots) = marks["steady"], marks["end"]
        window.update(cpu_s=c1 - c0, received=float(r1 - r0), sent=float(s1 - s0),
                      snapshots=float(snapshots), bot_s=len(playing) * (t1s - t0s))
    return results


def _child_main(spec: FleetSpec, t0_wall: float, queue: Any) -> None:
    """Process entry point (spawn): run a slice of the fleet, put the results on ``queue``."""
    # perf_counter differs between processes; the shared start time travels as wall time.
    offset = time.perf_counter() - time.time()
    cpu0 = time.process_time()
    window: dict[str, float] = {}
    results = run_loop(run_local_fleet(spec, t0=t0_wall + offset, window=window),
                       lean_client(spec.client))
    queue.put({"cpu_s": time.process_time() - cpu0, "window": window,
               "results": [asdict(r) for r in results]})


async def _get_stats(url: str) -> dict[str, Any] | None:
    """``GET /stats`` over a raw asyncio stream (no HTTP client dependency)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    try:
        async with asyncio.timeout(2.0):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET /stats HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                         .encode())
            data = await reader.read()
            writer.close()
    except (OSError, TimeoutError):
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        return None
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _pct(values: list[float], p: float) -> float | None:
    """:func:`server.quantiles.percentile`, None (JSON null) when there are no samples."""
    return percentile(values, p) if values else None


async def run_fleet(spec: FleetSpec, *, processes: int | None = None,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run a whole fleet (several processes when large) and return the report dict."""
    n_proc = processes if processes is not None else \
        max(1, min(os.cpu_count() or 1, math.ceil(spec.bots / PER_PROCESS)))
    n_proc = max(1, min(n_proc, spec.bots)) if spec.bots else 1
    stats_samples: list[dict[str, Any]] = []
    wall0 = time.time() + (1.0 if n_proc > 1 else 0.0)  # let spawned children import first
    t0 = time.perf_counter() + (wall0 - time.time())
    started = time.perf_counter()
    results: list[BotResult] = []
    cpu0 = time.process_time()
    if n_proc == 1:
        window: dict[str, float] = {}
        fleet = asyncio.create_task(run_local_fleet(spec, t0=t0, window=window))
        procs: list[Any] = []
        queue = None
    else:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        procs = []
        base = 0
        for p in range(n_proc):
            count = spec.bots * (p + 1) // n_proc - spec.bots * p // n_proc
            part = FleetSpec(**{**asdict(spec), "bots": count, "first_index": base,
                                 "total": spec.bots})
            base += count
            proc = ctx.Process(target=_child_main, args=(part, wall0, queue), daemon=True)
            proc.start()
            procs.append(proc)
        fleet = None
    end = t0 + (spec.bots / spec.ramp if spec.ramp > 0 else 0.0) + spec.duration
    collected: list[dict[str, Any]] = []
    while True:
        s = await _get_stats(spec.url)
        if s is not None:
            stats_samples.append(s)
        if progress is not None:
            progress(_progress_line(time.perf_counter() - started, end - started, s))
        if fleet is not None and fleet.done():
            break
        if queue is not None:
            while True:
                try:
                    collected.append(queue.get_nowait())
                except Exception:
                    break
            if len(collected) == n_proc:
                break
            if all(not p.is_alive() for p in procs) and queue.empty() \
                    and len(collected) < n_proc:
                await asyncio.sleep(0.5)
                if queue.empty():
                    break
        await asyncio.sleep(1.0 if time.perf_counter() < end else 0.2)
    if fleet is not None:
        results = await fleet
        bot_cpu = time.process_time() - cpu0
        windows = [window]
    else:
        for p in procs:
            await asyncio.to_thread(p.join, 10.0)
        results = [BotResult(**d) for part in collected for d in part["results"]]
        bot_cpu = sum(part["cpu_s"] for part in collected)
        windows = [part.get("window") or {} for part in collected]
        missing = spec.bots - len(results)
        results += [BotResult(-1, failed="bot process died") for _ in range(missing)]
    rep = report(spec, results, stats_samples, time.perf_counter() - started, n_proc)
    received = sum(r.messages_in for r in results)
    messages = received + sum(r.inputs for r in results)
    rep["bot_cpu_s"] = bot_cpu
    # per message in or out (snapshots received and inputs sent), and per message received
    rep["bot_cpu_us_per_message"] = bot_cpu / messages * 1e6 if messages else None
    rep["bot_cpu_us_per_received"] = bot_cpu / received * 1e6 if received else None
    rep.update(steady_bot_cpu(windows))
    rep["client"] = lean_client(spec.client)
    return rep


def steady_start(bots: list[BotResult]) -> dict[int, int]:
    """The bots playing now (connected, not dropped), each with its snapshots so far (pure)."""
    return {r.index: r.snapshots for r in bots if r.connected and not r.dropped}


def snapshots_since(bots: list[BotResult], start: dict[int, int]) -> int:
    """Snapshots received since ``start`` (:func:`steady_start`) by the bots playing then; a
    bot that joined later is not counted, as ``start`` has no bot-seconds for it (pure)."""
    return sum(r.snapshots - start[r.index] for r in bots if r.index in start)


def steady_bot_cpu(windows: list[dict[str, float]]) -> dict[str, float | None]:
    """The bots' CPU per message in or out and per message received, and the snapshots each
    bot received per second, over the fleet's steady part, from every process's window
    (:func:`run_local_fleet`); None where a process has none (its fleet ended first) or nothing
    was received (pure)."""
    keys = {"cpu_s", "received", "sent", "snapshots", "bot_s"}
    if not windows or any(not keys <= w.keys() for w in windows):
        return {"steady_bot_cpu_us_per_message": None, "steady_bot_cpu_us_per_received": None,
                "steady_snapshots_per_bot_s": None}
    cpu = sum(w["cpu_s"] for w in windows)
    received = sum(w["received"] for w in windows)
    messages = received + sum(w["sent"] for w in windows)
    bot_s = sum(w["bot_s"] for w in windows)
    return {"steady_bot_cpu_us_per_message": cpu / messages * 1e6 if messages else None,
            "steady_bot_cpu_us_per_received": cpu / received * 1e6 if received else None,
            "steady_snapshots_per_bot_s": (sum(w["snapshots"] for w in windows) / bot_s
                                           if bot_s > 0 else None)}


def _progress_line(elapsed: float, total: float, s: dict[str, Any] | None) -> str:
    if s is None:
        return f"[{elapsed:5.1f}/{total:.0f}s] server /stats unavailable"
    t = s.get("ticker", {})
    c = s.get("connections", {})
    return (f"[{elapsed:5.1f}/{total:.0f}s] playing {c.get('playing', 0):5d}  "
            f"tick {s.get('tick', 0):7d}  {t.get('tick_rate_actual', 0):5.1f} Hz  "
            f"MSPT p50 {t.get('mspt_p50', 0):6.2f}  p99 {t.get('mspt_p99', 0):6.2f} ms  "
            f"drops {s.get('messages', {}).get('snapshots_dropped', 0)}")


def report(spec: FleetSpec, results: list[BotResult], samples: list[dict[str, Any]],
           elapsed: float, processes: int) -> dict[str, Any]:
    """Aggregate bot results and /stats samples into the report (what ``--json`` prints)."""
    lat = [x for r in results for x in r.latencies_ms]
    ramp = [x for r in results for x in r.ramp_latencies_ms]
    connected = [r for r in results if r.connected]
    snaps = [r.snapshots / r.seconds for r in connected if r.seconds > 0]
    p50s = [s["ticker"]["mspt_p50"] for s in samples if s.get("ticker")]
    p99s = [s["ticker"]["mspt_p99"] for s in samples if s.get("ticker")]
    rates = [s["ticker"]["tick_rate_actual"] for s in samples if s.get("ticker")]
    last = samples[-1] if samples else {}
    errors: dict[str, int] = {}
    for r in results:
        for e in r.errors:
            errors[e] = errors.get(e, 0) + 1
    return {
        "bots": spec.bots, "processes": processes, "behaviour": spec.behaviour,
        "validating": sum(1 for r in results if r.validating),
        "gateways": {str(g): n for g, n in sorted(Counter(
            r.gateway for r in results if r.connected and r.gateway is not None).items())},
        "seed": spec.seed, "duration_s": spec.duration, "elapsed_s": elapsed,
        "connected": len(connected), "failed": sum(1 for r in results if r.failed),
        "dropped": sum(1 for r in results if r.dropped),
        "snapshots_per_bot_s": sum(snaps) / len(snaps) if snaps else 0.0,
        "delta_fraction": (sum(r.deltas for r in results) /
                           max(1, sum(r.snapshots for r in results))),
        "inputs": sum(r.inputs for r in results),
        "latency_ms": {"samples": len(lat), "p50": _pct(lat, 50), "p95": _pct(lat, 95),
                       "p99": _pct(lat, 99), "max": max(lat) if lat else None},
        "ramp_latency_ms": {"samples": len(ramp), "p50": _pct(ramp, 50), "p99": _pct(ramp, 99),
                            "max": max(ramp) if ramp else None},
        "lost_acks": sum(r.lost_acks for r in results),
        "bytes_in_per_s": sum(r.bytes_in for r in results) / elapsed if elapsed else 0.0,
        "bytes_out_per_s": sum(r.bytes_out for r in results) / elapsed if elapsed else 0.0,
        "errors": errors,
        "server": {"samples": len(samples),
                   "mspt_p50_median": _pct(p50s, 50), "mspt_p99_max": max(p99s) if p99s else None,
                   "tick_rate_min": min(rates) if rates else None,
                   "budget_ms": last.get("ticker", {}).get("budget_ms"),
                   "snapshots_dropped": last.get("messages", {}).get("snapshots_dropped"),
                   "runtime": last.get("runtime")},
        "first_failures": sorted({r.failed for r in results if r.failed})[:5],
        "first_drops": sorted({r.dropped for r in results if r.dropped})[:5],
    }


def _shards(runtime: Any) -> str:
    """``r0 1.2 ms, r1 0.9 ms, ...`` from the runtime metrics in /stats, if it has shards."""
    shards = runtime.get("shards") if isinstance(runtime, dict) else None
    if not isinstance(shards, list) or not shards:
        return "-"
    parts = []
    for sh in shards:
        try:
            parts.append(f"r{sh['region']} {sh['mspt']['p99']:.1f}")
        except (KeyError, TypeError):
            continue
    return (", ".join(parts) + " ms") if parts else "-"


def format_report(rep: dict[str, Any]) -> str:
    lat = rep["latency_ms"]
    ramp = rep.get("ramp_latency_ms") or {"p50": None, "p99": None, "samples": 0}
    srv = rep["server"]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f} ms"

    rows = [
        ("bots (processes)", f"{rep['bots']} ({rep['processes']})"),
        ("connected / failed / dropped", f"{rep['connected']} / {rep['failed']} / "
                                         f"{rep['dropped']}"),
        ("snapshots per second per bot", f"{rep['snapshots_per_bot_s']:.1f}"
         + ("" if rep.get("steady_snapshots_per_bot_s") is None
            else f" ({rep['steady_snapshots_per_bot_s']:.1f} with all bots playing)")),
        ("delta snapshots", f"{100 * rep['delta_fraction']:.1f} %"),
        ("input->ack latency p50/p95/p99", f"{ms(lat['p50'])} / {ms(lat['p95'])} / "
                                           f"{ms(lat['p99'])} ({lat['samples']} samples, "
                                           "all bots playing)"),
        ("input->ack p50/p99 while connecting", f"{ms(ramp['p50'])} / {ms(ramp['p99'])} "
                                                f"({ramp['samples']} samples)"),
        ("bytes/s in / out (all bots)", f"{rep['bytes_in_per_s'] / 1e3:.1f} kB/s / "
                                        f"{rep['bytes_out_per_s'] / 1e3:.1f} kB/s"),
        ("server MSPT p50 (median) / p99 (max)", f"{ms(srv['mspt_p50_median'])} / "
                                                 f"{ms(srv['mspt_p99_max'])} of "
                                                 f"{ms(srv['budget_ms'])}"),
        ("server tick rate (lowest sample)", "-" if srv["tick_rate_min"] is None
         else f"{srv['tick_rate_min']:.1f} Hz"),
        ("server snapshots dropped", str(srv["snapshots_dropped"])),
        ("server shard MSPT p99 (runtime)", _shards(srv.get("runtime"))),
        ("errors received", json.dumps(rep["errors"]) if rep["errors"] else "none"),
        ("bots per server gateway", ", ".join(f"gateway {g}: {n}" for g, n in
                                              rep.get("gateways", {}).items()) or "-"),
        ("bot CPU per message in or out / received", "-"
         if rep.get("bot_cpu_us_per_message") is None
         else f"{rep['bot_cpu_us_per_message']:.0f} us / "
              f"{rep.get('bot_cpu_us_per_received') or 0:.0f} us ({rep['validating']} of "
              f"{rep['bots']} bots validate every message; the others use "
              f"{rep.get('client', 'websockets')})"),
        ("  the same, all bots playing", "-"
         if rep.get("steady_bot_cpu_us_per_received") is None
         else f"{rep['steady_bot_cpu_us_per_message']:.0f} us / "
              f"{rep['steady_bot_cpu_us_per_received']:.0f} us (from 1 s after the last bot "
              "started: no start-up, no handshakes)"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
