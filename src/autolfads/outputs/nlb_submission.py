"""The Neural Latents Benchmark (NLB'21) submission file of a run on converted NLB data.

`autolfads nlb-submission OUT -o submission.h5` reads `OUT/lfads_output_sess{i}.h5` (each a copy
of a session file written by `autolfads convert nwb --dataset NAME` plus the run's
`{split}_output_params`) and writes the file that the benchmark's evaluation reads. The layout
is the one its evaluation code reads (`evaluate` in nlb_tools/evaluation.py, "as it would be run
on EvalAI servers": https://github.com/neurallatents/nlb_tools/blob/main/nlb_tools/evaluation.py;
the group names come from `make_eval_target_tensors` in nlb_tools/make_tensors.py; the
tutorial https://github.com/neurallatents/nlb_tools/blob/main/examples/tutorials/basic_example.ipynb
walks through a submission; Pei et al. 2021, arXiv 2109.04463):

- one HDF5 group per dataset, named after it (`mc_maze`, `mc_rtt`, `area2_bump`, `dmfc_rsg`,
  `mc_maze_large`, `mc_maze_medium`, `mc_maze_small`) for 5 ms bins, with `_20` appended for
  20 ms bins (`mc_maze_20`); the evaluation knows no other bin width;
- in each group, float32 arrays `trials x time x neurons` of rates per bin (the expected spike
  count in a bin, the unit of NLB's Poisson bits per spike; our Poisson `output_params`):

  | key | trials | time bins | neurons |
  |---|---|---|---|
  | `train_rates_heldin` | train | window (T) | held-in |
  | `train_rates_heldout` | train | T | held-out |
  | `eval_rates_heldin` | eval | T | held-in |
  | `eval_rates_heldout` | eval | T | held-out |
  | `eval_rates_heldin_forward` | eval | forward (T_fp) | held-in |
  | `eval_rates_heldout_forward` | eval | T_fp | held-out |

  The two `_forward` keys only when the file has forward-prediction bins (fp-bps is then scored).

Trials and neurons are in the order nlb_tools makes its tensors: trials in the NWB trials table's
order, neurons in the units table's order (held-in and held-out apart). The eval trials are the
test trials when the converted file has them (from `--test FILE_test.nwb`: the test phase, the
leaderboard); the train trials are then the 'train' and 'val' trials together, all of which the
model was fitted to. Without test trials the eval trials are the valid ('val') trials and the
train trials the 'train' ones: NLB's validation phase, which nlb_tools can also score locally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from omegaconf import OmegaConf

from autolfads._atomic import atomic_path
from autolfads.data import validate
from autolfads.data.nlb import NLB_DATASETS
from autolfads.errors import UsageError
from autolfads.outputs.files import output_files

__all__ = ["NLB_BIN_MS", "SUBMISSION_KEYS", "SubmissionGroup", "write_nlb_submission"]

#: Bin width (ms) -> the suffix of the group name; NLB scores only these two.
NLB_BIN_MS = {5.0: "", 20.0: "_20"}
SUBMISSION_KEYS = (
    "train_rates_heldin",
    "train_rates_heldout",
    "eval_rates_heldin",
    "eval_rates_heldout",
    "eval_rates_heldin_forward",
    "eval_rates_heldout_forward",
)


@dataclass(frozen=True)
class SubmissionGroup:
    """One dataset's group of the submission file.

    Attributes:
        name: the group name, e.g. 'mc_maze_20'.
        source: the run's output file it came from.
        eval_split: 'test' or 'valid', the split whose trials are the eval trials.
        arrays: key -> float32 array (trials, time, neurons).
    """

    name: str
    source: Path
    eval_split: str
    arrays: dict[str, np.ndarray]


def write_nlb_submission(out: str | os.PathLike, dest: str | os.PathLike) -> list[SubmissionGroup]:
    """Write the NLB submission file `dest` from the run folder `out`.

    Args:
        out: the folder `autolfads run` or `train` (or `sample`) wrote, with
            `lfads_output_sess{i}.h5` of files made by `autolfads convert nwb --dataset NAME`.
        dest: the submission file (replaced if it exists; written under a temporary name).

    Returns:
        The groups written, one per session.

    Raises:
        UsageError: `out` is not a finished run, or its model is not Poisson.
        DataError: an output file was not made from a converted NLB file, or does not fit NLB's
            evaluation (bin width, window, dropped trials...), named in one line.
    """
    out = Path(out)
    if not out.is_dir():
        raise UsageError(f"{out}: no such folder (the output folder of `autolfads run` or `train`)")
    files = output_files(out)
    if not files:
        raise UsageError(
            f"{out}: no lfads_output_sess*.h5 (run `autolfads run` or `train` on a file from "
            "`autolfads convert nwb --dataset NAME` first)"
        )
    _check_poisson(out)
    groups = [submission_group(path) for path in files]
    names = [g.name for g in groups]
    if len(set(names)) < len(names):
        raise UsageError(
            f"{out}: sessions {', '.join(f'{g.source.name} ({g.name})' for g in groups)} give one "
            "NLB group twice; expected one session per dataset"
        )
    with atomic_path(Path(dest)) as tmp, h5py.File(tmp, "w") as file:
        for group in groups:
            target = file.create_group(group.name)
            for key, value in group.arrays.items():
                target.create_dataset(key, data=value)
    return groups


def submission_group(path: Path) -> SubmissionGroup:
    """One output file's submission group (checks included; see the module docstring)."""
    with h5py.File(path, "r") as file:
        attrs = dict(file.attrs)
        dataset = _nlb_dataset(path, attrs)
        suffix = _bin_suffix(path, attrs)
        _check_cut(path, attrs, dataset)
        heldout = _dataset(file, path, "recon_unit_heldout", "which recon channels are held out")
        heldout = np.asarray(heldout[()], dtype=bool)
        n_in = _check_channels(path, heldout)
        eval_split = str(attrs.get("eval_split", "valid"))
        train_splits = ("train", "valid") if eval_split == "test" else ("train",)
        rates = {s: _output_params(file, path, s) for s in (*train_splits, eval_split)}
        inds = {
            s: _dataset(file, path, f"{s}_inds", "the NWB rows of its trials")[()] for s in rates
        }
        n_bins = int(_dataset(file, path, "train_encod_data", "the encoder data").shape[1])
    fp_steps = int(attrs.get("fp_steps", 0))
    for split, value in rates.items():
        expected = (len(inds[split]), n_bins + fp_steps, heldout.size)
        if value.shape != expected:
            raise validate.fail(
                path,
                f"{split}_output_params",
                f"has shape {value.shape}",
                f"{expected} (trials, window + forward bins, held-in + held-out channels)",
            )
    train = _in_table_order([rates[s] for s in train_splits], [inds[s] for s in train_splits])
    evaluation = _in_table_order([rates[eval_split]], [inds[eval_split]])
    window, forward = slice(0, n_bins), slice(n_bins, n_bins + fp_steps)
    arrays = {
        "train_rates_heldin": train[:, window, :n_in],
        "train_rates_heldout": train[:, window, n_in:],
        "eval_rates_heldin": evaluation[:, window, :n_in],
        "eval_rates_heldout": evaluation[:, window, n_in:],
    }
    if fp_steps:
        arrays["eval_rates_heldin_forward"] = evaluation[:, forward, :n_in]
        arrays["eval_rates_heldout_forward"] = evaluation[:, forward, n_in:]
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}
    return SubmissionGroup(dataset + suffix, path, eval_split, arrays)


