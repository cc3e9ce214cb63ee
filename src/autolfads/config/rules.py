"""The rules every configuration value follows: one table, checked before any work starts.

`RULES` maps each key of `defaults.yaml` (dotted, e.g. `model.gen_dim`) to a `Rule`: its type, its
allowed range and the words that say what is allowed. `check_config` applies the table (and the few
rules that tie two keys together, `CROSS_RULES`, and the rules of `pbt.hps` entries) to a merged,
resolved config; `autolfads.config.load_config` calls it, so every command that loads a config is
checked before it reads data or writes anything. Each refusal is a one-line `ConfigError`:
`model.gen_dim = 'abc': expected an integer >= 1`.

The model structure (`autolfads.model.structure`), the PBT policy (`autolfads.pbt.policy`) and the
hyperparameter specs (`autolfads.pbt.hps`) check their arguments with the same rules.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from autolfads.errors import ConfigError

__all__ = [
    "Rule",
    "RULES",
    "CROSS_RULES",
    "HP_ENTRY_RULES",
    "RECONSTRUCTIONS",
    "check_config",
    "check_value",
    "check_controller_sizes",
    "check_hp_entry",
    "check_searched",
    "searchable_names",
    "rules_markdown",
]

RECONSTRUCTIONS = ("poisson", "gaussian", "gamma", "zig", "mse")
"""Observation models by name (the keys of `autolfads.model.observations.OBSERVATION_MODELS`)."""


@dataclass(frozen=True)
class Rule:
    """What one configuration value may be.

    Attributes:
        kind: `int` (6.0 is taken as 6; 6.5, "6" and true are not), `number` (an int or a finite
            float, taken as float), `bool`, `choice` (one of `choices`), `text` (a string
            matching `pattern`) or `paths` (a list of dotted paths `pkg.mod.Class`).
        low, high: the range of an `int` or `number`; None for no bound.
        low_open, high_open: the bound itself is excluded.
        nullable: null is allowed too (its meaning is in `note`).
        choices: the names a `choice` accepts.
        dotted: a `choice` also accepts a dotted path `pkg.mod.Class` (`_target_`-style).
        pattern, words: a `text` value must match `pattern` (whole string); `words` say how.
        note: what a special value means, e.g. `0 = no controller`; shown in the message.
        searchable: PBT may search this model key (`pbt.hps.NAME`).
    """

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False
    choices: tuple[str, ...] = ()
    dotted: bool = False
    pattern: str | None = None
    words: str = ""
    note: str = ""
    searchable: bool = False

    @property
    def allowed(self) -> str:
        """What is allowed, in words: `an integer >= 1`, `null or a number in [0, 1)`..."""
        if self.kind == "bool":
            text = "true or false"
        elif self.kind == "choice":
            text = ("one of " if len(self.choices) > 1 else "") + ", ".join(self.choices)
            if self.dotted:
                text += ", or a dotted path pkg.mod.Class"
        elif self.kind == "text":
            text = self.words
        elif self.kind == "paths":
            text = "a list of dotted paths pkg.mod.Class"
        else:
            text = ("an integer" if self.kind == "int" else "a number") + self.range_words
        if self.nullable:
            text = "null or " + text
        return f"{text} ({self.note})" if self.note else text

    @property
    def range_words(self) -> str:
        """The range of an `int` or `number`: ` >= 1`, ` in [0, 1)`, or empty."""
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f" in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f" {'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f" {'<' if self.high_open else '<='} {_num(self.high)}"
        return ""

    def in_range(self, x: float) -> bool:
        """Whether the number `x` lies in [low, high] (bounds excluded where open)."""
        if self.low is not None and (x < self.low or (self.low_open and x == self.low)):
            return False
        return not (
            self.high is not None and (x > self.high or (self.high_open and x == self.high))
        )

    def check(self, key: str, value: Any) -> Any:
        """`value` in its normal form (6.0 -> 6 for an int, 1 -> 1.0 for a number).

        Raises:
            ConfigError: `key = value: expected <allowed>`, one line.
        """
        if value is None:
            if self.nullable:
                return None
            raise self.refuse(key, value)
        if self.kind in ("int", "number"):
            number = _as_number(value, integer=self.kind == "int")
            if number is None or not self.in_range(number):
                raise self.refuse(key, value)
            return number
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise self.refuse(key, value)
            return value
        if self.kind == "paths":
            items = list(value) if isinstance(value, (list, tuple, ListConfig)) else None
            if items is None or not all(isinstance(v, str) and _is_dotted_path(v) for v in items):
                raise self.refuse(key, value)
            return items
        if not isinstance(value, str):
            raise self.refuse(key, value)
        if self.kind == "choice":
            if value in self.choices or (self.dotted and _is_dotted_path(value)):
                return value
            raise self.refuse(key, value)
        if self.pattern is not None and re.fullmatch(self.pattern, value) is None:
            raise self.refuse(key, value)
        return value

    def refuse(self, key: str, value: Any) -> ConfigError:
        """The one-line error for `key = value`: `key = value: expected <allowed>`."""
        return ConfigError(f"{key} = {show(value)}: expected {self.allowed}")


def show(value: Any) -> str:
    """A config value as the message shows it: `'abc'`, `-3`, `1.5`, `null`, `true`, `[1, 2]`."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _num(x: float) -> str:
    return f"{x:g}"


