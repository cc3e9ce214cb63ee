"""autolfads: LFADS fitted and tuned automatically by population-based training (AutoLFADS).

From Python (`autolfads.api`): `autolfads.fit(train, valid, config=None, out=None, pbt=False)` on
arrays `n x T x N` returns a fitted model (`.posterior(encod)`, `.save(path)`, `.fitlog`);
`autolfads.load(path)` reads one back; `autolfads.LFADS` is the model the commands use.

Shape legend used throughout the package:
    K  workers (population members batched together in a shard)
    B  trials in a batch          T  time bins
    N  channels (neurons, muscles) F  factors
    U  inferred inputs (co_dim)    E  external inputs
"""

__version__ = "0.1.0"

__all__ = ["LFADS", "FittedModel", "fit", "load", "__version__"]


def __getattr__(name: str) -> object:
    # Imported lazily so that `import autolfads` and `autolfads --help` do not pay for torch.
    if name == "LFADS":
        from autolfads.outputs.checkpoint import LFADS

        return LFADS
    if name in ("fit", "load", "FittedModel"):
        from autolfads import api

        return getattr(api, name)
    raise AttributeError(f"module 'autolfads' has no attribute {name!r}")
