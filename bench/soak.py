"""``paratick bench soak``: a ping flood, then minutes of churn and hostile clients.

Theory of operation
-------------------
The soak starts ``paratick serve`` (this interpreter, default settings, a free loopback port)
unless ``--url``/``--pid`` name a running one, connects one well-behaved *player* (inputs at
20 Hz, every snapshot timed) and keeps it connected throughout.  Then:

1. **Flood** (``--flood`` seconds, default 20): a raw-socket client sends masked empty pings as
   fast as the socket takes them and never reads; when the server closes it, it reconnects and
   floods again.  Meanwhile and for ``--after`` seconds after it, a new client connects every
   two seconds and the time to its welcome is recorded, and the player's snapshots are counted
   per second.
2. **Churn** (``--minutes``, default 10): ``--clients`` clients connect, say hello, play for
   0.5-3 s and leave (bye, or a dropped socket and a resume with the session token); every
   ten seconds a short ping flood, a connection that never says hello and one that never reads
   join in.  Every five seconds the server's resident memory and ``/stats`` are sampled.

The verdict: the player's snapshot rate per second (minimum and median) during and after the
flood, welcome latencies (maximum), memory at the start and end of the churn (the last minute's
median over the first minute's), client errors that were not the server's documented closes,
and tracebacks in the server's log.  Everything runs on this machine, loopback only; every
loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as _dt
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgpack

from bench import schema
from bench.errors import BenchError

#: Snapshots per second the player must keep during and after the flood.
MIN_RATE = 15.0
#: Seconds within which a new client must be welcomed.
WELCOME_WITHIN = 2.0
#: The flood's write: 4,096 masked empty pings (6 bytes each).
PINGS = b"\x89\x80\x00\x00\x00\x00" * 4096
#: Close codes a churning client may see without it counting as an error.
EXPECTED_CLOSES = {1000, 1001, 1008, 1013, 4000}


def _hello(name: str, token: str | None = None) -> bytes:
    return msgpack.packb({"t": "hello", "v": 1, "name": name, "token": token})


def _input(seq: int) -> bytes:
    return msgpack.packb({"t": "input", "seq": seq, "thrust": 0.5, "turn": 0.2, "action": 0,
                          "ack": None})


# ---- clients -----------------------------------------------------------------------------------
async def _connect(url: str) -> Any:
    from websockets.asyncio.client import connect
    return await connect(url, subprotocols=["paratick.msgpack.v1"],  # type: ignore[list-item]
                         open_timeout=10, max_size=1 << 24)


async def _welcome(ws: Any, name: str, token: str | None = None) -> dict[str, Any]:
    await ws.send(_hello(name, token))
    async with asyncio.timeout(10):
        while True:
            msg = msgpack.unpackb(await ws.recv())
            if msg["t"] in ("welcome", "error"):
                return msg


async def play(url: str, stop: asyncio.Event, times: list[float]) -> None:
    """The well-behaved player: inputs at 20 Hz, the time of every snapshot appended."""
    ws = await _connect(url)
    await _welcome(ws, "player")
    seq = 0

    async def send() -> None:
        nonlocal seq
        while not stop.is_set():
            seq += 1
            await ws.send(_input(seq))
            await asyncio.sleep(0.05)

    sender = asyncio.create_task(send())
    try:
        async for data in ws:
            if data[:20].find(b"snapshot") >= 0:
                times.append(time.monotonic())
            if stop.is_set():
                break
    finally:
        sender.cancel()
        await ws.close()


async def welcome_seconds(url: str) -> float | None:
    """Seconds from connecting to welcome for a new client (None: not welcomed in 10 s)."""
    t0 = time.monotonic()
    try:
        ws = await _connect(url)
        msg = await _welcome(ws, "probe")
        took = time.monotonic() - t0
        await ws.send(msgpack.packb({"t": "bye", "reason": "probe"}))
        await ws.close()
        return took if msg["t"] == "welcome" else None
    except (OSError, TimeoutError, Exception):
        return None


async def _raw(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    return reader, writer


async def ping_flood(host: str, port: int, seconds: float) -> dict[str, int]:
    """Unread empty pings as fast as the socket takes them, reconnecting when closed."""
    out = Counter[str]()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and out["connections"] < 10_000:
        try:
            _, writer = await _raw(host, port)
        except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            out["refused"] += 1
            await asyncio.sleep(0.05)
            continue
        out["connections"] += 1
        try:
            while time.monotonic() < deadline:
                if writer.transport.is_closing():
                    raise ConnectionResetError
                writer.write(PINGS)
                out["bytes"] += len(PINGS)
                async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                    await writer.drain()  # as fast as the socket takes them, no faster
        except TimeoutError:
            pass  # the server stopped reading: the flood is blocked until the deadline
        except (OSError, ConnectionError):
            out["closed_by_server"] += 1
        finally:
            out["bytes"] -= writer.transport.get_write_buffer_size()  # never sent
            writer.transport.abort()
    return dict(out)


async def churner(url: str, stop: asyncio.Event, rng: random.Random, errors: Counter[str],
                  done: Counter[str]) -> None:
    """Connect, hello, play 0.5-3 s, then bye or drop and resume; until ``stop``."""
    from websockets.exceptions import ConnectionClosed

    token: str | None = None
    while not stop.is_set():
        try:
            ws = await _connect(url)
            msg = await _welcome(ws, "churn", token)
            if msg["t"] != "welcome":
                done[f"refused:{msg.get('code')}"] += 1
                token = None
                await ws.close()
                await asyncio.sleep(0.2)
                continue
            done["resumed" if msg["resumed"] else "joined"] += 1
            token = msg["token"]
            until = time.monotonic() + rng.uniform(0.5, 3.0)
            seq = 0
            while time.monotonic() < until and not stop.is_set():
                seq += 1
                await ws.send(_input(seq))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        while True:
                            await ws.recv()
            if rng.random() < 0.7:
                await ws.send(msgpack.packb({"t": "bye", "reason": "churn"}))
                await ws.close()
                token = None
                done["bye"] += 1
            else:
                ws.transport.abort()  # a dropped connection: resume with the token next time
                done["dropped"] += 1
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            if code not in EXPECTED_CLOSES:
                errors[f"closed {code}"] += 1
            token = None
        except (OSError, TimeoutError) as exc:
            errors[type(exc).__name__] += 1
            token = None
            await asyncio.sleep(0.2)


async def hostile_mix(host: str, port: int, stop: asyncio.Event, counts: Counter[str]) -> None:
    """Every ten seconds: a 2 s ping flood, a never-hello connection, a never-reading player."""
    held: list[asyncio.StreamWriter] = []
    try:
        while not stop.is_set():
            for k, v in (await ping_flood(host, port, 2.0)).items():
                counts[f"flood_{k}"] += v
            with contextlib.suppress(Exception):
                _, w = await _raw(host, port)       # never says hello
                held.append(w)
                counts["never_hello"] += 1
            with contextlib.suppress(Exception):
                _, w = await _raw(host, port)       # says hello, never reads
                payload = _hello("sink")
                w.write(bytes([0x82, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
                held.append(w)
                counts["never_read"] += 1
            while len(held) > 6:                    # bounded: oldest hostile sockets go
                held.pop(0).transport.abort()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(8.0):
                    await stop.wait()
    finally:
        for w in held:
            w.transport.abort()


# ---- the server --------------------------------------------------------------------------------
def rss_bytes(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(m.group(1)) * 1024 if m else None


def get_stats(port: int) -> dict[str, Any] | None:
    import json
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
            out: dict[str, Any] = json.load(r)
        return out
    except (OSError, ValueError):
        return None


class ServerProcess:
    """``paratick serve`` on a free loopback port; its stderr kept for the verdict."""

    def __init__(self, extra: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--port", "0", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 90
        port = None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"serving wss?://[^:]+:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        if port is None:
            self.proc.kill()
            raise BenchError("the server did not start: " + "".join(self.log)[-500:])
        self.port = port
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if len(self.log) < 100_000:
                self.log.append(line)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


# ---- the phases --------------------------------------------------------------------------------
def _per_second(times: list[float], t0: float, t1: float) -> list[int]:
    n = max(1, int(t1 - t0))
    bins = [0] * n
    for t in times:
        if t >= t0:
            i = int(t - t0)
            if i < n:
                bins[i] += 1
    return bins


async def flood_phase(url: str, seconds: float, after: float, times: list[float]) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    welcomes: list[float | None] = []

    async def probes(until: float) -> None:
        while time.monotonic() < until:
            welcomes.append(await welcome_seconds(url))
            await asyncio.sleep(2.0)

    t0 = time.monotonic()
    prober = asyncio.create_task(probes(t0 + seconds + after))
    flood = await ping_flood(host, port, seconds)
    t1 = time.monotonic()
    await prober
    t2 = time.monotonic()
    during, later = _per_second(times, t0, t1), _per_second(times, t1, t2)
    ok_w = [w for w in welcomes if w is not None]
    return {"seconds": seconds, "after_s": after, "attack": flood,
            "snapshots_per_s_during": during, "snapshots_per_s_after": later,
            "min_rate_during": min(during), "min_rate_after": min(later),
            "median_rate_during": statistics.median(during),
            "welcomes_s": welcomes, "welcome_max_s": max(ok_w) if ok_w else None,
            "welcomes_failed": len(welcomes) - len(ok_w),
            "holds": min(during) >= MIN_RATE and min(later) >= MIN_RATE
            and len(ok_w) == len(welcomes) and bool(ok_w) and max(ok_w) <= WELCOME_WITHIN}


async def churn_phase(url: str, port: int, pid: int | None, minutes: float, clients: int,
                      times: list[float], seed: int) -> dict[str, Any]:
    stop = asyncio.Event()
    errors: Counter[str] = Counter()
    done: Counter[str] = Counter()
    hostile: Counter[str] = Counter()
    rng = random.Random(seed)
    tasks = [asyncio.create_task(churner(url, stop, random.Random(rng.random()), errors, done))
             for _ in range(clients)]
    parts = urlsplit(url)
    tasks.append(asyncio.create_task(hostile_mix(parts.hostname or "127.0.0.1", port, stop,
                                                 hostile)))
    samples: list[dict[str, Any]] = []
    t0 = time.monotonic()
    end = t0 + minutes * 60
    while time.monotonic() < end:
        await asyncio.sleep(min(5.0, max(0.0, end - time.monotonic())))
        now = time.monotonic()
        stats = await asyncio.to_thread(get_stats, port) or {}
        conns = stats.get("connections", {})
        ticker = stats.get("ticker", {})
        samples.append({"t_s": round(now - t0, 1), "rss": rss_bytes(pid) if pid else None,
                        "open": conns.get("open"), "tick_rate": ticker.get("tick_rate_actual"),
                        "mspt_p99": ticker.get("mspt_p99"),
                        "player_rate": len([t for t in times if now - 5 <= t < now]) / 5})
        if len(samples) % 12 == 0:
            s = samples[-1]
            mib = f"{s['rss'] / 2**20:.0f} MiB" if s["rss"] else "?"
            print(f"soak: {s['t_s']:.0f} s, rss {mib}, {s['open']} open, player "
                  f"{s['player_rate']:.1f} snapshots/s, {sum(errors.values())} client errors",
                  file=sys.stderr, flush=True)
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    rss: list[int] = [s["rss"] for s in samples if s["rss"]]
    per_min = max(1, len(rss) // max(1, int(minutes)))
    first, last = rss[:per_min], rss[-per_min:]
    growth = statistics.median(last) / statistics.median(first) if rss else None
    rates = [s["player_rate"] for s in samples]
    return {"minutes": minutes, "clients": clients, "samples": samples, "sessions": dict(done),
            "hostile": dict(hostile), "client_errors": dict(errors),
            "rss_first_minute": statistics.median(first) if first else None,
            "rss_last_minute": statistics.median(last) if last else None,
            "rss_growth": growth, "rss_max": max(rss) if rss else None,
            "player_rate_min": min(rates) if rates else None,
            "player_rate_median": statistics.median(rates) if rates else None}


# ---- the command --------------------------------------------------------------------------------
DESCRIPTION = """\
A soak test against a real server: first a ping flood from a client that never reads (it
reconnects whenever the server closes it), then minutes of churn: clients joining, playing and
leaving, with a flood, a connection that never says hello and one that never reads every ten
seconds.  A well-behaved player is connected throughout.

