"""``paratick bench spectators``: what watching the world costs the tick.

Theory of operation
-------------------
One ``paratick serve`` process (this interpreter, a free loopback port, a fixed world: 2x2
regions, ``--npcs`` NPCs, ``--backend``) runs throughout.  The benchmark alternates rounds
*without* spectators (A) and *with* ``--spectators`` of them (B, each a websocket client in this
process that spectates and reads every view), in the order A B B A A B B A ... so that a machine
that slows down during the run hurts both about equally.  Each round lasts ``--settle`` seconds
(spectators connect or leave, the server's windows fill with ticks of the new state) and then
``--window`` seconds, after which the server's ``/stats`` is read: ``runtime.mspt`` is the
coordinator's step time (every worker's tick, hook included: where a world sample is taken)
over its last 300 ticks, 10 s at 30 Hz, so with the default window it describes that round's
ticks only.

Per round: step MSPT p50 and p99, the ticker's deadline misses during the round, and (B) views
received.  The verdict is the per-pair ratio B/A (pair i = the i-th A and the i-th B round) of
p50 and of p99: median with min and max, and a bootstrap interval of the ratio of medians
(:func:`bench.stats.ratio_ci`).  1.00 means spectators cost the tick nothing measurable.  The
figures, parameters and environment go to ``spectators-<build>.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench import schema
from bench.errors import BenchError

#: The runtime's MSPT window (``server.runtime.metrics.DEFAULT_WINDOW`` ticks) at 30 Hz, in
#: seconds: a round's measured window must cover it for /stats to describe that round alone.
STATS_WINDOW_S = 10.0

DESCRIPTION = """\
What spectators (the live page's viewers) cost the tick.  Serves a fixed world in a separate
process and alternates rounds without spectators (A) and with --spectators of them (B), in the
order A B B A ...; after each round it reads the server's step MSPT p50/p99 from /stats (a
300-tick window, so a round's --window must be at least 10 s at 30 Hz to be measured alone).
Reports the median ratio B/A with min and max and a 95 % bootstrap interval; writes
spectators-<build>.json into --out.  Loopback only; every wait is bounded."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounds", type=int, default=6,
                   help="rounds of each kind, A and B (default %(default)s)")
    p.add_argument("--spectators", type=int, default=10,
                   help="spectators connected in B rounds (default %(default)s)")
    p.add_argument("--settle", type=float, default=3.0, metavar="SECONDS",
                   help="seconds after connecting or leaving before a round is measured "
                        "(default %(default)s)")
    p.add_argument("--window", type=float, default=STATS_WINDOW_S, metavar="SECONDS",
                   help="seconds measured per round (default %(default)s: the server's "
                        "300-tick MSPT window at 30 Hz)")
    p.add_argument("--npcs", type=int, default=2000,
                   help="NPC entities of the served world (default %(default)s)")
    from server.runtime import BACKENDS

    p.add_argument("--backend", default="threads", choices=BACKENDS,
                   help="where the server's workers run (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    schema.add_out_argument(p)
    p.add_argument("--note", default=None, help="a line saved with the results")


# ---- aggregation (pure) ------------------------------------------------------------------------
def order(rounds: int) -> list[bool]:
    """Whether each round has spectators: A B B A A B B A ... (``rounds`` of each kind)."""
    if rounds < 1:
        raise BenchError(f"--rounds must be >= 1, got {rounds}")
    out: list[bool] = []
    for i in range(rounds):
        out += [False, True] if i % 2 == 0 else [True, False]
    return out


def aggregate(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The verdict from the raw rounds (each ``{"spectators": int, "p50": ms, "p99": ms}``).

    Pairs the i-th round without spectators with the i-th round with them; for p50 and p99:
    each side's median with min and max, the per-pair ratios B/A (median, min, max) and, with
    two pairs or more, a 95 % bootstrap interval of the ratio of medians.  Rounds whose figures
    are missing (null) are left out of both their side and their pair.
    """
    from bench import stats

    a = [r for r in runs if not r.get("spectators")]
    b = [r for r in runs if r.get("spectators")]
    out: dict[str, Any] = {"pairs": min(len(a), len(b))}
    for key in ("p50", "p99"):
        pairs = [(x[key], y[key]) for x, y in zip(a, b, strict=False)
                 if _ok(x.get(key)) and _ok(y.get(key)) and x[key] > 0]
        ratios = [y / x for x, y in pairs]
        entry: dict[str, Any] = {
            "without": _summary([x for x, _ in pairs]), "with": _summary([y for _, y in pairs]),
            "ratio": _summary(ratios), "ratio_ci": None}
        if len(pairs) >= 2:
            ci = stats.ratio_ci([y for _, y in pairs], [x for x, _ in pairs])
            entry["ratio_ci"] = [ci.low, ci.high]
        out[key] = entry
    return out


def _ms(x: Any) -> str:
    return f"{x:.2f} ms" if _ok(x) else "-"


def _ok(x: Any) -> bool:
    return isinstance(x, int | float) and x == x and x not in (float("inf"), float("-inf"))


def _summary(xs: Sequence[float]) -> dict[str, float | int] | None:
    from bench import stats

    return stats.summarise(xs).to_dict() if xs else None


def summary(section: Mapping[str, Any]) -> str:
    """The table printed at the end (and readable from the JSON file)."""
    agg = section["aggregate"]
    p = section["params"]
    lines = [f"tick cost of {p['spectators']} spectators ({agg['pairs']} A/B pairs, "
             f"{p['npcs']} NPCs, {p['backend']} backend; step MSPT from /stats)",
             f"{'':6}{'without (ms)':>24}{'with (ms)':>24}{'ratio with/without':>28}"]
    for key in ("p50", "p99"):
        e = agg.get(key) or {}

        def cell(s: Any, digits: int = 2) -> str:
            if not s:
                return "-"
            return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"

        ci = e.get("ratio_ci")
        ci_text = f" (95% CI {ci[0]:.2f}-{ci[1]:.2f})" if ci else ""
        lines.append(f"{key:6}{cell(e.get('without')):>24}{cell(e.get('with')):>24}"
                     f"{cell(e.get('ratio')):>28}{ci_text}")
    return "\n".join(lines)


# ---- the spectators -------------------------------------------------------------------------
class Spectators:
    """``n`` spectators on a thread of their own (their own event loop), reading every view."""

    def __init__(self, url: str, n: int) -> None:
        self.url = url
        self.n = n
        self.views = 0
        self.refused = 0
        self.errors: list[str] = []
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-spectators", daemon=True)

    def start(self, timeout: float = 20.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise BenchError(f"{self.n} spectators did not connect within {timeout:g} s")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15.0)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from websockets.asyncio.client import connect

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        watching = 0
        lock = asyncio.Lock()

        async def one() -> None:
            nonlocal watching
            try:
                async with connect(self.url, subprotocols=["paratick.json.v1"],  # type: ignore[list-item]
                                   open_timeout=10, max_size=1 << 24) as ws:
                    await ws.send(json.dumps({"t": "spectate", "v": 1}))
                    first = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if first.get("t") != "watching":
                        self.refused += 1
                        return
                    async with lock:
                        watching += 1
                        if watching == self.n:
                            self._ready.set()
                    assert self._stop is not None
                    stop = asyncio.create_task(self._stop.wait())
                    while not self._stop.is_set():
                        recv = asyncio.create_task(ws.recv())
                        done, _ = await asyncio.wait({recv, stop},
                                                     return_when=asyncio.FIRST_COMPLETED)
                        if recv in done:
                            if '"view"' in str(recv.result())[:16]:
                                self.views += 1
                        else:
                            recv.cancel()
                    stop.cancel()
            except Exception as exc:  # reported with the results, never hidden
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])

        await asyncio.gather(*(one() for _ in range(self.n)))


# ---- the run --------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    from bench import env, schema
    from bench.builds import repo_root
    from bench.soak import ServerProcess, get_stats

    if args.spectators < 1 or args.npcs < 0 or args.settle < 0 or args.window <= 0:
        raise BenchError("--spectators must be >= 1, --npcs and --settle >= 0, --window > 0")
    plan = order(args.rounds)

    def say(text: str) -> None:
        if not args.quiet:
            print(f"spectators: {text}", file=sys.stderr, flush=True)

    server = ServerProcess(["--backend", args.backend, "--regions", "2x2", "--npcs",
                            str(args.npcs), "--players", "64", "--gateways", "0",
                            "--max-spectators", str(args.spectators)])
    url = f"ws://127.0.0.1:{server.port}"
    runs: list[dict[str, Any]] = []
    try:
        say(f"server {url}; {len(plan)} rounds of {args.settle:g} + {args.window:g} s")
        for i, with_spectators in enumerate(plan):
            watchers = Spectators(url, args.spectators) if with_spectators else None
            if watchers is not None:
                watchers.start()
            time.sleep(args.settle)
            before = get_stats(server.port) or {}
            time.sleep(args.window)
            after = get_stats(server.port) or {}
            if watchers is not None:
                watchers.stop()
            step = (after.get("runtime") or {}).get("mspt") or {}
            misses = ((after.get("ticker") or {}).get("deadline_misses", 0)
                      - (before.get("ticker") or {}).get("deadline_misses", 0))
            entry = {"round": i, "spectators": args.spectators if with_spectators else 0,
                     "p50": step.get("p50"), "p99": step.get("p99"), "n": step.get("n"),
                     "deadline_misses": misses,
                     "views": watchers.views if watchers is not None else 0,
                     "errors": watchers.errors[:5] if watchers is not None else []}
            runs.append(entry)
            say(f"round {i + 1}/{len(plan)}: {entry['spectators']} spectators, step p50 "
                f"{_ms(entry['p50'])}, p99 {_ms(entry['p99'])}, {entry['views']} views")
    finally:
        server.stop()
    tracebacks = sum(1 for line in server.log if line.startswith("Traceback"))
    section = {"created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
               "command": ["paratick", "bench", "spectators", *sys.argv[3:]],
               "environment": env.capture(repo_root()),
               "params": {"rounds": args.rounds, "spectators": args.spectators,
                          "settle_s": args.settle, "window_s": args.window, "npcs": args.npcs,
                          "backend": args.backend, "regions": "2x2", "players": 64,
                          "gateways": 0},
               "note": args.note, "server_tracebacks": tracebacks, "runs": runs,
               "aggregate": aggregate(runs)}
    path = schema.write_json(args.out or schema.results_dir(),
                             f"spectators-{env.build_label()}.json", section)
    print(summary(section))
    print(path)
    return 0
