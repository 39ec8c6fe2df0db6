"""Workers on threads of this interpreter (the free-threaded build's natural backend)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from server.runtime.backends.base import ThreadedCrew, post_exit
from server.runtime.channels import Endpoint, ThreadHub, capacity
from server.runtime.worker import thread_main


class ThreadCrew(ThreadedCrew):
    """One thread per worker; a deque inbox per participant plus a wake-up pipe.

    With ``lead``, worker 0 gets no thread: the coordinator's thread runs it (see
    :class:`server.runtime.runtime.Runtime`), so the coordinator is participant 0, which
    receives worker 0's borders and the other workers' reports alike.  Otherwise the coordinator
    is participant ``len(specs)``.
    """

    def __init__(self, specs: Sequence[dict[str, Any]], *, lead: bool = False) -> None:
        n = len(specs)
        coord = 0 if lead else n
        self.hub = ThreadHub(n if lead else n + 1, capacity(n))
        self.ep = self.hub.endpoint(coord)
        notify = self.hub.endpoint(coord)
        self.threads: list[threading.Thread] = []
        self.ids: list[int] = []
        for w, spec in enumerate(specs):
            if lead and w == 0:
                continue
            ep = self.hub.endpoint(w)
            # Handed over in a box the thread empties: the spec holds the worker's initial rows,
            # which nothing may keep alive once its shards are built (see run_worker).
            box = [spec]

            def body(box: list[dict[str, Any]] = box, ep: Endpoint = ep, w: int = w) -> None:
                thread_main(box.pop(), ep, coord)
                post_exit(notify, coord, w, "")

            self.spawn(w, "worker", body)

    def close(self) -> None:
        super().close()
        self.hub.close()