Reports the player's snapshots per second during and after the flood, how long new clients
waited for their welcome, the server's resident memory over the churn, client errors that were
not the server's documented closes, and tracebacks in the server's log.  Starts its own server
(this interpreter, default settings, a free loopback port) unless --url names a running one.
Loopback only; every loop is bounded in count and time."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--flood", type=float, default=20.0, metavar="SECONDS",
                   help="length of the unread ping flood; 0 skips it (default %(default)s)")
    p.add_argument("--after", type=float, default=10.0, metavar="SECONDS",
                   help="seconds watched after the flood (default %(default)s)")
    p.add_argument("--minutes", type=float, default=10.0,
                   help="length of the churn; 0 skips it (default %(default)s)")
    p.add_argument("--clients", type=int, default=50,
                   help="churning clients at once (default %(default)s)")
    p.add_argument("--url", default=None,
                   help="attack a running server instead of starting one (loopback only)")
    p.add_argument("--pid", type=int, default=None,
                   help="the running server's process id, for its memory (with --url)")
    p.add_argument("--seed", type=int, default=1, help="churn seed (default %(default)s)")
    schema.add_out_argument(p, suffix='-soak')
    p.add_argument("--note", default=None, help="a line saved with the results")


def run(args: argparse.Namespace) -> int:
    from bench import env, schema
    from bench.builds import repo_root

    if args.flood < 0 or args.minutes < 0 or args.clients < 1 or args.after < 1:
        raise BenchError("--flood and --minutes must be >= 0, --clients and --after >= 1")
    if args.url is not None:
        host = urlsplit(args.url).hostname or ""
        if not (host.startswith("127.") or host in ("localhost", "::1")):
            raise BenchError(f"--url must be a loopback address, got {host!r}")
    server = None if args.url else ServerProcess([])
    url = args.url or f"ws://127.0.0.1:{server.port}"  # type: ignore[union-attr]
    port = urlsplit(url).port or 80
    pid = args.pid if args.url else server.proc.pid  # type: ignore[union-attr]
    print(f"soak: server {url} (pid {pid}); flood {args.flood:g} s, churn {args.minutes:g} min "
          f"with {args.clients} clients", file=sys.stderr, flush=True)

    times: list[float] = []
    player_stop = threading.Event()

    def player() -> None:
        # Its own thread and event loop: the attackers' loop must not delay the measurement.
        async def go() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(play(url, stop, times))
            while not player_stop.is_set() and not task.done():
                await asyncio.sleep(0.1)
            stop.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        asyncio.run(go())

    player_thread = threading.Thread(target=player, name="soak-player", daemon=True)

    async def main() -> dict[str, Any]:
        player_thread.start()
        await asyncio.sleep(2.0)
        out: dict[str, Any] = {}
        if args.flood:
            out["flood"] = await flood_phase(url, args.flood, args.after, times)
            f = out["flood"]
            print(f"soak: flood {f['attack'].get('bytes', 0) / 2**20:.1f} MiB on "
                  f"{f['attack'].get('connections', 0)} connections; player min "
                  f"{f['min_rate_during']} snapshots/s during, {f['min_rate_after']} after; "
                  f"welcome max {f['welcome_max_s']} s", file=sys.stderr, flush=True)
        if args.minutes:
            out["churn"] = await churn_phase(url, port, pid, args.minutes, args.clients, times,
                                             args.seed)
        player_stop.set()
        await asyncio.to_thread(player_thread.join, 10)
        return out

    try:
        phases = asyncio.run(main())
    finally:
        if server is not None:
            server.stop()
    log = server.log if server is not None else []
    tracebacks = sum(1 for line in log if line.startswith("Traceback"))
    section = {"created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
               "command": ["paratick", "bench", "soak", *sys.argv[3:]],
               "environment": env.capture(repo_root()),
               "params": {"flood_s": args.flood, "after_s": args.after,
                          "minutes": args.minutes, "clients": args.clients, "url": args.url,
                          "seed": args.seed, "min_rate": MIN_RATE,
                          "welcome_within_s": WELCOME_WITHIN},
               "note": args.note, "server_log_lines": len(log),
               "server_tracebacks": tracebacks, **phases}
    out = args.out or schema.results_dir(quick=False).with_name(
        schema.results_dir(quick=False).name + "-soak")
    path = schema.save_section(out, "soak", section)
    print(summary(section))
    print(path)
    return 0


