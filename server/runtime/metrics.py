"""Tick metrics: what a spark/Folia user reads, per shard, per worker and for the whole run.

Durations are kept in bounded sliding windows (``collections.deque(maxlen=window)``): memory stays
constant on a server that runs for days, and percentiles describe recent behaviour, not the
warm-up.  Percentiles are :func:`server.quantiles.percentile` (linear interpolation between
closest ranks), the definition ``/stats``, the bots and the benchmarks share.  Everything converts
to plain JSON with ``to_dict()``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from server.quantiles import percentiles

#: Ticks kept per window: 10 s at 30 Hz, enough for a stable p99 (~3 samples above it).
DEFAULT_WINDOW = 300


class Window:
    """The last ``size`` samples of one duration (milliseconds)."""

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size < 1:
            raise ValueError(f"window size must be >= 1, got {size}")
        self.samples: deque[float] = deque(maxlen=size)
        self.count = 0  # all samples ever added, not only those in the window

    def add(self, value: float) -> None:
        self.samples.append(value)
        self.count += 1

    def copy(self) -> Window:
        other = Window(self.samples.maxlen or 1)
        other.samples.extend(self.samples)
        other.count = self.count
        return other

    def summary(self) -> dict[str, float | int]:
        data = sorted(self.samples)
        if not data:
            return {"p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan,
                    "mean": math.nan, "n": 0}
        return {**percentiles(data, (50, 95, 99)), "max": data[-1],
                "mean": sum(data) / len(data), "n": len(data)}


class Rate:
    """Events per second over the timestamps of the last ``size`` events."""

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        self.stamps: deque[float] = deque(maxlen=size)

    def add(self, now: float) -> None:
        self.stamps.append(now)

    def per_second(self) -> float:
        if len(self.stamps) < 2 or self.stamps[-1] <= self.stamps[0]:
            return math.nan
        return (len(self.stamps) - 1) / (self.stamps[-1] - self.stamps[0])


@dataclass
class ShardMetrics:
    """One region: MSPT of its ``advance`` and its entity count."""

    region: int
    worker: int
    mspt: Window
    entities: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"region": self.region, "worker": self.worker, "entities": self.entities,
                "mspt": _clean(self.mspt.summary())}


@dataclass
class WorkerMetrics:
    """One worker: its whole tick (advance + exchange + absorb + hook), border wait, channels."""

    worker: int
    mspt: Window
    wait: Window
    gil: bool | None = None
    cmsgpack: bool | None = None
    pid: int = 0
    interp: int = -1
    #: the core the worker is pinned to (None: the OS places it)
    cpu: int | None = None
    regions: list[int] = field(default_factory=list)
    channel: dict[str, int] = field(default_factory=dict)
    faults_recovered: int = 0
    last_fault: str = ""
    hook_errors: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"worker": self.worker, "gil_enabled": self.gil, "cmsgpack": self.cmsgpack,
                "pid": self.pid, "interpreter": self.interp, "cpu": self.cpu,
                "regions": self.regions,
                "mspt": _clean(self.mspt.summary()), "border_wait_ms": _clean(self.wait.summary()),
                "channel": dict(self.channel), "faults_recovered": self.faults_recovered,
                "last_fault": self.last_fault, "hook_errors": self.hook_errors}


@dataclass
class RuntimeMetrics:
    """The whole run; ``step`` is the coordinator's wall time per lockstep tick, and
    ``coordination`` what of it the lockstep itself costs (wall time minus the slowest worker's
    compute: channels, encoding and decoding, the barrier)."""

    backend: str
    kernel: str
    tick: int
    ticks: int
    ticks_per_s: float
    step: dict[str, float | int]
    shards: list[ShardMetrics]
    workers: list[WorkerMetrics]
    channel: dict[str, int]
    scheduler: dict[str, Any] | None = None
    #: Per tick: step wall time minus the slowest worker's compute (ms); empty when inline.
    #: Ticks right after a worker's shard checkpoint (1 in 32) are left out: the checkpoint is
    #: taken after the report, so flat out the next tick may wait for it.
    coordination: dict[str, float | int] | None = None

    @property
    def entities(self) -> int:
        return sum(s.entities for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        out = {"backend": self.backend, "kernel": self.kernel, "tick": self.tick,
               "ticks": self.ticks, "ticks_per_s": _num(self.ticks_per_s),
               "entities": self.entities, "mspt": _clean(self.step),
               "coordination_ms": _clean(self.coordination or {}),
               "worker_gil": [w.gil for w in self.workers],
               "shards": [s.to_dict() for s in self.shards],
               "workers": [w.to_dict() for w in self.workers],
               "coordinator_channel": dict(self.channel)}
        if self.scheduler is not None:
            out["scheduler"] = dict(self.scheduler)
        return out


def _num(x: float) -> float | None:
    """JSON has no NaN: an empty statistic becomes null."""
    return None if isinstance(x, float) and math.isnan(x) else x


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _num(v) for k, v in d.items()}
