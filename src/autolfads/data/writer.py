"""Writing model outputs next to a copy of the session's input file (docs/data-format.md, Outputs)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from autolfads._atomic import atomic_path
from autolfads.data.validate import ArraySource, check_readable

__all__ = ["write_session_outputs"]


def write_session_outputs(
    src: str | os.PathLike | ArraySource,
    dst: str | os.PathLike,
    outputs: Mapping[str, np.ndarray],
) -> Path:
    """Copy session file `src` to `dst` and add (or replace) the datasets in `outputs`.

    Arrays given in Python (`src` an `ArraySource`) are written as the file they stand for, under
    its keys, before the outputs.

    The copy is written under a temporary name and renamed onto `dst` only once complete, so `dst`
    is either the old file or the finished new one, never a partial file.

    Args:
        src: the session's input file (or `ArraySource`); its datasets are all kept.
        dst: where to write; an existing file is replaced. May equal `src`.
        outputs: dataset name -> array, e.g. `{'valid_factors': (B, T, F) array}`.

    Returns:
        `dst` as a Path.

    Raises:
        DataError: `src` is missing or not an HDF5 file.
    """
    dst = Path(dst)
    if not isinstance(src, ArraySource):
        src = Path(src)
        check_readable(src)
    with atomic_path(dst) as tmp:
        if isinstance(src, ArraySource):
            with h5py.File(tmp, "w") as file:
                for key, value in src.arrays.items():
                    file.create_dataset(key, data=np.asarray(value))
        else:
            shutil.copyfile(src, tmp)
        with h5py.File(tmp, "r+") as file:
            for key, value in outputs.items():
                if key in file:
                    del file[key]
                file.create_dataset(key, data=np.asarray(value))
    return dst
