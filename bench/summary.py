"""What a saved section says: figures, tables and headlines computed from results.json alone.

Pure functions of the sections :mod:`bench.schema` describes; no measuring, no I/O.  The measuring
commands (:mod:`bench.scaling`, :mod:`bench.load`, :mod:`bench.claims`) print these tables when
they finish, and :mod:`bench.report` renders them into report.md, recomputing every figure from
the raw runs rather than trusting a stored summary.

Figures of a scaling section (:func:`aggregate`), per cell:

* ticks/s, entity-updates/s: median, min, max over the repeats that succeeded;
* MSPT p50/p99: over every timed tick of every repeat, pooled (:func:`bench.stats.percentiles`);
* speedup vs 1 worker (same workload, build, backend, kernel), speedup vs the best valid 1-worker
  cell of *any* build and backend (same workload and kernel), parallel efficiency;
* ``vs_reference``: the arena's speedup vs 1 worker divided by the *reference loop*'s for the
  same build, backend and workers (:mod:`bench.ceiling`: an embarrassingly parallel pure-Python
  loop on the same kind of workers; 1.0 = the tick loop scales as well as that loop did).  The
  reference loop is a yardstick, not an upper bound: a tick loop whose share of the world fits
  better in each core's cache, or plain noise, can beat it, and ``beats_reference`` says when the
  whole interval of the ratio lies above 1.  The workload is stored as ``"reference"`` (files
  written before the rename say ``"ceiling"``; both are read);
* a **95 % bootstrap interval** beside every comparison (:mod:`bench.stats`): ``ticks_per_s_ci``
  (the median), ``speedup_vs_1_ci``, ``speedup_vs_best_1_ci`` (ratios of two cells' medians,
  each cell resampled independently; the baseline cell is the one chosen by its median) and
  ``vs_reference_ci`` (four cells); ``None`` where a cell has fewer than 2 repeats ("measured
  once, no interval") or the figure is 1 by definition (a cell against itself);
* ``goals`` (:func:`goal_verdicts`): the targets quoted for a run, each judged by
  :func:`bench.stats.verdict` on its interval: met, not met or undecided;
* status (:func:`judge`): ``ok``; ``INVALID`` when any worker's GIL state contradicts the build (a
  free-threaded cell whose workers report the GIL enabled is not a no-GIL figure) or the digests
  of the same workload disagree; ``ERROR`` when no repeat succeeded; ``NOT RUN`` when the run
  stopped (``--time-budget`` spent, or Ctrl-C) before the cell's first repeat.  INVALID, ERROR
  and NOT RUN cells never serve as baselines and their speedups are shown struck through.

Figures of a capacity section (:func:`capacity_summary`), per configuration: each probe's
verdict (:func:`capacity_verdict`: held, fails, INVALID or ERROR) recomputed from its raw tick
times and scheduler counters; *entities held* = the largest probed world that held (shown "≥"
when no larger probe failed: the search ran out of probes or reached its limit first);
entity-updates/s at that size (entities x the tick rate); the ratio to the best valid 1-worker
configuration of the same kernel in the same section; status as for scaling cells (INVALID when
a probe's GIL state contradicts the build, ERROR when no probe ran, NOT RUN when the run stopped
first).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench import stats
from bench.errors import StatsError

#: Workload names of the reference loop's cells: current, and as written before the rename.
REFERENCE_WORKLOADS = ("reference", "ceiling")


def is_reference(cell: dict[str, Any]) -> bool:
    """Whether ``cell`` is a reference-loop cell (``"reference"``, or ``"ceiling"`` in older
    files)."""
    return cell["workload"] in REFERENCE_WORKLOADS


def _ci(groups: Sequence[Sequence[float]], combine: Any) -> dict[str, Any] | None:
    """The bootstrap interval of ``combine(medians)`` as a dict, or None when one of the cells
    has fewer than 2 repeats (measured once: no interval)."""
    try:
        return stats.medians_ci(groups, combine).to_dict()
    except StatsError:
        return None


def _ratio(m: Sequence[float]) -> float:
    return m[0] / m[1]


def _ratio_of_ratios(m: Sequence[float]) -> float:
    return (m[0] / m[1]) / (m[2] / m[3])


def _key(cell: dict[str, Any], *fields: str) -> tuple[Any, ...]:
    return tuple(cell[f] for f in fields)


def judge(cell: dict[str, Any], expects_gil: bool) -> tuple[str, str | None]:
    """Status of one cell from its raw runs: ``ok``, ``INVALID`` (GIL contradicts the build),
    ``ERROR`` (no repeat succeeded) or ``NOT RUN`` (none attempted), with the reason."""
    if not cell["runs"]:
        return "NOT RUN", "the run stopped before this cell's first repeat"
    good = [r for r in cell["runs"] if r["ok"]]
    if not good:
        errors = {r.get("error") for r in cell["runs"]}
        return "ERROR", "; ".join(sorted(str(e) for e in errors))[:300] or "no runs"
    for r in good:
        states = list(r["worker_gil"])
        if r.get("gil_enabled") is not None:
            states.append(bool(r["gil_enabled"]))
        if not states:
            return "INVALID", "no worker reported its GIL state"
        wrong = [g for g in states if g != expects_gil]
        if wrong:
            want = "enabled" if expects_gil else "disabled"
            return "INVALID", (f"build expects the GIL {want} but {len(wrong)} of {len(states)} "
                               f"workers/coordinator report otherwise")
    return "ok", None


def _runtime_figures(runs: Sequence[dict[str, Any]]) -> dict[str, float] | None:
    """Cross-checks from the runtime's own metrics (medians over repeats): its step MSPT window
    (includes warm-up ticks, unlike ours), per worker the compute MSPT and the time spent
    waiting for neighbours' borders, which is where imperfect scaling shows up, and the lockstep's
    own cost per tick (coordination: step wall time less the slowest worker's compute)."""
    def med(values: list[float]) -> float | None:
        return stats.median(values) if values else None

    step50, step99, work50, wait50, coord50, coord99 = [], [], [], [], [], []
    for r in runs:
        m = r.get("runtime_metrics") or {}
        step = m.get("mspt") or {}
        coord = m.get("coordination_ms") or {}  # absent in files from before it was measured
        if isinstance(coord.get("p50"), int | float):
            coord50.append(float(coord["p50"]))
        if isinstance(coord.get("p99"), int | float):
            coord99.append(float(coord["p99"]))
        if isinstance(step.get("p50"), int | float):
            step50.append(float(step["p50"]))
        if isinstance(step.get("p99"), int | float):
            step99.append(float(step["p99"]))
        workers = [w for w in m.get("workers") or [] if isinstance(w, dict)]
        w50 = [w["mspt"]["p50"] for w in workers
               if isinstance((w.get("mspt") or {}).get("p50"), int | float)]
        b50 = [w["border_wait_ms"]["p50"] for w in workers
               if isinstance((w.get("border_wait_ms") or {}).get("p50"), int | float)]
        if w50:
            work50.append(max(w50))
        if b50:
            wait50.append(max(b50))
    out = {"step_mspt_p50": med(step50), "step_mspt_p99": med(step99),
           "slowest_worker_mspt_p50": med(work50), "max_border_wait_ms_p50": med(wait50),
           "coordination_ms_p50": med(coord50), "coordination_ms_p99": med(coord99)}
    return {k: v for k, v in out.items() if v is not None} or None


def aggregate(cells: Sequence[dict[str, Any]], builds: Sequence[dict[str, Any]],
              ) -> list[dict[str, Any]]:
    """Per-cell summaries (see the module docstring); pure, in the order of ``cells``."""
    expects = {b["name"]: bool(b["expects_gil"]) for b in builds}
    summaries: list[dict[str, Any]] = []
    for cell in cells:
        status, reason = judge(cell, expects.get(cell["build"], True))
        good = [r for r in cell["runs"] if r["ok"]]
        s: dict[str, Any] = {"status": status, "reason": reason, "repeats": len(good),
                             "failed_repeats": len(cell["runs"]) - len(good)}
        if good:
            s["ticks_per_s"] = stats.summarise(r["ticks_per_s"] for r in good).to_dict()
            eu = [r["entity_updates_per_s"] for r in good if r.get("entity_updates_per_s")]
            s["entity_updates_per_s"] = stats.summarise(eu).to_dict() if eu else None
            ms = [t for r in good for t in r["tick_ms"]]
            s["mspt"] = stats.percentiles(ms, (50, 99)) | {"max": max(ms)} if ms else None
            s["worker_gil"] = good[-1]["worker_gil"]
            rss = [r["peak_rss"] for r in good if r.get("peak_rss")]
            s["peak_rss"] = max(rss) if rss else None
            s["runtime"] = _runtime_figures(good)
            digests = sorted({r["digest"] for r in good if r.get("digest")})
            s["digest"] = digests[0] if len(digests) == 1 else None
            if len(digests) > 1:
                s["status"], s["reason"] = "INVALID", "repeats disagree on the final digest"
        summaries.append(s)
    # Digest agreement across every arena cell of the run (same world, same tick count).
    arena_digests = {s.get("digest") for c, s in zip(cells, summaries, strict=True)
                     if c["workload"] == "arena" and s["status"] == "ok" and s.get("digest")}
    if len(arena_digests) > 1:
        for c, s in zip(cells, summaries, strict=True):
            if c["workload"] == "arena" and s["status"] == "ok":
                s["digest_mismatch"] = True
    # Baselines: only valid cells; remembered by index, so intervals can resample their repeats.
    rates = [[r["ticks_per_s"] for r in c["runs"] if r["ok"]] for c in cells]
    for s, xs in zip(summaries, rates, strict=True):
        if "ticks_per_s" in s:
            s["ticks_per_s_ci"] = _ci([xs], lambda m: m[0])
    ones: dict[tuple[Any, ...], int] = {}
    best: dict[tuple[Any, ...], int] = {}
    for i, (c, s) in enumerate(zip(cells, summaries, strict=True)):
        if s["status"] != "ok" or c["workers"] != 1:
            continue
        ones[_key(c, "workload", "build", "backend", "kernel")] = i
        bk = _key(c, "workload", "kernel")
        if bk not in best or (s["ticks_per_s"]["median"]
                              > summaries[best[bk]]["ticks_per_s"]["median"]):
            best[bk] = i
    base_one: dict[int, int] = {}
    for i, (c, s) in enumerate(zip(cells, summaries, strict=True)):
        if "ticks_per_s" not in s:
            continue
        rate = s["ticks_per_s"]["median"]
        one = ones.get(_key(c, "workload", "build", "backend", "kernel"))
        b1 = best.get(_key(c, "workload", "kernel"))
        s["speedup_vs_1"] = (stats.speedup(rate, summaries[one]["ticks_per_s"]["median"])
                             if one is not None else None)
        s["speedup_vs_1_ci"] = (_ci([rates[i], rates[one]], _ratio)
                                if one is not None and one != i else None)
        s["speedup_vs_best_1"] = (stats.speedup(rate, summaries[b1]["ticks_per_s"]["median"])
                                  if b1 is not None else None)
        s["speedup_vs_best_1_ci"] = (_ci([rates[i], rates[b1]], _ratio)
                                     if b1 is not None and b1 != i else None)
        s["efficiency"] = (stats.efficiency(s["speedup_vs_1"], c["workers"])
                           if s["speedup_vs_1"] is not None else None)
        if one is not None:
            base_one[i] = one
    ref = {_key(c, "build", "backend", "workers"): i
           for i, (c, s) in enumerate(zip(cells, summaries, strict=True))
           if is_reference(c) and s["status"] == "ok" and s.get("speedup_vs_1")}
    for i, (c, s) in enumerate(zip(cells, summaries, strict=True)):
        if c["workload"] != "arena":
            continue
        r = ref.get(_key(c, "build", "backend", "workers"))
        mine = s.get("speedup_vs_1")
        theirs = summaries[r]["speedup_vs_1"] if r is not None else None
        s["vs_reference"] = mine / theirs if mine is not None and theirs else None
        s["vs_reference_ci"] = None
        s["beats_reference"] = None
        if s["vs_reference"] is None or r is None or i not in base_one or r not in base_one:
            continue
        if base_one[i] != i and base_one[r] != r:
            ci = _ci([rates[i], rates[base_one[i]], rates[r], rates[base_one[r]]],
                     _ratio_of_ratios)
            s["vs_reference_ci"] = ci
            if ci is not None:
                # "at most 1" not met = the whole interval above 1: the loop beat its yardstick.
                s["beats_reference"] = stats.verdict(
                    (ci["low"], ci["high"]), 1.0, "at most") == stats.NOT_MET
    return summaries


def _fmt(x: float | None, spec: str = ".2f", none: str = "-") -> str:
    return none if x is None else format(x, spec)


def fmt_ci(x: float | None, ci: dict[str, Any] | None, spec: str = ".2f", unit: str = "×",
           none: str = "-", once: str = "") -> str:
    """``1.66× [1.58, 1.71]``: a figure with its 95 % interval; the figure alone (plus ``once``,
    e.g. " (measured once, no interval)") where it has none."""
    if x is None:
        return none
    if ci is None:
        return f"{format(x, spec)}{unit}{once}"
    return f"{format(x, spec)}{unit} [{format(ci['low'], spec)}, {format(ci['high'], spec)}]"


def _once(ci: dict[str, Any] | None) -> str:
    return "" if ci is not None else f" ({stats.MEASURED_ONCE})"


def scaling_table(section: dict[str, Any]) -> str:
    """The terminal/markdown table of a scaling section (recomputes summaries from raw runs)."""
    cells = section["cells"]
    summaries = aggregate(cells, section["builds"])
    labels = {b["name"]: b["label"] for b in section["builds"]}
    head = ("| workload | build | backend | kernel | W | ticks/s median [min–max] | "
            "Mupd/s | MSPT p50/p99 ms | ×1w [95% CI] | ×best-1core [95% CI] | eff "
            "| vs reference [95% CI] | RSS MB | worker GIL | status |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c, s in zip(cells, summaries, strict=True):
        tp = s.get("ticks_per_s")
        rate = (f"{tp['median']:.2f} [{tp['min']:.2f}–{tp['max']:.2f}]" if tp else "-")
        eu = s.get("entity_updates_per_s")
        mspt = s.get("mspt")
        flag = s["status"] if s["status"] == "ok" else f"**{s['status']}**: {s['reason']}"
        if s.get("digest_mismatch"):
            flag += " (digest differs from other cells!)"
        if s.get("beats_reference"):
            flag += (" (beats the reference loop: its whole interval is above 1, so the "
                     "reference is no upper bound here)")
        mspt_txt = f"{mspt['p50']:.1f}/{mspt['p99']:.1f}" if mspt else "-"
        gil = s.get("worker_gil")
        gil_txt = "-" if gil is None else ("on" if all(gil) else "off" if not any(gil)
                                           else "mixed") + f" ×{len(gil)}"
        valid = s["status"] == "ok"

        def mark(text: str, valid: bool = valid) -> str:
            return text if valid or text == "-" else f"~~{text}~~"

        lines.append(
            f"| {'REFERENCE' if is_reference(c) else 'arena'} "
            f"| {labels.get(c['build'], c['build'])} | {c['backend']} | {c['kernel']} "
            f"| {c['workers']} | {mark(rate)} "
            f"| {_fmt(eu['median'] / 1e6 if eu else None)} "
            f"| {mspt_txt} "
            f"| {mark(fmt_ci(s.get('speedup_vs_1'), s.get('speedup_vs_1_ci')))} "
            f"| {mark(fmt_ci(s.get('speedup_vs_best_1'), s.get('speedup_vs_best_1_ci')))} "
            f"| {mark(_fmt(s.get('efficiency')))} "
            f"| {fmt_ci(s.get('vs_reference'), s.get('vs_reference_ci'))} "
            f"| {_fmt(s['peak_rss'] / 2**20 if s.get('peak_rss') else None, '.0f')} "
            f"| {gil_txt} | {flag} |")
    return "\n".join(lines)


def _kernel_headlines(arena: list[tuple[dict[str, Any], dict[str, Any]]],
                      labels: dict[str, str], tag: str) -> list[str]:
    out: list[str] = []
    wmax = max((c["workers"] for c, _ in arena), default=1)
    for c, s in arena:
        if c["workers"] != wmax or wmax == 1 or c["backend"] == "inline":
            continue
        label = f"{labels.get(c['build'], c['build'])}, {c['backend']}{tag}"
        if s["status"] != "ok" or s.get("speedup_vs_1") is None:
            out.append(f"- {label}: {s['status']} ({s.get('reason') or 'no 1-worker baseline'})")
            continue
        ref = s.get("vs_reference")
        ref_txt = ""
        if ref is not None:
            ref_txt = (f"; {fmt_ci(ref, s.get('vs_reference_ci'), unit='')} of the reference "
                       "loop's speedup")
            if s.get("beats_reference"):
                ref_txt += ", above it: the reference loop is no upper bound here"
        out.append(f"- {label}: {fmt_ci(s['speedup_vs_1'], s.get('speedup_vs_1_ci'))} at "
                   f"{wmax} workers vs 1 worker{_once(s.get('speedup_vs_1_ci'))} "
                   f"(efficiency {s['efficiency']:.0%}{ref_txt})")
    valid = [(c, s) for c, s in arena if s["status"] == "ok" and "ticks_per_s" in s]
    par = [(c, s) for c, s in valid if c["workers"] > 1]
    one = [(c, s) for c, s in valid if c["workers"] == 1]
    if par and one:
        bc, bs = max(par, key=lambda cs: cs[1]["ticks_per_s"]["median"])
        oc, os_ = max(one, key=lambda cs: cs[1]["ticks_per_s"]["median"])
        ci = bs.get("speedup_vs_best_1_ci")
        out.append(f"- best parallel{tag}: {labels.get(bc['build'], bc['build'])} "
                   f"{bc['backend']} x{bc['workers']} at {bs['ticks_per_s']['median']:.2f} "
                   f"ticks/s = {fmt_ci(bs['speedup_vs_best_1'], ci)} the best single core"
                   f"{_once(ci)} ({labels.get(oc['build'], oc['build'])} {oc['backend']}, "
                   f"{os_['ticks_per_s']['median']:.2f} ticks/s)")
    return out


#: The targets quoted for a scaling run on 2 cores: (what, figure key, target, direction).
#: Free threads (threads on a no-GIL build) and subinterpreters at 2 workers: >= 1.8x their own
#: single worker and within 10 % of the reference loop's speedup; the best parallel cell
#: >= 1.8x the best single core of any build (reports written before 2026-12-06 judged it at
#: 1.7x).
SCALING_GOALS: tuple[tuple[str, str, float, stats.Want], ...] = (
    ("speedup vs 1 worker at 2 workers", "speedup_vs_1", 1.8, "at least"),
    ("vs the reference loop at 2 workers", "vs_reference", 0.9, "at least"),
)
BEST_PARALLEL_GOAL = 1.8


def goal_verdicts(section: dict[str, Any],
                  sums: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Each quoted goal of a scaling section judged by :func:`bench.stats.verdict` on the
    figure's 95 % interval (``met`` only when the whole interval clears the target), or by
    :func:`bench.stats.point_verdict` where a cell was measured once."""
    cells = section["cells"]
    sums = aggregate(cells, section["builds"]) if sums is None else sums
    labels = {b["name"]: b["label"] for b in section["builds"]}
    nogil = {b["name"] for b in section["builds"] if not b["expects_gil"]}
    out: list[dict[str, Any]] = []

    def judge_figure(what: str, who: str, value: float, ci: dict[str, Any] | None,
                     target: float, want: stats.Want) -> None:
        word = (stats.verdict((ci["low"], ci["high"]), target, want) if ci is not None
                else stats.point_verdict(value, target, want))
        out.append({"goal": f"{what} {'>=' if want == 'at least' else '<='} {target:g}",
                    "cell": who, "value": value, "ci": ci, "target": target, "want": want,
                    "verdict": word})

    for c, s in zip(cells, sums, strict=True):
        if (c["workload"] != "arena" or c["workers"] != 2 or s["status"] != "ok"
                or not ((c["backend"] == "threads" and c["build"] in nogil)
                        or c["backend"] == "interpreters")):
            continue
        who = f"{labels.get(c['build'], c['build'])} {c['backend']} ({c['kernel']})"
        for what, key, target, want in SCALING_GOALS:
            if s.get(key) is not None:
                judge_figure(what, who, s[key], s.get(f"{key}_ci"), target, want)
    for kernel in sorted({c["kernel"] for c in cells if c["workload"] == "arena"}):
        par = [(c, s) for c, s in zip(cells, sums, strict=True)
               if c["workload"] == "arena" and c["kernel"] == kernel and c["workers"] > 1
               and s["status"] == "ok" and s.get("speedup_vs_best_1") is not None]
        if par:
            c, s = max(par, key=lambda cs: cs[1]["ticks_per_s"]["median"])
            who = (f"{labels.get(c['build'], c['build'])} {c['backend']} x{c['workers']} "
                   f"({kernel})")
            judge_figure("best parallel vs the best single core", who, s["speedup_vs_best_1"],
                         s.get("speedup_vs_best_1_ci"), BEST_PARALLEL_GOAL, "at least")
    return out


def headlines(section: dict[str, Any]) -> list[str]:
    """The few sentences a reader wants first, each a ratio measured in this run with its 95 %
    interval.

    For every build and parallel backend: speedup at the most workers vs 1 worker, and how that
    compares with the reference loop; then the best parallel cell vs the best single-core cell
    of any build; then each goal (:func:`goal_verdicts`) with the verdict rule's answer.  The
    goals are quoted beside the measurements, never used to alter them.
    """
    cells = section["cells"]
    sums = aggregate(cells, section["builds"])
    labels = {b["name"]: b["label"] for b in section["builds"]}
    out: list[str] = []
    kernels = sorted({c["kernel"] for c in cells if c["workload"] == "arena"})
    for kernel in kernels:
        arena = [(c, s) for c, s in zip(cells, sums, strict=True)
                 if c["workload"] == "arena" and c["kernel"] == kernel]
        tag = f" [{kernel} kernel]" if len(kernels) > 1 else ""
        out += _kernel_headlines(arena, labels, tag)
    bad = [c for c, s in zip(cells, sums, strict=True) if s["status"] != "ok"]
    if bad:
        out.append(f"- {len(bad)} cell(s) INVALID, ERROR or NOT RUN (see the status column)")
    beaten = [c for c, s in zip(cells, sums, strict=True) if s.get("beats_reference")]
    if beaten:
        out.append(f"- {len(beaten)} arena cell(s) beat the reference loop (whole interval of "
                   "the ratio above 1): there the reference is no upper bound (cache effects "
                   "of a smaller share per core, or noise); see the status column")
    if section.get("stopped_early"):
        reps = [s["repeats"] + s["failed_repeats"] for s in sums]
        span = f"{min(reps)}" if min(reps) == max(reps) else f"{min(reps)}–{max(reps)}"
        out.append(f"- run stopped early: {section['stopped_early']}; cells have {span} "
                   f"repeats, not the {section['params']['repeats']} planned")
    for g in goal_verdicts(section, sums):
        out.append(f"- goal {g['goal']}: {g['cell']} {fmt_ci(g['value'], g['ci'])} → "
                   f"**{g['verdict']}**")
    out.append("- verdicts: met = the whole 95 % interval clears the target, not met = the "
               "whole interval misses it, undecided = it straddles the target; GIL threads are "
               "expected near 1.0x (no verdict)")
    return out


def _rate(rec: dict[str, Any]) -> str:
    rate = (rec.get("window") or {}).get("tick_rate", rec.get("tick_rate_min"))
    return "-" if rate is None else f"{rate:.1f}"


def gateway_label(rec: dict[str, Any]) -> str:
    """A load record's gateways: ``0`` (the single-loop server), ``2 threads``, ``2 processes``;
    followed by the server's event loop where the record names it (``0, uvloop``)."""
    g = rec.get("gateways", 0)
    label = f"{g} {rec.get('gateway_backend') or 'threads'}" if g else "0"
    return f"{label}, {rec['loop']}" if rec.get("loop") else label


def load_table(section: dict[str, Any]) -> str:
    """Markdown table of a load section: the search results, then the fixed-load comparison."""
    lines = ["| build | backend | gateways | kind | entities | bots | MSPT p50 / p99 ms | "
             "ack p99 ms | Hz | server CPU ms per bot-s | "
             "bot CPU µs per message in+out / received: whole run; all playing | "
             "longest GC pause ms | holds | why not |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for r in section["runs"]:
        ack = (r.get("ack_ms") or {}).get("p99")
        p50, p99 = r.get("mspt_p50_ms"), r.get("mspt_p99_ms")
        lines.append(
            f"| {r['build']} | {r['backend']} | {gateway_label(r)} | {r.get('phase', '')} "
            f"| {r['entities']} | {r['bots']} | {num(p50, '.1f')} / {num(p99, '.1f')} "
            f"| {num(ack, '.1f')} | {_rate(r)} | {num(r.get('server_cpu_ms_per_bot_s'), '.2f')} "
            f"| {num(r.get('bot_cpu_us_per_message'), '.0f')} / "
            f"{num(r.get('bot_cpu_us_per_received'), '.0f')}; "
            f"{num(r.get('steady_bot_cpu_us_per_message'), '.0f')} / "
            f"{num(r.get('steady_bot_cpu_us_per_received'), '.0f')} "
            f"| {num((r.get('gc') or {}).get('pause_ms_max'), '.1f')} "
            f"| {'yes' if r.get('holds') else 'no'} | {'; '.join(r.get('why') or [])} |")
    best = section.get("best") or []
    if best:
        lines += ["", "| build | backend | gateways | largest world holding 30 Hz (bots fixed) | "
                  "most bots holding 30 Hz (world fixed) |", "|---|---|---|---|---|"]
        for b in best:
            lines.append(f"| {b['build']} | {b['backend']} | {gateway_label(b)} "
                         f"| {b.get('entities') or 'none'} "
                         f"(with {b['bots_fixed']} bots) | {b.get('bots') or 'none'} "
                         f"(with {b['entities_fixed']} entities) |")
    return "\n".join(lines)


def _p(ms: Sequence[float], q: float) -> float | None:
    return stats.percentile(ms, q) if ms else None


def capacity_verdict(probe: dict[str, Any], *, expects_gil: bool, params: dict[str, Any],
                     ) -> tuple[str, list[str]]:
    """One capacity probe's verdict and the reasons behind it (pure).

    ``held`` when every planned tick ran, the p99 tick time is within ``params["mspt_budget_ms"]``
    and at most ``params["max_late_ticks"]`` ticks ended after the next tick was due (each such
    tick delays the next one's start: the scheduler dilates the world clock); else ``fails``.
    ``INVALID`` when a worker's or the coordinator's GIL state contradicts the build;
    ``ERROR`` when the probe did not run.
    """
    status, reason = judge({"runs": [probe]}, expects_gil)
    if status == "ERROR":
        return "ERROR", [str(probe.get("error") or reason)]
    if status == "INVALID":
        return "INVALID", [str(reason)]
    why = _capacity_timing(probe, params)
    return ("held" if not why else "fails"), why


def _capacity_timing(probe: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """Why a probe that ran did not hold the rate (empty: it held), GIL state aside."""
    why: list[str] = []
    budget = float(params.get("mspt_budget_ms", 1000.0 / 30))
    allowed = int(params.get("max_late_ticks", 0))
    p99 = _p(probe["tick_ms"], 99)
    if p99 is None:
        why.append("no tick times")
    elif p99 > budget:
        why.append(f"p99 MSPT {p99:.1f} ms > {budget:.1f} ms")
    late = probe.get("late_ticks")
    if late is None:
        why.append("no scheduler counters")
    elif late > allowed:
        dil = probe.get("min_dilation")
        why.append(f"{late} late tick{'s' if late != 1 else ''} (world clock dilated"
                   + (f" to {dil:.2f}x" if isinstance(dil, int | float) else "") + ")")
    ran, planned = probe["ticks_run"], probe["ticks_planned"]
    if ran < planned and not why:  # else the probe stopped early because it had failed
        why.append(f"ran {ran} of {planned} ticks")
    return why


def capacity_summary(section: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-configuration figures of a capacity section (module docstring), in its order."""
    expects = {b["name"]: bool(b["expects_gil"]) for b in section["builds"]}
    params = section["params"]
    rate = float(params.get("rate", 30.0))
    out: list[dict[str, Any]] = []
    for c in section["configs"]:
        verdicts = [capacity_verdict(p, expects_gil=expects.get(c["build"], True), params=params)
                    for p in c["probes"]]
        s: dict[str, Any] = {"status": "ok", "reason": None, "held": None,
                             "trail": [(p["entities"], v) for p, (v, _) in
                                       zip(c["probes"], verdicts, strict=True)],
                             "why": [w for _, ws in verdicts for w in ws]}
        invalid = [ws for v, ws in verdicts if v == "INVALID"]
        if not c["probes"]:
            s["status"], s["reason"] = "NOT RUN", "the run stopped before this configuration"
        elif invalid:
            s["status"], s["reason"] = "INVALID", invalid[0][0]
        elif all(v == "ERROR" for v, _ in verdicts):
            s["status"], s["reason"] = "ERROR", "; ".join(sorted({ws[0] for _, ws in verdicts}))
        # An INVALID configuration still shows what it held (struck through, never a baseline).
        held = [p for p, (v, _) in zip(c["probes"], verdicts, strict=True)
                if v == "held" or (v == "INVALID" and not _capacity_timing(p, params))]
        if held:
            best = max(held, key=lambda p: p["entities"])
            # Only a bound from below when no larger probe failed: the search ran out of
            # probes (or reached the limit) while worlds still held.
            above = [p for p, (v, _) in zip(c["probes"], verdicts, strict=True)
                     if v == "fails" and p["entities"] > best["entities"]]
            s.update(held=best["entities"], side=best.get("side"), at_least=not above,
                     updates_per_s=best["entities"] * rate,
                     mspt={"p50": _p(best["tick_ms"], 50), "p99": _p(best["tick_ms"], 99)},
                     peak_rss=best.get("peak_rss"), worker_gil=best["worker_gil"])
        elif c["probes"]:
            last_ok = [p for p in c["probes"] if p["ok"]]
            s["worker_gil"] = last_ok[-1]["worker_gil"] if last_ok else None
        out.append(s)
    best1: dict[str, int] = {}
    for c, s in zip(section["configs"], out, strict=True):
        if c["workers"] == 1 and s["status"] == "ok" and s["held"]:
            best1[c["kernel"]] = max(best1.get(c["kernel"], 0), s["held"])
    for c, s in zip(section["configs"], out, strict=True):
        b1 = best1.get(c["kernel"])
        s["vs_best_1"] = s["held"] / b1 if s["held"] and b1 else None
    return out


def _count(n: int) -> str:
    """12,500 -> 12.5k; 1,250,000 -> 1.25M (probe trails stay short)."""
    if n >= 1_000_000:
        return f"{n / 1e6:.4g}M"
    return f"{n / 1e3:.4g}k" if n >= 1_000 else str(n)


def capacity_table(section: dict[str, Any]) -> str:
    """Markdown table of a capacity section: per configuration the largest world held at the
    tick rate, entity-updates/s there, the ratio to the best single core and the probe trail."""
    sums = capacity_summary(section)
    labels = {b["name"]: b["label"] for b in section["builds"]}
    rate = section["params"].get("rate", 30.0)
    head = (f"| kernel | build | backend | W | entities held at {rate:g} Hz | world side | "
            "M entity-updates/s | ×best 1-core | MSPT p50/p99 ms | probes (✓ held, ✗ not) | "
            "worker GIL | status |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c, s in zip(section["configs"], sums, strict=True):
        valid = s["status"] == "ok"

        def mark(text: str, valid: bool = valid) -> str:
            return text if valid or text == "-" else f"~~{text}~~"

        held = s["held"]
        held_txt = "-" if held is None else ("≥ " if s.get("at_least") else "") + f"{held:,}"
        if held is None and valid:
            held_txt = "none"
        mspt = s.get("mspt")
        mspt_txt = (f"{mspt['p50']:.1f}/{mspt['p99']:.1f}" if mspt and mspt["p99"] is not None
                    else "-")
        trail = " ".join(_count(n) + {"held": "✓", "fails": "✗"}.get(v, f"({v})")
                         for n, v in s["trail"]) or "-"
        gil = s.get("worker_gil")
        gil_txt = "-" if not gil else ("on" if all(gil) else "off" if not any(gil)
                                       else "mixed") + f" ×{len(gil)}"
        flag = "ok" if valid else f"**{s['status']}**: {s['reason']}"
        lines.append(
            f"| {c['kernel']} | {labels.get(c['build'], c['build'])} | {c['backend']} "
            f"| {c['workers']} | {mark(held_txt)} | {_fmt(s.get('side'), ',.0f')} "
            f"| {mark(_fmt(s['updates_per_s'] / 1e6 if held else None))} "
            f"| {mark(_fmt(s['vs_best_1']))} | {mspt_txt} | {trail} | {gil_txt} | {flag} |")
    return "\n".join(lines)


def capacity_headlines(section: dict[str, Any]) -> list[str]:
    """Per kernel: the configuration holding the largest world, and its ratio to the best
    single core; the goals quoted beside the measurements, never used to alter them."""
    sums = capacity_summary(section)
    labels = {b["name"]: b["label"] for b in section["builds"]}
    rate = section["params"].get("rate", 30.0)
    out: list[str] = []
    pairs = list(zip(section["configs"], sums, strict=True))
    for kernel in dict.fromkeys(c["kernel"] for c in section["configs"]):
        valid = [(c, s) for c, s in pairs
                 if c["kernel"] == kernel and s["status"] == "ok" and s["held"]]
        if not valid:
            out.append(f"- {kernel} kernel: no configuration held {rate:g} Hz at any size tried")
            continue
        c, s = max(valid, key=lambda cs: cs[1]["held"])
        one = [(c1, s1) for c1, s1 in valid if c1["workers"] == 1]
        text = (f"- {kernel} kernel: {labels.get(c['build'], c['build'])} {c['backend']} "
                f"x{c['workers']} holds {'≥ ' if s.get('at_least') else ''}{s['held']:,} "
                f"entities at {rate:g} Hz ({s['updates_per_s'] / 1e6:.2f} M entity-updates/s)")
        if one:
            c1, s1 = max(one, key=lambda cs: cs[1]["held"])
            text += (f", {s['vs_best_1']:.2f}x the best single core "
                     f"({labels.get(c1['build'], c1['build'])} {c1['backend']}, "
                     f"{s1['held']:,})")
        out.append(text)
    bad = [s for s in sums if s["status"] != "ok"]
    if bad:
        out.append(f"- {len(bad)} configuration(s) INVALID, ERROR or NOT RUN (see the status "
                   "column)")
    if section.get("stopped_early"):
        out.append(f"- run stopped early: {section['stopped_early']}")
    out.append("- goals on 2 cores: numpy kernel >= 1,000,000 entities held by the best "
               "configuration; python kernel >= 50,000")
    return out


def _source_text(src: dict[str, Any] | None) -> str:
    if not src:
        return "-"
    who = f"[{src['who']}]({src['url']})" if src.get("url") else src["who"]
    text = f"{who}; speaks of: {src['cpython']}"
    for o in src.get("official") or []:
        text += f"; CPython {o.get('cpython')} docs: \"{o.get('says')}\" ({o.get('url')})"
    return text


def claims_table(section: dict[str, Any]) -> str:
    """Markdown table of a claims section: each claim, its source and the CPython version it
    speaks of, the figure measured here with its 95 % interval where repeats exist, and the
    verdict (:func:`bench.stats.verdict`; files written before sources were recorded show
    "-" there)."""
    lines = ["| claim | commonly claimed | source (CPython version) | measured [95% CI] "
             "| verdict | detail |", "|---|---|---|---|---|---|"]
    for c in section["claims"]:
        ci = c.get("ci")
        if c["measured"] is None:
            val = "-"
        elif ci:
            val = f"{c['measured']:.3g} {c['unit']} [{ci['low']:.3g}, {ci['high']:.3g}]"
        else:
            val = f"{c['measured']:.3g} {c['unit']}"
        lines.append(f"| {c['name']} | {c['claimed']} | {_source_text(c.get('source'))} "
                     f"| {val} | {c['verdict']} | {c.get('detail') or ''} |")
    return "\n".join(lines)
