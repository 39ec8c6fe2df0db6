"""Screenshot the live page of a real run, and the headless-Chromium driver behind it.

    python scripts/screenshot.py docs/live.png [--bots 30] [--seconds 8]

starts ``paratick serve`` (this interpreter, a free loopback port), connects ``paratick bots``,
opens ``http://127.0.0.1:PORT/`` in headless Chromium, waits until the page has drawn entities
and a few MSPT points, and saves a PNG.  Needs the ``chromium`` binary (Debian:
``apt-get install -y chromium``).

The driver (:class:`Chromium`, :class:`Page`) speaks the Chrome DevTools protocol over the
``websockets`` library, nothing else: Chromium starts with ``--remote-debugging-port=0`` and
writes the port it chose to ``<user-data-dir>/DevToolsActivePort``; a page target is created
with ``Target.createTarget`` and driven through a flat session (``Target.attachToTarget``).
Console errors (``Runtime.consoleAPICalled`` of type error) and uncaught exceptions
(``Runtime.exceptionThrown``) are collected as they arrive.  Every wait is bounded in time.
tests/server/test_live.py uses the same driver.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Seconds Chromium may take to start and write DevToolsActivePort (a cold start on a loaded
#: 2-core machine takes a few seconds).
START_TIMEOUT = 30.0
#: Seconds one DevTools command may take.
CALL_TIMEOUT = 30.0
#: The binaries tried, in order (Debian's package installs /usr/bin/chromium).
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserError(RuntimeError):
    """Chromium is missing, did not start, or a DevTools command failed."""


def find_chromium() -> str | None:
    """The Chromium binary (``PARATICK_CHROMIUM`` first, then :data:`CANDIDATES` on PATH)."""
    explicit = os.environ.get("PARATICK_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Page:
    """One page target, driven through a flat DevTools session."""

    def __init__(self, browser: Chromium, session: str, target: str) -> None:
        self.browser = browser
        self.session = session
        self.target = target
        self.console_errors: list[str] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return self.browser.call(method, params, session=self.session)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the page (exceptions raise BrowserError)."""
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True)
        if "exceptionDetails" in res:
            raise BrowserError(f"{expression!r} threw: {res['exceptionDetails']}")
        return res.get("result", {}).get("value")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for(self, expression: str, *, timeout: float, interval: float = 0.1) -> Any:
        """Poll ``expression`` until it is truthy (at most ``timeout`` seconds); its value.

        Raises:
            BrowserError: still falsy at the deadline (the message shows the last value).
        """
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except BrowserError:
                value = None
            if value:
                return value
            time.sleep(interval)
        raise BrowserError(f"after {timeout:g} s, {expression} is still {value!r}")

    def screenshot(self, path: Path) -> int:
        """Save a PNG of the viewport; returns its size in bytes."""
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return len(data)


