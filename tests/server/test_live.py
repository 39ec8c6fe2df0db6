"""The live page: the static route, a websocket spectator, and the page in headless Chromium.

The browser tests drive a real Chromium over the DevTools protocol (scripts/screenshot.py's
driver, the ``websockets`` library only) against a real ``paratick serve`` process with bots
playing.  Without Chromium they skip loudly, naming the test and how to enable it; with
``CI=true`` they fail instead (.ci/run installs Chromium).  Every wait is bounded in time.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from server.harness import ServerThread

ROOT = Path(__file__).resolve().parents[2]
Start = Callable[..., ServerThread]
#: Seconds any single wait on the page or a server may take (a loaded 2-core CI machine runs
#: the server, the bots and Chromium at once).
WAIT = 45.0
#: A small world for the browser tests' server process.
SERVE = ["--backend", "inline", "--world-size", "512", "--regions", "2x2", "--npcs", "200",
         "--players", "16", "--view-radius", "100", "--gateways", "0"]


def _load_driver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("paratick_screenshot",
                                                  ROOT / "scripts" / "screenshot.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


shot = _load_driver()


# ---- the static route ---------------------------------------------------------------------------
def get(port: int, path: str) -> tuple[int, str, bytes]:
    """A raw GET of ``path`` (sent as written: no client-side normalisation of ``..``)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type") or "", r.read()
    finally:
        c.close()


def test_the_page_and_its_assets_are_served(live_server: Start) -> None:
    st = live_server()
    status, ctype, body = get(st.port, "/")
    assert status == 200 and ctype == "text/html; charset=utf-8"
    assert b'<script src="/live.js"' in body and b'<canvas id="world"' in body
    assert get(st.port, "/index.html")[2] == body
    status, ctype, js = get(st.port, "/live.js")
    assert status == 200 and ctype == "text/javascript; charset=utf-8"
    assert b"window.paratick" in js and b'"spectate"' in js
    status, ctype, _ = get(st.port, "/live.css")
    assert status == 200 and ctype == "text/css; charset=utf-8"
    status, ctype, _ = get(st.port, "/stats?x=1")
    assert status == 200 and ctype == "application/json"


@pytest.mark.parametrize("path", [
    "/nope", "/live.js/", "/web/live.js", "/../app.py", "/..%2fapp.py", "/%2e%2e/app.py",
    "/../../../../etc/passwd", "//etc/passwd", "/./index.html", "/server/web/index.html",
    "/app.py", "/__init__.py", "/LIVE.JS"])
def test_unknown_paths_and_traversal_get_404(live_server: Start, path: str) -> None:
    st = live_server()
    status, _, body = get(st.port, path)
    assert status == 404, (path, body[:80])
    assert b"import" not in body and b"root:" not in body


def test_the_static_answers_carry_safe_headers(live_server: Start) -> None:
    st = live_server()
    c = http.client.HTTPConnection("127.0.0.1", st.port, timeout=10)
    c.request("GET", "/")
    r = c.getresponse()
    r.read()
    c.close()
    assert r.getheader("X-Content-Type-Options") == "nosniff"
    assert "default-src 'self'" in (r.getheader("Content-Security-Policy") or "")


