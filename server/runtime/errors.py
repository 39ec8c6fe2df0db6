"""Exceptions raised by :mod:`server.runtime`.

Exception tree::

    RuntimeFault                  root: what the shard runtime refuses or cannot survive
    ├── RuntimeConfigError        bad arguments (unknown backend, workers < 1, hook not "m:Class");
    │                             the caller's fault, nothing was started (also a ValueError)
    ├── BackendUnavailable        the backend cannot run on this interpreter (no subinterpreters)
    ├── InvalidState              an illegal lifecycle transition (step() after close())
    ├── ChannelError              a message could not travel
    │   ├── ChannelFull           a bounded channel stayed full past its timeout (a lockstep bug:
    │   │                         in-flight messages per channel are bounded by construction)
    │   ├── ChannelClosed         the other end is gone (EOF on a pipe, destroyed queue)
    │   └── MessageError          bytes that are not a runtime message of our version (a peer's
    │                             bug or a version mismatch; also a ValueError)
    └── WorkerError               a worker failed; ``.worker`` says which
        ├── WorkerCrashed         the worker died (process exited, interpreter closed, thread gone)
        ├── WorkerTimeout         no tick finished within ``tick_timeout`` (the watchdog)
        └── ShardFault            a shard's tick kept raising after restore-and-retry; carries
                                  the worker's formatted traceback

``KernelUnavailable`` (numpy kernel in a subinterpreter) is :class:`sim.errors.KernelUnavailable`,
raised before any worker starts.  Faults that the runtime recovers from (an exception in one
tick that a restore from the checkpoint and a retry fix) are not raised at all: they are counted
in the metrics (``faults_recovered``) with the last traceback.
"""

from __future__ import annotations

from server.errors import ServerError


class RuntimeFault(ServerError):
    """Root of every exception raised by :mod:`server.runtime`."""


class RuntimeConfigError(RuntimeFault, ValueError):
    """The runtime was configured with values it cannot run; nothing was started."""


class BackendUnavailable(RuntimeFault):
    """The requested backend does not exist on this interpreter."""


class InvalidState(RuntimeFault):
    """An operation is not allowed in the runtime's current lifecycle state."""


class ChannelError(RuntimeFault):
    """A message could not be sent or received."""


class ChannelFull(ChannelError):
    """A bounded channel stayed full for longer than the send timeout."""


class ChannelClosed(ChannelError):
    """The other end of a channel is gone."""


class MessageError(ChannelError, ValueError):
    """Bytes did not decode to a runtime message this code reads."""


class WorkerError(RuntimeFault):
    """A worker failed.

    Attributes:
        worker: index of the failing worker (``-1`` when unknown).
        detail: the worker-side traceback or a description, when there is one.
    """

    def __init__(self, message: str, *, worker: int = -1, detail: str = "") -> None:
        super().__init__(message)
        self.worker = worker
        self.detail = detail


class WorkerCrashed(WorkerError):
    """A worker died: its process exited, its interpreter or thread ended, its pipe closed."""


class WorkerTimeout(WorkerError):
    """The watchdog fired: a worker did not finish a tick within the configured time."""


class ShardFault(WorkerError):
    """A tick kept failing after the shard was restored from its checkpoint and retried."""
