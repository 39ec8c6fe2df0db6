#!/usr/bin/env bash
# Pack the two interpreters `make setup` built (GIL + free-threaded, same tarball) with the
# runtime packages the benchmarks need into one relocatable .tar.xz (~32 MB), so that scaling,
# capacity and load can run on another Linux x86-64 machine that has no network (glibc >= 2.35).
#
#   scripts/pack_pythons.sh OUT.tar.xz      then, there:   scripts/bench_borrowed.sh OUT.tar.xz DIR
#
# Packages: msgpack, websockets, numpy, prometheus_client, and where the venv has them uvloop
# (the GIL server's event loop) and picows (the bots' client), with what they require.  Left out
# to stay small: the test suites, static libpython, idlelib/tkinter/ensurepip, bytecode caches
# (rebuilt there in seconds), debug symbols, and matplotlib (plots are drawn afterwards with
# `paratick bench report`).
set -euo pipefail
out=${1:?usage: scripts/pack_pythons.sh OUT.tar.xz}
cache=${PARATICK_CACHE:-$HOME/.cache/paratick}/cpython
root=$(cd "$(dirname "$0")/.." && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
for build in gil ft; do
  ver=$(ls "$cache" | grep -E '^3\.[0-9]+\.[0-9]+$' | sort -V | tail -1)
  [ "$build" = ft ] && name=${ver}t || name=$ver
  src=$cache/$name
  abi=$([ "$build" = ft ] && echo t || true)
  lib=python${ver%.*}$abi
  [ -x "$src/bin/$lib" ] || { echo "no $src/bin/$lib: run make setup first" >&2; exit 1; }
  mkdir -p "$stage/$build/bin" "$stage/$build/lib/$lib/site-packages"
  cp -a "$src/bin/$lib" "$stage/$build/bin/"
  ln -s "$lib" "$stage/$build/bin/python3"
  tar -C "$src/lib" -cf - --exclude="$lib/test" --exclude="$lib/config-*" \
      --exclude="$lib/idlelib" --exclude="$lib/tkinter" --exclude="$lib/turtledemo" \
      --exclude="$lib/ensurepip" --exclude="$lib/pydoc_data" --exclude="$lib/site-packages" \
      --exclude="_test*" --exclude="_ctypes_test*" --exclude="_xxtestfuzz*" \
      --exclude="xxlimited*" --exclude=__pycache__ "$lib" | tar -C "$stage/$build/lib" -xf -
  sp=$root/.venv/$build/lib/$lib/site-packages
  dst=$stage/$build/lib/$lib/site-packages
  # The packages and everything they require (extras aside), each with its files as installed.
  "$root/.venv/$build/bin/python" - "$sp" "$dst" <<'PY' || exit 1
import importlib.metadata as md
import shutil
import sys
from pathlib import Path

from packaging.requirements import Requirement

sp, dst = Path(sys.argv[1]), Path(sys.argv[2])
wanted = ["msgpack", "websockets", "numpy", "prometheus_client", "uvloop", "picows"]
optional = {"uvloop", "picows"}  # the GIL venv's event loop and bots' client; no ft wheels
seen: set[str] = set()
while wanted:
    name = wanted.pop()
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        if name in optional:
            continue
        sys.exit(f"no {name} in {sp}: run make setup first")
    key = dist.metadata["Name"].lower().replace("_", "-")
    if key in seen:
        continue
    seen.add(key)
    for req in dist.requires or []:
        r = Requirement(req)
        if r.marker is None or r.marker.evaluate({"extra": ""}):
            wanted.append(r.name)
    for top in {f.parts[0] for f in dist.files or [] if f.parts[0] not in ("..", "__pycache__")}:
        src = sp / top
        if src.is_dir():
            shutil.copytree(src, dst / top, symlinks=True, dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, dst / top)
print("packages:", ", ".join(sorted(seen)))
PY
  find "$stage/$build" -name __pycache__ -prune -exec rm -rf {} +
  find "$dst" -type d -name tests -prune -exec rm -rf {} +
  # sources and headers nothing imports (uvloop's and picows's Cython, numpy's C API)
  find "$dst" \( -name '*.pyx' -o -name '*.pxd' -o -name '*.c' -o -name '*.h' \) -delete
  # Not the packages' libraries: wheels' ELF files are rewritten by auditwheel (patchelf), and
  # strip broke numpy's bundled OpenBLAS that way ("ELF load command address/offset not
  # page-aligned").
  strip --strip-unneeded "$stage/$build/bin/$lib" "$stage/$build/lib/$lib"/lib-dynload/*.so
  echo "$build: $("$stage/$build/bin/python3" -c 'import sys; print(sys.version.split()[0],
      "free-threaded" if not sys._is_gil_enabled() else "GIL")')"
done
tar -C "$stage" -cf - gil ft | xz -T0 -6 > "$out"
echo "wrote $out ($(du -h "$out" | cut -f1))"
