"""bench.schema: results.json round trip, section merging, and clear validation errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bench import schema
from bench.errors import BenchError, ResultsError
from tests.bench.synthetic import scaling_doc


def test_round_trip_through_a_folder(tmp_path: Path) -> None:
    doc = scaling_doc()
    schema.save_section(tmp_path, "scaling", doc["scaling"])
    loaded = schema.load(tmp_path)
    assert loaded == doc
    assert schema.load(tmp_path / "results.json") == doc


def test_sections_are_merged_not_replaced(tmp_path: Path) -> None:
    doc = scaling_doc()
    schema.save_section(tmp_path, "scaling", doc["scaling"])
    claims = {"created": "t", "command": ["paratick"], "environment": {},
              "claims": [{"name": "x", "claimed": "~1 MB", "measured": 2.5, "unit": "MB",
                          "verdict": "does not hold"}]}
    schema.save_section(tmp_path, "claims", claims)
    loaded = schema.load(tmp_path)
    assert loaded["scaling"] == doc["scaling"] and loaded["claims"] == claims


def test_an_invalid_section_is_never_written(tmp_path: Path) -> None:
    bad = copy.deepcopy(scaling_doc()["scaling"])
    bad["cells"][0]["workers"] = "2"
    with pytest.raises(ResultsError):
        schema.save_section(tmp_path, "scaling", bad)
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["scaling"]["cells"][3].__setitem__("workers", "2"),
     "scaling.cells[3].workers: expected int, got str"),
    (lambda d: d["scaling"]["cells"][0]["runs"][1].__setitem__("worker_gil", [1]),
     "scaling.cells[0].runs[1].worker_gil[0]: expected bool, got int"),
    (lambda d: d["scaling"]["cells"][0].pop("runs"), "scaling.cells[0]: missing key 'runs'"),
    (lambda d: d["scaling"]["cells"][0].__setitem__("workload", "bogus"),
     "scaling.cells[0].workload: expected one of"),
    (lambda d: d["scaling"]["params"].__setitem__("quick", 1),
     "scaling.params.quick: expected bool, got int"),
    (lambda d: d.__setitem__("version", 99), "schema version 99 is not supported"),
    (lambda d: d.__setitem__("schema", "other"), "not a paratick benchmark file"),
])
def test_validation_names_the_first_bad_path(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    doc = scaling_doc()
    mutate(doc)
    with pytest.raises(ResultsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        schema.validate(doc)


def test_load_reports_missing_and_non_json_files(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="cannot read"):
        schema.load(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ResultsError, match="not valid JSON"):
        schema.load(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps([1, 2]))
    with pytest.raises(BenchError, match="expected a JSON object"):
        schema.load(tmp_path)


def test_nan_in_raw_metrics_is_written_as_null(tmp_path: Path) -> None:
    doc = scaling_doc()
    doc["scaling"]["cells"][0]["runs"][0]["runtime_metrics"] = {"mspt": {"p99": float("nan")}}
    schema.save_section(tmp_path, "scaling", doc["scaling"])
    assert '"p99": null' in (tmp_path / "results.json").read_text()
    assert schema.load(tmp_path)["scaling"]["cells"][0]["runs"][0]["runtime_metrics"] == {
        "mspt": {"p99": None}}


def test_results_go_under_the_checkout_or_else_the_current_directory(tmp_path: Path) -> None:
    checkout, installed, cwd = tmp_path / "checkout", tmp_path / "site-packages", tmp_path / "cwd"
    for d in (checkout, installed, cwd):
        d.mkdir()
    (checkout / "pyproject.toml").write_text("[project]\n")
    assert schema.results_base(checkout, cwd) == checkout / "bench" / "results"
    assert schema.results_base(installed, cwd) == cwd / "paratick-results"
    # this checkout runs paratick from its source: the dated folder lands in bench/results/
    repo = Path(schema.__file__).resolve().parents[1]
    folder = schema.results_dir(quick=True)
    assert folder.parent == repo / "bench" / "results" and folder.name.endswith("-quick")
    assert schema.results_dir(tmp_path).parent == tmp_path


def test_reference_rows_and_their_old_name_both_validate() -> None:
    doc = scaling_doc()
    for c in doc["scaling"]["cells"]:
        if c["workload"] == "ceiling":
            c["workload"] = "reference"
    params = doc["scaling"]["params"]
    params["reference_iters"] = params.pop("ceiling_iters")
    assert schema.validate(doc) is doc
    params.pop("reference_iters")
    with pytest.raises(ResultsError, match=r"scaling\.params: missing key 'reference_iters'"):
        schema.validate(doc)
    params["ceiling_iters"] = "many"
    with pytest.raises(ResultsError, match=r"scaling\.params\.ceiling_iters: expected int"):
        schema.validate(doc)


def test_claims_with_a_source_and_an_interval_validate() -> None:
    doc = scaling_doc()
    doc["claims"] = {"created": "t", "command": ["paratick"], "environment": {},
                     "claims": [{"name": "x", "claimed": "5–8%", "measured": 12.0, "unit": "%",
                                 "verdict": "does not hold",
                                 "source": {"who": "PEP 703", "cpython": "3.13",
                                            "url": "https://peps.python.org/pep-0703/",
                                            "official": [{"cpython": "3.14", "says": "1-8%"}]},
                                 "ci": {"low": 10.0, "high": 14.0}}]}
    assert schema.validate(doc) is doc
    doc["claims"]["claims"][0]["source"] = {"who": "PEP 703"}
    with pytest.raises(ResultsError, match=r"claims.claims\[0\].source: missing key 'cpython'"):
        schema.validate(doc)