# ---- a websocket spectator ---------------------------------------------------------------------
def test_a_spectator_watches_views_while_a_player_plays(live_server: Start) -> None:
    st = live_server(max_spectators=2)
    with connect(st.url, subprotocols=["paratick.json.v1"], open_timeout=10) as player, \
            connect(st.url, subprotocols=["paratick.json.v1"], open_timeout=10) as ws:
        player.send('{"t":"hello","v":1,"name":"p"}')
        assert json.loads(player.recv(10))["t"] == "welcome"
        ws.send('{"t":"spectate","v":1}')
        watching = json.loads(ws.recv(10))
        assert watching["t"] == "watching" and len(watching["regions"]) == 4
        assert watching["width"] == 512 and watching["workers"] == 1
        views = []
        deadline = time.monotonic() + WAIT
        while len(views) < 4 and time.monotonic() < deadline:
            msg = json.loads(ws.recv(10))
            assert msg["t"] == "view"
            views.append(msg)
        assert len(views) == 4
        ticks = [v["tick"] for v in views]
        assert ticks == sorted(set(ticks))  # each view once, newer each time
        last = views[-1]
        assert last["total"] == 68 and len(last["ents"]) == 68  # 8 player slots + 60 NPCs
        # one player plays: its entity is the only one drawn as a player; the 7 slots nobody
        # holds are plain entities like the NPCs
        assert [e[2] for e in last["ents"]].count(0) == 1
        assert [e[2] for e in last["ents"]].count(1) == 67
        assert {e[3] for e in last["ents"]} <= {0, 1, 2, 3}  # owning regions
        stats = last["stats"]
        assert stats["budget_ms"] > 0 and stats["mspt"]["p50"] is not None
        assert stats["players"] == 1 and stats["spectators"] == 1
        server = st.stats()
        assert server["connections"]["spectators"] == 1
        assert server["connections"]["playing"] == 1
        assert server["messages"]["views_out"] >= 4  # counted apart from snapshots
        ws.send('{"t":"input","seq":1,"thrust":1,"turn":0,"action":0}')
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(100):
                ws.recv(10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    deadline = time.monotonic() + 10
    while st.stats()["connections"]["spectators"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert st.stats()["connections"]["spectators"] == 0
    assert st.stats()["connections"]["spectator_inputs"] == 1


def test_spectators_over_the_cap_get_1013_with_a_reason(live_server: Start) -> None:
    st = live_server(max_spectators=1)
    with connect(st.url, subprotocols=["paratick.json.v1"], open_timeout=10) as first:
        first.send('{"t":"spectate","v":1}')
        assert json.loads(first.recv(10))["t"] == "watching"
        with connect(st.url, subprotocols=["paratick.json.v1"], open_timeout=10) as second:
            second.send('{"t":"spectate","v":1}')
            err = json.loads(second.recv(10))
            assert err["t"] == "error" and err["code"] == "spectators_full"
            assert "try again later" in err["reason"]
            with pytest.raises(ConnectionClosed) as closed:
                second.recv(10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    assert st.stats()["connections"]["rejected_spectators"] == 1


def test_a_server_without_spectators_ticks_no_world_sample(live_server: Start) -> None:
    st = live_server()
    time.sleep(0.5)
    assert st.server.board.builds == 0 and st.server._last_view < 0


# ---- in a real browser --------------------------------------------------------------------------
@pytest.fixture
def chromium(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Headless Chromium with a private profile; a loud skip (CI: a failure) without it."""
    binary = shot.find_chromium()
    if binary is None:
        why = (f"{request.node.name}: chromium is not installed, so the live page was not "
               "tested in a browser; `apt-get install -y chromium` enables this test")
        if os.environ.get("CI") == "true":
            pytest.fail(why + " (CI=true: a browser test may not skip; .ci/run installs it)")
        pytest.skip(why)
    with tempfile.TemporaryDirectory(prefix="paratick-chromium-",
                                     ignore_cleanup_errors=True) as tmp, \
            shot.Chromium(binary, Path(tmp)) as browser:
        yield browser


@pytest.fixture
def served() -> Iterator[Callable[..., Any]]:
    """``paratick serve`` processes (and their bots), stopped after the test."""
    procs: list[Any] = []

    def start(extra: list[str] = (), port: int = 0, bots: int = 0) -> Any:  # type: ignore[assignment]
        srv = shot.Served([*SERVE, *extra], port=port)
        procs.append(srv)
        if bots:
            procs.append(shot.bots(srv.port, bots, 120))
        return srv

    yield start
    for p in reversed(procs):
        if isinstance(p, shot.Served):
            p.stop()
        else:
            p.terminate()
            p.wait(20)


def state(page: Any) -> dict[str, Any]:
    out: dict[str, Any] = page.evaluate("JSON.parse(JSON.stringify(window.paratick))")
    return out


def no_errors(browser: Any, page: Any) -> None:
    browser.pump(0.3)
    assert page.console_errors == [], page.console_errors


def test_the_page_draws_the_world_in_a_real_browser(chromium: Any, served: Any,
                                                    tmp_path: Path) -> None:
    srv = served(bots=4)
    page = chromium.new_page(srv.url)
    page.wait_for("window.paratick && window.paratick.status === 'watching'", timeout=WAIT)
    page.wait_for("window.paratick.entitiesDrawn > 0 && window.paratick.frames >= 3",
                  timeout=WAIT)
    first = state(page)["msptPoints"]
    page.wait_for(f"window.paratick.msptPoints >= {first + 3}", timeout=WAIT)
    s = state(page)
    assert s["regionsDrawn"] == 4
    assert s["entitiesDrawn"] == 216  # 16 players + 200 NPCs: under the cap, all drawn
    assert page.evaluate("document.body.dataset.status") == "watching"
    text = page.evaluate("document.getElementById('stats').textContent")
    assert "MSPT p50" in text and "players" in text and "r3" in text
    # The canvas is not blank: pixels in the worker colours were drawn.
    lit = page.evaluate(
        "(() => { const c = document.getElementById('world');"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] + d[i+1] + d[i+2] > 300) n++;"
        " return n; })()")
    assert lit > 500
    png = tmp_path / "live.png"
    assert page.screenshot(png) > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    no_errors(chromium, page)


def test_the_page_shows_the_cap_refusal_then_gets_in(chromium: Any, served: Any) -> None:
    srv = served(["--max-spectators", "1"])
    url = f"ws://127.0.0.1:{srv.port}"
    with connect(url, subprotocols=["paratick.json.v1"], open_timeout=10) as holder:
        holder.send('{"t":"spectate","v":1}')
        assert json.loads(holder.recv(10))["t"] == "watching"
        page = chromium.new_page(srv.url)
        page.wait_for("window.paratick && window.paratick.status === 'refused'", timeout=WAIT)
        shown = page.evaluate("document.getElementById('status').textContent")
        assert "refused" in shown and "spectator places are all taken" in shown
        assert "reconnecting" in shown
        assert state(page)["lastClose"]["code"] == 1013
    # The place is free again: the page gets in by itself (backoff at most 5 s).
    page.wait_for("window.paratick.status === 'watching' && window.paratick.frames > 0",
                  timeout=WAIT)
    assert state(page)["refusals"] >= 1
    no_errors(chromium, page)


def test_the_page_reconnects_after_a_server_restart(chromium: Any, served: Any) -> None:
    srv = served()
    port = srv.port
    page = chromium.new_page(srv.url)
    page.wait_for("window.paratick && window.paratick.frames > 0", timeout=WAIT)
    srv.stop()
    page.wait_for("window.paratick.status === 'disconnected'", timeout=WAIT)
    shown = page.evaluate("document.getElementById('status').textContent")
    assert "went away" in shown and "reconnecting" in shown
    frames = state(page)["frames"]
    _wait_port_free(port)
    served(port=port)
    page.wait_for("window.paratick.status === 'watching' && window.paratick.connects >= 2",
                  timeout=WAIT)
    page.wait_for(f"window.paratick.frames > {frames}", timeout=WAIT)
    no_errors(chromium, page)


def _wait_port_free(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return
            except OSError:
                time.sleep(0.1)
    raise AssertionError(f"port {port} still taken 10 s after the server stopped")
