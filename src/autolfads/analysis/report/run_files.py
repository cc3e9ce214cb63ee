"""Reading a run folder: the fit logs, the config and the posterior output files of a run.

A running AutoLFADS fit has `fitlog.csv` (one row per worker per epoch) and, once a generation has
finished, `pbt_history.csv`; a finished one also has `lfads_output_sess{i}.h5` (inputs, inferred
rates, factors, generator states, inferred inputs) and `config.yaml`.

Shape legend: K workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from autolfads.errors import DataError, UsageError
from autolfads.outputs.files import output_files

__all__ = ["RunFiles", "read_run", "open_output_file"]

FITLOG_COLUMNS = ("worker_id", "epoch")
HISTORY_COLUMNS = ("generation", "worker_id", "copied_from")


@dataclass
class RunFiles:
    """What a run folder holds so far.

    Attributes:
        out: the folder.
        fitlog: `fitlog.csv`, one row per worker per epoch.
        history: `pbt_history.csv` (one row per worker per finished generation), or None.
        config: `config.yaml` (written when the run finishes), or None.
        outputs: the `lfads_output_sess{i}.h5` files, in session order.
    """

    out: Path
    fitlog: pd.DataFrame
    history: pd.DataFrame | None
    config: DictConfig | None
    outputs: list[Path]

    @property
    def n_workers(self) -> int:
        """K, the number of workers in the fit log."""
        return int(self.fitlog["worker_id"].nunique())

    @property
    def is_population(self) -> bool:
        """True for AutoLFADS (`run`), False for a single model (`train`)."""
        return self.history is not None or self.n_workers > 1

    @property
    def finished(self) -> bool:
        """True once the posterior outputs have been written."""
        return bool(self.outputs)


def read_run(out_dir: str | Path) -> RunFiles:
    """Read the logs and list the outputs of a run folder.

    Raises:
        UsageError: `out_dir` is not a folder, or has no `fitlog.csv` with at least one epoch.
        DataError: a log is not the CSV autolfads writes, or config.yaml is not YAML.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise UsageError(
            f"{out}: no such folder; expected the output folder of `autolfads run` or `train`"
        )
    fitlog = _read_fitlog(out)
    history = _read_history(out / "pbt_history.csv")
    return RunFiles(out, fitlog, history, _read_config(out / "config.yaml"), output_files(out))


def open_output_file(path: Path) -> h5py.File:
    """Open an `lfads_output_sess{i}.h5` file for reading.

    Raises:
        DataError: the file is not (complete) HDF5.
    """
    try:
        return h5py.File(path, "r")
    except OSError as err:  # h5py's error for a file that is not (complete) HDF5
        raise DataError(f"{path}: not a readable HDF5 file ({_one_line(err)})") from None


def _read_fitlog(out: Path) -> pd.DataFrame:
    """`fitlog.csv` of the run in `out`; a log without generations (`train`) is generation 0."""
    path = out / "fitlog.csv"
    if not path.is_file():
        raise UsageError(
            f"{out}: no fitlog.csv, so nothing to report (expected the output folder of "
            "`autolfads run` or `train`, after at least one epoch)"
        )
    fitlog = _read_log(path, FITLOG_COLUMNS)
    if fitlog.empty:
        raise UsageError(f"{path}: no epoch logged yet, so nothing to report")
    if "generation" not in fitlog:
        fitlog["generation"] = 0
    return fitlog


def _read_history(path: Path) -> pd.DataFrame | None:
    """`pbt_history.csv`, or None while no generation has finished (or for a single model)."""
    if not path.is_file():
        return None
    history = _read_log(path, HISTORY_COLUMNS)
    return None if history.empty else history


def _read_log(path: Path, required: Sequence[str]) -> pd.DataFrame:
    """A CSV log with at least the `required` columns; an empty file is an empty table."""
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=list(required))
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV table ({_one_line(err)})") from None
    missing = [c for c in required if c not in table]
    if missing:
        raise DataError(
            f"{path}: no column {missing[0]!r}; expected the columns autolfads writes "
            f"({', '.join(required)}, ...)"
        )
    return table


def _read_config(path: Path) -> DictConfig | None:
    """`config.yaml` as a DictConfig, or None if absent (or not a mapping)."""
    if not path.is_file():
        return None
    try:
        config = OmegaConf.load(path)
    except Exception as err:  # yaml and OmegaConf raise several unrelated types
        raise DataError(f"{path}: not a YAML config ({_one_line(err)})") from None
    return config if isinstance(config, DictConfig) else None


def _one_line(err: Exception) -> str:
    """An error's message on one line (whitespace runs collapsed to single spaces)."""
    return " ".join(str(err).split())
