"""Tests of the searched-hyperparameter specs and the population's initial values."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from autolfads.config import load_config
from autolfads.errors import ConfigError
from autolfads.pbt.hps import (
    HPSpec,
    hp_specs_from_config,
    hp_table_to_rows,
    sample_initial,
    sample_values,
)


def make_spec(**overrides) -> HPSpec:
    fields = dict(name="lr_init", min=1e-5, max=1e-2, init=None, sample="log", explore_scale=0.3)
    fields.update(overrides)
    return HPSpec(**fields)


@pytest.mark.parametrize(
    ("overrides", "field", "rule"),
    [
        (dict(min=1.0, max=0.5), "max", "> min"),
        (dict(min=0.5, max=0.5), "max", "> min"),
        (dict(min=0.0, max=1.0, sample="log"), "min", "> 0 for sample: log"),
        (dict(min=-1.0, max=1.0, sample="log"), "min", "> 0 for sample: log"),
        (dict(init=0.5), "init", "[min, max]"),
        (dict(sample="normal"), "sample", "log, uniform"),
        (dict(explore_scale=1.0), "explore_scale", "(0, 1)"),
        (dict(explore_scale=0.0), "explore_scale", "(0, 1)"),
        (dict(explore_scale=-0.1), "explore_scale", "(0, 1)"),
        (dict(min="small"), "min", "a number"),
        (dict(max=float("nan")), "max", "a number"),
        (dict(init="high"), "init", "a number"),
    ],
)
def test_hpspec_validation_names_field_value_and_rule(overrides, field, rule):
    with pytest.raises(ConfigError) as info:
        make_spec(**overrides)
    message = str(info.value)
    assert f"pbt.hps.lr_init.{field}" in message
    assert rule in message
    assert repr(overrides[field]) in message


def test_hpspec_accepts_edge_values_and_coerces_to_float():
    spec = make_spec(min=1, max=2, init=1, explore_scale=0.5)
    assert (spec.min, spec.max, spec.init, spec.explore_scale) == (1.0, 2.0, 1.0, 0.5)
    assert isinstance(spec.min, float)
    assert make_spec(min=0.0, max=0.6, sample="uniform").min == 0.0


def test_specs_from_config_defaults_for_sample_and_explore_scale():
    specs = hp_specs_from_config(
        {
            "lr_init": {"min": 1e-5, "max": 5e-3, "init": 4e-3},
            "dropout_rate": {"min": 0.0, "max": 0.6},
            "cd_rate": {"min": 0.01, "max": 0.7, "sample": "uniform", "explore_scale": 0.5},
        }
    )
    assert [s.name for s in specs] == ["lr_init", "dropout_rate", "cd_rate"]
    assert (specs[0].sample, specs[0].explore_scale, specs[0].init) == ("log", 0.3, 4e-3)
    assert (specs[1].sample, specs[1].init) == ("uniform", None)
    assert (specs[2].sample, specs[2].explore_scale) == ("uniform", 0.5)


def test_specs_from_packaged_defaults_and_dictconfig():
    cfg = load_config()
    specs = hp_specs_from_config(cfg.pbt.hps)
    by_name = {s.name: s for s in specs}
    assert set(by_name) == set(cfg.pbt.hps)
    assert by_name["dropout_rate"].sample == "uniform"
    assert by_name["kl_co_scale"].explore_scale == 0.8
    assert by_name["cd_rate"].init == 0.5
    plain = hp_specs_from_config(OmegaConf.to_container(cfg.pbt.hps))
    assert plain == specs


@pytest.mark.parametrize(
    ("hps", "expected"),
    [
        ({"lr_init": {"max": 1.0}}, "pbt.hps.lr_init.min is missing"),
        ({"lr_init": 0.1}, "pbt.hps.lr_init = 0.1"),
        ({"lr_init": {"min": 0.1, "max": 1.0, "explor_scale": 0.3}}, "explor_scale"),
        ({"lr_init": {"min": 1.0, "max": 0.1}}, "pbt.hps.lr_init.max"),
    ],
)
def test_specs_from_config_errors(hps, expected):
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        hp_specs_from_config(hps)


def test_sample_initial_log_within_range_and_log_uniform():
    spec = make_spec(min=1e-6, max=1e-2)
    values = sample_initial([spec], 4000, rng=np.random.default_rng(0))["lr_init"]
    assert values.shape == (4000,) and values.dtype == np.float64
    assert values.min() >= 1e-6 and values.max() <= 1e-2
    logs = np.log10(values)
    # log-uniform: the median of log10 values sits mid-range (-4), each decade holds ~1/4 of values
    assert abs(np.median(logs) - (-4.0)) < 0.15
    per_decade = np.histogram(logs, bins=[-6, -5, -4, -3, -2])[0] / values.size
    np.testing.assert_allclose(per_decade, 0.25, atol=0.04)


def test_sample_initial_uniform_within_range_and_mean_mid():
    spec = make_spec(name="dropout_rate", min=0.0, max=0.6, sample="uniform")
    values = sample_initial([spec], 4000, rng=np.random.default_rng(1))["dropout_rate"]
    assert values.min() >= 0.0 and values.max() <= 0.6
    assert abs(values.mean() - 0.3) < 0.02


def test_sample_initial_init_fixes_every_worker_and_does_not_shift_other_draws():
    free = make_spec(name="kl_ic_scale", min=1e-6, max=1e-3)
    with_init = [make_spec(init=4e-3), free]
    without_init = [make_spec(), free]
    table = sample_initial(with_init, 8, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(table["lr_init"], np.full(8, 4e-3))
    reference = sample_initial(without_init, 8, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(table["kl_ic_scale"], reference["kl_ic_scale"])
    assert len(np.unique(table["kl_ic_scale"])) == 8


def test_sample_initial_deterministic_for_a_seed():
    specs = [make_spec(), make_spec(name="cd_rate", min=0.01, max=0.7, sample="uniform")]
    first = sample_initial(specs, 5, rng=np.random.default_rng(42))
    again = sample_initial(specs, 5, rng=np.random.default_rng(42))
    other = sample_initial(specs, 5, rng=np.random.default_rng(43))
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
        assert not np.array_equal(first[name], other[name])


@pytest.mark.parametrize("n_workers", [0, -2, 2.5, True])
def test_sample_initial_rejects_bad_worker_count(n_workers):
    with pytest.raises(ConfigError, match="pbt.num_workers"):
        sample_initial([make_spec()], n_workers, rng=np.random.default_rng(0))


def test_sample_initial_rejects_duplicate_names():
    with pytest.raises(ConfigError, match="duplicate"):
        sample_initial([make_spec(), make_spec()], 2, rng=np.random.default_rng(0))


def test_sample_values_ignores_init():
    spread = sample_values(make_spec(init=1e-3), 50, rng=np.random.default_rng(0))
    assert not np.all(spread == 1e-3)


def test_hp_table_to_rows_one_dict_per_worker():
    table = {"lr_init": np.array([1e-3, 2e-3]), "cd_rate": np.array([0.1, 0.2])}
    rows = hp_table_to_rows(table)
    assert rows == [{"lr_init": 1e-3, "cd_rate": 0.1}, {"lr_init": 2e-3, "cd_rate": 0.2}]
    assert all(type(v) is float for row in rows for v in row.values())
    assert hp_table_to_rows({}) == []


def test_hp_table_to_rows_rejects_ragged_table():
    with pytest.raises(ValueError, match="lr_init"):
        hp_table_to_rows({"lr_init": np.zeros(2), "cd_rate": np.zeros(3)})


def test_log_sampling_never_leaves_range_through_rounding():
    # exp(log(1e-5)) is 1e-5 - 3e-21 in float64: without clipping a range one ulp wide escapes it
    spec = make_spec(min=1e-5, max=np.nextafter(1e-5, 1.0))
    values = sample_values(spec, 10, rng=np.random.default_rng(0))
    assert values.min() >= spec.min and values.max() <= spec.max