class Chromium:
    """Headless Chromium with a private profile, driven over its DevTools websocket.

    Args:
        binary: the Chromium executable (:func:`find_chromium`).
        profile: the ``--user-data-dir`` (a fresh temporary folder: nothing is shared with a
            user's browser).
        width, height: the window size.
    """

    def __init__(self, binary: str, profile: Path, *, width: int = 1280,
                 height: int = 800) -> None:
        self.profile = profile
        self.log = profile / "chromium.log"
        self._log_file = open(self.log, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
             "--disable-gpu", "--disable-extensions", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--mute-audio",
             "--disable-breakpad", "--disable-dev-shm-usage",  # small /dev/shm in containers
             f"--window-size={width},{height}", "about:blank"],
            stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # its helpers (renderer, zygote) share our group id
        self._ws: Any = None
        self._stack = contextlib.ExitStack()
        self._next = 0
        self._lock = threading.Lock()
        self._pages: dict[str, Page] = {}
        try:
            self._connect(self._devtools_url())
        except BaseException:
            self.close()
            raise

    def _devtools_url(self) -> str:
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrowserError(f"chromium exited with status {self.proc.returncode}: "
                                   f"{self._tail()}")
            try:
                lines = port_file.read_text().split("\n")
            except OSError:
                lines = []
            if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].strip():
                return f"ws://127.0.0.1:{int(lines[0])}{lines[1].strip()}"
            time.sleep(0.05)
        raise BrowserError(f"chromium wrote no DevToolsActivePort within {START_TIMEOUT:g} s: "
                           f"{self._tail()}")

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    def _connect(self, url: str) -> None:
        from websockets.sync.client import connect

        self._ws = self._stack.enter_context(connect(url, max_size=None,
                                                     open_timeout=CALL_TIMEOUT))

    def call(self, method: str, params: dict[str, Any] | None = None, *,
             session: str | None = None) -> dict[str, Any]:
        """Send one command and wait for its answer, dispatching the events that come first."""
        with self._lock:
            self._next += 1
            msg_id = self._next
            msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
            if session is not None:
                msg["sessionId"] = session
            self._ws.send(json.dumps(msg))
            deadline = time.monotonic() + CALL_TIMEOUT
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrowserError(f"{method}: no answer within {CALL_TIMEOUT:g} s")
                try:
                    got = json.loads(self._ws.recv(timeout=left))
                except TimeoutError:
                    continue
                if got.get("id") == msg_id:
                    if "error" in got:
                        raise BrowserError(f"{method}: {got['error']}")
                    result: dict[str, Any] = got.get("result", {})
                    return result
                self._event(got)

    def pump(self, seconds: float) -> None:
        """Dispatch events for ``seconds`` (console errors arrive as events)."""
        deadline = time.monotonic() + seconds
        with self._lock:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    self._event(json.loads(self._ws.recv(timeout=left)))
                except TimeoutError:
                    break

    def _event(self, msg: dict[str, Any]) -> None:
        page = self._pages.get(msg.get("sessionId", ""))
        if page is None:
            return
        method = msg.get("method")
        params = msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            text = " ".join(str(a.get("value", a.get("description", "")))
                            for a in params.get("args", ()))
            page.console_errors.append(f"console.error: {text}")
        elif method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            text = d.get("exception", {}).get("description") or d.get("text", "")
            page.console_errors.append(f"exception: {text}")

    def new_page(self, url: str = "about:blank") -> Page:
        """A fresh page target with Runtime and Page events on, then navigated to ``url``."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget",
                            {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session, target)
        self._pages[session] = page
        page.call("Runtime.enable")
        page.call("Page.enable")
        if url != "about:blank":
            page.navigate(url)
        return page

    def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):  # already gone: terminated below
                self.call("Browser.close")
            self._stack.close()
            self._ws = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # Helpers that outlive the browser process would keep writing into the profile while
        # the caller removes it: end the process group this browser was started in.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        self._log_file.close()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- a real run ---------------------------------------------------------------------------------
class Served:
    """``paratick serve`` in a process of its own on ``port`` (0: a free one)."""

    def __init__(self, args: list[str], port: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--port", str(port), *args],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        self.log: list[str] = []
        deadline = time.monotonic() + 60
        self.port = 0
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"serving ws://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if not self.port:
            self.proc.kill()
            self.proc.wait(10)
            raise RuntimeError("the server did not start: " + "".join(self.log)[-1500:])
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if len(self.log) < 10_000:
                self.log.append(line)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def bots(port: int, n: int, seconds: float) -> subprocess.Popen[bytes]:
    """``paratick bots`` against ``port`` for ``seconds``."""
    return subprocess.Popen(
        [sys.executable, "-m", "server.cli", "bots", "--url", f"ws://127.0.0.1:{port}", "-n",
         str(n), "--duration", str(seconds), "--quiet", "--processes", "1"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("png", type=Path, help="where to write the screenshot")
    p.add_argument("--bots", type=int, default=30, help="bots playing (default %(default)s)")
    p.add_argument("--seconds", type=float, default=8.0,
                   help="seconds of play before the screenshot (default %(default)s)")
    p.add_argument("--regions", default="2x2", help="region grid (default %(default)s)")
    p.add_argument("--npcs", type=int, default=1000, help="NPCs (default %(default)s)")
    p.add_argument("--players", type=int, default=64,
                   help="player entities, one per bot that joins (default %(default)s)")
    args = p.parse_args(argv)
    binary = find_chromium()
    if binary is None:
        print("screenshot: chromium is not installed (apt-get install -y chromium)",
              file=sys.stderr)
        return 2
    server = Served(["--regions", args.regions, "--npcs", str(args.npcs), "--workers", "2",
                     "--players", str(args.players), "--world-size", "1024"])
    players = bots(server.port, args.bots, args.seconds + 30)
    try:
        with tempfile.TemporaryDirectory(prefix="paratick-chromium-",
                                         ignore_cleanup_errors=True) as tmp, \
                Chromium(binary, Path(tmp), width=1280, height=820) as browser:
            page = browser.new_page(server.url)
            page.wait_for("window.paratick && window.paratick.frames > 0 && "
                          "window.paratick.entitiesDrawn > 0", timeout=30)
            time.sleep(args.seconds)
            page.wait_for("window.paratick.msptPoints >= 5", timeout=30)
            size = page.screenshot(args.png)
            browser.pump(0.2)
            for err in page.console_errors:
                print(f"screenshot: page {err}", file=sys.stderr)
            print(f"{args.png}: {size} bytes, "
                  f"{page.evaluate('window.paratick.entitiesDrawn')} entities drawn")
    finally:
        players.terminate()
        players.wait(20)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
