"""The sections drawn from the fit logs alone, so present while a run is still training: the
overview (what the run is, how far it got, what is missing), the training curves and the
hyperparameter progressions.

Shape legend: K workers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from autolfads.analysis.report.canvas import png_bytes, wants_log_axis
from autolfads.analysis.report.hp_progression import HPProgression, hp_progression_figure
from autolfads.analysis.report.page import FigureFile, Section
from autolfads.analysis.report.run_files import RunFiles
from autolfads.analysis.report.training_figures import (
    training_curves_figure,
    validation_metrics_figure,
)

__all__ = ["overview_section", "training_section", "hyperparameters_section"]

VALIDATION_METRIC_CAPTIONS = {
    "valid/r2": "valid/r2 (rate R^2 against the true rates)",
    "valid/bps": "valid/bps (bits per spike)",
}


def overview_section(run: RunFiles) -> Section:
    """What the run is, how far it got, its best smoothed validation cost, its exploit events and
    what the page lacks."""
    section = Section("Overview")
    section.notes.append(f"{_kind(run)}; {_status(run)}.")
    section.notes.append(_epochs_logged(run) + _best_smoothed_cost(run.fitlog) + ".")
    if run.history is not None:
        section.notes.append(_exploit_events(run.history))
    section.notes.extend(_missing(run))
    return section


def _kind(run: RunFiles) -> str:
    """An AutoLFADS population of K workers, or a single model."""
    if run.is_population:
        return f"AutoLFADS population of {run.n_workers} workers"
    return "a single LFADS model (`autolfads train`)"


def _status(run: RunFiles) -> str:
    """Finished once the outputs are written, else running or interrupted."""
    return "finished (outputs written)" if run.finished else "running or interrupted"


def _epochs_logged(run: RunFiles) -> str:
    """How many epochs (and, for a population, generations) the fit log holds."""
    log = run.fitlog
    text = f"{int(log['epoch'].max()) + 1} epochs logged"
    if run.is_population:
        generations = int(log["generation"].max()) + 1
        text += f" over {generations} generation{'s' if generations != 1 else ''}"
    return text


def _best_smoothed_cost(log: pd.DataFrame) -> str:
    """'; best valid/recon_smth ... (worker, epoch)', or '' while no finite value is logged."""
    smoothed = pd.to_numeric(log.get("valid/recon_smth", pd.Series(dtype=float)), errors="coerce")
    if not np.isfinite(smoothed).any():
        return ""
    best = log.loc[smoothed.where(np.isfinite(smoothed)).idxmin()]
    return (
        f"; best valid/recon_smth {smoothed.min():.4f} "
        f"(worker {int(best['worker_id'])}, epoch {int(best['epoch'])})"
    )


def _exploit_events(history: pd.DataFrame) -> str:
    """How many times a worker copied another one."""
    copied = int((history["copied_from"] != history["worker_id"]).sum())
    events = "exploit event" if copied == 1 else "exploit events"
    return f"{copied} {events} (a worker copied a better one)."


def _missing(run: RunFiles) -> list[str]:
    """What the page lacks and why; a finished run without its logs was copied without them
    (autolfads.zip holds no config.yaml or pbt_history.csv)."""
    when = " (not copied with the outputs?)" if run.finished else " (written when the run finishes)"
    notes = []
    if run.is_population and run.history is None:
        notes.append(
            "Missing: pbt_history.csv"
            + (when if run.finished else " (written when the first generation finishes)")
            + ": hyperparameters are drawn from fitlog.csv."
        )
    if not run.finished:
        notes.append(
            "Missing: lfads_output_sess*.h5 (written when the run finishes): inferred rates, "
            "latent trajectories, inferred inputs and metrics appear then."
        )
    if run.config is None:
        notes.append(
            f"Missing: config.yaml{when}: the searched hyperparameters are taken to be those "
            "that changed."
        )
    return notes


def training_section(run: RunFiles) -> Section:
    """The training curves of every worker and, if logged, the validation metrics per epoch."""
    section = Section("Training")
    caption = (
        "Reconstruction cost (negative log-likelihood per element) of every worker on the "
        "training and validation trials, and the smoothed validation cost of the best worker"
        + (" (grey lines: generation starts)." if run.is_population else ".")
    )
    section.figures.append(
        FigureFile("training.png", caption, png_bytes(training_curves_figure(run.fitlog)))
    )
    fig = validation_metrics_figure(run.fitlog)
    if fig is not None:
        shown = [
            text for column, text in VALIDATION_METRIC_CAPTIONS.items() if column in run.fitlog
        ]
        caption = f"Per epoch and worker: {', '.join(shown)}."
        section.figures.append(FigureFile("validation_metrics.png", caption, png_bytes(fig)))
    return section


def hyperparameters_section(run: RunFiles) -> Section:
    """The searched (else the changing) hyperparameters of every worker along the fit."""
    section = Section("Hyperparameters")
    progression, source = _progression(run)
    searched = _searched_hps(run.config) if run.is_population else {}
    names = [n for n in searched if n in progression.values] or progression.varying()
    if not names:
        section.notes.append("No hyperparameter changed during the fit.")
        return section
    caption = (
        f"From {source}. Open circles: a worker copied another (dotted line from the source's "
        "value) and perturbed its hyperparameters."
    )
    fig = hp_progression_figure(
        progression.only(names), _log_axis_names(names, searched, progression)
    )
    section.figures.append(FigureFile("hyperparameters.png", caption, png_bytes(fig)))
    return section


def _progression(run: RunFiles) -> tuple[HPProgression, str]:
    """The HP values per generation from pbt_history.csv if there is one, else per epoch from
    fitlog.csv; and a description of that source."""
    if run.history is not None:
        return (
            HPProgression.from_history(run.history),
            "pbt_history.csv: the values each worker trained with in each generation",
        )
    return (
        HPProgression.from_fitlog(run.fitlog),
        "fitlog.csv: the values of each worker at each epoch",
    )


def _log_axis_names(
    names: list[str], searched: dict[str, str | None], progression: HPProgression
) -> set[str]:
    """The HPs drawn on a log axis: those sampled log-uniformly, and those of unknown sampling
    whose values span more than a decade."""
    logs = {n for n in names if searched.get(n) == "log"}
    logs |= {n for n in names if searched.get(n) is None and wants_log_axis(progression.values[n])}
    return logs


def _searched_hps(config: DictConfig | None) -> dict[str, str | None]:
    """Searched HP name -> its sampling (log | uniform), from `pbt.hps` of the config."""
    hps = OmegaConf.select(config, "pbt.hps") if config is not None else None
    if not isinstance(hps, DictConfig):
        return {}
    return {
        str(n): (s.get("sample") if isinstance(s, DictConfig) else None) for n, s in hps.items()
    }
