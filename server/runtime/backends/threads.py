"""Workers on threads of this interpreter (the free-threaded build's natural backend)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from server.runtime.backends.base import ThreadedCrew, post_exit
from server.runtime.channels import Endpoint, ThreadHub, capacity
from server.runtime.worker import thread_main


class ThreadCrew(ThreadedCrew):
    """One thread per worker; a deque inbox per participant plus a wake-up pipe."""

    def __init__(self, specs: Sequence[dict[str, Any]]) -> None:
        n = len(specs)
        self.hub = ThreadHub(n + 1, capacity(n))
        self.ep = self.hub.endpoint(n)
        notify = self.hub.endpoint(n)
        self.threads: list[threading.Thread] = []
        for w, spec in enumerate(specs):
            ep = self.hub.endpoint(w)
            # Handed over in a box the thread empties: the spec holds the worker's initial rows,
            # which nothing may keep alive once its shards are built (see run_worker).
            box = [spec]

            def body(box: list[dict[str, Any]] = box, ep: Endpoint = ep, w: int = w) -> None:
                thread_main(box.pop(), ep, n)
                post_exit(notify, n, w, "")

            self.spawn(w, "worker", body)

    def close(self) -> None:
        super().close()
        self.hub.close()
