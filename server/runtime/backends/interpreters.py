"""Workers in subinterpreters, one GIL each (PEP 684; channels are PEP 734 queues)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

import msgpack

from server.runtime.backends.base import ThreadedCrew, post_exit
from server.runtime.channels import InterpHub, capacity

#: What a worker subinterpreter runs: the parent's import path, then the worker's entry point.
BOOT = """\
import sys
sys.path[:] = [p for p in PARATICK_PATH.split(PARATICK_SEP) if p]
from server.runtime.worker import interp_main
interp_main(PARATICK_SPEC, PARATICK_INDEX, PARATICK_DESC, PARATICK_COORD)
"""


class InterpreterCrew(ThreadedCrew):
    """One subinterpreter per worker, each run by a thread of this process."""

    def __init__(self, specs: Sequence[dict[str, Any]]) -> None:
        from server.runtime import interp
        n = len(specs)
        self.hub = InterpHub(n + 1, capacity(n))
        self.ep = self.hub.endpoint(n)
        notify = self.hub.endpoint(n)
        desc = msgpack.packb(self.hub.describe())
        self.threads: list[threading.Thread] = []
        self.ids: list[int] = []
        self.interps: list[int] = []
        # Every interpreter is created before any of them runs: creating one while another
        # starts up is what CPython 3.13 gets wrong now and then (see interp.create).
        try:
            for w, spec in enumerate(specs):
                iid = interp.create()
                self.interps.append(iid)
                interp.bind_main(iid, {
                    "PARATICK_PATH": os.pathsep.join(sys.path), "PARATICK_SEP": os.pathsep,
                    "PARATICK_SPEC": msgpack.packb(spec, use_bin_type=True),
                    "PARATICK_INDEX": w, "PARATICK_DESC": desc, "PARATICK_COORD": n})
        except BaseException:
            for iid in self.interps:
                interp.destroy(iid)
            self.hub.close()
            raise
        for w, iid in enumerate(self.interps):
            def body(iid: int = iid, w: int = w) -> None:
                err = interp.run(iid, BOOT)
                post_exit(notify, n, w, err or "")

            self.spawn(w, "interp", body)

    def join(self, deadline: float) -> None:
        from server.runtime import interp
        super().join(deadline)
        for iid, t in zip(self.interps, self.threads, strict=False):
            if not t.is_alive():  # a hung interpreter cannot be destroyed while it runs
                interp.destroy(iid)
        self.interps = []

    def close(self) -> None:
        super().close()
        self.hub.close()
