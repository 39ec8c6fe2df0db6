"""``paratick run``: JSON output with the reference digest, one-line errors with exit status 2."""

from __future__ import annotations

import json

import pytest

from server.cli import main
from tests.server.runtime.runtime_helpers import BACKENDS


# processes are covered by the digest tests; here they would only add spawn time
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "processes"])
def test_run_json_matches_the_reference(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    workers = ["--workers", "1"] if backend == "inline" else ["--workers", "2"]
    rc = main(["run", "--backend", backend, *workers, "--ticks", "5", "--entities", "150",
               "--players", "3", "--regions", "2x2", "--size", "400", "--flat-out", "--check",
               "--json", "--quiet"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert doc["digest"] == doc["reference_digest"]
    assert doc["metrics"]["tick"] == 5
    assert len(doc["metrics"]["worker_gil"]) == doc["workers"]


def test_run_text_output_names_gil_and_digest(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["run", "--backend", "threads", "--workers", "2", "--ticks", "3", "--entities",
               "100", "--regions", "2x1", "--size", "400", "--rate", "1000"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "GIL inside workers:" in out
    assert "digest " in out and "p99" in out
    assert "lockstep coordination" in out and "messages" in out  # two workers: a lockstep


@pytest.mark.parametrize("argv", [
    ["--regions", "0x3"], ["--ticks", "0"], ["--workers", "0"], ["--players", "5", "--entities",
                                                                   "2"],
    ["--backend", "inline", "--workers", "3"], ["--backend", "gpu"], ["--ticks", "many"],
    ["--rate", "10", "--flat-out"]])
def test_bad_options_exit_2_with_one_line(argv: list[str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    try:
        rc = main(["run", "--ticks", "2", "--entities", "10", *argv] if "--ticks" not in argv
                  else ["run", "--entities", "10", *argv])
    except SystemExit as exc:  # argparse-level errors exit from the parser
        rc = int(exc.code or 0)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("paratick run: error:") and err.count("\n") == 1
