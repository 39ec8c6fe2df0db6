"""The root of every exception the ``server`` package raises.

Exception tree::

    ServerError                     root: catch this to catch anything of server/
    ├── ProtocolError               (server.protocol) bytes from a peer that are not a valid
    │   │                           message; .code goes back to the peer (also a ValueError)
    │   ├── FrameTypeError, FrameTooLarge, MalformedMessage, UnknownMessageType,
    │   │   InvalidField, UnsupportedVersion, SnapshotGap
    ├── SessionError                (server.sessions) IllegalTransition (our bug), BadToken
    │                               (the peer's: send hello again), PoolExhausted (server full)
    ├── RuntimeFault                (server.runtime.errors) what the shard runtime refuses or
    │                               cannot survive: RuntimeConfigError, BackendUnavailable,
    │                               InvalidState, ChannelError (ChannelFull, ChannelClosed,
    │                               MessageError), WorkerError (WorkerCrashed, WorkerTimeout,
    │                               ShardFault), InjectedFault (tests' faults), Stop (a worker
    │                               told to leave mid-tick)
    └── NoCommands                  (server.cli) no command is declared (a broken install)

The peer's fault (ProtocolError, BadToken) is told to the client and the server keeps serving;
ours (IllegalTransition, RuntimeFault) is logged with its context.  Configuration errors of the
world itself are :class:`sim.errors.SimError`, the simulation's own root.
"""

from __future__ import annotations


class ServerError(Exception):
    """Root of every exception raised by the ``server`` package."""


__all__ = ["ServerError"]
