"""Which Python operations slow down when many free threads run them at once?

Each probe is a loop over thread-private data; it runs alone, then on N threads at once (each
thread its own data), and prints the per-thread slowdown (1.0 = scales perfectly).  Used to find
what made each region's advance slower at 16 threads than alone on the free-threaded build.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from array import array
from collections.abc import Callable

N = 200_000


def p_float(n: int) -> None:
    a = 0.0
    b = 1.5 * 1.0
    for _ in range(n):
        a = a + b * 0.5


def p_array(n: int) -> None:
    xs = array("d", [1.0]) * 1000
    for i in range(n):
        j = i % 1000
        xs[j] = xs[j] + 1.0


def p_list_int(n: int) -> None:
    acc = [0] * 1000
    for i in range(n):
        acc[i % 1000] += 7


def p_tuple(n: int) -> None:
    out = []
    for i in range(n):
        out.append((i, 1.0, 2.0, 3.0))
        if len(out) > 1000:
            out = []


def p_dict(n: int) -> None:
    d: dict[int, list[int]] = {}
    get = d.get
    for i in range(n):
        k = i % 4096
        c = get(k)
        if c is None:
            d[k] = [i]
        else:
            c.append(i)
        if len(d) >= 4096 and i % 50_000 == 0:
            d.clear()


def p_int_call(n: int) -> None:
    x = 123.456 * 1.0
    for _ in range(n):
        int(x * 0.5)


def p_zip(n: int) -> None:
    xs = array("d", [1.0]) * 1000
    ys = array("d", [2.0]) * 1000
    a = 0.0
    for _ in range(n // 1000):
        for _i, x, y in zip(range(1000), xs, ys, strict=True):
            a += x + y


def p_len_global(n: int) -> None:
    s = [1, 2, 3]
    for _ in range(n):
        len(s)


def p_math(n: int) -> None:
    c = math.cos
    x = 0.5 * 1.0
    for _ in range(n):
        c(x)


def p_method(n: int) -> None:
    class P:
        def __init__(self) -> None:
            self.v = 1.0 * 1.0

        def f(self, x: float) -> float:
            return x + self.v
    p = P()
    for _ in range(n):
        p.f(1.0)


def p_slice_concat(n: int) -> None:
    c = [(1, 1.0, 1.0, 1.0)] * 8
    d = [(2, 2.0, 2.0, 2.0)] * 8
    for _ in range(n // 4):
        _ = c[1:] + d


PROBES = {k[2:]: v for k, v in dict(globals()).items() if k.startswith("p_")}


def timed(fn: Callable[[int], None], n: int, out: list[float], i: int,
          go: threading.Barrier) -> None:
    go.wait()
    t = time.perf_counter()
    fn(n)
    out[i] = time.perf_counter() - t


def run(fn: Callable[[int], None], threads: int) -> float:
    out = [0.0] * threads
    go = threading.Barrier(threads)
    ts = [threading.Thread(target=timed, args=(fn, N, out, i, go)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sorted(out)[threads // 2]


def main() -> None:
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    gil = sys._is_gil_enabled() if hasattr(sys, "_is_gil_enabled") else True
    print(f"{sys.version.split()[0]} GIL {'on' if gil else 'off'}; {threads} threads; "
          f"per-thread median time alone -> together")
    for name, fn in PROBES.items():
        run(fn, 1)
        one = min(run(fn, 1) for _ in range(2))
        many = min(run(fn, threads) for _ in range(2))
        print(f"{name:14s} {one * 1e3:8.1f} ms -> {many * 1e3:8.1f} ms   x{many / one:5.2f}")


if __name__ == "__main__":
    main()
