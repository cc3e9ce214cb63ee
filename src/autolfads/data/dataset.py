"""Reading session files (docs/data-format.md) into memory, after validating them.

One HDF5 file is one recording session. Several files (a list or a glob pattern) are several
sessions, stitched by the model through per-session read-in/read-out layers. Arrays given in
Python (`autolfads.fit`) are read by `read_arrays` through the same checks, each session's arrays
under a file's keys in an `ArraySource`.

Shape legend: B trials, T bins, N channels, E external inputs.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from autolfads.data import validate
from autolfads.data.validate import SPLITS, ArrayLike, ArraySource, DataDims, target_splits
from autolfads.errors import DataError

__all__ = ["ArraySource", "DataDims", "SessionData", "read_arrays", "read_session", "read_sessions"]

PathLike = str | os.PathLike


@dataclass
class SessionData:
    """One recording session (one HDF5 file, or arrays given in Python) held in memory.

    Attributes:
        path: the file read, or the `ArraySource` of arrays given in Python.
        encod: split -> (B, T_enc, N_enc) float32 model input; 'train', 'valid', maybe 'test'.
        recon: split -> (B, T_rec, N_rec) float32 reconstruction target; 'train', 'valid' and,
            when the file has `test_recon_data`, 'test'. NaN in `encod`/`recon` marks unobserved
            entries. Training and every selection read train and valid alone
            (`autolfads.data.tensors.to_tensors` leaves the test target behind); the test
            target is only scored (`autolfads evaluate`).
        ext_input: split -> (B, T_rec, E) float32 external inputs; empty if the file has none.
        truth: split -> (B, T_rec, N_rec) float32 ground truth, divided by `conversion_factor`.
        inds: split -> (B,) original trial indices; only the splits whose `{split}_inds` exists.
        extra: every other dataset of the file (behavior, psth, conversion_factor...), as stored.
    """

    path: Path | ArraySource
    encod: dict[str, np.ndarray]
    recon: dict[str, np.ndarray]
    ext_input: dict[str, np.ndarray] = field(default_factory=dict)
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    inds: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def dims(self) -> DataDims:
        """Dimensions of this session (from the train split)."""
        _, t_enc, n_enc = self.encod["train"].shape
        _, t_rec, n_rec = self.recon["train"].shape
        ext_dim = self.ext_input["train"].shape[2] if self.ext_input else 0
        return DataDims(n_enc, t_enc, n_rec, t_rec, ext_dim)

    @property
    def splits(self) -> list[str]:
        """Splits present, in the order train, valid, test."""
        return [s for s in SPLITS if s in self.encod]

    @property
    def name(self) -> str:
        """The file name without its suffix (arrays: the session's name, `sess0`, ...)."""
        return self.path.name if isinstance(self.path, ArraySource) else self.path.stem

    def __repr__(self) -> str:
        trials = ", ".join(f"{s}={self.encod[s].shape[0]}" for s in self.splits)
        return f"SessionData({self.name!r}, trials: {trials}, {self.dims})"


def read_sessions(
    paths: PathLike | Sequence[PathLike],
    *,
    reconstruction: str = "poisson",
    allow_noninteger: bool = False,
    batch_size: int | None = None,
    require_equal_channels: bool = False,
) -> list[SessionData]:
    """Read and validate one or several session files.

    Every file's layout is checked from its metadata first, then the sessions are compared with
    each other, and only then are the arrays loaded (once) and their values checked.

    Args:
        paths: a file, a glob pattern (e.g. `"data/sess*.h5"`), or a list of either.
        reconstruction: observation model; 'poisson' needs counts >= 0, 'gamma'/'zig' values >= 0.
        allow_noninteger: accept non-integer values under 'poisson'.
        batch_size: ignored (kept so that older callers still work): any number of train
            trials is enough, a train split smaller than a batch is one batch.
        require_equal_channels: refuse sessions whose channel counts differ.

    Returns:
        One `SessionData` per file, in the order given (glob matches in natural order of
        their names: sess2.h5 before sess10.h5).

    Raises:
        DataError: naming the file, the key, what was found and what was expected.
    """
    files = expand_paths(paths)
    dims = [_check_file_layout(path) for path in files]
    validate.check_sessions_agree(files, dims, require_equal_channels=require_equal_channels)
    return [
        _load_session(path, reconstruction=reconstruction, allow_noninteger=allow_noninteger)
        for path in files
    ]


def read_session(
    path: PathLike,
    *,
    reconstruction: str = "poisson",
    allow_noninteger: bool = False,
    batch_size: int | None = None,
    require_equal_channels: bool = False,
) -> SessionData:
    """Read and validate one session file; see `read_sessions` for the arguments.

    `require_equal_channels` (and the ignored `batch_size`) are accepted for symmetry with
    `read_sessions`; one session always agrees with itself.
    """
    path = Path(path)
    _check_file_layout(path)
    return _load_session(path, reconstruction=reconstruction, allow_noninteger=allow_noninteger)


def expand_paths(paths: PathLike | Sequence[PathLike]) -> list[Path]:
    """Files named by a path, a glob pattern, or a list of either (each pattern's matches in
    natural order, numbers compared as numbers: sess2.h5 before sess10.h5)."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise DataError("data: no session files given; expected a path, a glob pattern or a list")
    files: list[Path] = []
    for item in items:
        text = os.fspath(item)
        if not Path(text).exists() and glob.has_magic(text):
            matches = sorted(glob.glob(text), key=_natural_key)
            if not matches:
                raise DataError(f"{text}: no files match this pattern; expected at least one")
            files.extend(Path(m) for m in matches)
        else:
            files.append(Path(text))
    return files


def _natural_key(name: str) -> list[str | int]:
    """Sort key of a name with its runs of digits as numbers ('sess10' -> ['sess', 10, ''])."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _datasets(file: h5py.File) -> dict[str, h5py.Dataset]:
    """Every dataset in the file by its path (without the leading '/'), metadata only."""
    found: dict[str, h5py.Dataset] = {}

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            found[name] = obj

    file.visititems(visit)
    return found


def _open(path: Path) -> h5py.File:
    validate.check_readable(path)
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise validate.fail(
            path, None, f"cannot be opened ({err})", "a readable HDF5 file"
        ) from None


def _check_file_layout(path: Path) -> DataDims:
    with _open(path) as file:
        return validate.check_layout(path, _datasets(file))


def read_arrays(
    sources: Sequence[ArraySource],
    *,
    reconstruction: str = "poisson",
    allow_noninteger: bool = False,
    require_equal_channels: bool = False,
) -> list[SessionData]:
    """Validate arrays given in Python as `read_sessions` validates files, and hold them.

    Args:
        sources: one `ArraySource` per session: its arrays under a file's keys
            (`train_encod_data`, ...; docs/data-format.md), and the argument each came from.
        reconstruction, allow_noninteger, require_equal_channels: as for `read_sessions`.

    Returns:
        One `SessionData` per source; its arrays are float32 copies.

    Raises:
        DataError: naming the argument, what was found and what was expected.
    """
    dims = [validate.check_layout(src, src.arrays) for src in sources]
    validate.check_sessions_agree(sources, dims, require_equal_channels=require_equal_channels)
    return [
        _build_session(
            src,
            src.arrays,
            lambda array: np.array(array, dtype=np.float32),  # a copy: the truth is scaled in place
            reconstruction=reconstruction,
            allow_noninteger=allow_noninteger,
        )
        for src in sources
    ]


def _load_session(path: Path, *, reconstruction: str, allow_noninteger: bool) -> SessionData:
    """Load a file whose layout has passed `check_layout`, checking each array's values."""
    with _open(path) as file:
        return _build_session(
            path,
            _datasets(file),
            _read_float32,
            reconstruction=reconstruction,
            allow_noninteger=allow_noninteger,
        )


def _build_session(
    source: Path | ArraySource,
    datasets: Mapping[str, ArrayLike],
    read_float32: Callable[[ArrayLike], np.ndarray],
    *,
    reconstruction: str,
    allow_noninteger: bool,
) -> SessionData:
    """A session from datasets (h5py or numpy) whose layout has passed `check_layout`: each
    array the model reads is read as float32 by `read_float32` and its values are checked."""
    model_keys = set()

    def load(key: str) -> np.ndarray:
        model_keys.add(key)
        array = read_float32(datasets[key])
        validate.check_values(
            source, key, array, reconstruction=reconstruction, allow_noninteger=allow_noninteger
        )
        return array

    splits = [s for s in SPLITS if f"{s}_encod_data" in datasets]
    encod = {s: load(f"{s}_encod_data") for s in splits}
    recon = {s: load(f"{s}_recon_data") for s in target_splits(datasets)}
    ext_input = {s: load(f"{s}_ext_input") for s in splits if f"{s}_ext_input" in datasets}
    truth = {s: load(f"{s}_truth") for s in splits if f"{s}_truth" in datasets}
    inds = {s: np.asarray(datasets[f"{s}_inds"][()]) for s in splits if f"{s}_inds" in datasets}
    model_keys.update(f"{s}_inds" for s in inds)
    extra = {k: np.asarray(ds[()]) for k, ds in datasets.items() if k not in model_keys}
    _scale_truth(source, truth, extra)
    return SessionData(source, encod, recon, ext_input, truth, inds, extra)


def _read_float32(dataset: h5py.Dataset) -> np.ndarray:
    """Read a whole dataset as float32 in one pass (HDF5 converts the type while reading)."""
    out = np.empty(dataset.shape, dtype=np.float32)
    if out.size:
        dataset.read_direct(out)
    return out


def _scale_truth(
    path: Path | ArraySource, truth: dict[str, np.ndarray], extra: dict[str, np.ndarray]
) -> None:
    """Divide the truth by `conversion_factor` (truth in data units, e.g. counts per bin)."""
    if "conversion_factor" not in extra:
        return
    factor = float(np.asarray(extra["conversion_factor"]).reshape(()))
    validate.check_conversion_factor(path, factor)
    for array in truth.values():
        array /= np.float32(factor)  # in place: freshly read float32 arrays
