"""``paratick bots``: run N bot clients against a server and report what they measured."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "run N websocket bots against a server; report latency, snapshot rate, bytes, server MSPT"
DESCRIPTION = """\
Connect N bots (asyncio; several processes when N is large) to a running `paratick serve`.
Each bot sends inputs at --input-rate and applies every snapshot; the report gives
connected/failed/dropped, snapshots per second per bot, input->ack latency percentiles (an
input's seq appearing as acked in a snapshot), bytes/s in and out, and the server's MSPT read from
GET /stats during the run.  A progress line is printed to stderr while running."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="ws://127.0.0.1:8765", help="server (default %(default)s)")
    p.add_argument("-n", "--bots", type=int, default=50, help="bots (default %(default)s)")
    p.add_argument("--behaviour", default="mix", choices=("wander", "chase", "idle", "mix"),
                   help="bot behaviour; mix cycles the three (default %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="seed for the bots (default %(default)s)")
    p.add_argument("--ramp", type=float, default=200.0,
                   help="bots started per second (default %(default)s)")
    p.add_argument("--duration", type=float, default=10.0,
                   help="seconds of play after the last bot started (default %(default)s)")
    p.add_argument("--input-rate", type=float, default=20.0,
                   help="inputs per second per bot (default %(default)s)")
    p.add_argument("--validate", type=float, default=0.05, metavar="FRACTION",
                   help="fraction of bots that decode and apply every snapshot; the others "
                        "read only tick, ack and base (default %(default)s)")
    p.add_argument("--processes", type=int, default=None,
                   help="bot processes (default: one per 100 bots, at most the core count)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress line")


def run(args: argparse.Namespace) -> int:
    import asyncio

    from clients.bots import FleetSpec, format_report, run_fleet

    if args.bots < 1 or args.ramp <= 0 or args.duration < 0 or args.input_rate <= 0 \
            or not 0 <= args.validate <= 1:
        print("paratick bots: need --bots >= 1, --ramp > 0, --duration >= 0, --input-rate > 0, "
              "--validate in 0..1",
              file=sys.stderr)
        return 2
    spec = FleetSpec(url=args.url, bots=args.bots, behaviour=args.behaviour, seed=args.seed,
                     ramp=args.ramp, duration=args.duration, input_rate=args.input_rate,
                     validate=args.validate)
    tty = sys.stderr.isatty()

    def progress(line: str) -> None:
        if args.quiet:
            return
        print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr,
              flush=True)

    rep = asyncio.run(run_fleet(spec, processes=args.processes, progress=progress))
    if tty and not args.quiet:
        print(file=sys.stderr)
    print(json.dumps(rep, indent=1) if args.json else format_report(rep))
    return 0 if rep["connected"] == spec.bots and rep["dropped"] == 0 else 1
