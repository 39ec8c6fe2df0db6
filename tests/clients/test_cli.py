"""``paratick bots``: a failed run says why, in one line on stderr, and exits non-zero; the
fleet's CPU priority."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from clients import cli
from server.cli import main


def closed_port() -> int:
    """A loopback port with nothing listening on it (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_server_is_one_line_that_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"ws://127.0.0.1:{closed_port()}"
    assert main(["bots", "--url", url, "-n", "2", "--duration", "0", "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert out == ""  # nothing was measured
    assert err == f"paratick bots: no bot connected to {url}: connection refused\n"


@pytest.mark.parametrize("nice", ["-1", "20"])
def test_nice_out_of_range_is_a_usage_error(nice: str, capsys: pytest.CaptureFixture[str],
                                            ) -> None:
    assert main(["bots", "--url", "ws://127.0.0.1:9", "--nice", nice, "--quiet"]) == 2
    assert "--nice in 0..19" in capsys.readouterr().err


def test_nice_lowers_the_fleets_priority() -> None:
    # In a child process: nice(2) cannot be undone without privileges.
    url = f"ws://127.0.0.1:{closed_port()}"
    proc = subprocess.run([sys.executable, "-m", "server.cli", "bots", "--url", url, "-n", "1",
                           "--duration", "0", "--quiet", "--json", "--nice", "3"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1  # no server: nothing connected, but the report is printed
    assert json.loads(proc.stdout)["nice"] == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 3)


def test_json_keeps_the_report_and_still_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"ws://127.0.0.1:{closed_port()}"
    assert main(["bots", "--url", url, "-n", "1", "--duration", "0", "--quiet", "--json"]) == 1
    out, err = capsys.readouterr()
    rep = json.loads(out)
    assert rep["connected"] == 0 and rep["first_failures"]
    assert err == f"paratick bots: no bot connected to {url}: connection refused\n"


@pytest.mark.parametrize(("failure", "plain"), [
    ("connect: ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 9)",
     "connection refused"),
    ("connect: gaierror: [Errno -2] Name or service not known", "name or service not known"),
    ("connect: TimeoutError: ", "no answer in time"),
    ("connect: InvalidStatus: server rejected WebSocket connection: HTTP 404",
     "server rejected WebSocket connection: HTTP 404"),
    ("bot process died", "bot process died"),
])
def test_failures_in_plain_words(failure: str, plain: str) -> None:
    assert cli.reason(failure) == plain


def _report(**kw: object) -> dict[str, object]:
    return {"bots": 4, "connected": 4, "dropped": 0, "first_failures": [], "first_drops": [],
            **kw}


def test_summary_names_what_went_wrong() -> None:
    url = "ws://h:1"
    assert cli.summary(_report(), url) is None
    assert cli.summary(_report(connected=3, first_failures=[
        "ConnectionClosedError: received 1013 (try again later) server full"]), url) == (
        "paratick bots: 1 of 4 bots could not connect to ws://h:1: "
        "received 1013 (try again later) server full")
    assert cli.summary(_report(dropped=2, first_drops=[
        "ConnectionClosedError: no close frame received or sent"]), url) == (
        "paratick bots: 2 of 4 bots were dropped: no close frame received or sent")


def test_the_text_report_lists_the_reasons() -> None:
    text = "bots (processes)        4 (1)\nconnected / failed      3 / 1"
    out = cli._why_rows(text, _report(first_failures=["connect: TimeoutError: "]))
    assert out.splitlines()[-1] == "why bots failed         connect: TimeoutError: "
