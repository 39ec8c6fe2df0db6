"""Channel round-trip benchmark: one small message there and back, per backend.

Run with ``python -m bench.channels`` (``--quick`` for a smoke run).  For each transport the main
thread of this process (participant A) sends a 64-byte msgpack PING to one worker (participant B)
that echoes it; the time from send to the echo's arrival is one round trip.  B is a thread
(threads), a subinterpreter on its own thread (interpreters: interpreter queue + wake-up pipe),
or a spawned process (processes: socket pair).  ``interpreters-naive`` echoes through the
stdlib's blocking ``Queue.get()``, which polls every 10 ms: the number the wake-up pipe replaces.

Prints a table (median, p99, min, max in microseconds over N round trips after a warm-up) and
writes JSON with the environment (and the echo side's GIL state) to
``bench/results/channels-<build>-<utc time>.json``.
Targets (issue 4): median <= 30 us threads, <= 50 us interpreters, <= 150 us processes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path
from typing import Any

from server.runtime import channels
from server.runtime import messages as m

TARGETS_US = {"threads": 30.0, "interpreters": 50.0, "processes": 150.0}
RESULTS = Path(__file__).resolve().parent / "results"
PAYLOAD = b"x" * 48  # ~64 bytes once framed as a msgpack PING
#: What the echo side of the last measurement reported about itself (GIL state, msgpack).
ECHO_INFO: dict[str, Any] = {}


# ---- echo side (importable in a subinterpreter and a spawned process: stdlib + msgpack only) ----
def echo(ep: channels.Endpoint, peer: int) -> None:
    """Send every PING back to ``peer`` until STOP; a PING of b"info" is answered with the
    echo side's GIL state and msgpack flavour (JSON bytes)."""
    while True:
        data = ep.recv(None)
        if data is None:
            continue
        msg = m.decode(data)
        if msg[0] == m.STOP:
            return
        if msg[1] == b"info":
            import json

            from server.runtime.worker import gil_enabled
            info = {"gil_enabled": gil_enabled(), "cmsgpack": m.cmsgpack(), "pid": os.getpid()}
            data = m.encode(m.PING, json.dumps(info).encode())
        ep.send(peer, data)


def process_echo(socks: dict[int, Any]) -> None:
    ep = channels.FdEndpoint(1, socks)
    try:
        echo(ep, 0)
    finally:
        ep.close()


def interp_echo(desc_bytes: bytes) -> None:
    import msgpack
    ep = channels.InterpEndpoint(1, msgpack.unpackb(desc_bytes))
    try:
        echo(ep, 0)
    finally:
        ep.close()


_NAIVE_ECHO = """
import sys
sys.path[:] = [p for p in PATH.split(SEP) if p]
from test.support.interpreters import queues
inq, outq = queues.Queue(INQ), queues.Queue(OUTQ)
while True:
    item = inq.get()          # blocking get: polls with time.sleep(0.010) while empty
    if item == b"stop":
        break
    outq.put(item)
"""

_INTERP_ECHO = """
import sys
sys.path[:] = [p for p in PATH.split(SEP) if p]
from bench.channels import interp_echo
interp_echo(DESC)
"""


# ---- measuring side --------------------------------------------------------------------------
def _echo_info(ep: channels.Endpoint) -> dict[str, Any]:
    ep.send(1, m.encode(m.PING, b"info"))
    data = ep.recv(60)
    if data is None:
        raise TimeoutError("the echo side did not answer within 60 s")
    info: dict[str, Any] = json.loads(m.decode(data)[1])
    return info


def _measure(ep: channels.Endpoint, n: int, warmup: int) -> list[float]:
    ECHO_INFO.clear()
    ECHO_INFO.update(_echo_info(ep))
    msg = m.encode(m.PING, PAYLOAD)
    clock = time.perf_counter_ns
    out: list[float] = []
    for i in range(warmup + n):
        t0 = clock()
        ep.send(1, msg)
        data = ep.recv(30)
        t1 = clock()
        if data is None:
            raise TimeoutError("no echo within 30 s")
        if i >= warmup:
            out.append((t1 - t0) / 1e3)
    return out


def bench_threads(n: int, warmup: int) -> list[float]:
    hub = channels.ThreadHub(2, channels.capacity(1))
    t = threading.Thread(target=echo, args=(hub.endpoint(1), 0), daemon=True)
    t.start()
    ep = hub.endpoint(0)
    try:
        return _measure(ep, n, warmup)
    finally:
        ep.send(1, m.encode(m.STOP))
        t.join(5)


