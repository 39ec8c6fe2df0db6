"""``paratick bots``: run N bot clients against a server and report what they measured.

When bots cannot connect or are dropped, the report says why (the first distinct reasons the
bots saw) and the command ends with one line on stderr, ``paratick bots: no bot connected to
URL: connection refused``, and exit status 1; a bad option is one line and status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any
from urllib.parse import urlsplit

HELP = "run N websocket bots against a server; report latency, snapshot rate, bytes, server MSPT"
DESCRIPTION = """\
Connect N bots (asyncio; several processes when N is large) to a running `paratick serve`.
Each bot sends inputs at --input-rate and applies every snapshot; the report gives
connected/failed/dropped, snapshots per second per bot, input->ack latency percentiles (an
input's seq appearing as acked in a snapshot) once all bots play (from 1 s after the last one
started) and, apart, while they connect, bytes/s in and out, the bots' CPU per message, and
the server's MSPT read from GET /stats during the run.  A progress line is printed to stderr
while running.

Exit status: 0 when every bot connected and stayed; 1 otherwise, with one line on stderr saying
why (e.g. no bot connected: connection refused); 2 for a bad option."""

#: Exception names in a bot's failure whose plain-words meaning is clearer than their message.
PLAIN_REASONS = {
    "ConnectionRefusedError": "connection refused",
    "ConnectionResetError": "connection reset by the server",
    "TimeoutError": "no answer in time",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="ws://127.0.0.1:8765", help="server (default %(default)s)")
    p.add_argument("-n", "--bots", type=int, default=50, metavar="N",
                   help="bots (default %(default)s)")
    p.add_argument("--behaviour", default="mix", choices=("wander", "chase", "idle", "mix"),
                   help="bot behaviour; mix cycles the three (default %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="seed for the bots (default %(default)s)")
    p.add_argument("--ramp", type=float, default=200.0,
                   help="bots started per second (default %(default)s)")
    p.add_argument("--duration", type=float, default=10.0, metavar="SECONDS",
                   help="seconds of play after the last bot started (default %(default)s)")
    p.add_argument("--input-rate", type=float, default=20.0,
                   help="inputs per second per bot (default %(default)s)")
    p.add_argument("--validate", type=float, default=0.05, metavar="FRACTION",
                   help="fraction of bots that decode and apply every snapshot; the others "
                        "read only tick, ack and base (default %(default)s)")
    p.add_argument("--client", default="auto", choices=("auto", "picows", "websockets"),
                   help="client library of the bots that read headers only: picows (parses "
                        "frames in C; GIL build only, with uvloop when installed) or websockets; "
                        "auto picks picows where it loads (default %(default)s).  Validating "
                        "bots always use websockets")
    p.add_argument("--processes", type=int, default=None,
                   help="bot processes (default: one per 100 bots, at most the core count)")
    p.add_argument("--nice", type=int, default=0, metavar="N",
                   help="lower the bots' CPU priority by N (0-19, as nice(1)) so that a server "
                        "on the same machine gets a core first when both want one; the bots "
                        "still use every idle cycle, and their latencies include their own "
                        "waits (default 0)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    p.add_argument("--quiet", action="store_true", help="no progress line on stderr")


def reason(failure: str) -> str:
    """A bot's failure (``connect: ConnectionRefusedError: [Errno 111] ...``) in plain words
    (``connection refused``); unknown shapes come back as they are, less the errno."""
    text = failure.removeprefix("connect: ")
    m = re.fullmatch(r"(\w+): ?(.*)", text, flags=re.S)
    if m is None:
        return text
    name, detail = m.groups()
    if name in PLAIN_REASONS:
        return PLAIN_REASONS[name]
    errno = re.match(r"\[Errno -?\d+\] ", detail)
    if errno:  # an OSError: its strerror says it ("Name or service not known")
        detail = detail[errno.end():]
        return detail[:1].lower() + detail[1:]
    return detail or name


def summary(rep: dict[str, Any], url: str) -> str | None:
    """The one line that says why the run failed, or None when every bot connected and stayed."""
    bots, connected = rep["bots"], rep["connected"]
    failures = rep.get("first_failures") or []
    drops = rep.get("first_drops") or []
    why = "; ".join(dict.fromkeys(reason(f) for f in failures)) or "no reason recorded"
    if connected == 0:
        return f"paratick bots: no bot connected to {url}: {why}"
    if connected < bots:
        return f"paratick bots: {bots - connected} of {bots} bots could not connect to {url}: {why}"
    if rep.get("dropped"):
        dropped = "; ".join(dict.fromkeys(reason(d) for d in drops)) or "no reason recorded"
        return f"paratick bots: {rep['dropped']} of {bots} bots were dropped: {dropped}"
    return None


def _why_rows(text: str, rep: dict[str, Any]) -> str:
    """The report's own text plus a row per distinct failure and drop, in its two columns."""
    m = re.match(r".*?\S {2,}", text)
    col = m.end() if m else 0
    rows = [("why bots failed", f) for f in rep.get("first_failures") or []]
    rows += [("why bots were dropped", d) for d in rep.get("first_drops") or []]
    return "\n".join([text, *(f"{k:<{col - 2}}  {v}" for k, v in rows)])


def _ws_url(text: str) -> bool:
    """Whether ``text`` is a ws:// or wss:// URL with a host and a valid port, if any."""
    try:
        url = urlsplit(text)
        port = url.port  # raises for a port that is not a number or above 65535
    except ValueError:
        return False
    return url.scheme in ("ws", "wss") and bool(url.hostname) and port != 0


def run(args: argparse.Namespace) -> int:
    from clients.bots import FleetSpec, format_report, lean_client, run_fleet, run_loop

    if args.bots < 1 or args.ramp <= 0 or args.duration < 0 or args.input_rate <= 0 \
            or not 0 <= args.validate <= 1 or not 0 <= args.nice <= 19:
        print("paratick bots: error: need --bots >= 1, --ramp > 0, --duration >= 0, "
              "--input-rate > 0, --validate in 0..1, --nice in 0..19", file=sys.stderr)
        return 2
    if not _ws_url(args.url):
        print(f"paratick bots: error: --url needs ws://HOST[:PORT] or wss://HOST[:PORT], "
              f"got {args.url!r}", file=sys.stderr)
        return 2
    spec = FleetSpec(url=args.url, bots=args.bots, behaviour=args.behaviour, seed=args.seed,
                     ramp=args.ramp, duration=args.duration, input_rate=args.input_rate,
                     validate=args.validate, client=args.client)
    try:
        lean_client(args.client)
    except ValueError as exc:
        print(f"paratick bots: error: {exc}", file=sys.stderr)
        return 2
    if args.nice:
        os.nice(args.nice)  # before the bot processes start: they inherit it
    tty = sys.stderr.isatty()

    def progress(line: str) -> None:
        if args.quiet:
            return
        print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr,
              flush=True)

    rep = run_loop(run_fleet(spec, processes=args.processes, progress=progress),
                    lean_client(args.client))
    rep["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
    if tty and not args.quiet:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(rep, indent=1))
    elif rep["connected"]:  # with no bot connected there is nothing to report but why
        print(_why_rows(format_report(rep), rep))
    line = summary(rep, args.url)
    if line is not None:
        print(line, file=sys.stderr)
        return 1
    return 0
