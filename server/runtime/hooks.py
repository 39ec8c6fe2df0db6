"""Worker hooks: code that runs inside each worker after a tick, next to the shards it owns.

A hook is named ``"module:Class"`` (so a subinterpreter or a spawned process can import it),
instantiated once per worker with ``**hook_args`` and called as ``run(tick, shards, jobs)`` after
every tick that carries jobs.  It returns a list of msgpack-able results; the coordinator
concatenates the lists of all workers in :attr:`TickResult.hook_results`.  Jobs are broadcast to
every worker, so a hook answers only for what its own shards hold.  Hooks read shards and must
not change them; a hook that raises loses that worker's results for the tick (the traceback is in
:attr:`TickResult.hook_errors`) and the world ticks on.

:class:`EntityLookup` is the smallest useful hook (and the one the tests use): jobs are entity
ids, results are ``[id, region, row]`` for the ids this worker owns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sim.shard import Shard


class EntityLookup:
    """Answer "where is entity N and what is its state" for the entities this worker owns.

    Args:
        tag: echoed in every result so that tests can see ``hook_args`` arrived.
    """

    def __init__(self, tag: str = "") -> None:
        self.tag = tag

    def run(self, tick: int, shards: Sequence[Shard], jobs: Sequence[Any]) -> list[Any]:
        wanted = {int(j) for j in jobs}
        out: list[Any] = []
        for shard in shards:
            for row in shard.rows():
                if row[0] in wanted:
                    out.append([self.tag, tick, shard.region, list(row)])
        return out
