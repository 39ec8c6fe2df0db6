#!/usr/bin/env bash
# Run the benchmarks on a borrowed many-core machine, with the interpreters scripts/pack_pythons.sh
# packed.
#
#   scripts/bench_borrowed.sh PYTHONS.tar.xz OUTDIR [BUDGET_S] [NOTE]
#
# Unpacks the interpreters, rebuilds their bytecode caches, makes .venv/gil and .venv/ft from them
# (with this checkout on PYTHONPATH), records the machine (CPUs, cgroup quota, OS), then runs, for
# the GIL and free-threaded builds, within BUDGET_S seconds in all (default 450) so that a
# time-limited lease always returns results, in this order:
#   load      `paratick bench load --no-search`: LOAD_BOTS bots (default 5000) on 1,000 NPCs,
#             LOAD_GATEWAYS gateway threads (default a quarter of the cores) then one event loop,
#             free-threaded build first, the bots on the same machine (40 % of the budget;
#             no probe starts in its last 45 s)
#   capacity  `paratick bench capacity`, both kernels, threads, 1 worker and every core: the
#             largest world each build holds at 30 Hz (35 %; no probe starts in its last 20 s, and
#             a search cut short keeps its probes)
#   scaling   `paratick bench scaling`, numpy and python kernels, threads and processes, at 1, 2,
#             4, ... up to the usable cores, no reference rows, repeats of at least 0.5 s
#             interleaved round by round (25 %; new runs stop when it is spent)
# Each stage writes OUTDIR/<stage>/results.json and report.md.  Plots are left out (matplotlib is
# not packed): draw them with `paratick bench report OUTDIR/<stage>` on a machine that has it.
# Environment: STAGES (default load,capacity,scaling), BUILDS (default gil,ft), WORKERS (scaling's
# worker counts, e.g. 1,8,16), SCALING_S / CAPACITY_S / LOAD_S (a stage's seconds instead of its
# share), SCALING_ARGS / CAPACITY_ARGS / LOAD_ARGS (more options for that command).
set -uo pipefail
pythons=${1:?usage: bench_borrowed.sh PYTHONS.tar.xz OUTDIR [BUDGET_S] [NOTE]}
out=${2:?usage: bench_borrowed.sh PYTHONS.tar.xz OUTDIR [BUDGET_S] [NOTE]}
budget=${3:-450}
note=${4:-borrowed machine}
mkdir -p "$out"
exec > >(tee -a "$out/machine.log") 2>&1
t0=$(date +%s)
echo "== machine"; date -u; uname -a; head -2 /etc/os-release; ldd --version | head -1
echo "nproc $(nproc); affinity $(taskset -pc $$ 2>/dev/null | sed 's/.*: //');" \
     "cgroup cpu.max $(cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo n/a)"
lscpu | grep -E 'Model name|^CPU\(s\)|Thread|Core|Socket|NUMA node\(s\)|MHz' || true
free -g | head -2
# Every bot holds a socket on each side: as many descriptors as the machine allows, for the server
# and the bot processes alike (serve lowers its caps to the limit it gets, and says so).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open files: soft $(ulimit -n), hard $(ulimit -Hn)"
kdir=$(mktemp -d)
tar -C "$kdir" -xJf "$pythons" || { echo "cannot unpack $pythons"; exit 1; }
pids=()  # wait on these only: a bare `wait` would also wait for the tee above, forever
for b in gil ft; do
  "$kdir/$b/bin/python3" -m compileall -q -j0 "$kdir/$b/lib" >/dev/null & pids+=($!)
done
wait "${pids[@]}"
for b in gil ft; do
  rm -rf ".venv/$b"
  "$kdir/$b/bin/python3" -m venv --without-pip --system-site-packages ".venv/$b" || exit 1
done
export PYTHONPATH=$PWD
for b in gil ft; do
  ".venv/$b/bin/python" -m server.cli info || { echo "$b interpreter does not run here"; exit 1; }
done
echo "== setup took $(( $(date +%s) - t0 )) s"
cores=$(.venv/gil/bin/python -c 'import os; print(len(os.sched_getaffinity(0)))')
workers=${WORKERS:-$(.venv/gil/bin/python -c "from bench.scaling import default_workers as d; print(','.join(map(str, d($cores))))")}
builds=${BUILDS:-gil,ft}
stages=${STAGES:-load,capacity,scaling}
share() { echo $(( budget * $1 / 100 )); }
# `paratick ARGS` within a hard limit: SIGINT when its seconds are spent (the bench stops the
# probe under way and saves what it measured), SIGKILL 60 s later if it has not stopped.  Each
# stage's own --time-budget ends it first, between probes.
limit() { local s=$1; shift; timeout -s INT -k 60 "$s" .venv/gil/bin/python -m server.cli "$@"; }
for stage in ${stages//,/ }; do
  s0=$(date +%s)
  case $stage in
    scaling)
      secs=${SCALING_S:-$(share 25)}
      echo "== bench scaling: workers $workers, $secs s"
      # --time-budget stops new runs; the limit also ends the one under way.
      limit $(( secs + 30 )) bench scaling --builds "$builds" --workers "$workers" \
        --backend threads,processes --kernel numpy,python --no-reference --repeats 3 \
        --min-seconds 0.5 --time-budget "$secs" --no-plots --out "$out/scaling" \
        --note "$note" ${SCALING_ARGS:-} ;;
    capacity)
      secs=${CAPACITY_S:-$(share 35)}
      echo "== bench capacity: 1 and $cores workers, $secs s"
      # no probe starts in the share's last 20 s (a probe of millions of entities takes that)
      limit $(( secs + 30 )) bench capacity --builds "$builds" --backend threads \
        --workers "1,$cores" --kernel numpy,python --max-probes 5 --seconds 2 \
        --time-budget "$(( secs > 40 ? secs - 20 : secs / 2 ))" --no-plots \
        --out "$out/capacity" --note "$note" ${CAPACITY_ARGS:-} ;;
    load)
      secs=${LOAD_S:-$(share 40)}
      gateways=${LOAD_GATEWAYS:-$(( cores / 4 > 2 ? cores / 4 : 2 ))}
      # free-threaded first: the budget may run out before the last configuration
      order=$(echo "$builds" | tr , '\n' | sort | paste -sd, -)
      echo "== bench load: ${LOAD_BOTS:-5000} bots, $gateways and 0 gateways, $secs s"
      # no probe starts in the share's last 45 s (5,000 bots take about that to ramp and play)
      limit $(( secs + 30 )) bench load --builds "$order" --backend threads \
        --gateways "$gateways,0" --npcs 1000 --bots "${LOAD_BOTS:-5000}" --no-search \
        --duration 6 --time-budget "$(( secs > 90 ? secs - 45 : secs / 2 ))" \
        --out "$out/load" --note "$note" ${LOAD_ARGS:-} ;;
    *) echo "unknown stage $stage (load, capacity, scaling)"; continue ;;
  esac
  echo "== $stage: rc $? after $(( $(date +%s) - s0 )) s ($(( $(date +%s) - t0 )) s in all)"
done
ls "$out"/*/report.md 2>/dev/null