def _as_number(value: Any, *, integer: bool) -> int | float | None:
    """An int (integer=True) or a finite float from `value`; None if it is neither."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    if not math.isfinite(number):
        return None
    if integer:
        return int(number) if number.is_integer() else None
    return number


def _is_dotted_path(value: str) -> bool:
    parts = value.split(".")
    return len(parts) >= 2 and all(part.isidentifier() for part in parts)


# --------------------------------------------------------------------------- the table


def _int(low: int, *, nullable: bool = False, note: str = "") -> Rule:
    return Rule("int", low=low, nullable=nullable, note=note)


def _number(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    nullable: bool = False,
    note: str = "",
) -> Rule:
    return Rule("number", low, high, low_open, high_open, nullable=nullable, note=note)


SIZE = _int(1)
DATA_DIM = _int(1, nullable=True, note="null = read from the data file")
POSITIVE = _number(0, low_open=True)
SCALE = _number(0)
RATE = _number(0, 1, high_open=True)
FLAG = Rule("bool")


def _searched(rule: Rule) -> Rule:
    return dataclasses.replace(rule, searchable=True)


RULES: dict[str, Rule] = {
    "seed": _int(0),
    "device": Rule("text", pattern=r"cpu|cuda|cuda:\d+", words="cpu, cuda or cuda:N"),
    "accel": Rule("choice", choices=("auto", "cpp", "none"), note="$AUTOLFADS_ACCEL overrides"),
    # model: data dimensions (read from the file; stated only to be checked)
    "model.encod_data_dim": DATA_DIM,
    "model.encod_seq_len": DATA_DIM,
    "model.recon_data_dim": DATA_DIM,
    "model.recon_seq_len": DATA_DIM,
    "model.ext_input_dim": _int(0, nullable=True, note="null = read from the data file"),
    "model.readin_dim": _int(1, nullable=True, note="null = the default read-in"),
    "model.align_readin": FLAG,
    # model: sizes
    "model.ic_enc_dim": SIZE,
    "model.ci_enc_dim": _int(0, note=">= 1 when co_dim > 0"),
    "model.con_dim": _int(0, note=">= 1 when co_dim > 0"),
    "model.co_dim": _int(0, note="0 = no controller"),
    "model.ic_dim": SIZE,
    "model.gen_dim": SIZE,
    "model.fac_dim": SIZE,
    "model.ci_lag": _int(0),
    # model: regularisation, priors
    "model.dropout_rate": _searched(RATE),
    "model.cd_rate": _searched(RATE),
    "model.sv_rate": RATE,
    "model.cell_clip": POSITIVE,
    "model.co_prior_tau": POSITIVE,
    "model.co_prior_nvar": POSITIVE,
    "model.ic_prior_var": POSITIVE,
    "model.ic_post_var_min": POSITIVE,
    "model.l2_gen_scale": _searched(SCALE),
    "model.l2_con_scale": _searched(SCALE),
    "model.l2_ic_enc_scale": _searched(SCALE),
    "model.l2_ci_enc_scale": _searched(SCALE),
    "model.kl_ic_scale": _searched(SCALE),
    "model.kl_co_scale": _searched(SCALE),
    # model: optimiser
    "model.lr_init": _searched(POSITIVE),
    "model.lr_decay": _number(0, 1, low_open=True),
    "model.lr_patience": _int(0),
    "model.lr_stop": POSITIVE,
    "model.loss_scale": POSITIVE,
    "model.max_grad_norm": POSITIVE,
    # model: observations
    "model.reconstruction": Rule("choice", choices=RECONSTRUCTIONS, dotted=True),
    # model: swappable parts (a built-in name or a dotted path to the class; docs/architecture.md)
    "model.ic_prior": Rule("choice", choices=("gaussian",), dotted=True),
    "model.co_prior": Rule("choice", choices=("ar1",), dotted=True),
    "model.readin": Rule("choice", choices=("linear",), dotted=True),
    "model.readout": Rule("choice", choices=("linear",), dotted=True),
    "model.allow_noninteger": FLAG,
    "model.s_min": POSITIVE,
    "model.gamma_prior": _searched(POSITIVE),
    "model.gamma_scale_from_data": FLAG,
    "model.l2_gamma_scale": _searched(SCALE),
    "model.log_input": FLAG,
    # datamodule
    "datamodule.batch_size": SIZE,
    "datamodule.temporal_shift.enabled": FLAG,
    "datamodule.temporal_shift.std": SCALE,
    "datamodule.temporal_shift.max": _int(0),
    "datamodule.augmentations": Rule("paths"),
    # trainer
    "trainer.max_epochs": SIZE,
    "trainer.ramp_epochs": _int(0),
    "trainer.ramp_start": _int(0),
    "trainer.early_stopping_patience": SIZE,
    "trainer.samples": SIZE,
    # pbt
    "pbt.num_workers": SIZE,
    "pbt.workers_per_shard": _int(1, nullable=True, note="null = chosen from the model size"),
    "pbt.backend": Rule("choice", choices=("auto", "inline", "ray")),
    "pbt.address": Rule(
        "text", pattern=r"\S+", words="a Ray address", nullable=True, note="null = a local Ray"
    ),
    "pbt.cpus_per_shard": _int(1, nullable=True, note="null = chosen"),
    "pbt.gpus_per_shard": _number(0, nullable=True, note="null = chosen"),
    "pbt.perturbation_interval": SIZE,
    "pbt.burn_in_period": _int(0),
    "pbt.patience": SIZE,
    "pbt.min_improvement_ratio": SCALE,
    "pbt.max_generations": _int(1, nullable=True, note="null = no limit"),
    # what ranks workers; valid/r2 needs truth and valid/bps a Poisson model (checked with the data)
    "pbt.metric": Rule(
        "choice", choices=("valid/recon_smth", "valid/recon", "valid/loss", "valid/r2", "valid/bps")
    ),
    "pbt.exploit.method": Rule("choice", choices=("binary_tournament", "truncation", "none")),
    "pbt.exploit.quantile": _number(0, 0.5, low_open=True),
    "pbt.explore.resample_probability": _number(0, 1),
}
"""Every key of `defaults.yaml` (except the open mapping `pbt.hps`) -> its rule."""

HP_ENTRY_RULES: dict[str, Rule] = {
    "min": _number(),
    "max": _number(),
    "init": _number(nullable=True, note="null = each worker draws its own"),
    "sample": Rule("choice", choices=("log", "uniform")),
    "explore_scale": _number(0, 1, low_open=True, high_open=True),
}
"""The fields of one `pbt.hps.NAME` entry -> their rule (`check_hp_entry` adds min < max etc.)."""


def searchable_names() -> tuple[str, ...]:
    """The model keys PBT may search, in table order (`lr_init`, `dropout_rate`...)."""
    return tuple(key[len("model.") :] for key, rule in RULES.items() if rule.searchable)


CROSS_RULES: tuple[str, ...] = (
    "`model.ci_enc_dim` and `model.con_dim` >= 1 when `model.co_dim` > 0",
    "`pbt.hps.NAME`: NAME is one of " + ", ".join(searchable_names()) + "; min < max; "
    "min > 0 for `sample: log`; init in [min, max]; min, max and init within the rule of "
    "`model.NAME` (e.g. `dropout_rate` max < 1)",
)
"""The rules that tie keys together, in words (README); checked by `check_config`."""


def _groups() -> list[str]:
    """Every group of settings (`model`, `datamodule.temporal_shift`...), outer groups first."""
    groups = {key.rsplit(".", 1)[0] for key in RULES if "." in key}
    groups |= {group.rsplit(".", 1)[0] for group in list(groups) if "." in group}
    return sorted(groups, key=lambda g: (g.count("."), g))


# --------------------------------------------------------------------------- checks


def check_value(key: str, value: Any) -> Any:
    """`value` checked against the rule of `key` (a key of `RULES`), in its normal form.

    Raises:
        ConfigError: naming the key, the value and what is allowed.
    """
    return RULES[key].check(key, value)


def check_controller_sizes(co_dim: int, ci_enc_dim: int, con_dim: int) -> None:
    """A controller (co_dim > 0) needs its encoder and its GRU: ci_enc_dim, con_dim >= 1.

    Raises:
        ConfigError: naming the key that is 0.
    """
    if co_dim > 0:
        for key, value in (("model.ci_enc_dim", ci_enc_dim), ("model.con_dim", con_dim)):
            if value < 1:
                raise ConfigError(
                    f"{key} = {show(value)}: expected an integer >= 1 when model.co_dim > 0 "
                    f"(co_dim = {co_dim}; co_dim = 0 turns the controller off)"
                )


def check_hp_entry(
    name: str, low: Any, high: Any, init: Any, sample: Any, explore_scale: Any
) -> tuple[float, float, float | None, str, float]:
    """The fields of `pbt.hps.NAME` checked, as (min, max, init, sample, explore_scale).

    Raises:
        ConfigError: `pbt.hps.NAME.FIELD = value: expected ...`, one line.
    """
    fields = {"min": low, "max": high, "init": init, "sample": sample}
    fields["explore_scale"] = explore_scale
    out = {f: HP_ENTRY_RULES[f].check(f"pbt.hps.{name}.{f}", v) for f, v in fields.items()}
    low, high, init = out["min"], out["max"], out["init"]
    if not low < high:
        raise ConfigError(
            f"pbt.hps.{name}.max = {show(high)}: expected a number > min ({_num(low)}); "
            f"to fix a value, set model.{name} and leave it out of pbt.hps"
        )
    if out["sample"] == "log" and low <= 0:
        raise ConfigError(
            f"pbt.hps.{name}.min = {show(low)}: expected a number > 0 for sample: log "
            "(or sample: uniform)"
        )
    if init is not None and not low <= init <= high:
        raise ConfigError(
            f"pbt.hps.{name}.init = {show(init)}: expected a number in [min, max] = "
            f"[{_num(low)}, {_num(high)}]"
        )
    return low, high, init, out["sample"], out["explore_scale"]


def check_searched(name: str, low: float, high: float, init: float | None) -> None:
    """A searched range must stay within the rule of `model.NAME`, a searchable key.

    Raises:
        ConfigError: the name is not searchable, or min, max or init breaks the key's rule.
    """
    rule = RULES.get(f"model.{name}")
    if rule is None or not rule.searchable:
        raise ConfigError(
            f"pbt.hps.{name}: not a searchable hyperparameter; expected one of "
            + ", ".join(searchable_names())
        )
    for field, value in (("min", low), ("max", high), ("init", init)):
        if value is not None and not rule.in_range(value):
            raise ConfigError(
                f"pbt.hps.{name}.{field} = {show(value)}: expected a number{rule.range_words} "
                f"(the rule of model.{name})"
            )


def check_config(cfg: DictConfig) -> DictConfig:
    """Check every value of a merged, resolved config; put numbers in their normal form in place.

    Returns:
        `cfg` itself (6.0 given for an integer key now reads 6; 1 for a number key, 1.0).

    Raises:
        ConfigError: the first value that breaks its rule, in one line naming the key, the value
            and what is allowed.
    """
    for group in _groups():
        node = OmegaConf.select(cfg, group)
        if not isinstance(node, DictConfig):
            raise ConfigError(f"{group} = {show(node)}: expected a mapping (a group of settings)")
    for key, rule in RULES.items():
        value = OmegaConf.select(cfg, key)
        checked = rule.check(key, value)
        if type(checked) is not type(value):
            OmegaConf.update(cfg, key, checked, force_add=False)
    model = cfg.model
    check_controller_sizes(model.co_dim, model.ci_enc_dim, model.con_dim)
    return cfg


# --------------------------------------------------------------------------- documentation


def rules_markdown() -> str:
    """The rules as a compact Markdown table (README), keys grouped by what they allow."""
    by_allowed: dict[str, list[str]] = {}
    entries = {**RULES, **{f"pbt.hps.NAME.{f}": rule for f, rule in HP_ENTRY_RULES.items()}}
    for key, rule in entries.items():
        by_allowed.setdefault(rule.allowed, []).append(key)
    lines = ["| allowed | keys |", "|---|---|"]
    for allowed, keys in by_allowed.items():
        lines.append(f"| {allowed} | {_compact(keys)} |")
    lines.append("")
    lines.extend(f"- {rule}" for rule in CROSS_RULES)
    return "\n".join(lines) + "\n"


def _compact(keys: list[str]) -> str:
    """`model.a`, `model.b` -> `model.{a, b}` style, in backticks."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        group, _, leaf = key.rpartition(".")
        groups.setdefault(group, []).append(leaf)
    parts = []
    for group, leaves in groups.items():
        if not group:
            parts.extend(f"`{leaf}`" for leaf in leaves)
        elif len(leaves) == 1:
            parts.append(f"`{group}.{leaves[0]}`")
        else:
            parts.append(f"`{group}.{{{', '.join(leaves)}}}`")
    return ", ".join(parts)
