"""Searched hyperparameters of population-based training: their ranges and the population's values.

A *hyperparameter table* (`HPTable`) maps each searched name (e.g. `lr_init`, `kl_co_scale`) to a
float64 array of shape (K,), one value per worker. Specs come from `cfg.pbt.hps`
(`NAME: {min, max, init?, sample: log|uniform, explore_scale}`, README, Configuration).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from autolfads.config.hps import HPSpec, hp_specs_from_config
from autolfads.errors import ConfigError

__all__ = [
    "HPSpec",
    "HPTable",
    "hp_specs_from_config",
    "sample_values",
    "sample_initial",
    "hp_table_to_rows",
]

HPTable = dict[str, np.ndarray]
"""Searched hyperparameter name -> (K,) float64 values, one per worker."""


def sample_values(spec: HPSpec, size: int, *, rng: np.random.Generator) -> np.ndarray:
    """`size` values drawn from the spec's range distribution: log-uniform or uniform in [min, max].

    The draw ignores `init`: this is the distribution explore resamples from.

    Returns:
        (size,) float64 values in [min, max].
    """
    if spec.sample == "log":
        values = np.exp(rng.uniform(math.log(spec.min), math.log(spec.max), size=size))
    else:
        values = rng.uniform(spec.min, spec.max, size=size)
    # exp(log(x)) can land a rounding error outside the range
    return np.clip(values, spec.min, spec.max).astype(np.float64)


def sample_initial(specs: Sequence[HPSpec], n_workers: int, *, rng: np.random.Generator) -> HPTable:
    """Starting hyperparameters of a population of `n_workers` workers.

    A spec without `init` gives each worker an independent draw from its range distribution
    (`sample_values`). A spec with `init` starts *every* worker at `init`: it is a fixed starting
    point that explore searches from later. The draw is made either way, so giving one HP an `init`
    does not change the values sampled for the others under the same seed.

    Returns:
        name -> (K,) float64 values, K = n_workers.
    """
    if isinstance(n_workers, bool) or not isinstance(n_workers, (int, np.integer)) or n_workers < 1:
        raise ConfigError(f"pbt.num_workers = {n_workers!r}: expected an integer >= 1")
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"pbt.hps: duplicate names in {names}")
    table: HPTable = {}
    for spec in specs:
        drawn = sample_values(spec, int(n_workers), rng=rng)
        table[spec.name] = drawn if spec.init is None else np.full(int(n_workers), spec.init)
    return table


def hp_table_to_rows(table: HPTable) -> list[dict[str, float]]:
    """One `{name: value}` dict per worker (worker k is row k), for logging `hp/<name>` columns.

    Raises:
        ValueError: the table's arrays are not all 1-D of the same length.
    """
    lengths = {name: np.shape(values) for name, values in table.items()}
    if any(len(shape) != 1 for shape in lengths.values()) or len(set(lengths.values())) > 1:
        raise ValueError(f"HP table: expected (K,) arrays of one length K, found shapes {lengths}")
    n_workers = next(iter(lengths.values()))[0] if lengths else 0
    return [{name: float(values[k]) for name, values in table.items()} for k in range(n_workers)]
