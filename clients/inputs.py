"""One timer for every bot's inputs in a fleet process.

A bot sends an input every ``period`` seconds (20 a second by default), each bot at its own
phase so that a fleet's inputs spread over the period.  With a timer per bot, a process of 200
bots armed, fired and freed 4,000 event-loop timers a second, a tenth of its CPU (perf, the
2-core VM: ``uv_timer_stop``, heap swaps, timer handles).  An :class:`InputClock` divides the
period into :data:`SLOTS` slots and puts each bot in the slot of its phase; one timer fires once
per slot that holds bots and calls each of its bots' senders, in the order they joined.

What a bot measures does not change: its input's send time is read when the sender runs, so a
slot's width (2 ms at 20 Hz) only moves when the input goes, never what its latency reads.  A
late timer (a busy machine) runs every slot it owes in order, so each bot sends the inputs it
owes back to back, as a bot that sleeps until each input's time would.

The clock and the loop's timer are injected (``clock`` and ``call_at``: an event loop's
``time``-based ``call_at``, or a test's), so tests drive it with a virtual clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Slots per input period: at 20 inputs a second, 2 ms each, so an input leaves at most 3 ms
#: before the phase its bot drew (its slot's start, less the half slot a timer may fire early),
#: and a process wakes at most 500 times a second for its inputs (a wake-up costs about as much
#: as a few inputs: the fewer, the cheaper).
SLOTS = 25

#: The narrowest slot: an event loop's timers are as coarse as a millisecond (uvloop rounds
#: them to one), and a slot narrower than that made a process spin through timers that fired
#: before their slot (a fleet at 500 slots of 0.1 ms used 2-3x the CPU per message).  Fast
#: input rates get fewer slots.
MIN_WIDTH = 0.002

#: A bot's sender: sends one input now; False when the bot is done (it leaves the clock).
Sender = Callable[[], bool]


class InputClock:
    """The inputs of every bot of one process, from one timer (see the module docstring).

    Args:
        period: seconds between two inputs of one bot (1 / input rate).
        clock: the time the timer's ``call_at`` speaks (an event loop's ``loop.time``).
        call_at: ``call_at(when, callback)`` returning a handle with ``cancel()``.
        slots: slots per period, fewer where they would be narrower than
            :data:`MIN_WIDTH`.
    """

    def __init__(self, period: float, *, clock: Callable[[], float],
                 call_at: Callable[[float, Callable[[], None]], Any],
                 slots: int = SLOTS) -> None:
        if period <= 0 or slots < 1:
            raise ValueError("an input clock needs a period > 0 and at least one slot")
        self.period = period
        slots = max(1, min(slots, int(period / MIN_WIDTH)))
        self.width = period / slots
        self.clock = clock
        self.call_at = call_at
        self.slots: list[list[Sender]] = [[] for _ in range(slots)]
        self.bots = 0
        self.origin = clock()  # slot 0 of period 0 starts here
        self.timer: Any = None
        self.due = 0  # the next slot to run, counted from origin (slot ``due % slots``)

    def add(self, sender: Sender, phase: float) -> None:
        """Call ``sender`` once a period, in the slot at ``phase`` (0 <= phase < 1) of the
        period, from that slot's next turn on, until it returns False."""
        n = len(self.slots)
        slot = min(int(phase * n), n - 1)
        cur = self._slot_at(self.clock())
        if self.timer is not None:  # a late timer still owes the slots from its due one
            cur = min(cur, self.due)
        k = cur + (slot - cur) % n
        self.slots[slot].append(sender)
        self.bots += 1
        if self.timer is None or k < self.due:  # idle, or armed past this slot's next turn
            if self.timer is not None:
                self.timer.cancel()
            self.due = k
            self._arm()

    def _slot_at(self, t: float) -> int:
        """The first slot (counted from origin) that starts at or after ``t``."""
        k = int((t - self.origin) / self.width)
        if self.origin + k * self.width < t:
            k += 1
        return max(k, 0)

    def _arm(self) -> None:
        self.timer = self.call_at(self.origin + self.due * self.width, self._run)

    def _run(self) -> None:
        slots = self.slots
        n = len(slots)
        now = self.clock()
        due = self.due
        width, origin = self.width, self.origin
        # a slot runs once its start is at most half a slot away: uvloop's timers round to the
        # millisecond, and one that fires a little early must not spin until the start
        failed: Exception | None = None
        while origin + due * width <= now + width / 2:
            slot = slots[due % n]
            if slot:
                kept = []
                for send in slot:
                    try:
                        if send():
                            kept.append(send)
                    except Exception as exc:  # a bug of the sender's: it leaves, the rest go on
                        failed = failed or exc
                self.bots -= len(slot) - len(kept)
                slots[due % n] = kept
            due += 1
            if not self.bots:
                break
        else:
            # skip the empty slots ahead (a small fleet wakes only for its bots' slots)
            for _ in range(n):
                if slots[due % n]:
                    break
                due += 1
        self.due = due
        self.timer = None
        if self.bots:
            self._arm()
        if failed is not None:
            raise failed  # for the event loop's exception handler, once the clock is re-armed

    def close(self) -> None:
        """Stop the timer (the bots still in it send nothing more)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.slots = [[] for _ in self.slots]
        self.bots = 0
