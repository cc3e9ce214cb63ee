"""The sections drawn from a finished run's `lfads_output_sess{i}.h5` files, one per session: data
next to the inferred rates, latent trajectories and inferred inputs of the valid (else train) split.

Shape legend: B trials, T bins, N channels, F factors, H generator units, U inferred inputs.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from omegaconf import OmegaConf

from autolfads.analysis.report.canvas import png_bytes
from autolfads.analysis.report.latent_figures import inputs_figure, latent_trajectories_figure
from autolfads.analysis.report.page import FigureFile, Section
from autolfads.analysis.report.rates_figure import rates_figure
from autolfads.analysis.report.run_files import RunFiles, open_output_file

__all__ = ["session_sections"]

N_TRIALS = 3  # trials in the rates and inputs figures
N_LATENT_TRIALS = 25  # trajectories drawn in the latent figure
N_PCA_TRIALS = 200  # trials the principal components are fitted on
MAX_SESSIONS = 3  # sessions with their own figures (stitched runs may have many)


def session_sections(run: RunFiles) -> list[Section]:
    """One section per session output file, for at most the first MAX_SESSIONS sessions."""
    reconstruction = OmegaConf.select(run.config, "model.reconstruction") if run.config else None
    sections = [
        _session_section(path, i, reconstruction)
        for i, path in enumerate(run.outputs[:MAX_SESSIONS])
    ]
    if len(run.outputs) > MAX_SESSIONS:
        sections[-1].notes.append(
            f"Figures are drawn for the first {MAX_SESSIONS} of {len(run.outputs)} sessions."
        )
    return sections


def _session_section(path: Path, index: int, reconstruction: str | None) -> Section:
    """The section of session `index` from its output file at `path`."""
    with open_output_file(path) as file:
        return _session_figures(file, path, index, reconstruction)


def _session_figures(
    file: h5py.File, path: Path, index: int, reconstruction: str | None
) -> Section:
    """Rates, latent and inputs figures of a few trials of the valid (else train) split."""
    section = Section(f"Session {index} ({path.name})")
    name = f"sess{index}"
    split = _plotted_split(file)
    if split is None:
        section.notes.append("No valid or train output_params with their recon_data to plot.")
        return section
    n_trials = file[f"{split}_output_params"].shape[0]
    trials = _evenly_spaced(n_trials, N_TRIALS)
    section.notes.append(f"Trials of the {split} split.")
    _add_rates(section, file, split, trials, name, reconstruction)
    section.figures.extend(_latents(file, split, n_trials, name))
    _add_inputs(section, file, split, trials, name)
    return section


def _plotted_split(file: h5py.File) -> str | None:
    """'valid', else 'train': the first split with both output_params and recon_data."""
    return next(
        (
            s
            for s in ("valid", "train")
            if f"{s}_output_params" in file and f"{s}_recon_data" in file
        ),
        None,
    )


def _add_rates(
    section: Section,
    file: h5py.File,
    split: str,
    trials: np.ndarray,
    name: str,
    reconstruction: str | None,
) -> None:
    """The rates figure, or a note when output_params and recon_data are not the same (B, T, N)."""
    params, recon = file[f"{split}_output_params"], file[f"{split}_recon_data"]
    if params.shape == recon.shape and params.ndim == 3:
        section.figures.append(_rates(file, split, trials, name, reconstruction))
    else:
        section.notes.append(
            f"{split}_output_params has shape {params.shape}, {split}_recon_data "
            f"{recon.shape}; expected the same (B, T, N): no rates figure."
        )


def _rates(
    file: h5py.File, split: str, trials: np.ndarray, name: str, reconstruction: str | None
) -> FigureFile:
    """Observed data next to the inferred rates (and the truth in data units, if stored)."""
    rates = file[f"{split}_output_params"][trials].astype(np.float64)
    data = file[f"{split}_recon_data"][trials].astype(np.float64)
    truth = _truth_in_data_units(file, split, trials, rates.shape)
    held_in = _held_in(file, split, data.shape)
    counts = _is_count_data(data, reconstruction)
    fig = rates_figure(data, rates, truth, trial_ids=trials, counts=counts, held_in=held_in)
    caption = (
        f"Observed data ({'spike raster' if counts else 'heatmap'}) next to the inferred rates "
        "(output_params, mean per bin)"
        + ("; dashed: true rates (truth / conversion_factor)" if truth is not None else "")
        + ("; red lines: held-out channels / forward-prediction bins" if held_in else "")
        + "."
    )
    return FigureFile(f"{name}_rates.png", caption, png_bytes(fig))


def _truth_in_data_units(
    file: h5py.File, split: str, trials: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray | None:
    """(B, T, N) `{split}_truth` of the trials divided by `conversion_factor` (as `evaluate`
    compares them), or None if absent or not of the rates' (T, N)."""
    key = f"{split}_truth"
    if key not in file or file[key].shape[1:] != shape[1:]:
        return None
    truth = file[key][trials].astype(np.float64)
    if "conversion_factor" in file:
        truth = truth / float(np.asarray(file["conversion_factor"][()]).reshape(()))
    return truth


