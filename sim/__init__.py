"""paratick's game world: pure, deterministic, I/O-free.

Where a tick happens: :mod:`sim.shard` (one region's entities, one ``advance`` per tick) calling a
kernel in :mod:`sim.kernels`.  :mod:`sim.world` ticks every region in one thread (the reference
every parallel backend must match byte for byte).
"""
