#!/usr/bin/env bash
# Run the scaling benchmark on a borrowed many-core machine from a kit made by scripts/devkit.sh.
#
#   scripts/device_scaling.sh KIT.tar.xz OUTDIR [BUDGET_S] [NOTE]
#
# Unpacks the interpreters, rebuilds their bytecode caches, makes .venv/gil and .venv/ft from them
# (with this checkout on PYTHONPATH), records the machine (CPUs, cgroup quota, OS), then runs
# `paratick bench scaling` for GIL and free-threaded builds on every backend at 1, 2, 4, ... up
# to the usable cores, stopping new runs after BUDGET_S seconds (default 300) so a time-limited
# lease always returns results.  Plots are left out (no matplotlib in the kit): rebuild them
# with `paratick bench report OUTDIR/scaling` on a machine that has it.  Environment: WORKERS
# (e.g. 1,8,16), BUILDS (default gil,ft), SCALING_ARGS (more `bench scaling` options).
set -uo pipefail
kit=${1:?usage: device_scaling.sh KIT.tar.xz OUTDIR [BUDGET_S] [NOTE]}
out=${2:?usage: device_scaling.sh KIT.tar.xz OUTDIR [BUDGET_S] [NOTE]}
budget=${3:-300}
note=${4:-borrowed machine}
mkdir -p "$out"
exec > >(tee -a "$out/device.log") 2>&1
t0=$(date +%s)
echo "== machine"; date -u; uname -a; head -2 /etc/os-release; ldd --version | head -1
echo "nproc $(nproc); affinity $(taskset -pc $$ 2>/dev/null | sed 's/.*: //');" \
     "cgroup cpu.max $(cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo n/a)"
lscpu | grep -E 'Model name|^CPU\(s\)|Thread|Core|Socket|NUMA node\(s\)|MHz' || true
free -g | head -2
kdir=$(mktemp -d)
tar -C "$kdir" -xJf "$kit" || { echo "cannot unpack $kit"; exit 1; }
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
echo "== bench scaling: workers $workers, budget $budget s"
timeout -s INT $(( budget + 240 )) .venv/gil/bin/python -m server.cli bench scaling \
  --builds "${BUILDS:-gil,ft}" --workers "$workers" --time-budget "$budget" --no-plots \
  --out "$out/scaling" --note "$note" ${SCALING_ARGS:-}
echo "== rc $? after $(( $(date +%s) - t0 )) s"
