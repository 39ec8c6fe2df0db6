"""Run a :class:`~server.app.GameServer` on its own event-loop thread.

For tests, benchmarks and embedding: the caller stays synchronous (e.g. uses websockets' sync
client) while the server runs exactly as ``paratick serve`` runs it, on loopback.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any

from server import loops
from server.app import GameServer, RuntimeFactory, ServerSettings
from sim.config import WorldConfig


class ServerThread:
    """``with ServerThread(world, settings) as st: connect(st.url) ...``; stops on exit.

    Args:
        world, settings, runtime_factory: as for :class:`GameServer`.
    """

    def __init__(self, world: WorldConfig, settings: ServerSettings, *,
                 runtime_factory: RuntimeFactory | None = None) -> None:
        self.server = GameServer(world, settings, runtime_factory=runtime_factory)
        self._loop = loops.new_loop(settings.loop)  # as `paratick serve` makes it
        self._thread = threading.Thread(target=self._loop.run_forever, name="paratick-server",
                                        daemon=True)
        self.final_stats: dict[str, Any] | None = None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}"

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    def stats(self) -> dict[str, Any]:
        async def get() -> dict[str, Any]:
            return self.server.stats()
        stats: dict[str, Any] = self.call(get())
        return stats

    def start(self) -> ServerThread:
        self._thread.start()
        self.call(self.server.start())
        return self

    def stop(self) -> dict[str, Any]:
        if self.final_stats is None:
            self.final_stats = self.call(self.server.stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10.0)
            self._loop.close()
        return self.final_stats

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