# --------------------------------------------------------------------------- checks


def _check_poisson(out: Path) -> None:
    """NLB scores rates under a Poisson likelihood: a run with another observation model is refused."""
    config = out / "config.yaml"
    if not config.is_file():
        return
    reconstruction = str(OmegaConf.load(config).model.get("reconstruction", "poisson"))
    if reconstruction != "poisson":
        raise UsageError(
            f"{config}: model.reconstruction = {reconstruction!r}; expected 'poisson' "
            "(NLB scores spike-count rates under a Poisson likelihood)"
        )


def _nlb_dataset(path: Path, attrs: dict) -> str:
    name = attrs.get("nlb_dataset")
    if name is None:
        raise validate.fail(
            path,
            None,
            "has no 'nlb_dataset' attribute",
            "a run on a file made by `autolfads convert nwb FILE.nwb OUT.h5 --dataset NAME`",
        )
    name = str(name)
    if name not in NLB_DATASETS:
        raise validate.fail(
            path, None, f"names NLB dataset {name!r}", f"one of {', '.join(NLB_DATASETS)}"
        )
    return name


def _bin_suffix(path: Path, attrs: dict) -> str:
    bin_ms = float(attrs.get("bin_ms", np.nan))
    if bin_ms not in NLB_BIN_MS:
        raise validate.fail(
            path,
            None,
            f"has {bin_ms:g} ms bins",
            "5 or 20 ms bins, the two bin widths NLB scores (convert with --bin-ms 5 or 20)",
        )
    return NLB_BIN_MS[bin_ms]