def bench_interpreters(n: int, warmup: int) -> list[float]:
    import msgpack

    from server.runtime import interp
    hub = channels.InterpHub(2, channels.capacity(1))
    iid = interp.create()
    interp.bind_main(iid, {"PATH": os.pathsep.join(sys.path), "SEP": os.pathsep,
                           "DESC": msgpack.packb(hub.describe())})
    t = threading.Thread(target=interp.run, args=(iid, _INTERP_ECHO), daemon=True)
    t.start()
    ep = hub.endpoint(0)
    try:
        return _measure(ep, n, warmup)
    finally:
        ep.send(1, m.encode(m.STOP))
        t.join(5)
        interp.destroy(iid)
        hub.close()


def bench_processes(n: int, warmup: int) -> list[float]:
    import multiprocessing
    mesh = channels.socket_mesh(2)
    # spawn: never fork once subinterpreters exist (gh-139759)
    p = multiprocessing.get_context("spawn").Process(target=process_echo, args=(mesh[1],),
                                                     daemon=True)
    p.start()
    for sock in mesh[1].values():
        sock.close()
    ep = channels.FdEndpoint(0, mesh[0])
    try:
        return _measure(ep, n, warmup)
    finally:
        ep.send(1, m.encode(m.STOP))
        p.join(5)
        ep.close()


def bench_interpreters_naive(n: int, warmup: int) -> list[float]:
    from test.support.interpreters import queues

    from server.runtime import interp
    inq, outq = queues.create(), queues.create()
    iid = interp.create()
    interp.bind_main(iid, {"PATH": os.pathsep.join(sys.path), "SEP": os.pathsep,
                           "INQ": inq.id, "OUTQ": outq.id})
    t = threading.Thread(target=interp.run, args=(iid, _NAIVE_ECHO), daemon=True)
    t.start()
    out: list[float] = []
    try:
        for i in range(warmup + n):
            t0 = time.perf_counter_ns()
            inq.put(PAYLOAD)
            outq.get()
            if i >= warmup:
                out.append((time.perf_counter_ns() - t0) / 1e3)
    finally:
        inq.put(b"stop")
        t.join(5)
        interp.destroy(iid)
    return out


def summarise(samples: list[float]) -> dict[str, float]:
    from server.runtime.metrics import percentile
    return {"n": len(samples), "median_us": percentile(samples, 50),
            "p99_us": percentile(samples, 99), "min_us": min(samples), "max_us": max(samples)}


def environment() -> dict[str, Any]:
    from server.cmd_info import collect
    info = collect()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=False).stdout.strip() or None
    except OSError:
        commit = None
    info["commit"] = commit
    info["machine"] = platform.machine()
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.channels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few round trips (smoke run)")
    parser.add_argument("-n", type=int, default=None, help="round trips per transport")
    parser.add_argument("--only", nargs="*", default=None,
                        help="transports to run (threads interpreters processes "
                             "interpreters-naive)")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    n = args.n or (2000 if args.quick else 20000)
    warmup = max(50, n // 20)
    from server.runtime import interp
    plan: list[tuple[str, Any, int]] = [("threads", bench_threads, n)]
    if interp.available():
        plan.append(("interpreters", bench_interpreters, n))
    plan.append(("processes", bench_processes, n))
    if interp.available():
        # each naive round trip costs ~10-20 ms: a few dozen are plenty to show it
        plan.append(("interpreters-naive", bench_interpreters_naive, 20 if args.quick else 100))
    if args.only:
        plan = [p for p in plan if p[0] in args.only]
    rows: list[dict[str, Any]] = []
    print(f"channel round trip, {sys.version.split()[0]} "
          f"({'free-threaded' if sysconfig.get_config_var('Py_GIL_DISABLED') else 'GIL'} build)"
          f"{', QUICK run' if args.quick else ''}")
    print(f"{'transport':20s} {'n':>6s} {'median us':>10s} {'p99 us':>10s} {'min us':>9s} "
          f"{'max us':>10s} {'target':>7s}")
    for name, fn, count in plan:
        try:
            s: dict[str, Any] = summarise(fn(count, min(warmup, max(5, count // 10))))
        except Exception as exc:  # report, keep measuring the others
            print(f"{name:20s} failed: {type(exc).__name__}: {exc}")
            rows.append({"transport": name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        target = TARGETS_US.get(name)
        s["echo_side"] = dict(ECHO_INFO) if name != "interpreters-naive" else None
        s.update(transport=name, target_median_us=target,
                 meets_target=None if target is None else s["median_us"] <= target)
        rows.append(s)
        print(f"{name:20s} {s['n']:6d} {s['median_us']:10.1f} {s['p99_us']:10.1f} "
              f"{s['min_us']:9.1f} {s['max_us']:10.1f} "
              f"{'-' if target is None else f'<={target:g}':>7s}")
    doc = {"benchmark": "channels", "quick": args.quick, "round_trips": n,
           "utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
           "environment": environment(), "results": rows}
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        build = "ft" if sysconfig.get_config_var("Py_GIL_DISABLED") else "gil"
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS / f"channels-{build}-{stamp}{'-quick' if args.quick else ''}.json"
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {path.relative_to(RESULTS.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
