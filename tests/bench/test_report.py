"""bench.report: report.md and PNGs rebuilt from a synthetic results.json, via the CLI too."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bench import report, schema
from server.cli import main
from tests.bench.synthetic import cell, scaling_doc, section, standard_cells

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_doc(folder: Path, doc: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(doc))


def test_report_rebuilds_markdown_and_plot(tmp_path: Path) -> None:
    write_doc(tmp_path, scaling_doc())
    written = report.write(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert tmp_path / "report.md" in written and tmp_path / "scaling.png" in written
    assert (tmp_path / "scaling.png").read_bytes().startswith(PNG_MAGIC)
    assert "Test CPU" in md and "`abc`" in md
    # figures are recomputed from the raw runs: ft 2 workers median 16.2, ×1w 1.80 with its
    # 95 % interval beside it
    assert "16.20 [15.00–17.00]" in md and "| 1.80× [" in md
    assert "| REFERENCE |" in md and "95 % bootstrap confidence interval" in md
    assert (tmp_path / "ticks.png").read_bytes().startswith(PNG_MAGIC)
    assert "![distribution of every timed tick](ticks.png)" in md


def test_report_ignores_stored_summaries(tmp_path: Path) -> None:
    doc = scaling_doc()
    for c in doc["scaling"]["cells"]:
        c["summary"] = {"status": "ok", "ticks_per_s": {"median": 999.0}}
    write_doc(tmp_path, doc)
    report.write(tmp_path, plots=False)
    md = (tmp_path / "report.md").read_text()
    assert "999" not in md and not (tmp_path / "scaling.png").exists()


def test_report_shows_invalid_cells(tmp_path: Path) -> None:
    cells = standard_cells()
    cells[3] = cell("arena", "ft", "threads", 2, [30.0, 30.0, 30.0], True)
    doc = schema.empty()
    doc["scaling"] = section(cells)
    write_doc(tmp_path, doc)
    report.write(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "**INVALID**" in md and "~~30.00 [30.00–30.00]~~" in md


def test_cli_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_doc(tmp_path, scaling_doc())
    assert main(["bench", "report", str(tmp_path)]) == 0
    assert "report.md" in capsys.readouterr().out
    assert (tmp_path / "scaling.png").exists()


def test_cli_report_on_a_bad_file_is_a_clear_error(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    doc = copy.deepcopy(scaling_doc())
    doc["scaling"]["cells"][1]["runs"][0]["tick_ms"] = "fast"
    write_doc(tmp_path, doc)
    assert main(["bench", "report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "scaling.cells[1].runs[0].tick_ms: expected list, got str" in err
    assert not (tmp_path / "report.md").exists()


def test_readme_snippet_links_the_committed_figures(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    write_doc(tmp_path, scaling_doc())
    assert main(["bench", "report", str(tmp_path), "--readme"]) == 0
    out = capsys.readouterr().out
    assert "Measured on Test CPU, 2 cores" in out and "- best parallel" in out
    assert f"![ticks/s vs workers]({tmp_path}/scaling.png)" in out


def test_report_without_matplotlib_skips_plots_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = report.importlib.util.find_spec
    monkeypatch.setattr(report.importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    write_doc(tmp_path, scaling_doc())
    written = report.write(tmp_path, plots=True)
    md = (tmp_path / "report.md").read_text()
    assert written == [tmp_path / "report.md"]
    assert not (tmp_path / "scaling.png").exists()
    assert "Plots skipped: matplotlib is not installed" in md
    assert "16.20 [15.00–17.00]" in md  # the figures are all there


def test_report_flags_a_reference_loop_beaten_by_the_tick_loop(tmp_path: Path) -> None:
    """The reference loop is no upper bound: when the tick loop's speedup beats it with the
    whole interval above 1, the report says so; within noise it does not."""
    cells = standard_cells()
    # ft threads: the tick loop 1.8x, the reference loop only 1.2x, both tight over 5 repeats
    cells[2] = cell("arena", "ft", "threads", 1, [9.0, 9.1, 8.9, 9.0, 9.05], False)
    cells[3] = cell("arena", "ft", "threads", 2, [16.2, 16.3, 16.1, 16.2, 16.25], False)
    cells[4] = cell("reference", "ft", "threads", 1, [4.0, 4.02, 3.98, 4.0, 4.01], False)
    cells[5] = cell("reference", "ft", "threads", 2, [4.8, 4.82, 4.78, 4.8, 4.81], False)
    doc = schema.empty()
    doc["scaling"] = section(cells)
    write_doc(tmp_path, doc)
    report.write(tmp_path, plots=False)
    md = (tmp_path / "report.md").read_text()
    assert "beats the reference loop" in md
    assert "1 arena cell(s) beat the reference loop" in md
    # the same shape inside the noise (standard cells: 0.90 [0.75, 1.06]) is not flagged
    write_doc(tmp_path, scaling_doc())
    report.write(tmp_path, plots=False)
    assert "beats the reference loop" not in (tmp_path / "report.md").read_text()


def test_old_files_with_ceiling_rows_still_load_and_report(tmp_path: Path) -> None:
    doc = scaling_doc()  # written with the reference loop's first name, "ceiling"
    assert {c["workload"] for c in doc["scaling"]["cells"]} == {"arena", "ceiling"}
    assert "ceiling_iters" in doc["scaling"]["params"]
    write_doc(tmp_path, doc)
    report.write(tmp_path, plots=False)
    md = (tmp_path / "report.md").read_text()
    assert md.count("| REFERENCE |") == 2 and "0.90× [" in md


def test_load_mspt_plot_is_a_cdf_of_the_readings(tmp_path: Path) -> None:
    doc = schema.empty()
    doc["load"] = {"created": "t", "command": ["paratick"], "environment": {},
                   "params": {"mspt_budget_ms": 33.3},
                   "runs": [{"build": "gil", "backend": "threads", "entities": 100, "bots": 10,
                             "tick_ms": [5.0, 9.0, 40.0, 7.0, 6.5]},
                            # results written before the server listed every tick
                            {"build": "ft", "backend": "threads", "entities": 100, "bots": 10,
                             "mspt_samples": [5.0, 9.0, 40.0, 7.0],
                             "mspt_p50_samples": [2.0, 3.0, 2.5, 2.0]},
                            {"build": "ft", "backend": "processes", "entities": 100,
                             "bots": 10}]}
    assert report._ecdf([3.0, 1.0, 2.0, 2.0]) == ([1.0, 2.0, 2.0, 3.0], [0.25, 0.5, 0.75, 1.0])
    write_doc(tmp_path, doc)
    written = report.write(tmp_path)
    assert tmp_path / "mspt.png" in written
    assert (tmp_path / "mspt.png").read_bytes().startswith(PNG_MAGIC)
    assert "CDF" in (tmp_path / "report.md").read_text()


def test_the_scaling_plot_has_a_row_per_kernel(tmp_path: Path) -> None:
    """Two kernels with the same worker counts (a crash once: sorting ties compared dicts)."""
    from bench.report import plot_scaling
    from tests.bench.synthetic import cell, section

    cells = []
    for kernel, rate in (("python", 10.0), ("numpy", 500.0)):
        for backend, workers in (("threads", 1), ("threads", 2)):
            c = cell("arena", "gil", backend, workers, [rate * workers] * 3, True)
            c["kernel"] = kernel
            cells.append(c)
    out = tmp_path / "scaling.png"
    plot_scaling(section(cells), out)
    assert out.stat().st_size > 10_000


def _load_doc(*, every_tick: bool) -> dict[str, Any]:
    doc = schema.empty()
    ticks: dict[str, Any] = ({"tick_ms": [5.0, 9.0, 7.0]} if every_tick
                             else {"mspt_samples": [5.0, 9.0]})
    doc["load"] = {
        "created": "t", "command": ["paratick"], "environment": {},
        "params": {"mspt_budget_ms": 33.3},
        "runs": [{"build": "gil", "backend": "inline", "gateways": 0, "entities": 2000,
                  "bots": 400, "phase": "fixed load", "holds": True,
                  "server_cpu_ms_per_bot_s": 1.49, **ticks},
                 {"build": "ft", "backend": "inline", "gateways": 2,
                  "gateway_backend": "threads", "entities": 2000, "bots": 400,
                  "phase": "fixed load", "holds": False, "server_cpu_ms_per_bot_s": 2.35,
                  **ticks}],
        "best": [{"build": "gil", "backend": "inline", "gateways": 0, "bots": 468,
                  "entities": 7500, "bots_fixed": 100, "entities_fixed": 2000},
                 {"build": "ft", "backend": "inline", "gateways": 2,
                  "gateway_backend": "threads", "bots": 406, "entities": None,
                  "bots_fixed": 100, "entities_fixed": 2000}]}
    return doc


def test_load_report_plots_bots_held_and_cpu_per_configuration(tmp_path: Path) -> None:
    write_doc(tmp_path, _load_doc(every_tick=True))
    written = report.write(tmp_path)
    assert tmp_path / "load.png" in written
    assert (tmp_path / "load.png").read_bytes().startswith(PNG_MAGIC)
    md = (tmp_path / "report.md").read_text()
    assert "![bots held and server CPU per configuration](load.png)" in md
    # the figures are over every tick of the loaded window, and the text says so
    assert "over every tick while all the bots played" in md
    assert "once-a-second readings" not in md and "rolling p99" not in md
    assert report._load_config(_load_doc(every_tick=True)["load"]["best"][1]) == \
        "ft inline, gateways: 2 threads"
    # results that name the server's event loop keep configurations apart by it
    rec = {**_load_doc(every_tick=True)["load"]["best"][0], "loop": "uvloop"}
    assert report._load_config(rec) == "gil inline, single loop, uvloop"
    assert report._load_config({**rec, "loop": "asyncio"}) == "gil inline, single loop, asyncio"
    assert report._load_config({**rec, "gateways": 2, "gateway_backend": "processes"}) == \
        "gil inline, gateways: 2 processes, uvloop"


def test_load_report_of_older_results_says_what_their_figures_are(tmp_path: Path) -> None:
    """Results written before the server listed every tick: the text names the rolling p99."""
    doc = _load_doc(every_tick=False)
    doc["load"]["best"] = []
    for r in doc["load"]["runs"]:
        del r["server_cpu_ms_per_bot_s"]
    write_doc(tmp_path, doc)
    written = report.write(tmp_path)
    assert tmp_path / "load.png" not in written  # nothing to draw: no search, no CPU figure
    md = (tmp_path / "report.md").read_text()
    assert "max of its rolling p99 over /stats samples" in md
    assert "once-a-second readings" in md and "load.png" not in md
