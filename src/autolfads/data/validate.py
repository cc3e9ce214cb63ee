"""Checks that a session file follows the layout of docs/data-format.md.

Two stages, so that a bad file is refused before its arrays are loaded:
`check_layout` works on shapes and dtypes alone (h5py dataset metadata, or arrays), and
`check_values` then inspects each loaded array once. Every failure is a `DataError` whose single
line names the file, the key, what was found and what was expected. Arrays given in Python
(`autolfads.fit`) take the same checks with an `ArraySource` in place of the file: the messages
then name the argument each array came from (`train`, `valid['recon_data']`, `train[1]`).

Shape legend: B trials, T bins, N channels, E external inputs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np

from autolfads.errors import DataError

SPLITS = ("train", "valid", "test")
# Splits that must have a reconstruction target: train fits, valid selects (PBT ranking, best
# epoch or worker, early stopping). Training and every selection read these two alone; a test
# target (`test_recon_data`, optional) is loaded and checked like them but only ever scored.
TARGET_SPLITS = ("train", "valid")
REQUIRED_KEYS = ("train_encod_data", "valid_encod_data", "train_recon_data", "valid_recon_data")
NONNEGATIVE_MODELS = ("poisson", "gamma", "zig")  # observation models defined on values >= 0
COUNT_MODELS = ("poisson",)  # observation models of integer counts

_LAYOUT = "(n_trials, n_timesteps, n_channels)"


class ArrayLike(Protocol):
    """Anything with a shape and a dtype: an h5py dataset (metadata only) or a numpy array."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...


@dataclass(frozen=True)
class DataDims:
    """Dimensions of one session read from its file.

    `ext_input_dim` is 0 when the file has no external inputs.
    """

    encod_data_dim: int
    encod_seq_len: int
    recon_data_dim: int
    recon_seq_len: int
    ext_input_dim: int

    def as_dict(self) -> dict[str, int]:
        """The five dimensions by name, as `autolfads.config.check_data_dims` expects them."""
        return {
            "encod_data_dim": self.encod_data_dim,
            "encod_seq_len": self.encod_seq_len,
            "recon_data_dim": self.recon_data_dim,
            "recon_seq_len": self.recon_seq_len,
            "ext_input_dim": self.ext_input_dim,
        }


class ArraySource:
    """One session's arrays given in Python instead of a file (`autolfads.fit`).

    It stands where a file's path stands (`SessionData.path`, the first argument of the checks
    here), so that arrays pass exactly the checks a file does and a refusal names the argument.

    Args:
        name: the session's name (`sess0`, ...), as a file's name is its stem.
        where: the arguments the session came from, for messages (e.g. `train/valid`).
        arrays: file key -> array as given (e.g. `valid_recon_data`); the output files copy them.
        labels: file key -> how the caller wrote it (e.g. `valid['recon_data']`, `train[1]`).
    """

    def __init__(
        self, name: str, where: str, arrays: Mapping[str, Any], labels: Mapping[str, str]
    ) -> None:
        self.name, self.where = name, where
        self.arrays, self.labels = dict(arrays), dict(labels)

    def __str__(self) -> str:
        return self.where

    def __repr__(self) -> str:
        return f"ArraySource({self.name!r}, {self.where!r}, keys={sorted(self.arrays)})"

    def label(self, key: str) -> str:
        """How the caller wrote the array of file key `key`."""
        return self.labels.get(key, f"{self.where} '{key}'")


Source = str | os.PathLike | ArraySource  # a session file, or arrays given in Python


def name_of(path: Source, key: str) -> str:
    """`key` as a message names it: `'train_recon_data'` in a file, the argument for arrays."""
    return path.label(key) if isinstance(path, ArraySource) else f"'{key}'"


def fail(path: Source, key: str | None, found: str, expected: str) -> DataError:
    """A one-line `DataError`: `<file>: '<key>' <found>; expected <expected>` (for arrays,
    `<argument>: <found>; expected <expected>`)."""
    if isinstance(path, ArraySource):
        where = f"{path.label(key)}:" if key else f"{path}:"
    else:
        where = f"{path}: '{key}'" if key else f"{path}:"
    return DataError(f"{where} {found}; expected {expected}")


# --------------------------------------------------------------------------- file


def check_readable(path: Path) -> None:
    """Raise `DataError` unless `path` is an existing HDF5 file."""
    if not path.exists():
        raise fail(path, None, "no such file", "an HDF5 session file")
    if not path.is_file():
        raise fail(path, None, "is not a regular file", "an HDF5 session file")
    if not h5py.is_hdf5(path):
        raise fail(
            path,
            None,
            "is not an HDF5 file",
            "an HDF5 session file (.h5) as docs/data-format.md describes",
        )