def _held_in(file: h5py.File, split: str, data_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(encod_seq_len, encod_data_dim) when the encoder saw fewer bins or channels than are
    reconstructed (forward prediction, held-out channels), else None."""
    encod = file.get(f"{split}_encod_data")
    if encod is not None and tuple(encod.shape[1:]) != tuple(data_shape[1:]):
        return int(encod.shape[1]), int(encod.shape[2])
    return None


def _latents(file: h5py.File, split: str, n_trials: int, name: str) -> list[FigureFile]:
    """The factors and generator states in their top principal components (none if absent)."""
    keys = {"factors": f"{split}_factors", "generator states": f"{split}_gen_states"}
    present = {label: key for label, key in keys.items() if key in file and file[key].ndim == 3}
    if not present:
        return []
    conditions = _conditions(file, split, n_trials)
    trials = _trials_for_latents(n_trials, conditions)
    latents = {label: file[key][trials].astype(np.float64) for label, key in present.items()}
    fig = latent_trajectories_figure(
        latents, None if conditions is None else conditions[trials], max_trials=N_LATENT_TRIALS
    )
    caption = (
        f"{' and '.join(present)} in their top principal components "
        f"(fitted on {len(trials)} {split} trials, {min(len(trials), N_LATENT_TRIALS)} drawn)."
    )
    return [FigureFile(f"{name}_latents.png", caption, png_bytes(fig))]


def _add_inputs(
    section: Section, file: h5py.File, split: str, trials: np.ndarray, name: str
) -> None:
    """The inferred-inputs figure, or a note when the model has no controller."""
    co_means = file.get(f"{split}_co_means")
    if co_means is None or co_means.ndim != 3 or co_means.shape[-1] == 0:
        section.notes.append("No inferred inputs (the model has no controller: co_dim = 0).")
        return
    stds = file.get(f"{split}_co_stds")
    fig = inputs_figure(
        co_means[trials],
        stds[trials] if stds is not None and stds.shape == co_means.shape else None,
        trial_ids=trials,
    )
    caption = "Inferred inputs (posterior mean of the controller outputs, +- 1 s.d.)."
    section.figures.append(FigureFile(f"{name}_inputs.png", caption, png_bytes(fig)))


def _conditions(file: h5py.File, split: str, n_trials: int) -> np.ndarray | None:
    """The (B,) condition label of each trial, from `{split}_condition` or a similar key."""
    for key in sorted(k for k in file if k.startswith(f"{split}_cond")):
        dataset = file[key]
        if isinstance(dataset, h5py.Dataset) and dataset.shape == (n_trials,):
            return np.asarray(dataset[()])
    return None


def _trials_for_latents(n_trials: int, conditions: np.ndarray | None) -> np.ndarray:
    """Sorted trial indices to fit the components on, spread over conditions when known."""
    if conditions is None:
        return _evenly_spaced(n_trials, N_PCA_TRIALS)
    by_condition = np.argsort(conditions, kind="stable")
    return np.sort(by_condition[_evenly_spaced(n_trials, N_PCA_TRIALS)])


def _evenly_spaced(n: int, k: int) -> np.ndarray:
    """At most k sorted distinct indices spread evenly over range(n)."""
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int))


def _is_count_data(data: np.ndarray, reconstruction: str | None) -> bool:
    """True for Poisson reconstruction, or (config unknown) for non-negative whole-number data."""
    if reconstruction is not None:
        return str(reconstruction) == "poisson"
    observed = data[np.isfinite(data)]
    return bool(observed.size and np.all(observed >= 0) and np.all(observed == np.round(observed)))
