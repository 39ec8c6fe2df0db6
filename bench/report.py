"""report.md and PNG plots from a results folder, rebuilt from results.json alone.

``paratick bench report DIR`` calls :func:`write`; so do the measuring commands after saving
their section.  Every number in the report is recomputed from the raw runs in results.json
(:mod:`bench.summary`), so the report of an old folder reflects today's statistics code and a
hand-edited summary cannot leak into it.

Each section of results.json that the report shows has one renderer in :data:`SECTIONS`, in
report order; sections without one (``soak``) are kept in results.json only.  This module sits
below the measuring commands (they call :func:`write`) and imports none of them.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import schema, stats
from bench.summary import (
    aggregate,
    capacity_headlines,
    capacity_summary,
    capacity_table,
    claims_table,
    gateway_label,
    headlines,
    load_table,
    scaling_table,
)
from server.runtime import BACKENDS

DESCRIPTION = """\
Rebuild DIR/report.md and the PNG plots from DIR/results.json alone.  Every number in the report
is recomputed from the raw runs saved there, so the report of an old folder reflects today's
statistics code and a hand-edited summary cannot leak into it.  The measuring commands call the
same code after saving their results; plots are skipped, with a note, where matplotlib is
missing."""

SCALING_PNG = "scaling.png"
MSPT_PNG = "mspt.png"
LOAD_PNG = "load.png"
TICKS_PNG = "ticks.png"
CAPACITY_PNG = "capacity.png"


def _env_lines(env: dict[str, Any]) -> list[str]:
    m, g = env.get("machine", {}), env.get("git", {})
    lines = [
        f"- machine: {m.get('cpu_model', '?')}, {m.get('usable_cores', '?')} usable cores "
        f"(of {m.get('cpu_count', '?')}"
        + (f"; cgroup quota {m['cpu_quota']:g} CPUs" if m.get("cpu_quota") else "")
        + f"), {m.get('kernel', '?')}, host `{m.get('hostname', '?')}`",
        f"- date: {m.get('date', '?')}",
        f"- commit: `{g.get('commit') or '?'}` on `{g.get('branch') or '?'}`"
        + (" **(uncommitted changes)**" if g.get("dirty") else ""),
    ]
    for name, info in (env.get("interpreters") or {}).items():
        pk = ", ".join(f"{k} {v}" for k, v in (info.get("packages") or {}).items() if v)
        lines.append(
            f"- `{name}`: CPython {info.get('version')} `{info.get('executable')}`, "
            f"Py_GIL_DISABLED={int(bool(info.get('py_gil_disabled')))}, "
            f"GIL {'enabled' if info.get('gil_enabled') else 'disabled'}"
            + (f" (PYTHON_GIL={info['python_gil_env']})" if info.get("python_gil_env") else "")
            + f"; configure `{info.get('config_args') or ''}`; {pk}")
    return lines


def scaling_md(section: dict[str, Any], plot: bool, *, ticks_plot: bool = False,
               ) -> list[str]:
    p = section["params"]
    w = p["world"]
    out = ["## Tick-rate scaling", ""]
    out += [f"Workload: {w['entities']:,} entities, {w['width']:g}x{w['height']:g}, radius "
            f"{w['radius']:g}, {w['regions_x']}x{w['regions_y']} regions, seed {w['seed']}; "
            f"{p['ticks']} timed flat-out ticks after {p['warmup']} warm-up ticks"
            + (f", more where a repeat needs them to last {p['min_seconds']:g} s"
               if p.get("min_seconds") else "") + "; "
            f"{p['repeats']} repeats per cell, interleaved round by round"
            + (" (**--quick run**)" if p["quick"] else "") + ".", ""]
    out += ["Columns: ticks/s is the median of the repeats [min–max]; MSPT is wall time per "
            "`Runtime.step` over all timed ticks (linear-interpolation percentiles); ×1w = "
            "speedup vs the same build/backend/kernel at 1 worker; ×best-1core = vs the fastest "
            "valid 1-worker cell of any build and backend (the honest number: it charges the "
            "free-threaded build its single-thread cost); eff = ×1w / workers; vs reference = "
            "×1w divided by the REFERENCE row's ×1w for the same build, backend and workers. "
            "The REFERENCE rows time an embarrassingly parallel pure-Python loop on the same "
            "kind of workers (reports written before it was renamed call it CEILING): a "
            "yardstick for how well this interpreter and machine scale, not an upper bound; a "
            "tick loop can beat it (each core's smaller share of the world fits its cache "
            "better, or noise), and a cell whose whole interval lies above 1 is flagged. "
            "Cells whose workers' GIL state contradicts the build are **INVALID** and never "
            "used as baselines.", "",
            "Brackets after a speedup are its 95 % bootstrap confidence interval (percentile "
            f"bootstrap, {stats.DEFAULT_RESAMPLES:,} resamples, fixed seed: each cell's repeats "
            "resampled independently; `bench/stats.py`); a figure without one was measured "
            "once or is 1 by definition. A goal is **met** only when the whole interval clears "
            "its target, **not met** when the whole interval misses it, and **undecided** "
            "otherwise.", ""]
    if section.get("note"):
        out += [f"Machine note: {section['note']}", ""]
    if section.get("stopped_early"):
        out += [f"**Stopped early**: {section['stopped_early']}; figures below use the "
                "repeats that ran.", ""]
    out += ["Headlines (ratios from this run):", "", *headlines(section), ""]
    out += [scaling_table(section), ""]
    if plot:
        out += [f"![ticks/s vs workers]({SCALING_PNG})", ""]
    if ticks_plot:
        out += [f"![distribution of every timed tick]({TICKS_PNG})", ""]
    out += _where_time_goes(section)
    out += ["### Environment", "", *_env_lines(section["environment"]), ""]
    return out


def _where_time_goes(section: dict[str, Any]) -> list[str]:
    """From the runtime's own metrics: per arena cell, the coordinator's step time, the slowest
    worker's compute time and the longest wait for neighbours' borders (medians of p50s)."""
    rows = []
    labels = {b["name"]: b["label"] for b in section["builds"]}
    for c, s in zip(section["cells"], aggregate(section["cells"], section["builds"]),
                    strict=True):
        rt = s.get("runtime")
        if c["workload"] != "arena" or not rt:
            continue

        def f(key: str, rt: dict[str, float] = rt) -> str:
            return f"{rt[key]:.1f}" if key in rt else "-"

        def us(key: str, rt: dict[str, float] = rt) -> str:
            return f"{rt[key] * 1e3:.0f}" if key in rt else "-"

        rows.append(f"| {labels.get(c['build'], c['build'])} | {c['backend']} | {c['kernel']} "
                    f"| {c['workers']} | {f('step_mspt_p50')} | {f('slowest_worker_mspt_p50')} "
                    f"| {f('max_border_wait_ms_p50')} | {us('coordination_ms_p50')} "
                    f"| {us('coordination_ms_p99')} |")
    if not rows:
        return []
    return ["### Where the time goes (runtime metrics, ms, p50)", "",
            "Step = coordinator wall time per tick (the runtime's window includes warm-up); "
            "worker = the slowest worker's compute time; border wait = the longest a worker "
            "waited for its neighbours' borders; coordination = what the lockstep itself costs "
            "per tick (step wall time less the slowest worker's compute: messages, wake-ups, "
            "the barrier; ticks right after a worker's shard checkpoint, which flat out may "
            "wait for it, are left out), in microseconds.", "",
            "| build | backend | kernel | W | step | worker | border wait | coordination p50 (µs) "
            "| coordination p99 (µs) |",
            "|---|---|---|---|---|---|---|---|---|", *rows, ""]


def load_md(section: dict[str, Any], plot: bool, summary_plot: bool = False) -> list[str]:
    p = section.get("params", {})
    every = any(r.get("tick_ms") for r in section.get("runs", []))
    budget = f"{p.get('mspt_budget_ms', 33.3):.1f}"
    mspt = (f"server p99 MSPT <= {budget} ms (over every tick while all the bots played)"
            if every else
            f"server p99 MSPT <= {budget} ms (max of its rolling p99 over /stats samples)")
    window = ("The server ticks {s:g} s before the bots start; its MSPT percentiles and CPU are "
              "taken over the window in which every bot plays." if every else
              "The server ticks {s:g} s before the bots start; its MSPT percentiles come from "
              "its rolling window of recent ticks, which can still hold some start-up ticks."
              ).format(s=p.get("settle_s", 5))
    out = ["## Under load: server + bots", "",
           f"Each probe: `paratick serve` ({p.get('regions', '?')} regions, "
           f"{p.get('tick_rate', 30):g} Hz) and `paratick bots --json` on this machine for "
           f"{p.get('duration_s', '?')} s. "
           f"Holds = all bots connected, none dropped, the bots receiving >= 95% of "
           f"{p.get('snapshot_rate', 20):g} snapshots/s each on average, {mspt}, "
           f"tick rate over the bots' run (Hz column, from /stats tick counts) >= 95% of target, "
           f"bots' p99 input->ack <= {p.get('ack_p99_ms', 100):g} ms. {window} "
           "Searches double then bisect, with a bounded number of probes."
           + (f" The bots ran {p['bots_nice']} nice levels below the server (`paratick bots "
              "--nice`): they take the cores the server leaves idle."
              if p.get("bots_nice") else ""), ""]
    if section.get("note"):
        out += [f"Machine note: {section['note']}", ""]
    if section.get("stopped_early"):
        out += [f"**Stopped early**: {section['stopped_early']}; the table has the probes that "
                "ran.", ""]
    out += [load_table(section), ""]
    if summary_plot:
        out += [f"![bots held and server CPU per configuration]({LOAD_PNG})", "",
                "Left: the most bots each configuration held (bot search); right: the "
                "server's CPU per bot-second at the fixed load, hatched where that load did "
                "not hold.", ""]
    if plot:
        out += [f"![MSPT distributions under load]({MSPT_PNG})", "",
                "The distribution (CDF) of every tick's duration while all the bots played, "
                "per probe." if every else
                "The server exposes tick-time percentiles over a rolling window, not every "
                "tick: the plot is the distribution (CDF) of those once-a-second readings, p50 "
                "and p99, per run.", ""]
    out += ["### Environment", "", *_env_lines(section["environment"]), ""]
    return out


def capacity_md(section: dict[str, Any], plot: bool) -> list[str]:
    p = section["params"]
    w = p.get("world") or {}
    out = [f"## Capacity at {p['rate']:g} Hz", "",
           f"The largest world each configuration holds at {p['rate']:g} Hz. Each probe is a "
           "fresh interpreter of the build pinned to W cores: it spawns the world "
           f"({p['density']:,.1f} entities per 1,000,000 square units, the side growing with "
           f"the count; {w.get('regions_x', '?')}x{w.get('regions_y', '?')} regions), runs "
           f"up to {p.get('warmup', '?')} untimed ticks, then {p['ticks']} ticks "
           f"({p['seconds']:g} s) paced by the runtime's tick scheduler. **Held** = every "
           f"planned tick ran, p99 MSPT <= {p['mspt_budget_ms']:.1f} ms and "
           + ("no tick" if not p["max_late_ticks"] else f"at most {p['max_late_ticks']} ticks")
           + " ended after the next tick was due (no dilation: every tick started on its "
           "deadline); the runtime checkpoints its shards as the server does"
           + (f" (every {p['checkpoint_every']} ticks)" if p.get("checkpoint_every") else "")
           + "; a probe that has failed stops after 1 s. A bounded "
           f"search per configuration (doubling, or halving, from the start, then bisecting; "
           f"at most {p['max_probes']} probes, up to {p['limit']:,} entities) gives the largest "
           "world that held (\"≥\": no larger world failed; the search ran out of probes "
           "or reached its limit first). Entity-updates/s = entities held x the tick rate; "
           "×best 1-core = "
           "vs the largest world any valid 1-worker configuration of the same kernel held in "
           "this run. A no-GIL build whose workers report the GIL on is **INVALID**"
           + (" (**--quick run**)" if p.get("quick") else "") + ".", ""]
    if section.get("note"):
        out += [f"Machine note: {section['note']}", ""]
    if section.get("stopped_early"):
        out += [f"**Stopped early**: {section['stopped_early']}.", ""]
    out += ["Headlines (ratios from this run):", "", *capacity_headlines(section), "",
            capacity_table(section), ""]
    if plot:
        out += [f"![entities held at {p['rate']:g} Hz]({CAPACITY_PNG})", ""]
    out += ["### Environment", "", *_env_lines(section["environment"]), ""]
    return out


def claims_md(section: dict[str, Any]) -> list[str]:
    return ["## Commonly made claims, measured here", "", claims_table(section), "",
            "### Environment", "", *_env_lines(section["environment"]), ""]


def plot_scaling(section: dict[str, Any], path: Path) -> None:
    """ticks/s vs workers: one panel per parallel backend, one line per build, dashed ideal
    lines (1-worker rate x W) and a dotted line at the best single-core rate of any build."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = section["cells"]
    summaries = aggregate(cells, section["builds"])
    labels = {b["name"]: b["label"] for b in section["builds"]}
    backends = [b for b in BACKENDS if b != "inline"
                and any(c["backend"] == b and c["workload"] == "arena" for c in cells)]
    if not backends:
        backends = ["inline"]
    kernels = sorted({c.get("kernel", "python") for c in cells if c["workload"] == "arena"}) \
        or ["python"]
    fig, axes = plt.subplots(len(kernels), max(1, len(backends)),
                             figsize=(4.2 * max(1, len(backends)), 3.8 * len(kernels)),
                             squeeze=False, sharey="row")
    for row, kernel in zip(axes, kernels, strict=True):
        arena = [(c, s) for c, s in zip(cells, summaries, strict=True)
                 if c["workload"] == "arena" and c.get("kernel", "python") == kernel]
        ones = [s.get("ticks_per_s", {}).get("median", 0.0) for c, s in arena
                if c["workers"] == 1 and s["status"] == "ok"]
        best_one = max(ones) if ones else None
        for ax, backend in zip(row, backends, strict=False):
            if not any(c["backend"] == backend for c, _ in arena):
                why = "numpy does not load in subinterpreters" \
                    if kernel == "numpy" and backend == "interpreters" else "not measured"
                ax.text(0.5, 0.5, f"no cells: {why}", ha="center", va="center",
                        transform=ax.transAxes, fontsize=8)
            for bi, build in enumerate(section["builds"]):
                pts = sorted(((c["workers"], s) for c, s in arena
                              if c["backend"] == backend and c["build"] == build["name"]
                              and "ticks_per_s" in s), key=lambda p: p[0])
                if not pts:
                    continue
                xs = [w for w, _ in pts]
                ys = [s["ticks_per_s"]["median"] for _, s in pts]
                lo = [s["ticks_per_s"]["median"] - s["ticks_per_s"]["min"] for _, s in pts]
                hi = [s["ticks_per_s"]["max"] - s["ticks_per_s"]["median"] for _, s in pts]
                color = f"C{bi}"
                invalid = any(s["status"] != "ok" for _, s in pts)
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, color=color,
                            linestyle=":" if invalid else "-",
                            label=labels.get(build["name"], build["name"])
                            + (" (INVALID)" if invalid else ""))
                one = next((s["ticks_per_s"]["median"] for w, s in pts if w == 1), None)
                if one is not None and len(xs) > 1:
                    ax.plot(xs, [one * w for w in xs], linestyle="--", color=color, alpha=0.4,
                            linewidth=1)
            if best_one is not None:
                ax.axhline(best_one, color="black", linestyle=":", linewidth=1,
                           label="best 1-core, any build/backend")
            ax.set_title(f"{backend}, {kernel} kernel (dashed: ideal)")
            ax.set_xlabel("workers (= pinned cores)")
            ax.set_xticks(sorted({c["workers"] for c in cells}))
            ax.grid(alpha=0.3)
        row[0].set_ylabel("ticks/s (median, min–max)")
    axes[0][0].legend(fontsize=7)
    w = section["params"]["world"]
    fig.suptitle(f"paratick tick rate, {w['entities']:,} entities, "
                 f"{w['regions_x']}x{w['regions_y']} regions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ecdf(values: list[float]) -> tuple[list[float], list[float]]:
    """Points of the empirical CDF of ``values``: sorted values against the fraction at or
    below each (a step plot with ``where="post"``)."""
    xs = sorted(values)
    n = len(xs)
    return xs, [(i + 1) / n for i in range(n)]


def plot_ticks(section: dict[str, Any], path: Path) -> bool:
    """CDF of every timed tick (MSPT) of every successful repeat, pooled per arena cell: one
    panel per backend, one line per build and worker count (solid at the most workers, dashed
    at 1 worker), log-scaled milliseconds; INVALID, ERROR and NOT RUN cells are left out."""
    cells = section["cells"]
    sums = aggregate(cells, section["builds"])
    rows = [(c, [t for r in c["runs"] if r["ok"] for t in r["tick_ms"]])
            for c, s in zip(cells, sums, strict=True)
            if c["workload"] == "arena" and s["status"] == "ok"]
    rows = [(c, ts) for c, ts in rows if ts]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {b["name"]: b["label"] for b in section["builds"]}
    colours = {b["name"]: f"C{i}" for i, b in enumerate(section["builds"])}
    backends = [b for b in BACKENDS if any(c["backend"] == b for c, _ in rows)]
    ncols = min(2, len(backends))
    nrows = -(-len(backends) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(9.0, 3.2 * nrows), squeeze=False,
                             sharex=True)
    for ax, backend in zip(axes.flat, backends, strict=False):
        mine = [(c, ts) for c, ts in rows if c["backend"] == backend]
        wmax = max(c["workers"] for c, _ in mine)
        for c, ts in mine:
            if c["workers"] not in (1, wmax):
                continue
            xs, ys = _ecdf(ts)
            ax.step(xs, ys, where="post", color=colours.get(c["build"], "grey"),
                    linestyle="-" if c["workers"] == wmax else "--", linewidth=1.4,
                    label=f"{labels.get(c['build'], c['build'])}, {c['workers']}w "
                          f"{c['kernel']} ({len(ts)} ticks)")
        ax.set_title(backend, fontsize=10)
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right")
        ax.set_ylabel("fraction of ticks ≤ x", fontsize=8)
        ax.set_xlabel("tick time (ms, log scale)", fontsize=8)
    for ax in list(axes.flat)[len(backends):]:
        ax.set_visible(False)
    fig.suptitle("Every timed tick, pooled over the repeats: CDF (further left = faster)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_mspt(section: dict[str, Any], path: Path) -> bool:
    """CDFs, one line per load run, of the server's MSPT: every tick of the run's loaded window
    (``tick_ms``).  Results written before the server listed its ticks have only its rolling
    p99 (solid) and p50 (dotted) as ``/stats`` reported them once a second; those are drawn."""
    runs = [r for r in section["runs"] if r.get("tick_ms") or r.get("mspt_samples")]
    if not runs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.0, 4.2))
    ticks = any(r.get("tick_ms") for r in runs)
    for i, r in enumerate(runs):
        colour = f"C{i % 10}"
        label = (f"{r.get('build')} {r.get('backend')} {r.get('entities')}e/{r.get('bots')}b"
                 + (f" {r['phase']}" if r.get("phase") else ""))
        if r.get("tick_ms"):
            xs, ys = _ecdf(r["tick_ms"])
            ax.step(xs, ys, where="post", color=colour, linewidth=1.2, label=label)
            continue
        xs, ys = _ecdf(r["mspt_samples"])
        ax.step(xs, ys, where="post", color=colour, linewidth=1.4, label=f"{label} p99")
        if r.get("mspt_p50_samples"):
            xs, ys = _ecdf(r["mspt_p50_samples"])
            ax.step(xs, ys, where="post", color=colour, linewidth=1.0, linestyle=":")
    budget = section.get("params", {}).get("mspt_budget_ms", 33.3)
    ax.axvline(budget, color="red", linestyle="--", linewidth=1, label=f"budget {budget:.1f} ms")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    if ticks:
        ax.set_xlabel("server tick time, every tick while all the bots played (ms, log scale)",
                      fontsize=8)
        ax.set_ylabel("fraction of ticks ≤ x", fontsize=8)
        ax.set_title("MSPT under load: CDF of every loaded tick", fontsize=10)
    else:
        ax.set_xlabel("server MSPT, rolling p99 (solid) and p50 (dotted) per 1 s reading "
                      "(ms, log scale)", fontsize=8)
        ax.set_ylabel("fraction of readings ≤ x", fontsize=8)
        ax.set_title("MSPT under load: CDF of the server's once-a-second readings",
                     fontsize=10)
    # below the axes: the curves fill the panel's corners
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3,
              frameon=False)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def _load_config(r: dict[str, Any]) -> str:
    """A load configuration's label: build, backend, gateways (:func:`gateway_label`)."""
    if r.get("gateways"):
        return f"{r.get('build')} {r.get('backend')}, gateways: {gateway_label(r)}"
    loop = f", {r['loop']}" if r.get("loop") else ""
    return f"{r.get('build')} {r.get('backend')}, single loop{loop}"


