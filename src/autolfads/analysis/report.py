"""`autolfads report OUT`: plots of a finished or running fit, as PNGs and one self-contained HTML page.

OUT/report/ receives one PNG per figure and `index.html`, which embeds every PNG as a base64 data
URI so that the one file can be mailed. Each file is written under a temporary name and renamed.

The report draws what exists. A running AutoLFADS fit has `fitlog.csv` (one row per worker per
epoch) and, once a generation has finished, `pbt_history.csv`; a finished one also has
`lfads_output_sess{i}.h5` (inputs, inferred rates, factors, generator states, inferred inputs) and
`config.yaml`. The page says what is missing.

Shape legend: B trials, T bins, N channels, F factors, H generator units, U inferred inputs.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import html
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from autolfads._atomic import atomic_path
from autolfads.analysis.plots import (
    HPProgression,
    hp_progression_figure,
    inputs_figure,
    latent_trajectories_figure,
    png_bytes,
    rates_figure,
    training_curves_figure,
    validation_metrics_figure,
    wants_log_axis,
)
from autolfads.errors import AutoLFADSError, DataError, UsageError

__all__ = ["RunFiles", "read_run", "make_report", "report_command", "report_at_end", "REPORT_DIR"]

REPORT_DIR = "report"
INDEX_NAME = "index.html"
N_TRIALS = 3  # trials in the rates and inputs figures
N_LATENT_TRIALS = 25  # trajectories drawn in the latent figure
N_PCA_TRIALS = 200  # trials the principal components are fitted on
MAX_SESSIONS = 3  # sessions with their own figures (stitched runs may have many)
OUTPUT_PREFIX = "lfads_output_sess"


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
    fitlog_path = out / "fitlog.csv"
    if not fitlog_path.is_file():
        raise UsageError(
            f"{out}: no fitlog.csv, so nothing to report (expected the output folder of "
            "`autolfads run` or `train`, after at least one epoch)"
        )
    fitlog = _read_log(fitlog_path, ("worker_id", "epoch"))
    if fitlog.empty:
        raise UsageError(f"{fitlog_path}: no epoch logged yet, so nothing to report")
    if "generation" not in fitlog:
        fitlog["generation"] = 0
    history_path = out / "pbt_history.csv"
    history = None
    if history_path.is_file():
        history = _read_log(history_path, ("generation", "worker_id", "copied_from"))
        history = None if history.empty else history
    return RunFiles(out, fitlog, history, _read_config(out / "config.yaml"), _output_files(out))


def _read_log(path: Path, required: Sequence[str]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=list(required))
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(
            f"{path}: not a readable CSV table ({' '.join(str(err).split())})"
        ) from None
    missing = [c for c in required if c not in table]
    if missing:
        raise DataError(
            f"{path}: no column {missing[0]!r}; expected the columns autolfads writes "
            f"({', '.join(required)}, ...)"
        )
    return table


def _read_config(path: Path) -> DictConfig | None:
    if not path.is_file():
        return None
    try:
        config = OmegaConf.load(path)
    except Exception as err:  # yaml and OmegaConf raise several unrelated types
        raise DataError(f"{path}: not a YAML config ({' '.join(str(err).split())})") from None
    return config if isinstance(config, DictConfig) else None


def _output_files(out: Path) -> list[Path]:
    files = [p for p in out.glob(f"{OUTPUT_PREFIX}*.h5") if p.stem[len(OUTPUT_PREFIX) :].isdigit()]
    return sorted(files, key=lambda p: int(p.stem[len(OUTPUT_PREFIX) :]))


# --------------------------------------------------------------------------- sections


@dataclass
class _Section:
    """One part of the page: a title, notes, an optional table and figures (file, caption, PNG)."""

    title: str
    notes: list[str] = field(default_factory=list)
    table: list[list[str]] = field(default_factory=list)  # first row = header
    figures: list[tuple[str, str, bytes]] = field(default_factory=list)


def _overview(run: RunFiles) -> _Section:
    section = _Section("Overview")
    log = run.fitlog
    kind = (
        f"AutoLFADS population of {run.n_workers} workers"
        if run.is_population
        else "a single LFADS model (`autolfads train`)"
    )
    status = "finished (outputs written)" if run.finished else "running or interrupted"
    section.notes.append(f"{kind}; {status}.")
    generations = int(log["generation"].max()) + 1
    line = f"{int(log['epoch'].max()) + 1} epochs logged"
    if run.is_population:
        line += f" over {generations} generation{'s' if generations != 1 else ''}"
    smoothed = pd.to_numeric(log.get("valid/recon_smth", pd.Series(dtype=float)), errors="coerce")
    if np.isfinite(smoothed).any():
        best = log.loc[smoothed.where(np.isfinite(smoothed)).idxmin()]
        line += (
            f"; best valid/recon_smth {smoothed.min():.4f} "
            f"(worker {int(best['worker_id'])}, epoch {int(best['epoch'])})"
        )
    section.notes.append(line + ".")
    if run.history is not None:
        copied = int((run.history["copied_from"] != run.history["worker_id"]).sum())
        events = "exploit event" if copied == 1 else "exploit events"
        section.notes.append(f"{copied} {events} (a worker copied a better one).")
    section.notes.extend(_missing(run))
    return section


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


def _training(run: RunFiles) -> _Section:
    section = _Section("Training")
    section.figures.append(
        (
            "training.png",
            "Reconstruction cost (negative log-likelihood per element) of every worker on the "
            "training and validation trials, and the smoothed validation cost of the best worker"
            + (" (grey lines: generation starts)." if run.is_population else "."),
            png_bytes(training_curves_figure(run.fitlog)),
        )
    )
    fig = validation_metrics_figure(run.fitlog)
    if fig is not None:
        shown = [text for column, text in _VALIDATION_METRICS.items() if column in run.fitlog]
        caption = f"Per epoch and worker: {', '.join(shown)}."
        section.figures.append(("validation_metrics.png", caption, png_bytes(fig)))
    return section


_VALIDATION_METRICS = {
    "valid/r2": "valid/r2 (rate R^2 against the true rates)",
    "valid/bps": "valid/bps (bits per spike)",
}


def _hyperparameters(run: RunFiles) -> _Section:
    section = _Section("Hyperparameters")
    if run.history is not None:
        progression = HPProgression.from_history(run.history)
        source = "pbt_history.csv: the values each worker trained with in each generation"
    else:
        progression = HPProgression.from_fitlog(run.fitlog)
        source = "fitlog.csv: the values of each worker at each epoch"
    searched = _searched_hps(run.config) if run.is_population else {}
    names = [n for n in searched if n in progression.values] or progression.varying()
    if not names:
        section.notes.append("No hyperparameter changed during the fit.")
        return section
    # a known sampling decides the axis; otherwise values spanning > 1 decade get a log axis
    logs = {n for n in names if searched.get(n) == "log"}
    logs |= {n for n in names if searched.get(n) is None and wants_log_axis(progression.values[n])}
    section.figures.append(
        (
            "hyperparameters.png",
            f"From {source}. Open circles: a worker copied another (dotted line from the source's "
            "value) and perturbed its hyperparameters.",
            png_bytes(hp_progression_figure(progression.only(names), logs)),
        )
    )
    return section


def _searched_hps(config: DictConfig | None) -> dict[str, str | None]:
    """Searched HP name -> its sampling (log | uniform), from `pbt.hps` of the config."""
    hps = OmegaConf.select(config, "pbt.hps") if config is not None else None
    if not isinstance(hps, DictConfig):
        return {}
    return {
        str(n): (s.get("sample") if isinstance(s, DictConfig) else None) for n, s in hps.items()
    }


def _sessions(run: RunFiles) -> list[_Section]:
    reconstruction = OmegaConf.select(run.config, "model.reconstruction") if run.config else None
    sections = [
        _session(path, i, reconstruction) for i, path in enumerate(run.outputs[:MAX_SESSIONS])
    ]
    if len(run.outputs) > MAX_SESSIONS:
        sections[-1].notes.append(
            f"Figures are drawn for the first {MAX_SESSIONS} of {len(run.outputs)} sessions."
        )
    return sections


def _session(path: Path, index: int, reconstruction: str | None) -> _Section:
    try:
        file = h5py.File(path, "r")
    except OSError as err:  # h5py's error for a file that is not (complete) HDF5
        raise DataError(
            f"{path}: not a readable HDF5 file ({' '.join(str(err).split())})"
        ) from None
    with file:
        return _session_figures(file, path, index, reconstruction)


def _session_figures(
    file: h5py.File, path: Path, index: int, reconstruction: str | None
) -> _Section:
    section = _Section(f"Session {index} ({path.name})")
    name = f"sess{index}"
    split = next(
        (
            s
            for s in ("valid", "train")
            if f"{s}_output_params" in file and f"{s}_recon_data" in file
        ),
        None,
    )
    if split is None:
        section.notes.append("No valid or train output_params with their recon_data to plot.")
        return section
    params, recon = file[f"{split}_output_params"], file[f"{split}_recon_data"]
    n_trials = params.shape[0]
    trials = _evenly_spaced(n_trials, N_TRIALS)
    section.notes.append(f"Trials of the {split} split.")
    if params.shape == recon.shape and params.ndim == 3:
        section.figures.append(_rates(file, split, trials, name, reconstruction))
    else:
        section.notes.append(
            f"{split}_output_params has shape {params.shape}, {split}_recon_data "
            f"{recon.shape}; expected the same (B, T, N): no rates figure."
        )
    section.figures.extend(_latents(file, split, n_trials, name))
    co_means = file.get(f"{split}_co_means")
    if co_means is None or co_means.ndim != 3 or co_means.shape[-1] == 0:
        section.notes.append("No inferred inputs (the model has no controller: co_dim = 0).")
    else:
        stds = file.get(f"{split}_co_stds")
        fig = inputs_figure(
            co_means[trials],
            stds[trials] if stds is not None and stds.shape == co_means.shape else None,
            trial_ids=trials,
        )
        caption = "Inferred inputs (posterior mean of the controller outputs, +- 1 s.d.)."
        section.figures.append((f"{name}_inputs.png", caption, png_bytes(fig)))
    return section


def _rates(
    file: h5py.File, split: str, trials: np.ndarray, name: str, reconstruction: str | None
) -> tuple[str, str, bytes]:
    rates = file[f"{split}_output_params"][trials].astype(np.float64)
    data = file[f"{split}_recon_data"][trials].astype(np.float64)
    truth = None
    if f"{split}_truth" in file and file[f"{split}_truth"].shape[1:] == rates.shape[1:]:
        truth = file[f"{split}_truth"][trials].astype(np.float64)
        if "conversion_factor" in file:  # truth in data units, as `evaluate` compares them
            truth = truth / float(np.asarray(file["conversion_factor"][()]).reshape(()))
    encod = file.get(f"{split}_encod_data")
    held_in = None
    if encod is not None and tuple(encod.shape[1:]) != tuple(data.shape[1:]):
        held_in = (int(encod.shape[1]), int(encod.shape[2]))
    counts = _is_count_data(data, reconstruction)
    fig = rates_figure(data, rates, truth, trial_ids=trials, counts=counts, held_in=held_in)
    caption = (
        f"Observed data ({'spike raster' if counts else 'heatmap'}) next to the inferred rates "
        "(output_params, mean per bin)"
        + ("; dashed: true rates (truth / conversion_factor)" if truth is not None else "")
        + ("; red lines: held-out channels / forward-prediction bins" if held_in else "")
        + "."
    )
    return f"{name}_rates.png", caption, png_bytes(fig)


def _latents(file: h5py.File, split: str, n_trials: int, name: str) -> list[tuple[str, str, bytes]]:
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
    return [(f"{name}_latents.png", caption, png_bytes(fig))]


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
    if reconstruction is not None:
        return str(reconstruction) == "poisson"
    observed = data[np.isfinite(data)]
    return bool(observed.size and np.all(observed >= 0) and np.all(observed == np.round(observed)))


def _metrics(run: RunFiles) -> _Section:
    section = _Section("Metrics")
    if not run.finished:
        section.notes.append("Computed from lfads_output_sess*.h5 once the run has written them.")
        return section
    from autolfads.analysis.evaluate import evaluate_run  # imports torch: only when needed

    try:
        results = evaluate_run(run.out)
    except AutoLFADSError as err:
        section.notes.append(f"Could not compute the metrics: {err}")
        return section
    sessions = list(results)
    names = sorted({n for metrics in results.values() for n in metrics})
    section.table = [["metric", *sessions]] + [
        [n, *(f"{results[s].get(n, float('nan')):.4f}" for s in sessions)] for n in names
    ]
    section.notes.append(
        "As `autolfads evaluate` computes them: nll per element, bits per spike (bps), "
        "co-bps / fp-bps on held-out channels / forward-prediction bins, rate R^2 against truth."
    )
    return section


# --------------------------------------------------------------------------- the page


def make_report(out_dir: str | Path) -> Path:
    """Write OUT/report/*.png and OUT/report/index.html for the run in `out_dir`.

    Works on a finished run and on one still training (only the logs exist yet).

    Returns:
        The path of index.html.

    Raises:
        UsageError: `out_dir` is not a run folder with a fit log (nothing to report).
    """
    run = read_run(out_dir)
    sections = [_overview(run), _training(run), _hyperparameters(run), *_sessions(run)]
    sections.append(_metrics(run))
    folder = run.out / REPORT_DIR
    written = set()
    for section in sections:
        for name, _, png in section.figures:
            with atomic_path(folder / name) as tmp:
                tmp.write_bytes(png)
            written.add(name)
    for stale in folder.glob("*.png"):  # figures of an earlier report that this one lacks
        if stale.name not in written:
            stale.unlink()
    index = folder / INDEX_NAME
    with atomic_path(index) as tmp:
        tmp.write_text(render_html(run.out, sections), encoding="utf-8")
    return index


def render_html(out: Path, sections: Sequence[_Section]) -> str:
    """The page: every section's notes, table and figures (PNGs embedded as data URIs)."""
    when = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
    body = [
        f"<h1>autolfads report</h1><p class='where'>{html.escape(str(out.resolve()))} &middot; "
        f"made {when}</p>"
    ]
    for section in sections:
        body.append(f"<section><h2>{html.escape(section.title)}</h2>")
        body.extend(f"<p>{html.escape(note)}</p>" for note in section.notes)
        if section.table:
            header, *rows = section.table
            cells = "".join(f"<th>{html.escape(c)}</th>" for c in header)
            body.append(f"<table><tr>{cells}</tr>")
            for row in rows:
                body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
            body.append("</table>")
        for name, caption, png in section.figures:
            data = base64.b64encode(png).decode("ascii")
            body.append(
                f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(name)}'>"
                f"<figcaption><b>{html.escape(name)}</b>: {html.escape(caption)}</figcaption>"
                "</figure>"
            )
        body.append("</section>")
    return _PAGE.format(title=html.escape(f"autolfads report: {out.name}"), body="\n".join(body))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1250px; margin: 1em auto; padding: 0 1em;
  color: #222; }}
h2 {{ border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }}
.where {{ color: #666; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }}
figcaption {{ font-size: .9em; color: #444; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: .2em .6em; }}
td {{ text-align: right; font-family: monospace; }} td:first-child {{ text-align: left; }}
</style></head>
<body>
{body}
</body></html>
"""


# --------------------------------------------------------------------------- commands


def report_command(args: argparse.Namespace) -> int:
    """`autolfads report OUT`: make the report and say where it is. Returns the exit status."""
    index = make_report(args.out)
    print(f"wrote {index}")
    return 0


def report_at_end(out: str | Path, quiet: bool = False) -> Path | None:
    """Make the report at the end of `run`, `train` or `demo`, after the outputs are written.

    A failure must not lose the run: it prints one warning line on stderr and returns None.
    """
    try:
        index = make_report(out)
    except Exception as err:  # the run's outputs are complete; the report is only a view of them
        message = " ".join(str(err).split())
        print(
            f"warning: no report ({type(err).__name__}: {message}); "
            f"the outputs are complete, retry with `autolfads report {out}`",
            file=sys.stderr,
        )
        return None
    if not quiet:
        print(f"report: {index}")
    return index
