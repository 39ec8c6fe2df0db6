#!/usr/bin/env bash
# `make demo`: the whole paratick story in about two minutes, on the interpreters `make setup` chose.
#   1. the same sharded world ticked on the GIL and the free-threaded build (digests must agree);
#   2. `paratick serve` on the free-threaded build (threads backend), a bot load from the GIL venv
#      (bots are clients: they belong on the faster single-thread build), the bots' report with
#      input->ack latency and the server's per-shard MSPT, then a graceful shutdown (SIGINT);
#   3. a quick tick-rate scaling table (GIL vs free-threaded vs free-threaded with PYTHON_GIL=1).
# Quick figures on whatever machine runs it; bench/ and bench/results/ hold the measured ones.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY_GIL=.venv/gil/bin/python
PY_FT=.venv/ft/bin/python
BOTS=${PARATICK_DEMO_BOTS:-100}
SECONDS_OF_PLAY=${PARATICK_DEMO_SECONDS:-10}

step() { printf '\n=== %s\n' "$*"; }

step "1/3  one world, two interpreters: ticks/s side by side (digests must match)"
"$PY_GIL" scripts/demo.py --python gil="$PY_GIL" --python ft="$PY_FT"

step "2/3  paratick serve on the free-threaded build + $BOTS bots for ${SECONDS_OF_PLAY}s"
"$PY_FT" -m server.cli info | sed 's/^/    /'
port=$("$PY_GIL" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
"$PY_FT" -m server.cli serve --port "$port" --backend threads --npcs 1000 \
    --players "$((BOTS + 24))" >"$log" 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
  "$PY_GIL" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/stats', timeout=1)" \
    2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$log"; echo "server failed to start"; exit 1; }
  sleep 0.2
done
"$PY_GIL" -m server.cli bots --url "ws://127.0.0.1:$port" -n "$BOTS" --duration "$SECONDS_OF_PLAY"
kill -INT "$server"
wait "$server" || true
trap - EXIT
echo "--- server output (final statistics after SIGINT)"
tail -n 25 "$log"
if ! grep -q '"snapshot_errors": 0,' "$log"; then
  grep '^paratick:' "$log" || true
  echo "demo: FAIL: the server failed to build some snapshots (see its lines above)"
  rm -f "$log"
  exit 1
fi
rm -f "$log"

step "3/3  tick-rate scaling, quick (arena-20k: 20,000 entities, 4x4 regions; flat-out ticks)"
"$PY_FT" -m server.cli bench scaling --quick --repeats 1 --ticks 3 --no-ceiling --no-save
