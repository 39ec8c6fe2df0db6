"""The shard runtime: a sharded world ticked in lockstep by workers on one of four backends.

Where a tick happens: :class:`Runtime` (``runtime.py``) is the coordinator;
``worker.py`` is what runs in each worker (a thread, a subinterpreter or a process);
``channels.py`` moves msgpack bytes (``messages.py``) between them; ``scheduler.py`` decides when
the next tick starts; ``metrics.py`` turns reports into MSPT percentiles.

Public surface::

    from server.runtime import Runtime, TickResult
    with Runtime(config, rows, backend="threads", workers=4) as rt:
        rt.step(inputs, view=False, jobs=())
        rt.digest(), rt.metrics().to_dict(), rt.worker_gil()
"""

from server.clock import MonotonicClock, VirtualClock
from server.runtime.errors import (
    BackendUnavailable,
    ChannelClosed,
    ChannelError,
    ChannelFull,
    InvalidState,
    MessageError,
    RuntimeConfigError,
    RuntimeFault,
    ShardFault,
    WorkerCrashed,
    WorkerError,
    WorkerTimeout,
)
from server.runtime.runtime import BACKENDS, Runtime, State, TickResult
from server.runtime.scheduler import Overload, SchedulerStats, TickScheduler

__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "ChannelClosed",
    "ChannelError",
    "ChannelFull",
    "InvalidState",
    "MessageError",
    "MonotonicClock",
    "Overload",
    "Runtime",
    "RuntimeConfigError",
    "RuntimeFault",
    "SchedulerStats",
    "ShardFault",
    "State",
    "TickResult",
    "TickScheduler",
    "VirtualClock",
    "WorkerCrashed",
    "WorkerError",
    "WorkerTimeout",
]
