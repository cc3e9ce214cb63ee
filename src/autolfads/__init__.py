"""autolfads: LFADS fitted and tuned automatically by population-based training (AutoLFADS).

Shape legend used throughout the package:
    K  workers (population members batched together in a shard)
    B  trials in a batch          T  time bins
    N  channels (neurons, muscles) F  factors
    U  inferred inputs (co_dim)    E  external inputs
"""

__version__ = "0.1.0"

__all__ = ["LFADS", "__version__"]


def __getattr__(name: str) -> object:
    # Imported lazily so that `autolfads --help` does not pay for importing torch.
    if name == "LFADS":
        from autolfads.outputs.checkpoint import LFADS

        return LFADS
    raise AttributeError(f"module 'autolfads' has no attribute {name!r}")