def plot_load(section: dict[str, Any], path: Path) -> bool:
    """Two panels of horizontal bars, one bar per configuration (build, backend, gateways), one
    colour per build: the most bots held (the bot search), and the server's CPU per
    bot-second at the fixed load (hatched where that load did not hold)."""
    best = [b for b in section.get("best") or [] if b.get("bots") is not None]
    fixed = [r for r in section.get("runs", []) if r.get("phase") == "fixed load"
             and r.get("server_cpu_ms_per_bot_s") is not None]
    if not best and not fixed:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(_load_config(r) for r in [*best, *fixed]))
    builds = list(dict.fromkeys(str(r.get("build")) for r in [*best, *fixed]))
    colour = {b: f"C{i}" for i, b in enumerate(builds)}
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 1.5 + 0.4 * len(labels)), sharey=True)
    y = {lab: i for i, lab in enumerate(labels)}
    for b in best:
        lab = _load_config(b)
        left.barh(y[lab], b["bots"], color=colour[str(b.get("build"))])
        left.text(b["bots"], y[lab], f" {b['bots']}", va="center", fontsize=8)
    for r in fixed:
        lab = _load_config(r)
        v = r["server_cpu_ms_per_bot_s"]
        right.barh(y[lab], v, color=colour[str(r.get("build"))],
                   hatch=None if r.get("holds") else "//", edgecolor="white")
        right.text(v, y[lab], f" {v:.2f}", va="center", fontsize=8)
    bots = sorted({r.get("bots") for r in fixed if r.get("bots") is not None})
    left.set_title("most bots held", fontsize=9)
    right.set_title("server CPU per bot-second, fixed load"
                    + (f" ({', '.join(map(str, bots))} bots)" if bots else ""), fontsize=9)
    left.set_xlabel("bots", fontsize=8)
    right.set_xlabel("ms of CPU per bot-second", fontsize=8)
    left.set_yticks(range(len(labels)), labels, fontsize=8)
    left.invert_yaxis()
    for ax in (left, right):
        ax.margins(x=0.18)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_capacity(section: dict[str, Any], path: Path) -> bool:
    """Entities held per configuration: one full-width panel of horizontal bars per kernel
    (each kernel its own scale), one colour per build, the best single core as a dotted line;
    INVALID, ERROR and NOT RUN configurations are named but drawn empty."""
    configs = section["configs"]
    if not configs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    sums = capacity_summary(section)
    labels = {b["name"]: b["label"] for b in section["builds"]}
    colours = {b["name"]: f"C{i}" for i, b in enumerate(section["builds"])}
    kernels = list(dict.fromkeys(c["kernel"] for c in configs))
    rows = [[(c, s) for c, s in zip(configs, sums, strict=True) if c["kernel"] == k]
            for k in kernels]
    fig, axes = plt.subplots(len(kernels), 1, squeeze=False,
                             figsize=(9.0, 1.3 + sum(0.34 * len(r) + 0.7 for r in rows)),
                             gridspec_kw={"height_ratios": [max(1, len(r)) for r in rows]})
    rate = section["params"].get("rate", 30.0)
    for ax, kernel, pairs in zip(axes[:, 0], kernels, rows, strict=True):
        ys = list(range(len(pairs)))[::-1]
        top = max((s["held"] or 0 for _, s in pairs), default=0) or 1
        for y, (c, s) in zip(ys, pairs, strict=True):
            held = s["held"] if s["status"] == "ok" else None
            ax.barh(y, held or 0, color=colours.get(c["build"], "grey"), height=0.7)
            text = (("≥ " if s.get("at_least") else "") + f"{held:,}"
                    + (f"  ({s['vs_best_1']:.2f}x)" if s["vs_best_1"] else "")
                    if held else s["status"] if s["status"] != "ok" else "none held")
            ax.text((held or 0) + top * 0.01, y, text, va="center", fontsize=8)
        ax.set_yticks(ys, [f"{labels.get(c['build'], c['build'])} · {c['backend']} "
                           f"×{c['workers']}" for c, _ in pairs], fontsize=8)
        one = [s["held"] for c, s in pairs if c["workers"] == 1 and s["status"] == "ok"
               and s["held"]]
        if one:
            ax.axvline(max(one), color="black", linestyle=":", linewidth=1,
                       label="best single core")
            ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False)
        ax.set_xlim(0, top * 1.3)
        ax.set_title(f"{kernel} kernel", fontsize=10)
        ax.set_xlabel(f"entities held at {rate:g} Hz (p99 MSPT within budget, no late tick)",
                      fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    fig.suptitle(f"Largest world held at {rate:g} Hz per build, backend and workers")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


#: A section's renderer: (section, folder, plots wanted) -> (markdown lines, PNG files written).
Render = Callable[[dict[str, Any], Path, bool], tuple[list[str], list[Path]]]


def _scaling(section: dict[str, Any], folder: Path, plots: bool) -> tuple[list[str], list[Path]]:
    plotted = plots and bool(section["cells"])
    written: list[Path] = []
    if plotted:
        plot_scaling(section, folder / SCALING_PNG)
        written.append(folder / SCALING_PNG)
        plotted = plot_ticks(section, folder / TICKS_PNG)
        if plotted:
            written.append(folder / TICKS_PNG)
    return scaling_md(section, bool(written), ticks_plot=plotted), written


def _load(section: dict[str, Any], folder: Path, plots: bool) -> tuple[list[str], list[Path]]:
    plotted = plots and plot_mspt(section, folder / MSPT_PNG)
    summary = plots and plot_load(section, folder / LOAD_PNG)
    written = [path for ok, path in ((summary, folder / LOAD_PNG), (plotted, folder / MSPT_PNG))
               if ok]
    return load_md(section, plotted, summary), written


def _claims(section: dict[str, Any], folder: Path, plots: bool) -> tuple[list[str], list[Path]]:
    return claims_md(section), []


def _capacity(section: dict[str, Any], folder: Path, plots: bool,
              ) -> tuple[list[str], list[Path]]:
    plotted = plots and plot_capacity(section, folder / CAPACITY_PNG)
    return capacity_md(section, plotted), [folder / CAPACITY_PNG] if plotted else []


#: The sections report.md shows, in order, each with its renderer (capacity first: it answers
#: the question a game developer asks first, how big a world this machine holds).
SECTIONS: dict[str, Render] = {"capacity": _capacity, "scaling": _scaling, "load": _load,
                               "claims": _claims}


def write(folder: Path, *, plots: bool = True) -> list[Path]:
    """(Re)build ``folder/report.md`` (and PNGs) from ``folder/results.json``.

    Raises:
        ResultsError: results.json is missing or invalid.
    """
    doc = schema.load(folder)
    written: list[Path] = []
    md = ["# paratick benchmark report", "",
          f"Generated from `{schema.FILENAME}` (schema {doc['schema']} v{doc['version']}); "
          "rebuild with `paratick bench report " + str(folder) + "`.", ""]
    if plots and importlib.util.find_spec("matplotlib") is None:
        # e.g. a borrowed machine running a minimal kit: the figures matter more than the PNGs.
        plots = False
        md += ["Plots skipped: matplotlib is not installed where this report was written; run "
               "`paratick bench report " + str(folder) + "` where it is to add them.", ""]
    for name, render in SECTIONS.items():
        if name in doc:
            lines, pngs = render(doc[name], folder, plots)
            md += lines
            written += pngs
    if not any(k in doc for k in SECTIONS):
        md += ["(results.json holds no sections yet)", ""]
    path = folder / "report.md"
    path.write_text("\n".join(md), encoding="utf-8")
    return [path, *written]


def readme_snippet(folder: Path) -> str:
    """Markdown for the project README: headlines, the scaling table and the plot, linked
    relative to the repository root so the README shows the committed figures."""
    from bench.builds import repo_root

    doc = schema.load(folder)
    if "scaling" not in doc:
        return "(no scaling section in this results folder)"
    sc = doc["scaling"]
    try:
        rel = folder.resolve().relative_to(repo_root())
    except ValueError:
        rel = folder
    m = sc["environment"].get("machine", {})
    lines = [f"Measured on {m.get('cpu_model', '?')}, {m.get('usable_cores', '?')} cores, "
             f"{m.get('date', '?')} ([full report]({rel}/report.md), raw figures in "
             f"[results.json]({rel}/{schema.FILENAME})):", "", *headlines(sc), "",
             scaling_table(sc), ""]
    if (folder / SCALING_PNG).exists():
        lines += [f"![ticks/s vs workers]({rel}/{SCALING_PNG})", ""]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="a results folder (holding results.json)")
    p.add_argument("--no-plots", action="store_true", help="write report.md only")
    p.add_argument("--readme", action="store_true",
                   help="also print a markdown snippet (headlines, table, plot) for README.md")


def run(args: argparse.Namespace) -> int:
    for path in write(args.dir, plots=not args.no_plots):
        print(path)
    if args.readme:
        print()
        print(readme_snippet(args.dir))
    return 0
