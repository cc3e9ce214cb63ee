"""Writing outputs into a copy of the session file, atomically."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from autolfads.data import write_session_outputs
from autolfads.errors import DataError


def _contents(path):
    with h5py.File(path, "r") as file:
        return {key: file[key][()] for key in file}


def test_copy_keeps_inputs_and_adds_outputs(tmp_path, make_session):
    src = make_session(psth=np.ones((2, 10, 5)))
    factors = np.random.default_rng(0).normal(size=(4, 10, 3)).astype(np.float32)
    dst = write_session_outputs(
        src, tmp_path / "out" / "lfads_output_sess0.h5", {"valid_factors": factors}
    )
    assert dst == tmp_path / "out" / "lfads_output_sess0.h5"
    before, after = _contents(src), _contents(dst)
    assert set(after) == set(before) | {"valid_factors"}
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value)
    np.testing.assert_array_equal(after["valid_factors"], factors)
    assert "valid_factors" not in before  # the source is not modified


def test_existing_output_key_is_replaced(tmp_path, make_session):
    src = make_session(valid_factors=np.zeros((4, 10, 3)))
    dst = write_session_outputs(src, tmp_path / "o.h5", {"valid_factors": np.ones((4, 10, 2))})
    np.testing.assert_array_equal(_contents(dst)["valid_factors"], np.ones((4, 10, 2)))


def test_existing_destination_is_replaced_and_no_temp_file_is_left(tmp_path, make_session):
    src = make_session()
    dst = tmp_path / "o.h5"
    write_session_outputs(src, dst, {"train_factors": np.zeros((8, 10, 3))})
    write_session_outputs(src, dst, {"valid_factors": np.zeros((4, 10, 3))})
    keys = set(_contents(dst))
    assert "valid_factors" in keys and "train_factors" not in keys
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.h5", "s0.h5"]


def test_destination_may_be_the_source(make_session):
    src = make_session()
    write_session_outputs(src, src, {"train_factors": np.zeros((8, 10, 3))})
    assert "train_factors" in _contents(src)


def test_failed_write_leaves_destination_untouched(tmp_path, make_session):
    src = make_session()
    dst = tmp_path / "o.h5"
    write_session_outputs(src, dst, {"valid_factors": np.full((4, 10, 3), 7.0)})
    stamp = dst.read_bytes()
    with pytest.raises(TypeError):
        write_session_outputs(src, dst, {"valid_rates": np.zeros(3), "bad": np.array([object()])})
    assert dst.read_bytes() == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.h5", "s0.h5"]


def test_missing_source_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        write_session_outputs(tmp_path / "missing.h5", tmp_path / "o.h5", {})
    assert not (tmp_path / "o.h5").exists()
