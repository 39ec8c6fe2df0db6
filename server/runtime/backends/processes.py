"""Workers in processes: a fresh interpreter each, a socket mesh between them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import msgpack

from server.runtime.backends.base import Crew
from server.runtime.channels import FdEndpoint, socket_mesh

#: What a worker process runs (``python -c``): the worker's entry point, nothing of the parent.
BOOT = """\
import sys
from server.runtime.worker import process_main
process_main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
"""


class ProcessCrew(Crew):
    """One process per worker.

    A fresh interpreter per worker (fork + immediate exec, like multiprocessing's spawn): never a
    bare fork, which kills the child once a subinterpreter exists (CPython gh-139759) and is
    unsafe with threads anyway.  Unlike multiprocessing's spawn, the child does not re-import the
    parent's ``__main__``, so scripts need no main guard.
    """

    def __init__(self, specs: Sequence[dict[str, Any]]) -> None:
        n = len(specs)
        mesh = socket_mesh(n + 1)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.procs: list[subprocess.Popen[bytes]] = []
        try:
            for w in range(n):
                fds = {str(peer): sock.fileno() for peer, sock in mesh[w].items()}
                argv = [sys.executable, "-c", BOOT, str(w), str(n), json.dumps(fds)]
                self.procs.append(subprocess.Popen(argv, pass_fds=list(fds.values()), env=env,
                                                   stdin=subprocess.DEVNULL))
        finally:
            for w in range(n):  # the children hold their own copies now
                for sock in mesh[w].values():
                    sock.close()
        self.ep = FdEndpoint(n, mesh[n])
        for w, spec in enumerate(specs):  # the first frame a worker reads is its spec
            self.ep.send(w, msgpack.packb(spec, use_bin_type=True))

    def dead(self) -> list[int]:
        return [w for w, p in enumerate(self.procs) if p.poll() is not None]

    def join(self, deadline: float) -> None:
        for p in self.procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
