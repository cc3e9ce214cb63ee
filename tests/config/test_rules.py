"""The table of configuration rules (`autolfads.config.rules`): complete, applied by `load_config`,
one line per refusal naming the key, the value and what is allowed."""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from autolfads.config import load_config, packaged_config_names
from autolfads.config.rules import (
    HP_ENTRY_RULES,
    RECONSTRUCTIONS,
    RULES,
    Rule,
    rules_markdown,
    searchable_names,
)
from autolfads.errors import ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"


def _leaves(node: object, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return [prefix]
    return [
        leaf
        for k, v in node.items()
        for leaf in _leaves(v, f"{prefix}{k}" if not prefix else f"{prefix}.{k}")
    ]


def _default_keys() -> list[str]:
    text = resources.files("autolfads.config").joinpath("defaults.yaml").read_text()
    tree = OmegaConf.to_container(OmegaConf.create(text))
    hps = tree["pbt"].pop("hps")  # an open mapping NAME -> entry, checked by its own rules
    assert isinstance(hps, dict) and hps
    return _leaves(tree)


def _dot(value: object) -> str:
    """A Python value as the text of a `key=value` override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return ".nan"
    return str(value)


def invalid_values(rule: Rule) -> list[object]:
    """Values `rule` must refuse: past each bound, the wrong type, null where null is not allowed."""
    bad: list[object] = [] if rule.nullable else [None]
    if rule.kind in ("int", "number"):
        bad += ["abc", True]
        if rule.low is not None:
            bad.append(rule.low if rule.low_open else rule.low - 1)
        if rule.high is not None:
            bad.append(rule.high if rule.high_open else rule.high + 1)
        if rule.kind == "int":
            bad.append((rule.low or 0) + 1.5)
        else:
            bad.append(math.nan)
    elif rule.kind == "bool":
        bad += [1, "maybe"]
    elif rule.kind == "choice":
        bad += ["nope", 3]
    else:
        bad += [5]
    return bad


def valid_values(rule: Rule) -> list[object]:
    """Values `rule` must accept, on its bounds where a bound is closed."""
    good: list[object] = [None] if rule.nullable else []
    if rule.kind in ("int", "number"):
        low, high = rule.low or 0, rule.high
        inside = low + 1 if high is None else (low + high) / 2
        good.append(inside if rule.kind == "number" else int(inside))
        if rule.low is not None and not rule.low_open:
            good.append(rule.low)
        if high is not None and not rule.high_open:
            good.append(high)
    elif rule.kind == "bool":
        good += [True, False]
    elif rule.kind == "choice":
        good += list(rule.choices) + (["my_pkg.models.Obs"] if rule.dotted else [])
    return good


TEXT_VALUES = {"device": ["cpu", "cuda", "cuda:1"], "pbt.address": ["ray://head:10001", "auto"]}
TEXT_INVALID = {"device": ["gpu", "cuda:x"], "pbt.address": []}

INVALID = [
    pytest.param(key, value, id=f"{key}={_dot(value)}")
    for key, rule in RULES.items()
    for value in invalid_values(rule) + TEXT_INVALID.get(key, [])
]
VALID = [
    pytest.param(key, value, id=f"{key}={_dot(value)}")
    for key, rule in RULES.items()
    for value in valid_values(rule) + TEXT_VALUES.get(key, [])
]


def refusal(overrides: list[str]) -> str:
    """The message of the ConfigError that `load_config` raises for `overrides` (one line)."""
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- the table


def test_every_key_of_the_defaults_has_a_rule_and_every_rule_a_key():
    keys = _default_keys()
    assert sorted(set(keys) - set(RULES)) == [], "keys of defaults.yaml without a rule"
    assert sorted(set(RULES) - set(keys)) == [], "rules of keys that defaults.yaml lacks"


def test_searchable_keys_are_the_shard_hyperparameters():
    from autolfads.train.shard import HP_NAMES

    assert set(searchable_names()) == set(HP_NAMES)


def test_reconstruction_names_are_the_observation_models():
    from autolfads.model.observations import OBSERVATION_MODELS

    assert set(RECONSTRUCTIONS) == set(OBSERVATION_MODELS)


def test_the_readme_lists_the_rules_of_the_table():
    assert rules_markdown() in README.read_text(), (
        "README rules out of date: paste rules_markdown()"
    )


@pytest.mark.parametrize("name", [None, *packaged_config_names()])
def test_the_defaults_and_every_packaged_config_pass(name):
    load_config(name)


def test_the_packaged_configs_are_the_ones_we_ship():
    assert {"demo", "emg", "radical"} <= set(packaged_config_names())


# --------------------------------------------------------------------------- one rule per key


@pytest.mark.parametrize(("key", "value"), INVALID)
def test_each_rule_refuses_a_value_outside_it(key, value):
    message = refusal([f"{key}={_dot(value)}"])
    assert message.startswith(f"{key} = ")
    assert message.endswith(f"expected {RULES[key].allowed}")


@pytest.mark.parametrize(("key", "value"), VALID)
def test_each_rule_accepts_a_value_inside_it(key, value):
    cfg = load_config(None, ["model.co_dim=0", f"{key}={_dot(value)}"])  # co_dim=0: no controller
    got = OmegaConf.select(cfg, key)
    assert got == value
    if RULES[key].kind == "int" and value is not None:
        assert type(got) is int
    if RULES[key].kind == "number" and value is not None:
        assert type(got) is float


# --------------------------------------------------------------------------- the reported cases


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.gen_dim=abc", "model.gen_dim = 'abc': expected an integer >= 1"),
        ("trainer.max_epochs=-3", "trainer.max_epochs = -3: expected an integer >= 1"),
        ("datamodule.batch_size=0", "datamodule.batch_size = 0: expected an integer >= 1"),
        ("model.dropout_rate=1.5", "model.dropout_rate = 1.5: expected a number in [0, 1)"),
        ("model.cd_rate=1.0", "model.cd_rate = 1.0: expected a number in [0, 1)"),
        ("model.sv_rate=1", "model.sv_rate = 1: expected a number in [0, 1)"),
        ("model.lr_init=-1", "model.lr_init = -1: expected a number > 0"),
        ("model.lr_stop=0", "model.lr_stop = 0: expected a number > 0"),
        ("model.lr_decay=0", "model.lr_decay = 0: expected a number in (0, 1]"),
        ("model.kl_co_scale=-1e-5", "model.kl_co_scale = -1e-05: expected a number >= 0"),
        ("model.gen_dim=6.5", "model.gen_dim = 6.5: expected an integer >= 1"),
        ("model.gen_dim=true", "model.gen_dim = true: expected an integer >= 1"),
        ("model.co_dim=-1", "model.co_dim = -1: expected an integer >= 0 (0 = no controller)"),
        ("model.log_input=1", "model.log_input = 1: expected true or false"),
        ("seed=1.5", "seed = 1.5: expected an integer >= 0"),
        ("device=gpu", "device = 'gpu': expected cpu, cuda or cuda:N"),
        ("pbt.backend=spark", "pbt.backend = 'spark': expected one of auto, inline, ray"),
        ("pbt.exploit.method=best", "pbt.exploit.method = 'best': expected one of"),
        ("pbt.exploit.quantile=0.6", "pbt.exploit.quantile = 0.6: expected a number in (0, 0.5]"),
        ("pbt.explore.resample_probability=2", "expected a number in [0, 1]"),
        ("pbt.max_generations=0", "pbt.max_generations = 0: expected null or an integer >= 1"),
        ("pbt.workers_per_shard=0", "pbt.workers_per_shard = 0: expected null or an integer >= 1"),
        ("pbt.gpus_per_shard=-0.5", "pbt.gpus_per_shard = -0.5: expected null or a number >= 0"),
        ("datamodule.temporal_shift.max=2.5", "datamodule.temporal_shift.max = 2.5"),
        ("datamodule.temporal_shift.std=-1", "datamodule.temporal_shift.std = -1"),
        ("model.reconstruction=poison", "model.reconstruction = 'poison': expected one of"),
        ("pbt.exploit=3", "pbt.exploit = 3: expected a mapping"),
        ("datamodule.temporal_shift=null", "datamodule.temporal_shift = null: expected a mapping"),
    ],
)
def test_reported_values_are_refused_in_one_line(override, message):
    assert message in refusal([override])


def test_whole_numbers_are_integers_and_numbers_are_floats():
    cfg = load_config(None, ["model.gen_dim=6.0", "model.loss_scale=1", "pbt.max_generations=null"])
    assert cfg.model.gen_dim == 6 and type(cfg.model.gen_dim) is int
    assert cfg.model.loss_scale == 1.0 and type(cfg.model.loss_scale) is float
    assert cfg.pbt.max_generations is None


def test_a_dotted_reconstruction_path_passes_the_config_check():
    assert load_config(None, ["model.reconstruction=my_pkg.obs.Laplace"]).model.reconstruction


def test_a_bad_value_in_a_config_file_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  fac_dim: 0\n")
    with pytest.raises(ConfigError, match=r"^model\.fac_dim = 0: expected an integer >= 1$"):
        load_config(path)


def test_a_controller_needs_its_encoder_and_its_gru():
    assert "model.con_dim = 0" in refusal(["model.co_dim=2", "model.con_dim=0"])
    assert "when model.co_dim > 0" in refusal(["model.co_dim=1", "model.ci_enc_dim=0"])
    cfg = load_config(None, ["model.co_dim=0", "model.con_dim=0", "model.ci_enc_dim=0"])
    assert cfg.model.co_dim == 0


# --------------------------------------------------------------------------- pbt.hps


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("lr_init={min: 0.01, max: 0.001}", "pbt.hps.lr_init.max = 0.001: expected a number > min"),
        ("lr_init={min: 0.01, max: 0.01}", "pbt.hps.lr_init.max = 0.01: expected a number > min"),
        ("kl_ic_scale={min: 0.0, max: 1.0, sample: log}", "pbt.hps.kl_ic_scale.min = 0.0"),
        ("kl_ic_scale={min: 0.1, max: 1.0, sample: normal}", "pbt.hps.kl_ic_scale.sample"),
        ("cd_rate={min: 0.1, max: 0.5, init: 0.6}", "pbt.hps.cd_rate.init = 0.6"),
        ("cd_rate={min: 0.1, max: 0.5, explore_scale: 0}", "pbt.hps.cd_rate.explore_scale = 0"),
        ("cd_rate={min: 0.1, max: 0.5, explore_scale: 1}", "pbt.hps.cd_rate.explore_scale = 1"),
        ("cd_rate={min: abc, max: 0.5}", "pbt.hps.cd_rate.min = 'abc': expected a number"),
        (
            "dropout_rate={min: 0.0, max: 1.0}",
            "pbt.hps.dropout_rate.max = 1.0: expected a number in [0, 1) (the rule of model.dropout_rate)",
        ),
        ("cd_rate={min: -0.1, max: 0.5}", "pbt.hps.cd_rate.min = -0.1"),
        (
            "lr_init={min: -1.0, max: 0.1, sample: uniform}",
            "pbt.hps.lr_init.min = -1.0: expected a number > 0",
        ),
        ("gen_dim={min: 10, max: 100}", "pbt.hps.gen_dim: not a searchable hyperparameter"),
        ("nonsense={min: 1, max: 2}", "pbt.hps.nonsense: not a searchable hyperparameter"),
        ("lr_init=5", "pbt.hps.lr_init = 5: expected a mapping"),
        ("l2_ic_enc_scale={min: 0.001}", "pbt.hps.l2_ic_enc_scale.max is missing"),
    ],
)
def test_searched_ranges_follow_their_own_rules_and_their_keys_rules(entry, message):
    assert message in refusal([f"pbt.hps.{entry}"])


def test_a_searched_range_inside_its_keys_rule_is_accepted():
    cfg = load_config(None, ["pbt.hps.l2_ic_enc_scale={min: 1.0e-4, max: 1.0, explore_scale: 0.5}"])
    assert cfg.pbt.hps.l2_ic_enc_scale.explore_scale == 0.5


def test_hp_entry_rules_cover_every_field_of_an_entry():
    from autolfads.config.hps import _SPEC_KEYS

    assert tuple(HP_ENTRY_RULES) == _SPEC_KEYS