# --------------------------------------------------------------------------- layout


def check_layout(path: Source, arrays: Mapping[str, ArrayLike]) -> DataDims:
    """Check keys, dtypes and shapes of one session and return its dimensions.

    Any number of train trials is enough: a train split smaller than a batch is one batch.

    Args:
        path: the file (or `ArraySource`), named in error messages.
        arrays: every dataset of the file by key; only `.shape` and `.dtype` are used.

    Raises:
        DataError: the first violation found.
    """
    _check_required(path, arrays)
    splits = [s for s in SPLITS if f"{s}_encod_data" in arrays]
    _check_orphans(path, arrays, splits)
    for key in _model_keys(arrays, splits):
        _check_3d(path, key, arrays[key])
    enc = {s: arrays[f"{s}_encod_data"].shape for s in splits}
    rec = {s: arrays[f"{s}_recon_data"].shape for s in target_splits(arrays)}
    _check_nonempty(path, enc, "encod_data")
    _check_nonempty(path, rec, "recon_data")
    _check_splits_agree(path, enc, "encod_data", axes=(1, 2))
    for split in rec:  # a target short of its own data first: the clearer message
        _check_recon_vs_encod(path, split, enc[split], rec[split])
    _check_splits_agree(path, rec, "recon_data", axes=(1, 2))
    t_rec, n_rec = rec["train"][1], rec["train"][2]
    ext_dim = _check_ext_input(path, arrays, splits, enc, t_rec)
    _check_truth(path, arrays, splits, enc, t_rec, n_rec)
    _check_inds(path, arrays, splits, enc)
    _check_conversion_factor_shape(path, arrays)
    return DataDims(
        encod_data_dim=enc["train"][2],
        encod_seq_len=enc["train"][1],
        recon_data_dim=n_rec,
        recon_seq_len=t_rec,
        ext_input_dim=ext_dim,
    )


def target_splits(arrays: Mapping[str, object]) -> list[str]:
    """Splits whose reconstruction target the file holds: train, valid and, with
    `test_recon_data`, test (in that order)."""
    return [s for s in SPLITS if s in TARGET_SPLITS or f"{s}_recon_data" in arrays]


def check_inputs(
    path: Source, arrays: Mapping[str, ArrayLike], split: str
) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """Check the layout of trials given without a target, as a model's input (`{split}_encod_data`
    and, if present, `{split}_ext_input`), as `check_layout` checks a file's test split.

    Returns:
        The shapes (B, T_enc, N_enc) and (B, T_rec, E), the latter None without external inputs;
        the caller compares them with the model's dimensions.
    """
    key, ext_key = f"{split}_encod_data", f"{split}_ext_input"
    _check_3d(path, key, arrays[key])
    enc = tuple(arrays[key].shape)
    _check_nonempty(path, {split: enc}, "encod_data")
    if ext_key not in arrays:
        return enc, None
    _check_3d(path, ext_key, arrays[ext_key])
    ext = tuple(arrays[ext_key].shape)
    if ext[0] != enc[0]:
        raise fail(path, ext_key, f"has {ext[0]} trials", f"{enc[0]} as in {name_of(path, key)}")
    if ext[2] == 0:
        raise fail(path, ext_key, "has 0 channels", "at least one (omit it for no inputs)")
    return enc, ext


def _model_keys(arrays: Mapping[str, ArrayLike], splits: Sequence[str]) -> list[str]:
    """Keys of the 3-D arrays the model reads (data, targets, inputs, truth)."""
    keys = [f"{s}_encod_data" for s in splits] + [f"{s}_recon_data" for s in target_splits(arrays)]
    keys += [f"{s}_{kind}" for s in splits for kind in ("ext_input", "truth")]
    return [k for k in keys if k in arrays]


def _check_required(path, arrays: Mapping[str, ArrayLike]) -> None:
    for key in REQUIRED_KEYS:
        if key not in arrays:
            present = ", ".join(sorted(arrays)[:12]) or "none"
            raise fail(path, key, f"is missing (datasets found: {present})", "a dataset")


def _check_orphans(path, arrays: Mapping[str, ArrayLike], splits: Sequence[str]) -> None:
    """Test-split companions (recon_data, ext_input, truth, inds) need test_encod_data."""
    if "test" in splits:
        return
    for kind in ("recon_data", "ext_input", "truth", "inds"):
        if f"test_{kind}" in arrays:
            raise fail(
                path,
                f"test_{kind}",
                f"is present without {name_of(path, 'test_encod_data')}",
                "both or neither",
            )


