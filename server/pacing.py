"""Which clients get a snapshot on a tick: ``snapshot_rate`` a second each, sent soon after
their inputs.

With snapshots on fixed ticks (20 of every 30, the same ticks for every client), an input waits
for the next tick boundary and then, one time in three, one more tick for a tick that sends
snapshots: up to 67 ms before its ack can leave, a third of a 100 ms budget.  A client's
snapshot can just as well go out on the tick that applies its input, as long as the client
still gets ``snapshot_rate`` of them a second and never waits longer between two than the
fixed schedule would make it wait.  :class:`SnapshotPacer` does that with a budget per client:

- a client earns ``snapshot_rate / tick_rate`` of a snapshot every tick and spends one per
  snapshot;
- it gets one on a tick when an input of its own is applied on that tick, or its last snapshot
  is ``ceil(tick_rate / snapshot_rate)`` ticks old (the longest the fixed schedule waits: 2 ticks
  at 20 of 30), as long as it has earned all but one tick's worth of that snapshot;
- and whenever it holds :data:`FULL` snapshots (so a client that sends no inputs gets
  ``snapshot_rate`` a second all the same and its budget stays bounded).

So over any run a client gets ``snapshot_rate`` a second and over any span at most
:data:`FULL` + 1 more than the rate (the fixed schedule: at most one more); two snapshots are
never more than the fixed schedule's longest gap apart; and a client that sends inputs at or
below ``snapshot_rate`` has each acknowledged by the snapshot of the tick that applied it, unless
network jitter bunches two of them into one tick (then the next may wait a tick).  A client that
sends inputs faster (every tick, say) cannot have every one acknowledged at once and gets what
the fixed schedule gave it.  The clients' snapshots spread over every tick instead of landing on
two ticks of three, which also evens out the snapshot work per tick.  (Letting an input's
snapshot borrow up to one tick's earning matters: without it, a client whose first snapshot fell
between its inputs kept spending its budget on the gap rule and each second input waited a
tick.)

Pure and single-threaded: the ticker calls :meth:`SnapshotPacer.pick` once per tick.
"""

from __future__ import annotations

import math
from collections.abc import Container, Sequence
from typing import Any, TypeVar

#: A client holding this many snapshots' budget gets one whatever else holds (so a budget never
#: reaches FULL plus one tick's earning, and a client that sends nothing loses none).
FULL = 2.0

T = TypeVar("T", bound=Sequence[Any])


class SnapshotPacer:
    """Per-client snapshot budgets (see the module docstring); ``clients`` of :meth:`pick` are
    sequences whose first item is the client's session id."""

    __slots__ = ("_cost", "_early", "_earn", "_full", "_state", "max_gap")

    def __init__(self, snapshot_rate: float, tick_rate: float) -> None:
        if not 0 < snapshot_rate <= tick_rate:
            raise ValueError(f"snapshot rate {snapshot_rate:g} Hz must be above 0 and at most "
                             f"the tick rate {tick_rate:g} Hz")
        self.max_gap = math.ceil(tick_rate / snapshot_rate - 1e-9)
        # Budgets in units of 1/tick_rate of a snapshot, exact for whole rates (20 on 30: a
        # client earns 20 a tick and a snapshot costs 30); the slack absorbs rounding elsewhere.
        slack = tick_rate * 1e-9
        self._earn = snapshot_rate
        self._cost = tick_rate
        self._early = tick_rate - snapshot_rate - slack  # all but one tick's earning
        self._full = FULL * tick_rate - slack
        # session id -> [budget, tick of its last snapshot]
        self._state: dict[int, list[Any]] = {}

    def pick(self, tick: int, clients: Sequence[T], fresh: Container[int]) -> list[T]:
        """The clients that get a snapshot on ``tick``; ``fresh``: the session ids whose input
        this tick applies.  Call once per tick, with every playing client."""
        state = self._state
        if len(state) > 2 * len(clients) + 64:  # forget clients that left (bounded)
            live = {c[0] for c in clients}
            for sid in [sid for sid in state if sid not in live]:
                del state[sid]
        earn, cost, early, full = self._earn, self._cost, self._early, self._full
        gap = self.max_gap
        chosen = []
        for c in clients:
            sid = c[0]
            s = state.get(sid)
            if s is None:  # a new client: a whole snapshot's budget on its first tick
                s = state[sid] = [cost - earn, tick - gap]
            budget = s[0] + earn
            if (budget >= early and (sid in fresh or tick - s[1] >= gap)) or budget >= full:
                budget -= cost
                s[1] = tick
                chosen.append(c)
            s[0] = budget
        return chosen
