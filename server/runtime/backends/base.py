"""The interface every backend's crew implements (see :mod:`server.runtime.backends`)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from server.runtime import messages as m
from server.runtime.channels import Endpoint
from server.runtime.errors import RuntimeFault


class Crew:
    """Started workers of one backend (base class; see the module docstring).

    Attributes:
        ep: the coordinator's endpoint (participant index = number of workers).
    """

    ep: Endpoint

    def dead(self) -> list[int]:
        """Workers known to be gone (process exited, thread or interpreter ended)."""
        raise NotImplementedError

    def join(self, deadline: float) -> None:
        """Wait for the workers to leave until ``deadline`` (time.monotonic); then give up on
        (threads, interpreters) or kill (processes) the rest, and release what they held."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the channels (after :meth:`join`)."""
        self.ep.close()


class ThreadedCrew(Crew):
    """A crew whose workers are run by threads of this process (threads, interpreters)."""

    threads: list[threading.Thread]
    #: the worker index each of :attr:`threads` runs (a crew may start a subset of the workers)
    ids: list[int]

    def dead(self) -> list[int]:
        return [w for w, t in zip(self.ids, self.threads, strict=True) if not t.is_alive()]

    def join(self, deadline: float) -> None:
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def spawn(self, w: int, name: str, body: Callable[[], None]) -> None:
        """Run ``body`` as worker ``w`` on a daemon thread."""
        t = threading.Thread(target=body, name=f"paratick-{name}-{w}", daemon=True)
        self.threads.append(t)
        self.ids.append(w)
        t.start()


def post_exit(ep: Endpoint, coord: int, w: int, detail: str) -> None:
    """Tell the coordinator that worker ``w`` ended (its thread or interpreter returned)."""
    # The coordinator may be gone (closed runtime): then there is nobody to tell.
    with contextlib.suppress(RuntimeFault):
        ep.send_message(coord, m.Exited(w, detail))
