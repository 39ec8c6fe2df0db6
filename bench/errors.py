"""Exceptions raised by :mod:`bench`.

::

    BenchError                  root: catch this to catch any benchmark failure
    ├── StatsError              statistic of bad data (no samples, NaN, zero baseline): our bug
    ├── ResultsError            a results.json that is not a valid file of a known schema version
    │                           (the user's input: report it clearly, never crash with a KeyError)
    ├── CellError               a measurement subprocess failed (stderr tail in the message)
    └── SetupError              interpreters or venvs needed for a run are missing
"""

from __future__ import annotations


class BenchError(Exception):
    """Root of every benchmark error."""


class StatsError(BenchError, ValueError):
    """A statistic was asked of data it is not defined for."""


class ResultsError(BenchError, ValueError):
    """A results file is malformed or of an unknown schema version."""


class CellError(BenchError, RuntimeError):
    """A benchmark cell's subprocess exited badly or printed no valid result."""


class SetupError(BenchError, RuntimeError):
    """An interpreter or virtual environment the benchmark needs is not there."""
