"""The results.json format: versioned, documented here, validated on every load.

One results folder (``bench/results/<date>-<host>/``) holds one ``results.json``; each bench
command fills its own *section* and leaves the others alone, so ``scaling``, ``load`` and
``claims`` run at different times still produce one report.  Schema version 1::

    {
      "schema": "paratick-bench",           # constant
      "version": 1,                          # bumped on any incompatible change
      "scaling": {                           # optional: written by `paratick bench scaling`
        "created": "2026-11-25T19:00:00+00:00",
        "command": ["paratick", "bench", "scaling", "--quick"],
        "environment": {...},                # bench.env.capture(): machine, git, interpreters
        "params": {"world": {"entities", "width", "height", "regions_x", "regions_y",
                             "radius", "seed"},
                   "ticks": int, "warmup": int, "repeats": int,
                   "reference_iters": int,   # "ceiling_iters" in files written before the
                   "quick": bool},           # reference loop's rename; either is read
        "builds": [{"name": "gil"|"ft"|"ft-gil"|..., "label": str, "python": str,
                    "env": {str: str}, "expects_gil": bool}],
        "cells": [{                          # one per measured configuration
          "workload": "arena"|"reference",   # "ceiling": the reference loop's first name
          "build": str, "backend": str, "kernel": str,
          "workers": int,
          "runs": [{                         # raw, one per repeat, in run order
             "round": int, "ok": bool, "error": str|null,
             "ticks_per_s": float|null, "entity_updates_per_s": float|null,
             "tick_ms": [float], "worker_gil": [bool], "gil_enabled": bool|null,
             "peak_rss": int|null, "digest": str|null, "startup_s": float|null,
             "runtime_metrics": object|null,
             "timed_ticks": int|null,        # ticks timed (more than params.ticks when the
             "tick": int|null}],             # fixed count took < params.min_seconds);
                                             # tick: where the digest was taken
          "summary": {...}                   # derived by bench.summary.aggregate() (figures,
        }],                                  # 95 % intervals, vs_reference); a report
                                             # recomputes it from "runs", never trusts it
        "order": [[round, cell_index], ...], # the actual interleaved run order
        "stopped_early": str|null,           # optional: why the run ended before its plan
        "runs_planned": int, "runs_done": int,  # optional (absent in older files)
        "note": str|null                     # optional: --note, a line about the machine
      },
      "load": {"created", "command", "environment", "params", "runs": [...],      # optional
               "stopped_early", "note"},     # optional, as in scaling (absent in older files)
      "claims": {"created", "command", "environment", "claims": [CLAIM]},        # optional
                                             # CLAIM: name, claimed, measured, unit, verdict,
                                             # detail, values; newer files add "source" (who
                                             # said it, about which CPython: {"who", "cpython",
                                             # "url", "official": [{"cpython", "says", "url"}]})
                                             # and "ci" (95 % interval, null if measured once)
      "soak": {"created", "command", "environment", "params", "server_tracebacks",
               "flood": {...}, "churn": {...}},                                 # optional
      "capacity": {                          # optional: written by `paratick bench capacity`
        "created": str, "command": [str], "environment": {...},
        "params": {"rate": float,            # target Hz (30)
                   "mspt_budget_ms": float,  # p99 tick time allowed (1000 / rate)
                   "max_late_ticks": int,    # ticks allowed to end after the next deadline (0)
                   "seconds": float, "ticks": int,   # timed seconds / ticks per probe
                   "warmup": int,            # untimed flat-out ticks first (at most)
                   "density": float,         # entities per 1,000,000 square units
                   "world": {"regions_x", "regions_y", "radius", "seed"},
                   "checkpoint_every": int,  # the runtime's shard checkpoint period (ticks)
                   "start": {kernel: int}, "limit": int, "max_probes": int, "quick": bool},
        "builds": [BUILD, ...],              # as in scaling
        "configs": [{                        # one per configuration, in table order
          "build": str, "backend": str, "kernel": str, "workers": int,
          "probes": [{                       # raw, in search order
             "entities": int, "side": float, # world of side x side units
             "ok": bool, "error": str|null,
             "ticks_planned": int, "ticks_run": int, "timed_s": float|null,
             "tick_ms": [float],             # every timed Runtime.step, paced at the rate
             "late_ticks": int|null,         # scheduler rebases: ticks ending past the next due
             "deadline_misses": int|null,    # the scheduler's below-dilation-floor count
             "min_dilation": float|null, "start_lag_ms_max": float|null,
             "worker_gil": [bool], "gil_enabled": bool|null,
             "peak_rss": int|null, "startup_s": float|null, "runtime_metrics": object|null}]
        }],                                  # verdicts and "held" are recomputed by
        "stopped_early": str|null,           # bench.summary.capacity_summary, never stored
        "note": str|null
      }
    }

Validation checks structure and types of everything a report reads and raises
:class:`~bench.errors.ResultsError` naming the first bad path (``scaling.cells[3].workers:
expected int, got str``), so a truncated or hand-edited file fails clearly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.errors import ResultsError

SCHEMA = "paratick-bench"
VERSION = 1
FILENAME = "results.json"

Check = Callable[[Any, str], None]


def _typename(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is(kinds: tuple[type, ...], nullable: bool = False) -> Check:
    def check(value: Any, path: str) -> None:
        if value is None and nullable:
            return
        # bool is an int subclass; a flag is never a count and a count never a flag.
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            want = "|".join(k.__name__ for k in kinds) + ("|null" if nullable else "")
            raise ResultsError(f"{path}: expected {want}, got {_typename(value)}")
    return check


INT, FLOAT, STR, BOOL = _is((int,)), _is((int, float)), _is((str,)), _is((bool,))
OPT_FLOAT, OPT_STR, OPT_BOOL, OPT_INT = (_is((int, float), True), _is((str,), True),
                                         _is((bool,), True), _is((int,), True))
ANY_DICT = _is((dict,))
OPT_DICT = _is((dict,), True)


def list_of(item: Check) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise ResultsError(f"{path}: expected list, got {_typename(value)}")
        for i, v in enumerate(value):
            item(v, f"{path}[{i}]")
    return check


def record(fields: dict[str, Check], optional: dict[str, Check] | None = None) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise ResultsError(f"{path}: expected object, got {_typename(value)}")
        for key, sub in fields.items():
            if key not in value:
                raise ResultsError(f"{path}: missing key {key!r}")
            sub(value[key], f"{path}.{key}")
        for key, sub in (optional or {}).items():
            if key in value:
                sub(value[key], f"{path}.{key}")
    return check


def any_of_keys(*keys: str, kind: Check) -> Check:
    """At least one of ``keys`` present (a key renamed in a later file), each present one of
    ``kind``."""
    def check(value: Any, path: str) -> None:
        if isinstance(value, dict) and not any(k in value for k in keys):
            raise ResultsError(f"{path}: missing key {keys[0]!r}")
        for key in keys:
            if isinstance(value, dict) and key in value:
                kind(value[key], f"{path}.{key}")
    return check


def all_of(*checks: Check) -> Check:
    def check(value: Any, path: str) -> None:
        for c in checks:
            c(value, path)
    return check


def one_of(*choices: str) -> Check:
    def check(value: Any, path: str) -> None:
        if value not in choices:
            raise ResultsError(f"{path}: expected one of {choices}, got {value!r}")
    return check


RUN = record({"round": INT, "ok": BOOL, "ticks_per_s": OPT_FLOAT, "tick_ms": list_of(FLOAT),
              "worker_gil": list_of(BOOL), "peak_rss": OPT_INT, "digest": OPT_STR},
             {"error": OPT_STR, "entity_updates_per_s": OPT_FLOAT, "gil_enabled": OPT_BOOL,
              "startup_s": OPT_FLOAT, "runtime_metrics": OPT_DICT, "timed_ticks": OPT_INT,
              "tick": OPT_INT})
CELL = record({"workload": one_of("arena", "reference", "ceiling"), "build": STR, "backend": STR,
               "kernel": STR, "workers": INT, "runs": list_of(RUN)}, {"summary": OPT_DICT})
BUILD = record({"name": STR, "label": STR, "python": STR, "env": ANY_DICT, "expects_gil": BOOL})
WORLD = record({"entities": INT, "width": FLOAT, "height": FLOAT, "regions_x": INT,
                "regions_y": INT, "radius": FLOAT, "seed": INT})
SCALING = record({"created": STR, "command": list_of(STR), "environment": ANY_DICT,
                  "params": all_of(record({"world": WORLD, "ticks": INT, "warmup": INT,
                                           "repeats": INT, "quick": BOOL}),
                                   any_of_keys("reference_iters", "ceiling_iters", kind=INT)),
                  "builds": list_of(BUILD), "cells": list_of(CELL),
                  "order": list_of(list_of(INT))},
                 {"stopped_early": OPT_STR, "runs_planned": INT, "runs_done": INT,
                  "note": OPT_STR})
LOAD = record({"created": STR, "command": list_of(STR), "environment": ANY_DICT,
               "params": ANY_DICT, "runs": list_of(ANY_DICT)},
              {"stopped_early": OPT_STR, "note": OPT_STR})
CLAIM = record({"name": STR, "claimed": STR, "measured": OPT_FLOAT, "unit": STR,
                "verdict": STR}, {"detail": OPT_STR, "values": ANY_DICT,
                                  "source": record({"who": STR, "cpython": STR},
                                                   {"url": OPT_STR,
                                                    "official": list_of(ANY_DICT)}),
                                  "ci": OPT_DICT})
CLAIMS = record({"created": STR, "command": list_of(STR), "environment": ANY_DICT,
                 "claims": list_of(CLAIM)})
SOAK = record({"created": STR, "command": list_of(STR), "environment": ANY_DICT,
               "params": ANY_DICT, "server_tracebacks": INT},
              {"flood": ANY_DICT, "churn": ANY_DICT, "note": OPT_STR,
               "server_log_lines": INT})
PROBE = record({"entities": INT, "side": FLOAT, "ok": BOOL, "ticks_planned": INT,
                "ticks_run": INT, "tick_ms": list_of(FLOAT), "worker_gil": list_of(BOOL)},
               {"error": OPT_STR, "timed_s": OPT_FLOAT, "late_ticks": OPT_INT,
                "deadline_misses": OPT_INT, "min_dilation": OPT_FLOAT,
                "start_lag_ms_max": OPT_FLOAT, "gil_enabled": OPT_BOOL, "peak_rss": OPT_INT,
                "startup_s": OPT_FLOAT, "runtime_metrics": OPT_DICT})
CAPACITY = record({"created": STR, "command": list_of(STR), "environment": ANY_DICT,
                   "params": record({"rate": FLOAT, "mspt_budget_ms": FLOAT,
                                     "max_late_ticks": INT, "seconds": FLOAT, "ticks": INT,
                                     "density": FLOAT, "limit": INT, "max_probes": INT,
                                     "quick": BOOL},
                                    {"warmup": INT, "world": ANY_DICT, "start": ANY_DICT,
                                     "checkpoint_every": INT}),
                   "builds": list_of(BUILD),
                   "configs": list_of(record({"build": STR, "backend": STR, "kernel": STR,
                                              "workers": INT, "probes": list_of(PROBE)}))},
                  {"stopped_early": OPT_STR, "note": OPT_STR})
DOCUMENT = record({"schema": one_of(SCHEMA), "version": INT},
                  {"scaling": SCALING, "load": LOAD, "claims": CLAIMS, "soak": SOAK,
                   "capacity": CAPACITY})


def validate(doc: Any, *, source: str = "results") -> dict[str, Any]:
    """Check ``doc`` against schema version 1 and return it.

    Raises:
        ResultsError: wrong schema name, unknown version, or the first structural error.
    """
    if not isinstance(doc, dict):
        raise ResultsError(f"{source}: expected a JSON object, got {_typename(doc)}")
    if doc.get("schema") != SCHEMA:
        raise ResultsError(f"{source}: not a paratick benchmark file "
                           f"(schema={doc.get('schema')!r})")
    if doc.get("version") != VERSION:
        raise ResultsError(f"{source}: schema version {doc.get('version')!r} is not supported "
                           f"(this paratick reads version {VERSION})")
    DOCUMENT(doc, source)
    return doc


def empty() -> dict[str, Any]:
    return {"schema": SCHEMA, "version": VERSION}


def load(path: Path) -> dict[str, Any]:
    """Read and validate a results file (or the results.json inside a folder).

    Raises:
        ResultsError: missing, unreadable, not JSON, or invalid.
    """
    if path.is_dir():
        path = path / FILENAME
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultsError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc})") from exc
    return validate(doc, source=str(path))


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None (JSON has no NaN; an empty
    percentile window in some metrics is NaN), recursively through dicts and lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


#: Where results go when paratick is installed rather than run from its source checkout: a
#: folder of the current directory, never the installed package (site-packages).
INSTALLED_RESULTS = "paratick-results"


def results_base(root: Path | None = None, cwd: Path | None = None) -> Path:
    """The folder that holds every run's results folder.

    ``bench/results/`` of the source checkout paratick runs from (``root``, default the folder
    above the ``bench`` package, counts as a checkout when ``pyproject.toml`` is there), else
    ``paratick-results/`` in ``cwd`` (default the current directory).
    """
    from bench.builds import repo_root

    root = repo_root() if root is None else root
    if (root / "pyproject.toml").is_file():
        return root / "bench" / "results"
    return (Path.cwd() if cwd is None else cwd) / INSTALLED_RESULTS


def results_dir(base: Path | None = None, *, quick: bool = False) -> Path:
    """``<base>/<date>-<host>/`` (UTC date), every command's default --out; quick runs go to
    ``<date>-<host>-quick/`` so they never replace a full run's figures.  ``base`` defaults to
    :func:`results_base`."""
    import datetime as _dt
    import socket

    date = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d")
    host = socket.gethostname().split(".")[0] or "host"
    return (base or results_base()) / (f"{date}-{host}" + ("-quick" if quick else ""))


def add_out_argument(container: Any, *, quick: bool = False, suffix: str = "") -> None:
    """``--out DIR``, with the default every bench command shares (:func:`results_dir`).

    Args:
        quick: the command has --quick, whose runs go to a ``-quick`` folder.
        suffix: the command's own folder suffix (soak: ``-soak``).
    """
    where = f"<date>-<host>{suffix}/"
    more = "; -quick suffix with --quick" if quick else ""
    container.add_argument(
        "--out", type=Path, default=None, metavar="DIR",
        help=f"results folder (default: bench/results/{where} in a checkout, else "
             f"paratick-results/{where} in the current directory{more})")


def save_section(folder: Path, name: str, section: dict[str, Any]) -> Path:
    """Write ``section`` under ``name`` into ``folder/results.json``, keeping other sections.

    The merged document is validated before it is written, so a bug never leaves a file that
    ``paratick bench report`` refuses.
    """
    path = folder / FILENAME
    doc = load(path) if path.exists() else empty()
    doc[name] = finite(section)
    validate(doc, source=str(path))
    return write_json(folder, FILENAME, doc)


def write_json(folder: Path, filename: str, doc: Any) -> Path:
    """``doc`` as ``folder/filename`` (the folder made if needed), written whole or not at all
    (a temporary file renamed); NaN and infinities refused.  Returns the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
