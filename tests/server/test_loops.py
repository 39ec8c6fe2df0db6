"""The event loop serving clients: asyncio's or uvloop's, chosen by name."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from collections.abc import Callable

import pytest

from server import loops
from server.harness import ServerThread
from server.settings import ServerSettings

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


def test_auto_is_uvloop_exactly_where_it_installs() -> None:
    assert loops.resolve("auto") == ("uvloop" if HAVE_UVLOOP else "asyncio")
    assert loops.available() == (("asyncio", "uvloop") if HAVE_UVLOOP else ("asyncio",))
    assert loops.resolve("asyncio") == "asyncio"


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="loop must be one of auto, asyncio, uvloop"):
        loops.resolve("trio")


def test_uvloop_where_it_does_not_install_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loops, "_uvloop", lambda: None)
    with pytest.raises(ValueError, match="--loop asyncio"):
        loops.resolve("uvloop")
    assert loops.resolve("auto") == "asyncio"
    with pytest.raises(ValueError, match="uvloop does not install"):
        ServerSettings(loop="uvloop")


@pytest.mark.parametrize("name", loops.available())
def test_run_and_new_loop_make_the_kind_asked_for(name: str) -> None:
    assert loops.run(_running(), name) == name
    loop = loops.new_loop(name)
    try:
        assert loop.run_until_complete(_running()) == name
    finally:
        loop.close()


async def _running() -> str:
    await asyncio.sleep(0)
    return loops.running()


@pytest.mark.parametrize("gateways", [0, 2])
@pytest.mark.parametrize("name", loops.available())
def test_the_server_reports_the_loop_it_runs_on(live_server: Callable[..., ServerThread],
                                               name: str, gateways: int) -> None:
    st = live_server(loop=name, gateways=gateways)
    assert st.stats()["loop"] == name
    assert type(st._loop).__module__.split(".")[0] == name
    for th in st.server._threads:  # gateway threads run the same kind of loop
        assert type(th.loop).__module__.split(".")[0] == name
    assert len(st.server._threads) == gateways


@pytest.mark.skipif(HAVE_UVLOOP, reason="uvloop installs here; the refusal is for builds "
                                        "without it (the free-threaded build's run covers it)")
def test_serve_refuses_uvloop_in_one_line_where_it_is_missing() -> None:
    out = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--loop", "uvloop",
                          "--port", "0", "--duration", "1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "paratick serve: uvloop does not install on this interpreter (it has wheels for GIL "
        "builds only); use --loop asyncio"]