def _check_cut(path: Path, attrs: dict, dataset: str) -> None:
    """The trials must be cut as NLB cuts them, or the rates do not line up with its targets."""
    nlb = NLB_DATASETS[dataset]
    align = str(attrs.get("align_field", ""))
    window = tuple(float(v) for v in np.asarray(attrs.get("window_ms", [np.nan, np.nan])))
    fp_ms = float(attrs.get("fp_ms", 0.0))
    if align != nlb.align_field or not np.allclose(window, nlb.window_ms):
        raise validate.fail(
            path,
            None,
            f"has trials aligned on {align!r} over {_ms(window)} ms",
            f"{nlb.align_field!r} over {_ms(nlb.window_ms)} ms for {dataset} "
            f"(convert with --dataset {dataset} and no --align/--window)",
        )
    if fp_ms not in (0.0, nlb.fp_ms):
        raise validate.fail(
            path,
            None,
            f"has {fp_ms:g} ms of forward prediction",
            f"{nlb.fp_ms:g} ms (NLB's forward prediction) or 0 (no fp-bps)",
        )
    dropped = int(attrs.get("dropped_trials", 0))
    if dropped:
        raise validate.fail(
            path,
            None,
            f"left out {dropped} train/val/test trials without an alignment time",
            "every trial of the splits NLB scores",
        )


def _check_channels(path: Path, heldout: np.ndarray) -> int:
    """The number of held-in channels; held-out ones must follow them and exist."""
    n_in = int(np.count_nonzero(~heldout))
    if not heldout[n_in:].all() or n_in == heldout.size:
        found = "marks no channel held out" if n_in == heldout.size else "mixes the channels"
        raise validate.fail(
            path,
            "recon_unit_heldout",
            found,
            "the held-in units, then the held-out units that co-smoothing scores",
        )
    return n_in


def _output_params(file: h5py.File, path: Path, split: str) -> np.ndarray:
    value = _dataset(file, path, f"{split}_output_params", "the run's rates of its trials")
    value = np.asarray(value[()], dtype=np.float32)  # as the run wrote them
    if not np.all(np.isfinite(value)) or np.any(value < 0):
        raise validate.fail(
            path,
            f"{split}_output_params",
            "holds NaN, infinite or negative rates",
            "finite rates >= 0 (NLB refuses others)",
        )
    return value


def _dataset(file: h5py.File, path: Path, key: str, what: str) -> h5py.Dataset:
    if key not in file or not isinstance(file[key], h5py.Dataset):
        raise validate.fail(
            path,
            key,
            "is missing",
            f"{what} (a run's output of a file from `autolfads convert nwb`)",
        )
    return file[key]


def _in_table_order(parts: list[np.ndarray], rows: list[np.ndarray]) -> np.ndarray:
    """Trials of several splits stacked and put in the order of their NWB table rows."""
    stacked = np.concatenate(parts, axis=0)
    return stacked[np.argsort(np.concatenate(rows), kind="stable")]


def _ms(window) -> str:
    return f"[{window[0]:g}, {window[1]:g})"
