"""A bot's input->ack bookkeeping, on plain numbers."""

from __future__ import annotations

import pytest

from clients.acks import Acks
from clients.bots import BotResult


def test_an_ack_measures_every_input_it_covers_as_ramp_or_steady() -> None:
    res = BotResult(0)
    acks = Acks(res, steady=10.0, max_pending=8)
    acks.sent(1, 1.0)
    acks.sent(2, 1.05)
    acks.sent(3, 1.10)
    acks.snapshot(100, 2, False, 1.2)       # acks 1 and 2, before steady: the ramp's
    assert res.ramp_latencies_ms == pytest.approx([200.0, 150.0]) and not res.latencies_ms
    assert acks.latest == 100 and res.snapshots == 1 and res.deltas == 0
    acks.snapshot(101, 2, True, 10.5)       # acks nothing new
    assert not res.latencies_ms and res.deltas == 1
    acks.snapshot(102, 5, True, 11.0)       # acks 3, in the steady part
    assert res.latencies_ms == pytest.approx([9900.0]) and acks.latest == 102
    assert res.inputs == 3 and res.lost_acks == 0 and res.snapshots == 3


def test_a_snapshot_that_could_not_be_applied_counts_but_acks_nothing() -> None:
    res = BotResult(0)
    acks = Acks(res, steady=0.0, max_pending=8)
    acks.sent(1, 1.0)
    acks.snapshot(None, 1, True, 1.1)
    assert res.snapshots == 1 and res.deltas == 1 and not res.latencies_ms
    assert acks.latest is None and len(acks.pending) == 1


def test_inputs_never_acked_are_forgotten_beyond_the_bound() -> None:
    res = BotResult(0)
    acks = Acks(res, steady=0.0, max_pending=4)
    for seq in range(1, 11):
        acks.sent(seq, float(seq))
    assert len(acks.pending) == 4 and res.lost_acks == 6 and res.inputs == 10
    acks.snapshot(1, 10, False, 20.0)
    assert res.latencies_ms == pytest.approx([13000.0, 12000.0, 11000.0, 10000.0])
