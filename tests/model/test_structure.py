"""LFADSStructure: validation at construction, derived properties, dict and config round trips."""

from __future__ import annotations

import pytest
from helpers import TINY_DIMS, tiny_structure

from autolfads.errors import ConfigError
from autolfads.model.structure import LFADSStructure


def test_to_dict_from_dict_round_trip_is_equal():
    s = tiny_structure(encod_data_dims=(6, 4), recon_data_dims=(7, 4), readin_dim=5)
    d = s.to_dict()
    assert d["encod_data_dims"] == [6, 4] and d["recon_data_dims"] == [7, 4]
    assert LFADSStructure.from_dict(d) == s


def test_single_session_has_no_readin_by_default():
    s = tiny_structure()
    assert s.readin_dim is None
    assert s.encoder_input_dim == 6
    assert s.n_sessions == 1


def test_multi_session_readin_defaults_to_first_session_width():
    s = tiny_structure(encod_data_dims=(6, 9), recon_data_dims=(6, 9))
    assert s.readin_dim == 6
    assert s.encoder_input_dim == 6
    assert s.n_sessions == 2


def test_explicit_readin_sets_encoder_input_width():
    assert tiny_structure(readin_dim=3).encoder_input_dim == 3


@pytest.mark.parametrize("co_dim, expected", [(0, False), (2, True)])
def test_use_controller_follows_co_dim(co_dim, expected):
    assert tiny_structure(co_dim=co_dim).use_controller is expected


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"encod_data_dims": (6, 4)}, "one encod and one recon"),
        ({"encod_data_dims": (), "recon_data_dims": ()}, "one encod and one recon"),
        ({"gen_dim": 0}, "gen_dim"),
        ({"fac_dim": 0}, "fac_dim"),
        ({"encod_seq_len": 0}, "encod_seq_len"),
        ({"co_dim": -1}, "co_dim"),
        ({"ci_lag": -1}, "ci_lag"),
        ({"co_dim": 2, "con_dim": 0}, "con_dim"),
        ({"co_dim": 2, "ci_enc_dim": 0}, "ci_enc_dim"),
        ({"recon_seq_len": 7}, "recon_seq_len"),
        ({"gen_dim": 6.5}, r"^model\.gen_dim = 6\.5: expected an integer >= 1$"),
        ({"cell_clip": 0.0}, r"^model\.cell_clip = 0\.0: expected a number > 0$"),
        ({"log_input": 1}, r"^model\.log_input = 1: expected true or false$"),
        ({"encod_data_dims": (0,)}, "model.encod_data_dim = 0"),
        ({"encod_seq_len": None}, "model.encod_seq_len = null"),
    ],
)
def test_invalid_structure_is_a_config_error_naming_the_field(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        tiny_structure(**overrides)


def test_whole_numbers_become_integers_as_in_the_config():
    s = tiny_structure(gen_dim=10.0, cell_clip=5)
    assert type(s.gen_dim) is int and type(s.cell_clip) is float


def test_no_controller_needs_no_controller_sizes():
    s = tiny_structure(co_dim=0, con_dim=0, ci_enc_dim=0)
    assert not s.use_controller


def _session_dims(**overrides: int) -> dict[str, int]:
    dims = {
        "encod_data_dim": 6,
        "recon_data_dim": 8,
        "encod_seq_len": 8,
        "recon_seq_len": 10,
        "ext_input_dim": 2,
    }
    return {**dims, **overrides}


def test_from_config_takes_dimensions_from_the_data_and_sizes_from_the_config():
    model_cfg = {k: v for k, v in TINY_DIMS.items() if not k.endswith(("_dims", "_seq_len"))}
    model_cfg["lr_init"] = 0.01  # not a structure field: ignored
    model_cfg["readin_dim"] = None  # None means "not set"
    s = LFADSStructure.from_config(model_cfg, [_session_dims(), _session_dims(encod_data_dim=3)])
    assert s.encod_data_dims == (6, 3)
    assert s.recon_data_dims == (8, 8)
    assert (s.encod_seq_len, s.recon_seq_len, s.ext_input_dim) == (8, 10, 2)
    assert (s.gen_dim, s.fac_dim, s.co_dim) == (TINY_DIMS["gen_dim"], TINY_DIMS["fac_dim"], 2)
    assert s.readin_dim == 6


@pytest.mark.parametrize("key", ["encod_seq_len", "recon_seq_len", "ext_input_dim"])
def test_from_config_rejects_sessions_that_disagree_on_time_or_inputs(key):
    other = _session_dims(**{key: _session_dims()[key] + 1})
    with pytest.raises(ConfigError, match=key):
        LFADSStructure.from_config({}, [_session_dims(), other])


def test_structure_is_frozen():
    s = tiny_structure()
    with pytest.raises(AttributeError):
        s.gen_dim = 3  # type: ignore[misc]
