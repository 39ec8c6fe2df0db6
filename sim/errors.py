"""Exceptions raised by :mod:`sim`.

Exception tree::

    SimError                    root: anything the simulation refuses
    ├── ConfigError             a world configuration that cannot run (zero regions, speed cap too
    │                           high for the region size, negative radius, ...)
    ├── InvalidInput            a player input or entity row that must not enter the state
    │                           (NaN/inf, wrong type, unknown field); the state is left unchanged
    ├── SchemaError             bytes that are not a message/save of a schema version we read
    └── KernelUnavailable       the requested kernel cannot run here (numpy in a subinterpreter)

Errors that are a peer's fault (``InvalidInput``, ``SchemaError``) subclass ``ValueError`` so that
callers that only know the builtin still catch them.
"""

from __future__ import annotations


class SimError(Exception):
    """Root of every exception raised by :mod:`sim`."""


class ConfigError(SimError, ValueError):
    """The world configuration is invalid; the message names the field and the limit."""


class InvalidInput(SimError, ValueError):
    """An input or entity row was rejected before it could enter the world state."""


class SchemaError(SimError, ValueError):
    """Bytes did not decode to a message or save of a schema version this code reads."""


class KernelUnavailable(SimError, RuntimeError):
    """The requested kernel cannot run in this interpreter."""