def _check_3d(path, key: str, array: ArrayLike) -> None:
    if array.dtype.kind not in "iuf":
        raise fail(path, key, f"has dtype {array.dtype}", "a numeric (integer or float) array")
    if len(array.shape) != 3:
        raise fail(path, key, f"has shape {tuple(array.shape)}", f"a 3-D array {_LAYOUT}")


def _check_nonempty(path, shapes: Mapping[str, tuple[int, ...]], kind: str) -> None:
    for split, (n, t, c) in shapes.items():
        key = f"{split}_{kind}"
        if n == 0:
            hint = " (remove the key if there are no test trials)" if split == "test" else ""
            raise fail(path, key, f"has 0 trials, shape {(n, t, c)}", f"at least one trial{hint}")
        if t == 0:
            raise fail(path, key, f"has 0 time steps, shape {(n, t, c)}", "at least one time step")
        if c == 0:
            raise fail(path, key, f"has 0 channels, shape {(n, t, c)}", "at least one channel")


def _check_splits_agree(path, shapes, kind: str, axes: Sequence[int]) -> None:
    """Every split must share the train split's time steps (axis 1) and channels (axis 2)."""
    names = {1: "time steps", 2: "channels"}
    ref = shapes["train"]
    for split, shape in shapes.items():
        for axis in axes:
            if shape[axis] != ref[axis]:
                raise fail(
                    path,
                    f"{split}_{kind}",
                    f"has {shape[axis]} {names[axis]}, shape {shape}",
                    f"{ref[axis]} {names[axis]} as in {name_of(path, f'train_{kind}')} {ref}",
                )


def _check_recon_vs_encod(path, split: str, enc: tuple[int, ...], rec: tuple[int, ...]) -> None:
    key, encod = f"{split}_recon_data", name_of(path, f"{split}_encod_data")
    if rec[0] != enc[0]:
        raise fail(path, key, f"has {rec[0]} trials", f"{enc[0]} trials as in {encod}")
    if rec[1] < enc[1]:
        raise fail(
            path,
            key,
            f"has {rec[1]} time steps, fewer than {encod} ({enc[1]})",
            "at least as many (extra steps are forward prediction)",
        )
    if rec[2] < enc[2]:
        raise fail(
            path,
            key,
            f"has {rec[2]} channels, fewer than {encod} ({enc[2]})",
            "at least as many (extra channels are held-out neurons)",
        )


def _check_ext_input(path, arrays, splits: Sequence[str], enc, t_rec: int) -> int:
    """External inputs: in every split or none, (B, T_rec, E) with one E. Returns E (0 if none)."""
    present = [s for s in splits if f"{s}_ext_input" in arrays]
    if not present:
        return 0
    missing = [s for s in splits if s not in present]
    if missing:
        raise fail(
            path,
            f"{missing[0]}_ext_input",
            f"is missing while {name_of(path, f'{present[0]}_ext_input')} is present",
            "external inputs for every split or for none",
        )
    ext_dim = arrays[f"{present[0]}_ext_input"].shape[2]
    first = name_of(path, f"{present[0]}_ext_input")
    for split in present:
        key = f"{split}_ext_input"
        n, t, e = arrays[key].shape
        if n != enc[split][0]:
            encod = name_of(path, f"{split}_encod_data")
            raise fail(path, key, f"has {n} trials", f"{enc[split][0]} as in {encod}")
        if t != t_rec:
            raise fail(path, key, f"has {t} time steps", f"recon_seq_len = {t_rec}")
        if e == 0:
            raise fail(path, key, "has 0 channels", "at least one (omit the key for no inputs)")
        if e != ext_dim:
            raise fail(path, key, f"has {e} channels", f"{ext_dim} as in {first}")
    return ext_dim


def _check_truth(path, arrays, splits: Sequence[str], enc, t_rec: int, n_rec: int) -> None:
    """Ground truth has the shape of that split's reconstruction target (B, T_rec, N_rec)."""
    for split in splits:
        key = f"{split}_truth"
        if key not in arrays:
            continue
        expected = (enc[split][0], t_rec, n_rec)
        found = tuple(arrays[key].shape)
        if found != expected:
            raise fail(path, key, f"has shape {found}", f"{expected}, the shape of the recon data")


