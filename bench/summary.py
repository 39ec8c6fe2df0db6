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
* ``ceiling_ratio``: the arena's speedup vs 1 worker divided by the ceiling's for the same build,
  backend and workers (1.0 = the tick loop scales as well as the interpreter can);
* status (:func:`judge`): ``ok``; ``INVALID`` when any worker's GIL state contradicts the build (a
  free-threaded cell whose workers report the GIL enabled is not a no-GIL figure) or the digests
  of the same workload disagree; ``ERROR`` when no repeat succeeded; ``NOT RUN`` when the run
  stopped (``--time-budget`` spent, or Ctrl-C) before the cell's first repeat.  INVALID, ERROR
  and NOT RUN cells never serve as baselines and their speedups are shown struck through.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench import stats


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
    (includes warm-up ticks, unlike ours), and per worker the compute MSPT and the time spent
    waiting for neighbours' borders, which is where imperfect scaling shows up."""
    def med(values: list[float]) -> float | None:
        return stats.median(values) if values else None

    step50, step99, work50, wait50 = [], [], [], []
    for r in runs:
        m = r.get("runtime_metrics") or {}
        step = m.get("mspt") or {}
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
           "slowest_worker_mspt_p50": med(work50), "max_border_wait_ms_p50": med(wait50)}
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
    # Baselines: only valid cells.
    ones: dict[tuple[Any, ...], float] = {}
    best: dict[tuple[Any, ...], float] = {}
    for c, s in zip(cells, summaries, strict=True):
        if s["status"] != "ok" or c["workers"] != 1:
            continue
        rate = s["ticks_per_s"]["median"]
        ones[_key(c, "workload", "build", "backend", "kernel")] = rate
        bk = _key(c, "workload", "kernel")
        best[bk] = max(best.get(bk, 0.0), rate)
    for c, s in zip(cells, summaries, strict=True):
        if "ticks_per_s" not in s:
            continue
        rate = s["ticks_per_s"]["median"]
        one = ones.get(_key(c, "workload", "build", "backend", "kernel"))
        b1 = best.get(_key(c, "workload", "kernel"))
        s["speedup_vs_1"] = stats.speedup(rate, one) if one else None
        s["speedup_vs_best_1"] = stats.speedup(rate, b1) if b1 else None
        s["efficiency"] = (stats.efficiency(s["speedup_vs_1"], c["workers"])
                           if s["speedup_vs_1"] is not None else None)
    ceil = {_key(c, "build", "backend", "workers"): s.get("speedup_vs_1")
            for c, s in zip(cells, summaries, strict=True)
            if c["workload"] == "ceiling" and s["status"] == "ok"}
    for c, s in zip(cells, summaries, strict=True):
        if c["workload"] != "arena":
            continue
        cs = ceil.get(_key(c, "build", "backend", "workers"))
        mine = s.get("speedup_vs_1")
        s["ceiling_ratio"] = mine / cs if mine is not None and cs else None
    return summaries


def _fmt(x: float | None, spec: str = ".2f", none: str = "-") -> str:
    return none if x is None else format(x, spec)