def summary(section: dict[str, Any]) -> str:
    lines = []
    f = section.get("flood")
    if f:
        lines.append(f"flood {f['seconds']:g} s ({f['attack'].get('bytes', 0) / 2**20:.1f} MiB "
                     f"of pings on {f['attack'].get('connections', 0)} connections): player "
                     f"{f['min_rate_during']}-{max(f['snapshots_per_s_during'])} snapshots/s "
                     f"during, min {f['min_rate_after']} after; new clients welcomed in at most "
                     f"{f['welcome_max_s']} s ({f['welcomes_failed']} not welcomed) -> "
                     f"{'holds' if f['holds'] else 'FAILS'}")
    c = section.get("churn")
    if c:
        rss = (f"rss {c['rss_first_minute'] / 2**20:.0f} -> {c['rss_last_minute'] / 2**20:.0f} MiB"
               f" ({c['rss_growth']:.3f}x)") if c["rss_growth"] else "rss not measured"
        lines.append(f"churn {c['minutes']:g} min, {c['clients']} clients, "
                     f"{sum(c['sessions'].values())} sessions: {rss}; player median "
                     f"{c['player_rate_median']} snapshots/s (min {c['player_rate_min']}); "
                     f"client errors {sum(c['client_errors'].values())}; server tracebacks "
                     f"{section['server_tracebacks']}")
    return "\n".join(lines)
