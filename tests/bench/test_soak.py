"""``paratick bench soak`` on a tiny budget: the phases run, the verdict is computed, the file
validates; bad options are one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench import schema
from bench.soak import _per_second


def test_per_second_bins_ignore_times_before_the_window() -> None:
    assert _per_second([9.5, 10.0, 10.2, 11.9, 12.5, 13.0], 10.0, 13.0) == [2, 1, 1]


def test_a_short_soak_holds_and_writes_a_valid_section(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    res = subprocess.run(
        [sys.executable, "-m", "server.cli", "bench", "soak", "--flood", "2", "--after", "2",
         "--minutes", "0.1", "--clients", "3", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = schema.load(tmp_path)
    soak = doc["soak"]
    flood, churn = soak["flood"], soak["churn"]
    assert flood["attack"]["connections"] >= 1 and flood["attack"]["bytes"] > 0
    assert flood["attack"]["closed_by_server"] >= 1  # the server closed the flooder
    assert flood["holds"], json.dumps(flood)[:2000]
    assert churn["sessions"].get("joined", 0) >= 3 and churn["samples"]
    assert churn["rss_first_minute"] and churn["rss_last_minute"]
    assert soak["server_tracebacks"] == 0
    assert "holds" in res.stdout and "churn" in res.stdout


def test_bad_options_are_one_line() -> None:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for args in (["--clients", "0"], ["--url", "ws://192.0.2.1:80"]):
        res = subprocess.run([sys.executable, "-m", "server.cli", "bench", "soak", *args],
                             capture_output=True, text=True, env=env, timeout=60)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
