#!/usr/bin/env bash
# Pack the two interpreters `make setup` built (GIL + free-threaded, same tarball) with the
# runtime packages the scaling benchmark needs into one relocatable .tar.xz (~10 MB), so the
# benchmark can run on another Linux x86-64 machine that has no network (glibc >= 2.35).
#
#   scripts/devkit.sh OUT.tar.xz        then, there:   scripts/device_scaling.sh OUT.tar.xz DIR
#
# Left out to stay small: the test suite, static libpython, idlelib/tkinter/ensurepip, bytecode
# caches (rebuilt there in seconds), debug symbols, and numpy (the python kernel is the default
# workload, and numpy cannot load in a subinterpreter anyway).
set -euo pipefail
out=${1:?usage: scripts/devkit.sh OUT.tar.xz}
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
  for pkg in msgpack websockets; do
    cp -a "$sp/$pkg" "$sp"/$pkg-*.dist-info "$stage/$build/lib/$lib/site-packages/"
  done
  find "$stage/$build" -name __pycache__ -prune -exec rm -rf {} +
  strip --strip-unneeded "$stage/$build/bin/$lib" "$stage/$build/lib/$lib"/lib-dynload/*.so
  echo "$build: $("$stage/$build/bin/python3" -c 'import sys; print(sys.version.split()[0],
      "free-threaded" if not sys._is_gil_enabled() else "GIL")')"
done
tar -C "$stage" -cf - gil ft | xz -T0 -6 > "$out"
echo "wrote $out ($(du -h "$out" | cut -f1))"
