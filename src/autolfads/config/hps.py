"""Searched hyperparameters as typed settings: `pbt.hps.NAME: {min, max, init?, sample, explore_scale}`.

`hp_specs_from_config` reads each entry once into an `HPSpec`; the rules of each field are in
`autolfads.config.rules` (`check_hp_entry`). Sampling and perturbing values is `autolfads.pbt`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from autolfads.config.rules import HP_ENTRY_RULES, check_hp_entry
from autolfads.errors import ConfigError

__all__ = ["HPSpec", "hp_specs_from_config", "SAMPLING_MODES", "DEFAULT_EXPLORE_SCALE"]

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
