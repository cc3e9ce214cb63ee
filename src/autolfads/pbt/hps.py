"""Searched hyperparameters of population-based training: their ranges and the population's values.

A *hyperparameter table* (`HPTable`) maps each searched name (e.g. `lr_init`, `kl_co_scale`) to a
float64 array of shape (K,), one value per worker. Specs come from `cfg.pbt.hps`
(`NAME: {min, max, init?, sample: log|uniform, explore_scale}`, SPEC.md section 2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from autolfads.config.rules import HP_ENTRY_RULES, check_hp_entry
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

SAMPLING_MODES = HP_ENTRY_RULES["sample"].choices
DEFAULT_EXPLORE_SCALE = 0.3
_SPEC_KEYS = ("min", "max", "init", "sample", "explore_scale")


@dataclass(frozen=True)
class HPSpec:
    """One searched hyperparameter: its range, its initial sampling and its explore scale.

    Attributes:
        name: the model field it sets (e.g. `lr_init`).
        min, max: the closed range every worker's value stays in; min < max.
        init: a fixed starting value for every worker, or None to sample each worker in [min, max].
        sample: `log` (log-uniform, needs min > 0) or `uniform`.
        explore_scale: p in (0, 1); explore multiplies a copied value by a factor in [1 - p, 1 + p].

    The fields follow the rules of `autolfads.config.rules.check_hp_entry` (ConfigError otherwise).
    """

    name: str
    min: float
    max: float
    init: float | None
    sample: str
    explore_scale: float

    def __post_init__(self) -> None:
        checked = check_hp_entry(
            self.name, self.min, self.max, self.init, self.sample, self.explore_scale
        )
        for field, value in zip(_SPEC_KEYS, checked, strict=True):
            object.__setattr__(self, field, value)


def hp_specs_from_config(hps: Mapping[str, Mapping]) -> list[HPSpec]:
    """Specs of the searched hyperparameters, in config order, from `cfg.pbt.hps`.

    Args:
        hps: name -> `{min, max, init?, sample?, explore_scale?}`, an OmegaConf DictConfig or a
            plain dict. A missing `explore_scale` is 0.3; a missing `sample` is `log` if min > 0,
            else `uniform`.

    Raises:
        ConfigError: an entry is not a mapping, lacks min/max, has an unknown key or breaks a
            rule of `HPSpec`; the message names `pbt.hps.<name>.<field>`.
    """
    if not isinstance(hps, Mapping):
        raise ConfigError(f"pbt.hps = {hps!r}: expected a mapping of name -> {{min, max, ...}}")
    return [_spec_from_entry(str(name), entry) for name, entry in hps.items()]


def _spec_from_entry(name: str, entry: object) -> HPSpec:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"pbt.hps.{name} = {entry!r}: expected a mapping with min and max")
    unknown = sorted(str(key) for key in entry if key not in _SPEC_KEYS)
    if unknown:
        raise ConfigError(
            f"pbt.hps.{name}: unknown key(s) {', '.join(unknown)}; expected {', '.join(_SPEC_KEYS)}"
        )
    for required in ("min", "max"):
        if entry.get(required) is None:
            raise ConfigError(f"pbt.hps.{name}.{required} is missing: every searched HP needs one")
    low = entry["min"]
    explore_scale = entry.get("explore_scale")
    default_sample = "log" if isinstance(low, (int, float)) and low > 0 else "uniform"
    return HPSpec(
        name=name,
        min=low,
        max=entry["max"],
        init=entry.get("init"),
        sample=entry.get("sample") or default_sample,
        explore_scale=DEFAULT_EXPLORE_SCALE if explore_scale is None else explore_scale,
    )


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
