"""What a bot measures from its inputs and the snapshots that acknowledge them: one home for
both kinds of bot (:mod:`clients.fastws` on picows, :mod:`clients.wsbot` on websockets).

The *input -> ack latency* of input ``seq`` is the time from sending it to receiving the first
snapshot whose ``ack`` is >= ``seq``.  Acks received before ``steady`` (a clock time: the fleet's
last handshakes) count as the ramp's.  At most ``max_pending`` inputs wait for their ack; older
ones are forgotten and counted as lost, so a server that never acks cannot grow a bot's memory.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class Acks:
    """One bot's inputs awaiting their ack, recorded into ``res`` (a
    :class:`clients.bots.BotResult`)."""

    def __init__(self, res: Any, *, steady: float, max_pending: int) -> None:
        self.res = res
        self.steady = steady
        self.max_pending = max_pending
        self.pending: deque[tuple[int, float]] = deque()
        #: The newest snapshot tick applied: what the bot's next input acknowledges.
        self.latest: int | None = None

    def sent(self, seq: int, now: float) -> None:
        """Input ``seq`` went out at ``now``."""
        pending = self.pending
        pending.append((seq, now))
        res = self.res
        if len(pending) > self.max_pending:
            pending.popleft()
            res.lost_acks += 1
        res.inputs += 1

    def snapshot(self, tick: int | None, ack: int, delta: bool, now: float) -> None:
        """A snapshot received at ``now``, acknowledging inputs up to ``ack``; ``tick`` None
        for one the bot could not apply (it keeps acking its old baseline, and the inputs
        wait for the next one)."""
        res = self.res
        res.snapshots += 1
        res.deltas += delta
        if tick is None:
            return
        self.latest = tick
        pending = self.pending
        lat = res.latencies_ms if now >= self.steady else res.ramp_latencies_ms
        while pending and pending[0][0] <= ack:
            lat.append((now - pending.popleft()[1]) * 1e3)
