"""Session files for the data-layer tests: small, valid Poisson files that a test may alter."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

DELETE = None  # pass key=DELETE to leave a key out of the file


def make_session_arrays(
    n_train: int = 8, n_valid: int = 4, T: int = 10, N: int = 5, seed: int = 0
) -> dict[str, np.ndarray]:
    """A valid Poisson session: integer counts, encod == recon, with train/valid trial indices."""
    rng = np.random.default_rng(seed)
    train = rng.poisson(2.0, size=(n_train, T, N)).astype(np.float32)
    valid = rng.poisson(2.0, size=(n_valid, T, N)).astype(np.float32)
    order = rng.permutation(n_train + n_valid)
    return {
        "train_encod_data": train,
        "valid_encod_data": valid,
        "train_recon_data": train.copy(),
        "valid_recon_data": valid.copy(),
        "train_inds": order[:n_train],
        "valid_inds": order[n_train:],
    }


def write_h5(path: Path, arrays: dict[str, object]) -> Path:
    """Write each array as a dataset of a new HDF5 file."""
    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            file.create_dataset(key, data=value)
    return path


def make_session_file(
    tmp_path: Path,
    name: str = "s0.h5",
    n_train: int = 8,
    n_valid: int = 4,
    T: int = 10,
    N: int = 5,
    seed: int = 0,
    **overrides: object,
) -> Path:
    """Write a valid Poisson session file `tmp_path/name`.

    `key=array` replaces or adds a key; `key=None` (DELETE) leaves it out.
    """
    arrays: dict[str, object] = dict(make_session_arrays(n_train, n_valid, T, N, seed))
    for key, value in overrides.items():
        if value is DELETE:
            arrays.pop(key, None)
        else:
            arrays[key] = value
    return write_h5(tmp_path / name, arrays)


@pytest.fixture
def make_session(tmp_path: Path) -> Callable[..., Path]:
    """`make_session(name=..., **overrides)`: `make_session_file` in this test's tmp_path."""
    return functools.partial(make_session_file, tmp_path)
