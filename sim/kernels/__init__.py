"""Tick kernels: one contract (:class:`sim.shard.Shard`), two implementations.

* :mod:`sim.kernels.python` -- pure Python, the default; runs everywhere, subinterpreters included.
* :mod:`sim.kernels.numpy` -- vectorised; bit-identical to the python kernel; numpy cannot load in
  a subinterpreter, so that combination is refused with :class:`~sim.errors.KernelUnavailable`.
"""
