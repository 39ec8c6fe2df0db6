"""A stand-in for ``paratick serve`` / ``paratick bots`` used by test_load_probe.

``serve --port P ... [--npcs N] [--players P] [--max-connections C]``: answers GET /stats with a
ticker at 30 Hz whose ticks all take N/100 ms (so a test picks pass or fail through the world
size; listed in ``recent_ms`` as the real server does) and P - 16 players playing (the harness
asks for 16 more than the bots), at most C (serve's default cap, 4096, where not given), until
SIGINT, then prints final JSON.
``bots --url ws://127.0.0.1:P --bots B ... --json``: reads /stats, prints a bots report in which
as many bots connected as the server has playing, B at most.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer


def arg(argv: list[str], name: str, default: str) -> str:
    return argv[argv.index(name) + 1] if name in argv else default


def serve(argv: list[str]) -> int:
    port = int(arg(argv, "--port", "0"))
    p99 = int(arg(argv, "--npcs", "1000")) / 100.0
    playing = min(int(arg(argv, "--players", "16")) - 16,
                  int(arg(argv, "--max-connections", "4096")))
    loop = {"auto": "uvloop"}.get(arg(argv, "--loop", "auto"), arg(argv, "--loop", "auto"))
    started = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            tick = int((time.monotonic() - started) * 30)  # a steady 30 Hz
            body = json.dumps({"tick": tick, "loop": loop, "connections": {"playing": playing},
                               "ticker": {"on": "loop", "mspt_p50": p99 / 2, "mspt_p99": p99,
                                          "tick_rate_actual": 30.0, "deadline_misses": 0,
                                          "ticks": tick, "recent_ms": [p99] * min(tick, 64)},
                               "gc": {"collections": tick, "pause_ms_max": 1.5},
                               }).encode()
            self.send_response(200 if self.path == "/stats" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGINT, lambda *_: threading.Thread(target=httpd.shutdown).start())
    httpd.serve_forever()
    print(json.dumps({"final": True}))
    return 0


def bots(argv: list[str]) -> int:
    port = arg(argv, "--url", "").rsplit(":", 1)[1]
    n = int(arg(argv, "--bots", "1"))
    time.sleep(float(arg(argv, "--duration", "0")))  # "play" while the harness polls /stats
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        stats = json.loads(r.read())
    t = stats["ticker"]
    connected = min(n, stats["connections"]["playing"])
    print(json.dumps({"connected": connected, "dropped": 0,
                      "latency_ms": {"p50": 10.0, "p99": 40.0},
                      "server": {"mspt_p50_median": t["mspt_p50"], "mspt_p99_max": t["mspt_p99"],
                                 "tick_rate_min": t["tick_rate_actual"]}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[2:]) if sys.argv[1] == "serve" else bots(sys.argv[2:]))
