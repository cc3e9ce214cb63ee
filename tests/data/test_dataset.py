"""Reading session files: the layout round-trips, truth is scaled, extras pass through."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from autolfads.data import (
    ArraySource,
    DataDims,
    SessionData,
    read_arrays,
    read_session,
    read_sessions,
)
from autolfads.data.tensors import to_tensors
from autolfads.errors import DataError

from .conftest import DELETE, make_session_arrays, write_h5


def test_round_trip_of_the_full_layout(tmp_path):
    rng = np.random.default_rng(1)
    arrays = make_session_arrays(n_train=6, n_valid=3, T=8, N=4)
    # 2 held-out neurons and 3 forward-prediction steps in the target
    arrays["train_recon_data"] = rng.poisson(1.0, size=(6, 11, 6)).astype(np.int64)
    arrays["valid_recon_data"] = rng.poisson(1.0, size=(3, 11, 6)).astype(np.int64)
    arrays["test_encod_data"] = rng.poisson(1.0, size=(2, 8, 4)).astype(np.uint8)
    for split, n in (("train", 6), ("valid", 3), ("test", 2)):
        arrays[f"{split}_ext_input"] = rng.normal(size=(n, 11, 3))
    arrays["train_truth"] = rng.uniform(size=(6, 11, 6))
    arrays["valid_truth"] = rng.uniform(size=(3, 11, 6))
    path = write_h5(tmp_path / "full.h5", arrays)

    session = read_session(path)

    assert session.path == path and session.name == "full"
    assert session.splits == ["train", "valid", "test"]
    assert session.dims == DataDims(
        encod_data_dim=4, encod_seq_len=8, recon_data_dim=6, recon_seq_len=11, ext_input_dim=3
    )
    assert set(session.recon) == {"train", "valid"}
    for split in session.splits:
        for kind, group in (("encod_data", session.encod), ("ext_input", session.ext_input)):
            assert group[split].dtype == np.float32
            np.testing.assert_array_equal(
                group[split], arrays[f"{split}_{kind}"].astype(np.float32)
            )
    for split in ("train", "valid"):
        np.testing.assert_array_equal(session.recon[split], arrays[f"{split}_recon_data"])
        np.testing.assert_allclose(session.truth[split], arrays[f"{split}_truth"], rtol=1e-6)
        np.testing.assert_array_equal(session.inds[split], arrays[f"{split}_inds"])
    assert session.extra == {}


def test_test_target_is_loaded_with_its_truth_and_labels(tmp_path):
    """A test split with a target (`test_recon_data`) is read like train and valid: the target
    (held-out channels and forward steps too), the truth scaled by `conversion_factor`, the
    indices; its other keys pass through."""
    rng = np.random.default_rng(2)
    arrays = make_session_arrays(n_train=6, n_valid=3, T=8, N=4)
    for split, n in (("train", 6), ("valid", 3), ("test", 2)):
        arrays[f"{split}_recon_data"] = rng.poisson(1.0, size=(n, 11, 6)).astype(np.int64)
        arrays[f"{split}_truth"] = rng.uniform(size=(n, 11, 6))
    arrays["test_encod_data"] = rng.poisson(1.0, size=(2, 8, 4)).astype(np.float32)
    arrays["test_inds"] = np.array([9, 10])
    arrays["test_condition"] = np.array([0, 1])
    arrays["conversion_factor"] = np.float64(4.0)
    session = read_session(write_h5(tmp_path / "s.h5", arrays))

    assert session.splits == ["train", "valid", "test"]
    assert list(session.recon) == ["train", "valid", "test"]
    assert session.recon["test"].dtype == np.float32
    np.testing.assert_array_equal(session.recon["test"], arrays["test_recon_data"])
    np.testing.assert_allclose(session.truth["test"], arrays["test_truth"] / 4.0, rtol=1e-6)
    np.testing.assert_array_equal(session.inds["test"], [9, 10])
    assert set(session.extra) == {"test_condition", "conversion_factor"}


def test_test_target_never_reaches_the_training_tensors(make_session):
    """`to_tensors` (what training, evaluation and selection read) leaves the test target
    behind; the test trials keep their input for posterior outputs."""
    test = np.ones((3, 10, 5), dtype=np.float32)
    session = read_session(make_session(test_encod_data=test, test_recon_data=test))
    assert "test" in session.recon
    (data,) = to_tensors([session], "cpu")
    assert set(data.recon) == {"train", "valid"} and set(data.encod) == {"train", "valid", "test"}
    _, recon, _ = data.batch("test", torch.arange(3))
    assert recon is None


def test_dims_as_dict_names_the_config_keys():
    dims = DataDims(3, 10, 4, 12, 0)
    assert dims.as_dict() == {
        "encod_data_dim": 3,
        "encod_seq_len": 10,
        "recon_data_dim": 4,
        "recon_seq_len": 12,
        "ext_input_dim": 0,
    }


def test_optional_keys_absent_give_empty_dicts(make_session):
    session = read_session(make_session(train_inds=DELETE, valid_inds=DELETE))
    assert session.ext_input == {} and session.truth == {} and session.inds == {}
    assert session.splits == ["train", "valid"]
    assert session.dims.ext_input_dim == 0


def test_inds_kept_only_for_splits_that_have_them(make_session):
    session = read_session(make_session(valid_inds=DELETE))
    assert set(session.inds) == {"train"}


def test_truth_divided_by_conversion_factor(make_session):
    truth = np.full((8, 10, 5), 30.0, dtype=np.float32)
    session = read_session(make_session(train_truth=truth, conversion_factor=np.float64(10.0)))
    np.testing.assert_allclose(session.truth["train"], 3.0)
    assert session.truth["train"].dtype == np.float32
    assert float(session.extra["conversion_factor"]) == 10.0  # kept untouched


def test_extra_datasets_pass_through_untouched(tmp_path, make_session):
    behavior = np.arange(8 * 10 * 2, dtype=np.int16).reshape(8, 10, 2)
    path = make_session(train_behavior=behavior, psth=np.ones((3, 10, 5)))
    with h5py.File(path, "a") as file:
        file.create_dataset("meta/bin_size_ms", data=20)
    session = read_session(path)
    assert set(session.extra) == {"train_behavior", "psth", "meta/bin_size_ms"}
    assert session.extra["train_behavior"].dtype == np.int16
    np.testing.assert_array_equal(session.extra["train_behavior"], behavior)
    assert int(session.extra["meta/bin_size_ms"]) == 20


def test_several_sessions_from_a_list_keep_its_order(make_session):
    second = make_session(name="b.h5", N=7, seed=2)
    first = make_session(name="a.h5", N=5, seed=1)
    sessions = read_sessions([second, str(first)])
    assert [s.name for s in sessions] == ["b", "a"]
    assert [s.dims.encod_data_dim for s in sessions] == [7, 5]
    assert all(isinstance(s, SessionData) for s in sessions)


def test_several_sessions_from_a_glob_sorted_by_name(tmp_path, make_session):
    for name in ("sess2.h5", "sess0.h5", "sess1.h5"):
        make_session(name=name)
    make_session(name="other.h5")
    sessions = read_sessions(str(tmp_path / "sess*.h5"))
    assert [s.name for s in sessions] == ["sess0", "sess1", "sess2"]


def test_a_glob_orders_numbered_sessions_by_number(tmp_path, make_session):
    for i in (10, 2, 1, 0):
        make_session(name=f"sess{i}.h5")
    sessions = read_sessions(str(tmp_path / "sess*.h5"))
    assert [s.name for s in sessions] == ["sess0", "sess1", "sess2", "sess10"]


def test_single_path_gives_one_session(make_session):
    assert [s.name for s in read_sessions(make_session())] == ["s0"]


def test_glob_matching_nothing_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no files match"):
        read_sessions(str(tmp_path / "none*.h5"))


def test_empty_list_is_an_error():
    with pytest.raises(DataError, match="no session files"):
        read_sessions([])


def test_repr_is_short(make_session):
    text = repr(read_session(make_session()))
    assert "train=8" in text and "valid=4" in text and "\n" not in text


def test_arrays_in_python_read_as_the_file_they_stand_for(tmp_path):
    rng = np.random.default_rng(2)
    arrays = make_session_arrays(n_train=6, n_valid=3, T=8, N=4)
    arrays["train_recon_data"] = rng.poisson(1.0, size=(6, 9, 5))  # held-out, forward steps
    arrays["valid_recon_data"] = rng.poisson(1.0, size=(3, 9, 5))
    arrays["valid_truth"] = rng.uniform(size=(3, 9, 5))
    arrays["conversion_factor"] = np.array(4.0)
    arrays["valid_condition"] = np.arange(3)
    from_file = read_session(write_h5(tmp_path / "s.h5", arrays))
    source = ArraySource("sess0", "train/valid", arrays, {})
    (from_arrays,) = read_arrays([source])
    assert from_arrays.path is source and from_arrays.name == "sess0"
    assert from_arrays.dims == from_file.dims
    for group in ("encod", "recon", "ext_input", "truth", "inds", "extra"):
        ours, theirs = getattr(from_arrays, group), getattr(from_file, group)
        assert ours.keys() == theirs.keys(), group
        for key in ours:
            np.testing.assert_array_equal(ours[key], theirs[key], f"{group} {key}")
    assert arrays["valid_truth"].max() <= 1  # the caller's truth is not scaled in place


def test_arrays_in_python_are_refused_naming_the_argument():
    arrays = make_session_arrays(T=8, N=4)
    arrays["valid_encod_data"] = arrays["valid_encod_data"][:, :6]
    labels = {"valid_encod_data": "valid['encod_data']"}
    with pytest.raises(DataError) as err:
        read_arrays([ArraySource("sess0", "train/valid", arrays, labels)])
    assert str(err.value) == (
        "valid['encod_data']: has 6 time steps, shape (4, 6, 4); expected 8 time steps as in "
        "train/valid 'train_encod_data' (8, 8, 4)"
    )
