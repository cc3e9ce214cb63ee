"""Import a Neural Latents Benchmark (NLB) NWB file into a session file of docs/data-format.md.

NWB files are HDF5, so this reads them with h5py alone (neither pynwb nor nlb_tools is needed).
It assumes the NWB 2.x layout of the NLB DANDI files (Pei et al. 2021):

- `/units/spike_times` (all units' spike times in seconds, concatenated) and
  `/units/spike_times_index` (the end offset of each unit's spikes in it: unit i owns
  `spike_times[index[i-1]:index[i]]`); optional `/units/heldout` (one flag per unit; present in
  the `*_train.nwb` files, where True marks the benchmark's held-out neurons).
- `/intervals/trials/` with one entry per trial in `start_time`, `stop_time` (seconds), `split`
  (strings 'train', 'val', 'test' or 'none'), and alignment fields such as `move_onset_time`.
- behaviour as NWB TimeSeries anywhere under `/processing` (e.g. `/processing/behavior/hand_vel`):
  a group holding `data` (S,) or (S, D) and either `timestamps` (S,) or `starting_time` with a
  `rate` attribute (Hz). The `conversion` and `offset` attributes of `data` are applied.

What is written (Shape legend: B trials, T bins, N channels, D behaviour dimensions):

- Trials: split 'train' -> `train`, 'val' -> `valid`, 'test' -> `test`; other labels and trials
  whose alignment time is NaN are left out. `train` and `valid` trials are required; 'test'
  trials get `test_encod_data` only (no targets). `{split}_inds` are row indices of the NWB
  trials table.
- Window: each trial's bins start at `align + window_ms[0]` and end at `align + window_ms[1]`
  (`align` = the trial's `align_field`), in `bin_ms` bins; a spike at time t falls in the bin
  `[edge_k, edge_k+1)` (times are compared after rounding to 1 ns). The window may reach outside
  the trial's start/stop times: spikes are binned from the continuous recording.
- `{split}_encod_data` (B, T, N_in): held-in units (those not flagged held-out), in table order.
- `{split}_recon_data` (B, T + T_fp, N_in + N_out): the held-in units, then the held-out units
  appended last; with `fp_ms > 0` the `T_fp = fp_ms / bin_ms` bins after the window follow
  (forward prediction), while encod data stays at the window.
- `{split}_behavior` (B, T, D) with `behavior_key`: the mean of the samples in each bin (NaN
  samples ignored); a bin with no sample (a slow signal) gets the value linearly interpolated
  at its centre. Several keys are concatenated along D.
- With `condition_field`: `{split}_condition` (B,) integer ids (0..C-1, in sorted order of the
  field's values; with several fields, of their combinations) and `psth` (C, T + T_fp,
  N_in + N_out), each condition's mean counts per bin over its train and valid trials, in the
  recon channel order.
- `recon_unit_ids` (N_in + N_out,): the NWB row index of each recon channel (held-in first);
  `recon_unit_heldout` (N_in + N_out,) bool: True for the held-out channels.
- With `test_nwb` (the NLB `*_test.nwb` file: test trials, held-in units only): its 'test'
  trials, binned in the same window, become `test_encod_data` (B_test, T, N_in) and `test_inds`
  (row indices of that file's trials table); no behaviour or condition for them.
- File attributes: `source`, `bin_ms`, `align_field`, `window_ms`, `fp_ms`, `fp_steps`,
  `dropped_trials`, `eval_split` ('test' when the file has test trials, else 'valid': the
  trials an NLB submission scores), `test_source` (with `test_nwb`) and `nlb_dataset` (with
  `dataset`, one of `NLB_DATASETS`).

The layout is checked with `autolfads.data.validate.check_layout` before anything is written; the
file is written under a temporary name and renamed when complete.

`NLB_DATASETS` holds each NLB'21 dataset's alignment, window and forward-prediction length, as
the benchmark's own tools make its tensors (`PARAMS` in nlb_tools/make_tensors.py,
https://github.com/neurallatents/nlb_tools; Pei et al. 2021, arXiv 2109.04463).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from autolfads._atomic import atomic_path
from autolfads.data import validate
from autolfads.errors import DataError

__all__ = [
    "NLB_DATASETS",
    "NLBWindow",
    "NWBImport",
    "bin_spikes",
    "nwb_to_session",
    "read_behavior",
    "read_trials",
    "read_units",
    "resample_behavior",
]

SPLIT_NAMES = {"train": "train", "val": "valid", "test": "test"}  # NLB label -> our split
TIME_DECIMALS = 9  # spike times and bin edges are compared after rounding to 1 ns

PathLike = str | os.PathLike


@dataclass(frozen=True)
class NLBWindow:
    """How NLB cuts one dataset's trials: the alignment column, the window around it (ms) and the
    forward-prediction time after the window (ms) that the evaluation scores."""

    align_field: str
    window_ms: tuple[float, float]
    fp_ms: float = 200.0


_MAZE = NLBWindow("move_onset_time", (-250.0, 450.0))
#: The NLB'21 datasets (the submission's group names, before the `_20` suffix of 20 ms bins).
NLB_DATASETS: dict[str, NLBWindow] = {
    "mc_maze": _MAZE,
    "mc_rtt": NLBWindow("start_time", (0.0, 600.0)),
    "area2_bump": NLBWindow("move_onset_time", (-100.0, 500.0)),
    "dmfc_rsg": NLBWindow("go_time", (-1500.0, 0.0)),
    "mc_maze_large": _MAZE,
    "mc_maze_medium": _MAZE,
    "mc_maze_small": _MAZE,
}


@dataclass(frozen=True)
class NWBImport:
    """What `nwb_to_session` wrote.

    Attributes:
        path: the session file.
        trials: split -> number of trials written.
        heldin_units, heldout_units: NWB row indices of the held-in and held-out units.
        encod_seq_len, fp_steps: bins of the window, and forward-prediction bins after it.
        dropped_trials: train/val/test trials left out for a NaN alignment time.
        behavior_keys: the behaviour TimeSeries written to `{split}_behavior`.
        dataset: the NLB dataset name recorded (`nlb_dataset`), or None.
        eval_split: 'test' when the file has test trials, else 'valid'.
    """

    path: Path
    trials: dict[str, int]
    heldin_units: tuple[int, ...]
    heldout_units: tuple[int, ...]
    encod_seq_len: int
    fp_steps: int
    dropped_trials: int = 0
    behavior_keys: tuple[str, ...] = field(default_factory=tuple)
    dataset: str | None = None
    eval_split: str = "valid"


def nwb_to_session(
    nwb_path: PathLike,
    out_h5: PathLike,
    *,
    bin_ms: float = 5.0,
    align_field: str | None = None,
    window_ms: tuple[float, float] | None = None,
    fp_ms: float | None = None,
    behavior_key: str | Sequence[str] | None = None,
    condition_field: str | Sequence[str] | None = None,
    heldout_units: Sequence[int] | None = None,
    dataset: str | None = None,
    test_nwb: PathLike | None = None,
) -> NWBImport:
    """Bin an NLB NWB file's spikes into trials and write them as a session file.

    Args:
        nwb_path: the NWB file (for NLB, the `*_train.nwb` file: it has the train and val trials
            and the held-out units).
        out_h5: the session file to write (replaced if it exists).
        bin_ms: bin width in ms (NLB: 5; 20 suits AutoLFADS on a CPU).
        align_field: trials-table column giving each trial's alignment time (s), e.g.
            'move_onset_time'. None: the dataset's (`NLB_DATASETS`), else 'start_time'.
        window_ms: (start, end) of the window in ms relative to the alignment time, e.g. (-250, 450)
            as NLB's MC_Maze; a whole number of bins long. None: the dataset's, else from 0 to the
            shortest trial's `stop_time - align`, cut to whole bins.
        fp_ms: forward-prediction time after the window, a whole number of bins. None: the
            dataset's (NLB: 200 ms), else 0.
        behavior_key: name(s) or path(s) of behaviour TimeSeries, e.g. 'hand_vel'.
        condition_field: trials-table column(s) whose values label conditions (adds `psth`);
            with several, each distinct combination is a condition (e.g. MC_Maze's
            'trial_type' and 'trial_version').
        heldout_units: NWB row indices of the units to hold out; None uses `/units/heldout`
            (no held-out units if the column is absent).
        dataset: the NLB dataset the file is (one of `NLB_DATASETS`), recorded as `nlb_dataset`
            for `autolfads nlb-submission`; it supplies the defaults above.
        test_nwb: the NLB `*_test.nwb` file whose 'test' trials become `test_encod_data`; its
            units must be `nwb_path`'s held-in units, in the same order.

    Returns:
        An `NWBImport` summary.

    Raises:
        DataError: the NWB file lacks a group or key, or its values do not fit (naming both).
    """
    nwb_path, out_h5 = Path(nwb_path), Path(out_h5)
    bin_s = _positive(bin_ms, "bin_ms") / 1000.0
    nlb = _nlb_window(dataset)
    align_field = align_field or (nlb.align_field if nlb else "start_time")
    window_ms = window_ms if window_ms is not None or nlb is None else nlb.window_ms
    fp_ms = float(fp_ms if fp_ms is not None else (nlb.fp_ms if nlb else 0.0))
    keys, conditions = _as_list(behavior_key), _as_list(condition_field)
    with _open_nwb(nwb_path) as nwb:
        spikes, heldout_flags = read_units(nwb, nwb_path)
        trials = read_trials(nwb, nwb_path, [align_field, *conditions])
        signals = [read_behavior(nwb, nwb_path, key) for key in keys]  # (times, values) each
    _check_align(trials, align_field, nwb_path)
    heldout_mask = _heldout_mask(heldout_flags, heldout_units, len(spikes), nwb_path)
    keep, splits = _usable_trials(trials, align_field)
    _require_train_and_valid(splits, nwb_path)
    window = _window_s(window_ms, trials, align_field, keep, bin_ms, nwb_path)
    n_bins = _whole_bins(window[1] - window[0], bin_s, "window_ms")
    fp_steps = _whole_bins(fp_ms / 1000.0, bin_s, "fp_ms", allow_zero=True)
    starts = trials[align_field][keep] + window[0]  # (B,) first bin edge of each trial
    counts = bin_spikes(spikes, starts, n_bins + fp_steps, bin_s)  # (B, T + T_fp, N)
    behavior = [resample_behavior(t, v, starts, n_bins, bin_s) for t, v in signals]  # (B, T, D)
    heldin, heldout = np.flatnonzero(~heldout_mask), np.flatnonzero(heldout_mask)
    rows = np.flatnonzero(keep)
    arrays = _session_arrays(counts, splits, rows, heldin, heldout, n_bins, behavior)
    arrays["recon_unit_heldout"] = np.concatenate(
        [np.zeros(heldin.size, bool), np.ones(heldout.size, bool)]
    )
    if conditions:
        arrays.update(_condition_arrays([trials[c][keep] for c in conditions], splits, arrays))
    dropped = _nan_aligned(trials, align_field)
    attrs: dict[str, object] = {}
    if test_nwb is not None:
        test = _test_trials(
            Path(test_nwb), nwb_path, splits, heldin.size, align_field, window[0], n_bins, bin_s
        )
        arrays.update(test.arrays)
        dropped += test.dropped
        attrs["test_source"] = str(test_nwb)
    validate.check_layout(out_h5, arrays)  # nothing is written unless the session is valid
    eval_split = "test" if "test_encod_data" in arrays else "valid"
    attrs.update(
        {
            "source": str(nwb_path),
            "bin_ms": float(bin_ms),
            "align_field": align_field,
            "window_ms": np.asarray(window) * 1000.0,
            "fp_ms": fp_ms,
            "fp_steps": fp_steps,
            "dropped_trials": dropped,
            "eval_split": eval_split,
        }
    )
    if dataset is not None:
        attrs["nlb_dataset"] = dataset
    _write(out_h5, arrays, attrs)
    return NWBImport(
        path=out_h5,
        trials=_trial_counts(arrays),
        heldin_units=tuple(int(i) for i in heldin),
        heldout_units=tuple(int(i) for i in heldout),
        encod_seq_len=n_bins,
        fp_steps=fp_steps,
        dropped_trials=dropped,
        behavior_keys=tuple(keys),
        dataset=dataset,
        eval_split=eval_split,
    )


@dataclass(frozen=True)
class _TestTrials:
    arrays: dict[str, np.ndarray]
    dropped: int


def _test_trials(
    path: Path,
    main_path: Path,
    main_splits: np.ndarray,
    n_heldin: int,
    align_field: str,
    window_start_s: float,
    n_bins: int,
    bin_s: float,
) -> _TestTrials:
    """`test_encod_data` (B_test, T, N_in) and `test_inds` from an NLB `*_test.nwb` file."""
    with _open_nwb(path) as nwb:
        spikes, flags = read_units(nwb, path)
        trials = read_trials(nwb, path, [align_field])
    _check_align(trials, align_field, path)
    if np.any(main_splits == "test"):
        raise validate.fail(
            main_path,
            "/intervals/trials/split",
            f"labels {np.count_nonzero(main_splits == 'test')} trials 'test'",
            f"none when the test trials come from {path}",
        )
    if flags is not None:
        spikes = [s for s, held_out in zip(spikes, flags, strict=True) if not held_out]
    if len(spikes) != n_heldin:
        raise validate.fail(
            path,
            "/units",
            f"has {len(spikes)} held-in units",
            f"{n_heldin}, the held-in units of {main_path} in the same order",
        )
    keep, _ = _usable_trials(trials, align_field)
    test = keep & (trials["split"] == "test")
    if not test.any():
        raise validate.fail(
            path,
            "/intervals/trials/split",
            "labels no trial 'test' with an alignment time",
            "the test trials of an NLB *_test.nwb file",
        )
    starts = trials[align_field][test] + window_start_s
    counts = bin_spikes(spikes, starts, n_bins, bin_s)  # (B_test, T, N_in)
    arrays = {
        "test_encod_data": counts.astype(np.float32),
        "test_inds": np.flatnonzero(test).astype(np.int64),
    }
    dropped = int(np.count_nonzero((trials["split"] == "test") & ~test))
    return _TestTrials(arrays, dropped)


def _nlb_window(dataset: str | None) -> NLBWindow | None:
    if dataset is None:
        return None
    if dataset not in NLB_DATASETS:
        raise DataError(f"dataset: got {dataset!r}; expected one of {', '.join(NLB_DATASETS)}")
    return NLB_DATASETS[dataset]


def _nan_aligned(trials: Mapping[str, np.ndarray], align_field: str) -> int:
    """Train/val/test trials left out because their alignment time is NaN."""
    align = np.asarray(trials[align_field], dtype=np.float64)
    return int(np.count_nonzero(np.isin(trials["split"], list(SPLIT_NAMES)) & ~np.isfinite(align)))


# --------------------------------------------------------------------------- reading NWB


def read_units(nwb: h5py.File, path: PathLike) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Each unit's sorted spike times (s) from the ragged units table, and its held-out flags.

    Returns:
        A list of N 1-D arrays, and (N,) bool flags from `/units/heldout` (None if absent).
    """
    times = _dataset(nwb, path, "units/spike_times", "the units table's spike times (s)")[()]
    ends = _dataset(nwb, path, "units/spike_times_index", "the end of each unit's spike times")
    index = np.asarray(ends[()], dtype=np.int64)
    if (
        index.ndim != 1
        or np.any(np.diff(index) < 0)
        or (index.size and (index[0] < 0 or index[-1] > times.size))
    ):
        raise validate.fail(
            path,
            "/units/spike_times_index",
            f"holds {index[:5]}... (shape {index.shape})",
            f"non-decreasing end offsets within 0..{times.size} (the length of spike_times)",
        )
    bounds = np.concatenate([[0], index])
    spikes = [
        np.sort(np.asarray(times[a:b], dtype=np.float64))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    flags = None
    if "units/heldout" in nwb:
        flags = np.asarray(nwb["units/heldout"][()]).astype(bool).reshape(-1)
        if flags.size != len(spikes):
            raise validate.fail(
                path, "/units/heldout", f"has {flags.size} entries", f"{len(spikes)}, one per unit"
            )
    return spikes, flags


def read_trials(nwb: h5py.File, path: PathLike, fields: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns of `/intervals/trials`: start_time, stop_time, split (as str) and `fields`."""
    group = "intervals/trials"
    if group not in nwb:
        raise validate.fail(
            path, f"/{group}", "is missing", "the NWB trials table (start_time, stop_time, split)"
        )
    columns = {}
    for name in dict.fromkeys(["start_time", "stop_time", "split", *fields]):
        ds = _dataset(nwb, path, f"{group}/{name}", "a column of the trials table")
        columns[name] = _column_values(ds)
    n = columns["start_time"].shape[0]
    for name, values in columns.items():
        if values.shape[0] != n:
            raise validate.fail(
                path,
                f"/{group}/{name}",
                f"has {values.shape[0]} rows",
                f"{n}, one per trial as start_time",
            )
    return columns


def read_behavior(nwb: h5py.File, path: PathLike, key: str) -> tuple[np.ndarray, np.ndarray]:
    """A behaviour TimeSeries: sample times (S,) in s and values (S, D).

    `key` is a path inside the file (e.g. 'processing/behavior/hand_vel') or the name of a group
    found anywhere under `/processing` (e.g. 'hand_vel').
    """
    group = _find_timeseries(nwb, path, key)
    data_ds = _dataset(nwb, path, f"{group}/data", "the TimeSeries values")
    scale, offset = (float(data_ds.attrs.get(a, d)) for a, d in (("conversion", 1), ("offset", 0)))
    data = np.asarray(data_ds[()], dtype=np.float64) * scale + offset
    data = data.reshape(data.shape[0], -1)  # (S, D)
    if f"{group}/timestamps" in nwb:
        times = np.asarray(nwb[f"{group}/timestamps"][()], dtype=np.float64)
    elif f"{group}/starting_time" in nwb and "rate" in nwb[f"{group}/starting_time"].attrs:
        start = nwb[f"{group}/starting_time"]
        times = float(start[()]) + np.arange(data.shape[0]) / float(start.attrs["rate"])
    else:
        raise validate.fail(
            path,
            f"/{group}",
            "has neither 'timestamps' nor 'starting_time' with a 'rate' attribute",
            "sample times of the TimeSeries",
        )
    if times.shape != (data.shape[0],):
        raise validate.fail(
            path,
            f"/{group}/timestamps",
            f"has shape {times.shape}",
            f"({data.shape[0]},), one per sample of data",
        )
    order = np.argsort(times, kind="stable")
    return times[order], data[order]


# --------------------------------------------------------------------------- binning


def bin_spikes(
    spikes: Sequence[np.ndarray], starts: np.ndarray, n_bins: int, bin_s: float
) -> np.ndarray:
    """Spike counts per bin of each trial: (B, T, N).

    Trial b's bin k is `[starts[b] + k * bin_s, starts[b] + (k + 1) * bin_s)`.

    Args:
        spikes: N sorted arrays of spike times (s).
        starts: (B,) first bin edge of each trial (s).
        n_bins: bins T per trial.
        bin_s: bin width (s).
    """
    edges = _bin_edges(starts, n_bins, bin_s)  # (B, T+1)
    counts = np.empty((len(starts), n_bins, len(spikes)), dtype=np.int64)
    for n, times in enumerate(spikes):
        position = np.searchsorted(np.round(times, TIME_DECIMALS), edges, side="left")  # (B, T+1)
        counts[:, :, n] = np.diff(position, axis=1)
    return counts


def resample_behavior(
    times: np.ndarray, data: np.ndarray, starts: np.ndarray, n_bins: int, bin_s: float
) -> np.ndarray:
    """A behaviour signal on the trials' bins: (B, T, D).

    Each bin gets the mean of its finite samples; a bin with none gets the value linearly
    interpolated at its centre (NaN outside the recording).

    Args:
        times: (S,) sorted sample times (s).
        data: (S, D) values.
        starts, n_bins, bin_s: the bins, as in `bin_spikes`.
    """
    edges = _bin_edges(starts, n_bins, bin_s)  # (B, T+1)
    position = np.searchsorted(np.round(times, TIME_DECIMALS), edges, side="left")
    finite = np.isfinite(data)
    sums = np.concatenate(
        [np.zeros((1, data.shape[1])), np.cumsum(np.where(finite, data, 0.0), axis=0)]
    )
    numbers = np.concatenate([np.zeros((1, data.shape[1])), np.cumsum(finite, axis=0)])
    first, last = position[:, :-1], position[:, 1:]  # (B, T): samples [first, last) in each bin
    total = sums[last] - sums[first]  # (B, T, D)
    count = numbers[last] - numbers[first]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    centres = (edges[:, :-1] + edges[:, 1:]) / 2  # (B, T)
    for d in range(data.shape[1]):
        empty = count[:, :, d] == 0
        if empty.any():
            ok = finite[:, d]
            mean[:, :, d][empty] = (
                np.interp(centres[empty], times[ok], data[ok, d], left=np.nan, right=np.nan)
                if ok.any()
                else np.nan
            )
    return mean


def _bin_edges(starts: np.ndarray, n_bins: int, bin_s: float) -> np.ndarray:
    """(B, T+1) bin edges, rounded to 1 ns so that a spike on an edge falls in the later bin."""
    return np.round(
        np.asarray(starts, dtype=np.float64)[:, None] + bin_s * np.arange(n_bins + 1), TIME_DECIMALS
    )


# --------------------------------------------------------------------------- assembling


def _session_arrays(
    counts: np.ndarray,
    splits: np.ndarray,
    rows: np.ndarray,
    heldin: np.ndarray,
    heldout: np.ndarray,
    n_bins: int,
    behavior: list[np.ndarray],
) -> dict[str, np.ndarray]:
    """The section 1 datasets from counts (B, T + T_fp, N) of the kept trials."""
    recon_order = np.concatenate([heldin, heldout])
    arrays: dict[str, np.ndarray] = {"recon_unit_ids": recon_order.astype(np.int64)}
    for label, split in SPLIT_NAMES.items():
        mask = splits == label
        if not mask.any():
            continue
        arrays[f"{split}_encod_data"] = counts[mask][:, :n_bins][:, :, heldin].astype(np.float32)
        if split != "test":
            arrays[f"{split}_recon_data"] = counts[mask][:, :, recon_order].astype(np.float32)
        arrays[f"{split}_inds"] = rows[mask].astype(np.int64)
        if behavior:
            arrays[f"{split}_behavior"] = np.concatenate(
                [b[mask] for b in behavior], axis=2
            ).astype(np.float32)
    return arrays


def _condition_arrays(
    columns: Sequence[np.ndarray], splits: np.ndarray, arrays: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """`{split}_condition` ids and the per-condition mean counts `psth` (C, T_rec, N_rec).

    Conditions are the distinct combinations of the columns' values, numbered in sorted order
    (of the first column, then the second...). The PSTH averages the train and valid trials; a
    condition seen only in test trials gets NaN.
    """
    ranks = np.stack(
        [np.unique(c, return_inverse=True)[1].reshape(-1) for c in columns], axis=1
    )  # (B, F): each column's values numbered in sorted order
    labels, ids = np.unique(ranks, axis=0, return_inverse=True)  # labels: (C, F)
    ids, n_conditions = ids.reshape(-1), labels.shape[0]
    out = {
        f"{split}_condition": ids[splits == label].astype(np.int64)
        for label, split in SPLIT_NAMES.items()
        if np.any(splits == label)
    }
    targets = ("train", "valid")
    recon = np.concatenate([arrays[f"{s}_recon_data"] for s in targets]).astype(np.float64)
    cond = np.concatenate([out[f"{s}_condition"] for s in targets])  # (B_train + B_valid,)
    sums = np.zeros((n_conditions, *recon.shape[1:]))
    np.add.at(sums, cond, recon)
    trials = np.bincount(cond, minlength=n_conditions)[:, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        out["psth"] = (sums / trials).astype(np.float32)
    return out


def _require_train_and_valid(splits: np.ndarray, nwb_path: Path) -> None:
    """A session needs train and valid trials (NLB labels 'train' and 'val')."""
    found = sorted(set(splits.tolist()))
    if not {"train", "val"} <= set(found):
        raise validate.fail(
            nwb_path,
            "/intervals/trials/split",
            f"labels the usable trials {found}",
            "'train' and 'val' trials (convert the NLB *_train.nwb file, not *_test.nwb)",
        )


def _trial_counts(arrays: Mapping[str, np.ndarray]) -> dict[str, int]:
    splits = [s for s in SPLIT_NAMES.values() if f"{s}_encod_data" in arrays]
    return {s: int(arrays[f"{s}_encod_data"].shape[0]) for s in splits}


def _write(path: Path, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, object]) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as file:
        for key, value in arrays.items():
            file.create_dataset(key, data=value, compression="gzip" if value.ndim == 3 else None)
        file.attrs.update(attrs)


# --------------------------------------------------------------------------- checks


def _open_nwb(path: Path) -> h5py.File:
    """The NWB file opened for reading, or a `DataError` naming it."""
    if not path.is_file():
        raise validate.fail(path, None, "no such file", "an NWB file (HDF5)")
    if not h5py.is_hdf5(path):
        raise validate.fail(
            path, None, "is not an HDF5 file", "an NWB 2.x file (NWB files are HDF5)"
        )
    return h5py.File(path, "r")


def _dataset(nwb: h5py.File, path: PathLike, key: str, what: str) -> h5py.Dataset:
    if key not in nwb or not isinstance(nwb[key], h5py.Dataset):
        raise validate.fail(
            path, f"/{key}", "is missing", f"{what} (NWB 2.x layout of the NLB files)"
        )
    return nwb[key]


def _column_values(ds: h5py.Dataset) -> np.ndarray:
    """A trials-table column as numbers, or as str for text columns."""
    if ds.dtype.kind in "OSU" or h5py.check_string_dtype(ds.dtype) is not None:
        return np.asarray(ds.asstr()[()], dtype=str)
    return np.asarray(ds[()])


def _find_timeseries(nwb: h5py.File, path: PathLike, key: str) -> str:
    """The group path of TimeSeries `key`: the path itself, or the unique match under /processing."""
    key = key.strip("/")
    if key in nwb and isinstance(nwb[key], h5py.Group):
        return key
    found: list[str] = []
    if "processing" in nwb:
        nwb["processing"].visititems(
            lambda name, obj: (
                found.append(f"processing/{name}")
                if isinstance(obj, h5py.Group) and name.split("/")[-1] == key and "data" in obj
                else None
            )
        )
    if len(found) != 1:
        where = (
            f"matches {found}"
            if found
            else "is not a group of the file nor a TimeSeries under /processing"
        )
        raise validate.fail(
            path,
            key,
            where,
            "one behaviour TimeSeries (give its full path, e.g. processing/behavior/hand_vel)",
        )
    return found[0]


def _heldout_mask(
    flags: np.ndarray | None, units: Sequence[int] | None, n_units: int, path: PathLike
) -> np.ndarray:
    """(N,) True for held-out units: `units` if given, else the file's flags, else none."""
    if units is None:
        mask = np.zeros(n_units, bool) if flags is None else flags.copy()
    else:
        chosen = np.asarray(list(units), dtype=np.int64)
        if chosen.size and (chosen.min() < 0 or chosen.max() >= n_units):
            raise DataError(
                f"heldout_units: got {chosen.tolist()}; expected NWB unit rows in 0..{n_units - 1} ({path})"
            )
        mask = np.zeros(n_units, bool)
        mask[chosen] = True
    if mask.all():
        raise validate.fail(
            path,
            "/units/heldout",
            f"flags all {n_units} units as held out",
            "at least one held-in unit",
        )
    return mask


def _check_align(trials: Mapping[str, np.ndarray], align_field: str, path: PathLike) -> None:
    """The alignment column holds times (numbers), not labels."""
    kind = np.asarray(trials[align_field]).dtype.kind
    if kind not in "iuf":
        raise validate.fail(
            path,
            f"/intervals/trials/{align_field}",
            f"holds {'text' if kind in 'OSU' else kind + ' values'}",
            "times in seconds (the alignment column, e.g. move_onset_time)",
        )


def _usable_trials(
    trials: Mapping[str, np.ndarray], align_field: str
) -> tuple[np.ndarray, np.ndarray]:
    """(B_all,) mask of trials with a known split and alignment time, and the kept trials' labels."""
    align = np.asarray(trials[align_field], dtype=np.float64)
    keep = np.isin(trials["split"], list(SPLIT_NAMES)) & np.isfinite(align)
    return keep, trials["split"][keep]


def _window_s(
    window_ms, trials, align_field: str, keep: np.ndarray, bin_ms: float, path: PathLike
) -> tuple[float, float]:
    """The window (s) relative to the alignment time; by default up to the shortest trial's end."""
    if window_ms is not None:
        start, end = (float(v) / 1000.0 for v in window_ms)
        if not end > start:
            raise DataError(
                f"window_ms: got {tuple(window_ms)}; expected (start, end) with end > start"
            )
        return start, end
    if not keep.any():
        raise validate.fail(
            path,
            "/intervals/trials/split",
            "has no train/val/test trial with an alignment time",
            "at least one",
        )
    shortest = float(np.min(trials["stop_time"][keep] - trials[align_field][keep]))
    n_bins = int(np.floor(shortest * 1000.0 / bin_ms + 1e-9))
    if n_bins < 1:
        raise validate.fail(
            path,
            f"/intervals/trials/{align_field}",
            f"leaves {shortest * 1000:.1f} ms before stop_time in the shortest trial",
            f"at least one {bin_ms} ms bin (or give window_ms)",
        )
    return 0.0, n_bins * bin_ms / 1000.0


def _whole_bins(length_s: float, bin_s: float, name: str, allow_zero: bool = False) -> int:
    """`length_s / bin_s` as an integer, refusing lengths that are not whole bins."""
    bins = length_s / bin_s
    n = int(round(bins))
    if abs(bins - n) > 1e-6 or n < 0 or (n == 0 and not allow_zero):
        raise DataError(
            f"{name}: {length_s * 1000:g} ms; expected a {'non-negative ' if allow_zero else 'positive '}whole number of {bin_s * 1000:g} ms bins"
        )
    return n


def _positive(value: float, name: str) -> float:
    if not (value > 0 and np.isfinite(value)):
        raise DataError(f"{name}: got {value!r}; expected a positive number")
    return float(value)


def _as_list(keys: str | Sequence[str] | None) -> list[str]:
    if keys is None:
        return []
    return [keys] if isinstance(keys, str) else list(keys)
