"""autolfads: LFADS fitted and tuned automatically by population-based training (AutoLFADS).

Shape legend used throughout the package:
    K  workers (population members batched together in a shard)
    B  trials in a batch          T  time bins
    N  channels (neurons, muscles) F  factors
    U  inferred inputs (co_dim)    E  external inputs
"""

__version__ = "0.1.0"
