"""Tick kernels: one contract (:class:`sim.shard.Shard`), two implementations, one factory.

* :mod:`sim.kernels.python` -- pure Python, the default; runs everywhere, subinterpreters included.
* :mod:`sim.kernels.numpy` -- vectorised; bit-identical to the python kernel; numpy cannot load in
  a subinterpreter, so that combination is refused with :class:`~sim.errors.KernelUnavailable`.

The factory lives here, above both kernels and the contract they implement, so that
:mod:`sim.shard` never imports a kernel (each kernel imports it).  The numpy kernel is imported
only when asked for: merely importing this package must work where numpy cannot load.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sim.config import WorldConfig
from sim.entities import Row
from sim.errors import ConfigError
from sim.kernels.python import PythonShard
from sim.shard import Shard

#: Every kernel name, in the order commands list them (the first is the default).
KERNELS = ("python", "numpy")


def make_shard(config: WorldConfig, region: int, rows: Iterable[Row] = (), *,
               kernel: str = "python") -> Shard:
    """Create the shard for ``region`` with the given owned rows.

    Raises:
        ConfigError: unknown kernel name.
        KernelUnavailable: the numpy kernel cannot be imported here (e.g. in a subinterpreter).
    """
    if kernel == "python":
        return PythonShard(config, region, rows)
    if kernel == "numpy":
        from sim.kernels.numpy import NumpyShard
        return NumpyShard(config, region, rows)
    raise ConfigError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")


def make_shards(config: WorldConfig, rows_by_region: Mapping[int, Iterable[Row]], *,
                kernel: str = "python", per_region: bool = False) -> list[Shard]:
    """The shards of the regions in ``rows_by_region`` (ascending), as one thread will tick them.

    With the numpy kernel the regions become one :class:`~sim.kernels.numpy.NumpyGroup`: one
    set of array operations per tick instead of one per region, no borders between its own
    regions, and the borders per-region shards would send to regions outside it.  Its shards are
    facades over the shared arrays.  With ``per_region=True`` (for comparisons), a single region
    of a larger world, or the python kernel, each region is an independent :func:`make_shard`.
    Either way the results are the same bits.  In a group the first region advanced computes the
    whole tick, so per-region advance times (the runtime's per-shard MSPT) show the whole tick on
    that region and ~0 on the others: that is what was measured.
    """
    regions = sorted(rows_by_region)
    # A lone region of a larger world stays a NumpyShard: its cell-grid contacts and table-driven
    # borders ran 1.5x faster than a one-region group on arena-20k (VM, 3.13, 4x4 regions).
    alone = len(regions) == 1 and config.regions > 1
    if kernel == "numpy" and not per_region and regions and not alone:
        from sim.kernels.numpy import NumpyGroup
        return list(NumpyGroup(config, rows_by_region).shards)
    return [make_shard(config, r, rows_by_region[r], kernel=kernel) for r in regions]


__all__ = ["KERNELS", "make_shard", "make_shards"]
