"""Every layout violation of docs/data-format.md is one DataError line naming file, key and values."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from autolfads.config import check_data_dims, load_config
from autolfads.data import read_session, read_sessions
from autolfads.data.validate import DataDims, check_layout
from autolfads.errors import ConfigError, DataError

from .conftest import DELETE, make_session_arrays

N_TRAIN, N_VALID, T, N = 8, 4, 10, 5


def _base() -> dict[str, np.ndarray]:
    return make_session_arrays(N_TRAIN, N_VALID, T, N)


def _with(key: str, index: tuple, value: float) -> dict[str, np.ndarray]:
    array = _base()[key].copy()
    array[index] = value
    return {key: array}


def _zeros(*shape: int) -> np.ndarray:
    return np.zeros(shape, dtype=np.float32)


def _ext(n_train=N_TRAIN, n_valid=N_VALID, t_train=T, t_valid=T, e_train=2, e_valid=2):
    return {
        "train_ext_input": _zeros(n_train, t_train, e_train),
        "valid_ext_input": _zeros(n_valid, t_valid, e_valid),
    }


def case(name: str, key: str, words: list[str], kwargs: dict | None = None, **overrides):
    """A bad file made of `overrides`, read with `kwargs`; the error names `key` and `words`."""
    return pytest.param(overrides, kwargs or {}, key, words, id=name)


ENC, REC = "train_encod_data", "train_recon_data"
V_ENC, V_REC = "valid_encod_data", "valid_recon_data"

CASES = [
    case("not-3d", ENC, ["(8, 10)", "3-D"], train_encod_data=_zeros(N_TRAIN, T)),
    case("not-numeric", ENC, ["dtype", "numeric"], train_encod_data=np.full((N_TRAIN, T, N), b"x")),
    case(
        "encod-channels-differ",
        V_ENC,
        ["6 channels", "5 channels"],
        valid_encod_data=_zeros(N_VALID, T, N + 1),
        valid_recon_data=_zeros(N_VALID, T, N + 1),
    ),
    case(
        "recon-channels-differ",
        V_REC,
        ["7 channels", "5 channels"],
        valid_recon_data=_zeros(N_VALID, T, N + 2),
    ),
    case(
        "encod-steps-differ",
        V_ENC,
        ["11 time steps", "10 time steps"],
        valid_encod_data=_zeros(N_VALID, T + 1, N),
        valid_recon_data=_zeros(N_VALID, T + 1, N),
    ),
    case("train-trials-differ", REC, ["7 trials", "8 trials"], train_recon_data=_zeros(7, T, N)),
    case("valid-trials-differ", V_REC, ["5 trials", "4 trials"], valid_recon_data=_zeros(5, T, N)),
    case(
        "recon-fewer-channels",
        REC,
        ["4 channels", "(5)"],
        train_recon_data=_zeros(N_TRAIN, T, N - 1),
        valid_recon_data=_zeros(N_VALID, T, N - 1),
    ),
    case(
        "recon-fewer-steps",
        REC,
        ["9 time steps", "(10)"],
        train_recon_data=_zeros(N_TRAIN, T - 1, N),
        valid_recon_data=_zeros(N_VALID, T - 1, N),
    ),
    case("ext-trials", "valid_ext_input", ["5 trials", "4"], **_ext(n_valid=N_VALID + 1)),
    case("ext-steps", "train_ext_input", ["9 time steps", "recon_seq_len = 10"], **_ext(t_train=9)),
    case("ext-dims-differ", "valid_ext_input", ["3 channels", "2"], **_ext(e_valid=3)),
    case(
        "ext-one-split-only",
        "valid_ext_input",
        ["missing", "every split"],
        train_ext_input=_zeros(N_TRAIN, T, 2),
    ),
    case("ext-zero-width", "train_ext_input", ["0 channels"], **_ext(e_train=0, e_valid=0)),
    case("inf-in-data", ENC, ["inf", "(1, 2, 3)", "finite"], **_with(ENC, (1, 2, 3), np.inf)),
    case("inf-in-recon", V_REC, ["-inf", "finite"], **_with(V_REC, (0, 0, 0), -np.inf)),
    case(
        "nan-in-ext-input",
        "valid_ext_input",
        ["NaN", "no NaN"],
        **{**_ext(), "valid_ext_input": np.full((N_VALID, T, 2), np.nan)},
    ),
    case("nan-in-truth", "train_truth", ["NaN", "no NaN"], train_truth=np.full((8, T, N), np.nan)),
    case("inf-in-truth", "valid_truth", ["inf", "finite"], valid_truth=np.full((4, T, N), np.inf)),
    case(
        "poisson-negative",
        REC,
        ["negative", "(-1 at index (2, 0, 1); 1 element in all)", ">= 0"],
        **_with(REC, (2, 0, 1), -1.0),
    ),
    case(
        "poisson-noninteger",
        V_ENC,
        ["non-integer", "0.5", "(0, 3, 4)", "allow_noninteger"],
        **_with(V_ENC, (0, 3, 4), 0.5),
    ),
    case(
        "poisson-negative-despite-allow",
        ENC,
        ["negative"],
        {"allow_noninteger": True},
        **_with(ENC, (0, 0, 0), -0.5),
    ),
    case(
        "gamma-negative",
        REC,
        ["negative", "'gamma'"],
        {"reconstruction": "gamma"},
        **_with(REC, (0, 0, 0), -0.25),
    ),
    case(
        "zig-negative",
        V_REC,
        ["negative", "'zig'"],
        {"reconstruction": "zig"},
        **_with(V_REC, (0, 0, 0), -2.0),
    ),
    case(
        "train-empty",
        ENC,
        ["0 trials", "at least one"],
        train_encod_data=_zeros(0, T, N),
        train_recon_data=_zeros(0, T, N),
        train_inds=DELETE,
    ),
    case(
        "valid-empty",
        V_ENC,
        ["0 trials"],
        valid_encod_data=_zeros(0, T, N),
        valid_recon_data=_zeros(0, T, N),
        valid_inds=DELETE,
    ),
    case(
        "zero-channels",
        ENC,
        ["0 channels", "at least one channel"],
        train_encod_data=_zeros(N_TRAIN, T, 0),
        valid_encod_data=_zeros(N_VALID, T, 0),
    ),
    case("zero-recon-channels", REC, ["0 channels"], train_recon_data=_zeros(N_TRAIN, T, 0)),
    case(
        "train-encod-all-nan",
        ENC,
        ["NaN everywhere", "(8, 10, 5)", "at least one observed"],
        train_encod_data=np.full((N_TRAIN, T, N), np.nan, dtype=np.float32),
    ),
    case(
        "valid-encod-all-nan",
        V_ENC,
        ["NaN everywhere", "(4, 10, 5)"],
        valid_encod_data=np.full((N_VALID, T, N), np.nan, dtype=np.float32),
    ),
    case(
        "test-encod-all-nan",
        "test_encod_data",
        ["NaN everywhere", "(3, 10, 5)"],
        test_encod_data=np.full((3, T, N), np.nan, dtype=np.float32),
    ),
    case(
        "valid-recon-all-nan",
        V_REC,
        ["NaN everywhere"],
        valid_recon_data=np.full((N_VALID, T, N), np.nan, dtype=np.float32),
    ),
    case(
        "truth-shape",
        "valid_truth",
        ["(4, 10, 6)", "(4, 10, 5)"],
        valid_truth=_zeros(N_VALID, T, N + 1),
    ),
    case(
        "test-encod-steps",
        "test_encod_data",
        ["12 time steps", "10 time steps"],
        test_encod_data=_zeros(3, T + 2, N),
    ),
    case(
        "test-encod-channels",
        "test_encod_data",
        ["4 channels", "5 channels"],
        test_encod_data=_zeros(3, T, N - 1),
    ),
    case(
        "test-encod-empty",
        "test_encod_data",
        ["0 trials", "remove the key"],
        test_encod_data=_zeros(0, T, N),
    ),
    case(
        "test-companion-without-test",
        "test_truth",
        ["without 'test_encod_data'"],
        test_truth=_zeros(3, T, N),
    ),
    # a test target (`test_recon_data`) follows the rules of the train and valid targets
    case(
        "test-recon-without-test",
        "test_recon_data",
        ["without 'test_encod_data'", "both or neither"],
        test_recon_data=_zeros(3, T, N),
    ),
    case(
        "test-recon-trials",
        "test_recon_data",
        ["2 trials", "3 trials as in 'test_encod_data'"],
        test_encod_data=_zeros(3, T, N),
        test_recon_data=_zeros(2, T, N),
    ),
    case(
        "test-recon-channels-differ",
        "test_recon_data",
        ["6 channels", "5 channels as in 'train_recon_data'"],
        test_encod_data=_zeros(3, T, N),
        test_recon_data=_zeros(3, T, N + 1),
    ),
    case(
        "test-recon-steps-differ",
        "test_recon_data",
        ["11 time steps", "10 time steps"],
        test_encod_data=_zeros(3, T, N),
        test_recon_data=_zeros(3, T + 1, N),
    ),
    case(
        "test-recon-not-3d",
        "test_recon_data",
        ["(3, 10)", "3-D"],
        test_encod_data=_zeros(3, T, N),
        test_recon_data=_zeros(3, T),
    ),
    case(
        "test-recon-empty",
        "test_recon_data",
        ["0 trials", "at least one"],
        test_encod_data=_zeros(3, T, N),
        test_recon_data=_zeros(0, T, N),
    ),
    case(
        "test-recon-negative",
        "test_recon_data",
        ["negative", ">= 0"],
        test_encod_data=_zeros(3, T, N),
        test_recon_data=np.full((3, T, N), -1.0, dtype=np.float32),
    ),
    case(
        "test-recon-noninteger",
        "test_recon_data",
        ["non-integer", "allow_noninteger"],
        test_encod_data=_zeros(3, T, N),
        test_recon_data=np.full((3, T, N), 0.5, dtype=np.float32),
    ),
    case(
        "test-recon-all-nan",
        "test_recon_data",
        ["NaN everywhere"],
        test_encod_data=_zeros(3, T, N),
        test_recon_data=np.full((3, T, N), np.nan, dtype=np.float32),
    ),
    case(
        "test-truth-shape",
        "test_truth",
        ["(3, 10, 4)", "(3, 10, 5)"],
        test_encod_data=_zeros(3, T, N),
        test_recon_data=_zeros(3, T, N),
        test_truth=_zeros(3, T, N - 1),
    ),
    case("inds-length", "train_inds", ["(7,)", "(8,)"], train_inds=np.arange(N_TRAIN - 1)),
    case("inds-float", "valid_inds", ["float64", "integer"], valid_inds=np.arange(4.0)),
    case(
        "conversion-factor-not-scalar",
        "conversion_factor",
        ["(3,)", "one number"],
        conversion_factor=np.ones(3),
    ),
    case("conversion-factor-zero", "conversion_factor", ["0.0", "non-zero"], conversion_factor=0.0),
]


@pytest.mark.parametrize(("overrides", "kwargs", "key", "words"), CASES)
def test_violation_is_one_line_naming_file_key_and_values(
    make_session, overrides, kwargs, key, words
):
    path = make_session(**overrides)
    with pytest.raises(DataError) as info:
        read_session(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert f"'{key}'" in message
    assert "expected" in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


@pytest.mark.parametrize(
    "key", ["train_encod_data", "valid_encod_data", "train_recon_data", "valid_recon_data"]
)
def test_missing_required_key_is_named(make_session, key):
    path = make_session(**{key: DELETE})
    with pytest.raises(DataError, match=f"'{key}' is missing"):
        read_session(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.h5"
    with pytest.raises(DataError, match="no such file") as info:
        read_session(path)
    assert str(path) in str(info.value)


def test_directory_is_not_a_session(tmp_path):
    with pytest.raises(DataError, match="not a regular file"):
        read_session(tmp_path)


def test_file_not_hdf5(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("train_encod_data = [1, 2, 3]\n")
    with pytest.raises(DataError, match="not an HDF5 file") as info:
        read_session(path)
    assert str(path) in str(info.value)


def test_nan_allowed_in_data_but_not_counted_as_noninteger(make_session):
    """NaN marks unobserved entries (SBTT): no error, and it survives reading."""
    arrays = _base()
    encod, recon = arrays["train_encod_data"].copy(), arrays["train_recon_data"].copy()
    encod[0, :, 1] = np.nan
    recon[0, :, 1] = np.nan
    session = read_session(make_session(train_encod_data=encod, train_recon_data=recon))
    assert np.isnan(session.encod["train"][0, :, 1]).all()
    assert np.isnan(session.recon["train"][0, :, 1]).all()


def test_noninteger_accepted_when_allowed_or_not_poisson(make_session):
    path = make_session(**_with("train_recon_data", (0, 0, 0), 0.5))
    assert read_session(path, allow_noninteger=True).recon["train"][0, 0, 0] == 0.5
    assert read_session(path, reconstruction="gamma").recon["train"][0, 0, 0] == 0.5


def test_negative_values_accepted_for_gaussian(make_session):
    path = make_session(**_with("train_recon_data", (0, 0, 0), -1.5))
    assert read_session(path, reconstruction="gaussian").recon["train"][0, 0, 0] == -1.5


def test_one_observed_value_is_enough(make_session):
    encod = np.full((N_TRAIN, T, N), np.nan, dtype=np.float32)
    encod[3, 4, 2] = 1.0
    session = read_session(make_session(train_encod_data=encod))
    assert np.isnan(session.encod["train"]).sum() == encod.size - 1


def test_sessions_with_different_channels_refused_when_required(make_session):
    first = make_session(name="a.h5", N=5)
    second = make_session(name="b.h5", N=6)
    assert len(read_sessions([first, second])) == 2  # stitching allows it by default
    with pytest.raises(DataError) as info:
        read_sessions([first, second], require_equal_channels=True)
    message = str(info.value)
    assert str(first) in message and str(second) in message
    assert "encod_data_dim=6" in message and "encod_data_dim=5" in message


def test_sessions_with_different_seq_len_refused(make_session):
    first = make_session(name="a.h5", T=10)
    second = make_session(name="b.h5", T=12)
    with pytest.raises(DataError, match="encod_seq_len=12 differs .*encod_seq_len=10"):
        read_sessions([first, second])


def test_error_in_last_session_found_before_any_array_is_loaded(make_session, monkeypatch):
    """Layout checks of all files run before the first array is read."""
    import autolfads.data.dataset as dataset

    good = make_session(name="a.h5")
    bad = make_session(name="b.h5", valid_recon_data=DELETE)
    loaded = []
    monkeypatch.setattr(dataset, "_load_session", lambda path, **kw: loaded.append(path))
    with pytest.raises(DataError, match="valid_recon_data"):
        read_sessions([good, bad])
    assert loaded == []


def test_check_layout_works_on_plain_arrays():
    dims = check_layout("mem.h5", _base())
    assert dims == DataDims(N, T, N, T, 0)


def test_config_disagreeing_with_data_dims_is_a_config_error(make_session):
    dims = read_session(make_session()).dims
    cfg = load_config(overrides=[f"model.encod_data_dim={N + 3}"])
    with pytest.raises(ConfigError, match=f"encod_data_dim={N + 3}.*encod_data_dim={N}"):
        check_data_dims(cfg, dims.as_dict())
    agreeing = load_config(overrides=[f"model.recon_seq_len={T}"])
    check_data_dims(agreeing, dims.as_dict())
    assert OmegaConf.select(agreeing, "model.ext_input_dim") == 0