def scaling_table(section: dict[str, Any]) -> str:
    """The terminal/markdown table of a scaling section (recomputes summaries from raw runs)."""
    cells = section["cells"]
    summaries = aggregate(cells, section["builds"])
    labels = {b["name"]: b["label"] for b in section["builds"]}
    head = ("| workload | build | backend | kernel | W | ticks/s median [min–max] | "
            "Mupd/s | MSPT p50/p99 ms | ×1w | ×best-1core | eff | vs ceiling | RSS MB | "
            "worker GIL | status |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c, s in zip(cells, summaries, strict=True):
        tp = s.get("ticks_per_s")
        rate = (f"{tp['median']:.2f} [{tp['min']:.2f}–{tp['max']:.2f}]" if tp else "-")
        eu = s.get("entity_updates_per_s")
        mspt = s.get("mspt")
        flag = s["status"] if s["status"] == "ok" else f"**{s['status']}**: {s['reason']}"
        if s.get("digest_mismatch"):
            flag += " (digest differs from other cells!)"
        mspt_txt = f"{mspt['p50']:.1f}/{mspt['p99']:.1f}" if mspt else "-"
        gil = s.get("worker_gil")
        gil_txt = "-" if gil is None else ("on" if all(gil) else "off" if not any(gil)
                                           else "mixed") + f" ×{len(gil)}"
        valid = s["status"] == "ok"

        def mark(text: str, valid: bool = valid) -> str:
            return text if valid or text == "-" else f"~~{text}~~"

        lines.append(
            f"| {'CEILING' if c['workload'] == 'ceiling' else 'arena'} "
            f"| {labels.get(c['build'], c['build'])} | {c['backend']} | {c['kernel']} "
            f"| {c['workers']} | {mark(rate)} "
            f"| {_fmt(eu['median'] / 1e6 if eu else None)} "
            f"| {mspt_txt} "
            f"| {mark(_fmt(s.get('speedup_vs_1')))} | {mark(_fmt(s.get('speedup_vs_best_1')))} "
            f"| {mark(_fmt(s.get('efficiency')))} | {_fmt(s.get('ceiling_ratio'))} "
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
        ceil = s.get("ceiling_ratio")
        out.append(f"- {label}: {s['speedup_vs_1']:.2f}x at {wmax} workers vs 1 worker "
                   f"(efficiency {s['efficiency']:.0%}"
                   + (f"; {ceil:.0%} of the ceiling's speedup" if ceil is not None else "")
                   + ")")
    valid = [(c, s) for c, s in arena if s["status"] == "ok" and "ticks_per_s" in s]
    par = [(c, s) for c, s in valid if c["workers"] > 1]
    one = [(c, s) for c, s in valid if c["workers"] == 1]
    if par and one:
        bc, bs = max(par, key=lambda cs: cs[1]["ticks_per_s"]["median"])
        oc, os_ = max(one, key=lambda cs: cs[1]["ticks_per_s"]["median"])
        out.append(f"- best parallel{tag}: {labels.get(bc['build'], bc['build'])} "
                   f"{bc['backend']} x{bc['workers']} at {bs['ticks_per_s']['median']:.2f} "
                   f"ticks/s = {bs['speedup_vs_best_1']:.2f}x the best single core "
                   f"({labels.get(oc['build'], oc['build'])} {oc['backend']}, "
                   f"{os_['ticks_per_s']['median']:.2f} ticks/s)")
    return out


def headlines(section: dict[str, Any]) -> list[str]:
    """The few sentences a reader wants first, each a ratio measured in this run.

    For every build and parallel backend: speedup at the most workers vs 1 worker, and how that
    compares with the ceiling; then the best parallel cell vs the best single-core cell of any
    build.  The issue's targets (>= 1.8x at 2 workers for free threads and subinterpreters,
    within 10 % of the ceiling, >= 1.7x best parallel vs best single core) are quoted beside
    the measurements, never used to alter them.
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
    if section.get("stopped_early"):
        reps = [s["repeats"] + s["failed_repeats"] for s in sums]
        span = f"{min(reps)}" if min(reps) == max(reps) else f"{min(reps)}–{max(reps)}"
        out.append(f"- run stopped early: {section['stopped_early']}; cells have {span} "
                   f"repeats, not the {section['params']['repeats']} planned")
    out.append("- issue targets on 2 cores: free threads and subinterpreters >= 1.8x at 2 workers "
               "and within 10% of the ceiling; GIL threads ~1.0x; best parallel >= 1.7x the "
               "best single core")
    return out


def _rate(rec: dict[str, Any]) -> str:
    rate = (rec.get("window") or {}).get("tick_rate", rec.get("tick_rate_min"))
    return "-" if rate is None else f"{rate:.1f}"


def load_table(section: dict[str, Any]) -> str:
    """Markdown table of a load section: the search results, then the fixed-load comparison."""
    lines = ["| build | backend | gateways | kind | entities | bots | MSPT p50 / p99 ms | "
             "ack p99 ms | Hz | server CPU ms per bot-s | bot CPU µs per message | holds | "
             "why not |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for r in section["runs"]:
        ack = (r.get("ack_ms") or {}).get("p99")
        p50, p99 = r.get("mspt_p50_ms"), r.get("mspt_p99_ms")
        lines.append(
            f"| {r['build']} | {r['backend']} | {r.get('gateways', 0)} | {r.get('phase', '')} "
            f"| {r['entities']} | {r['bots']} | {num(p50, '.1f')} / {num(p99, '.1f')} "
            f"| {num(ack, '.1f')} | {_rate(r)} | {num(r.get('server_cpu_ms_per_bot_s'), '.2f')} "
            f"| {num(r.get('bot_cpu_us_per_message'), '.0f')} "
            f"| {'yes' if r.get('holds') else 'no'} | {'; '.join(r.get('why') or [])} |")
    best = section.get("best") or []
    if best:
        lines += ["", "| build | backend | gateways | largest world holding 30 Hz (bots fixed) | "
                  "most bots holding 30 Hz (world fixed) |", "|---|---|---|---|---|"]
        for b in best:
            lines.append(f"| {b['build']} | {b['backend']} | {b.get('gateways', 0)} "
                         f"| {b.get('entities') or 'none'} "
                         f"(with {b['bots_fixed']} bots) | {b.get('bots') or 'none'} "
                         f"(with {b['entities_fixed']} entities) |")
    return "\n".join(lines)


def claims_table(section: dict[str, Any]) -> str:
    """Markdown table of a claims section: each claim, the figure measured here, the verdict."""
    lines = ["| claim | commonly claimed | measured | verdict | detail |",
             "|---|---|---|---|---|"]
    for c in section["claims"]:
        val = "-" if c["measured"] is None else f"{c['measured']:.3g} {c['unit']}"
        lines.append(f"| {c['name']} | {c['claimed']} | {val} | {c['verdict']} | "
                     f"{c.get('detail') or ''} |")
    return "\n".join(lines)
