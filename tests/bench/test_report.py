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
    # figures are recomputed from the raw runs: ft 2 workers median 16.2, ×1w 1.80
    assert "16.20 [15.00–17.00]" in md and "| 1.80 |" in md
    assert "CEILING" in md


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