def _check_inds(path, arrays, splits: Sequence[str], enc) -> None:
    for split in splits:
        key = f"{split}_inds"
        if key not in arrays:
            continue
        shape, dtype = tuple(arrays[key].shape), arrays[key].dtype
        if dtype.kind not in "iu":
            raise fail(path, key, f"has dtype {dtype}", "integer trial indices")
        if shape != (enc[split][0],):
            raise fail(path, key, f"has shape {shape}", f"({enc[split][0]},), one index per trial")


def _check_conversion_factor_shape(path, arrays) -> None:
    if "conversion_factor" not in arrays:
        return
    array = arrays["conversion_factor"]
    if array.dtype.kind not in "iuf" or int(np.prod(array.shape)) != 1:
        raise fail(
            path,
            "conversion_factor",
            f"has shape {tuple(array.shape)} and dtype {array.dtype}",
            "one number",
        )


# --------------------------------------------------------------------------- values


def check_values(
    path: Source,
    key: str,
    array: np.ndarray,
    *,
    reconstruction: str = "poisson",
    allow_noninteger: bool = False,
) -> None:
    """Check the values of one loaded array of the model (data, target, input or truth).

    Inf is never allowed. NaN ("not observed") is allowed only in `*_encod_data`/`*_recon_data`,
    and not everywhere in one of them (a split with nothing observed). For those two, the
    observation model adds: >= 0 for poisson/gamma/zig, and integer counts for poisson unless
    `allow_noninteger`.

    Raises:
        DataError: naming the first offending element.
    """
    is_data = key.endswith("_encod_data") or key.endswith("_recon_data")
    _check_no(path, key, array, np.isinf(array), "inf", "finite values")
    if not is_data:
        _check_no(path, key, array, np.isnan(array), "NaN", "no NaN (NaN is allowed in data only)")
        return
    if array.size and np.isnan(array).all():
        raise fail(
            path,
            key,
            f"is NaN everywhere (nothing observed in shape {tuple(array.shape)})",
            "at least one observed (non-NaN) value; NaN marks unobserved entries",
        )
    model = str(reconstruction).lower()
    with np.errstate(invalid="ignore"):
        if model in NONNEGATIVE_MODELS:
            expected = f"values >= 0 for reconstruction={model!r}"
            _check_no(path, key, array, array < 0, "a negative value", expected)
        if model in COUNT_MODELS and not allow_noninteger and array.dtype.kind == "f":
            fractional = (array != np.rint(array)) & ~np.isnan(array)
            expected = (
                f"integer counts for reconstruction={model!r} "
                "(set model.allow_noninteger=true to accept them)"
            )
            _check_no(path, key, array, fractional, "a non-integer value", expected)


def _check_no(path, key: str, array: np.ndarray, bad: np.ndarray, what: str, expected: str) -> None:
    """Raise naming the first element where `bad` is True, with its index and value."""
    first = int(np.argmax(bad)) if bad.size else 0
    if bad.size and bad.flat[first]:
        index = tuple(int(i) for i in np.unravel_index(first, array.shape))
        count = int(np.count_nonzero(bad))
        value = f"{array.flat[first].item():.6g}"
        where = f"{value} at index {index}; {count} element{'s' if count > 1 else ''} in all"
        raise fail(path, key, f"has {what} ({where})", expected)


def check_conversion_factor(path: Source, value: float) -> None:
    """The conversion factor divides the truth, so it must be finite and non-zero."""
    if not np.isfinite(value) or value == 0:
        raise fail(path, "conversion_factor", f"is {value!r}", "a finite, non-zero number")


# --------------------------------------------------------------------------- sessions


def check_sessions_agree(
    paths: Sequence[Source],
    dims: Sequence[DataDims],
    *,
    require_equal_channels: bool = False,
) -> None:
    """Sessions are stitched into one model: they share sequence lengths and external inputs.

    Channel counts may differ between sessions (each has its own read-in/read-out) unless
    `require_equal_channels`.

    Raises:
        DataError: naming both files, the dimension and both values.
    """
    shared = ["encod_seq_len", "recon_seq_len", "ext_input_dim"]
    if require_equal_channels:
        shared += ["encod_data_dim", "recon_data_dim"]
    ref_path, ref = paths[0], dims[0].as_dict()
    for path, other in zip(paths[1:], dims[1:], strict=True):
        values = other.as_dict()
        for name in shared:
            if values[name] != ref[name]:
                raise DataError(
                    f"{path}: {name}={values[name]} differs from {ref_path} ({name}={ref[name]}); "
                    f"expected every session to have the same {name}"
                )
