"""Plumbing shared by `autolfads train`, `autolfads run` and `autolfads.fit` (api.py): the config,
the output folder, validated data, the final outputs (docs/data-format.md, Outputs) and the
summary lines."""

from __future__ import annotations

import argparse
import shutil
import sys
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from autolfads._atomic import atomic_path
from autolfads.config import check_data_dims, check_device, load_config
from autolfads.data import SessionData, read_sessions, write_session_outputs
from autolfads.errors import UsageError
from autolfads.model.lfads import MAPS
from autolfads.model.observations import OBSERVATION_MODELS, ObservationModel
from autolfads.model.priors import CO_PRIORS, IC_PRIORS, ICPrior, InputPrior
from autolfads.model.structure import LFADSStructure
from autolfads.outputs.checkpoint import LFADS
from autolfads.outputs.files import output_path
from autolfads.outputs.posterior import as_output_datasets
from autolfads.parts import resolve_part
from autolfads.pbt.policy import HIGHER_IS_BETTER
from autolfads.pbt.population import PBTResult
from autolfads.train.alignment import check_file_alignments
from autolfads.train.augment import AUGMENTATIONS, Augmentation
from autolfads.train.fit import FitResult

__all__ = [
    "config_from_args",
    "resolve_config",
    "check_parts",
    "prepare_out_dir",
    "load_sessions",
    "prepare_sessions",
    "write_final_outputs",
    "train_summary",
    "pbt_summary",
    "ZIP_NAME",
]

ZIP_NAME = "autolfads.zip"


def config_from_args(
    args: argparse.Namespace,
    overrides: Sequence[str],
    base: Mapping[str, Any] | None = None,
    base_source: str = "base",
) -> DictConfig:
    """Resolved and checked config: defaults <- `base` (e.g. a checkpoint's, `train --from`) <-
    -c file <- k=v overrides <- --device/--seed/--samples; the device exists and every swappable
    part names a class (`check_parts`)."""
    extra = list(overrides)
    if getattr(args, "device", None):
        extra.append(f"device={args.device}")
    if getattr(args, "seed", None) is not None:
        extra.append(f"seed={args.seed}")
    if getattr(args, "samples", None) is not None:
        extra.append(f"trainer.samples={args.samples}")
    return resolve_config(getattr(args, "config", None), extra, base, base_source)


def resolve_config(
    config: str | Path | Mapping[str, Any] | None,
    overrides: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
    base_source: str = "base",
) -> DictConfig:
    """Resolved and checked config (`autolfads.config.load_config`: defaults <- `base` <- `config`
    (a YAML file, packaged name or config tree) <- overrides); the device exists and every
    swappable part names a class (`check_parts`)."""
    cfg = load_config(config, overrides, base=base, base_source=base_source)
    check_device(str(cfg.device))
    check_parts(cfg)
    return cfg


def check_parts(cfg: DictConfig) -> None:
    """Every swappable part of `cfg` names a class of the right kind (ConfigError, one line)."""
    model = cfg.model
    resolve_part("model.reconstruction", model.reconstruction, OBSERVATION_MODELS, ObservationModel)
    resolve_part("model.ic_prior", model.ic_prior, IC_PRIORS, ICPrior)
    resolve_part("model.co_prior", model.co_prior, CO_PRIORS, InputPrior)
    resolve_part("model.readin", model.readin, MAPS, nn.Module)
    resolve_part("model.readout", model.readout, MAPS, nn.Module)
    for name in cfg.datamodule.augmentations:
        resolve_part("datamodule.augmentations", name, AUGMENTATIONS, Augmentation)


def prepare_out_dir(out: str | Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Create OUT, refusing an existing non-empty one unless `resume` or `overwrite`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a folder")
    non_empty = out.is_dir() and any(out.iterdir())
    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    if non_empty and not (resume or overwrite):
        raise UsageError(f"output folder {out} is not empty: pass --resume or --overwrite")
    if overwrite and out.is_dir():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def load_sessions(
    paths: Sequence[str],
    cfg: DictConfig,
    *,
    quiet: bool = False,
    read: Callable[[Sequence[str], DictConfig], list[SessionData]] | None = None,
) -> list[SessionData]:
    """Read and validate the data files, then `prepare_sessions`.

    `read(paths, cfg)` replaces the plain reading (`read_sessions` with the config's observation
    model), e.g. to check the files against a checkpoint first (`Transfer.read_sessions`).
    """
    if not paths:
        raise UsageError("no data file given")
    if read is not None:
        sessions = read(list(paths), cfg)
    else:
        sessions = read_sessions(
            list(paths),
            reconstruction=str(cfg.model.reconstruction),
            allow_noninteger=bool(cfg.model.allow_noninteger),
        )
    prepare_sessions(sessions, cfg, quiet=quiet)
    return sessions


def prepare_sessions(sessions: Sequence[SessionData], cfg: DictConfig, *, quiet: bool) -> None:
    """Fill or check the data dimensions in `cfg.model` from validated sessions.

    The model the config describes is checked against the data too (e.g. `model.ci_lag` shorter
    than the trials, a file's alignment matrix against the read-in width), so that nothing is
    written before a refusal. A `datamodule.batch_size`
    larger than every session's train split becomes the largest split (one batch of all its
    trials), with a note on stderr per smaller session unless `quiet`.
    """
    for sess in sessions:
        check_data_dims(cfg, sess.dims.as_dict(), source=str(sess.path), fill=len(sessions) == 1)
    structure = LFADSStructure.from_config(cfg.model, [sess.dims.as_dict() for sess in sessions])
    check_file_alignments(sessions, structure)
    _fit_batch_size(cfg, sessions, quiet=quiet)


def _fit_batch_size(cfg: DictConfig, sessions: Sequence[SessionData], *, quiet: bool) -> None:
    """A batch larger than a train split is one batch of all its trials: say so, once per file."""
    batch_size = int(cfg.datamodule.batch_size)
    n_train = [sess.encod["train"].shape[0] for sess in sessions]
    for sess, n in zip(sessions, n_train, strict=True):
        if n < batch_size and not quiet:
            print(
                f"note: datamodule.batch_size={batch_size} is larger than the {n} train trials "
                f"of {sess.path}: one batch of all {n} trials",
                file=sys.stderr,
            )
    if max(n_train) < batch_size:  # the same batches, and config.yaml says what ran
        cfg.datamodule.batch_size = max(n_train)


def write_final_outputs(
    out: Path,
    model: LFADS,
    sessions: Sequence[SessionData],
    cfg: DictConfig,
    fitlog_path: Path,
) -> list[Path]:
    """Posterior outputs per session, model.ckpt, config.yaml and autolfads.zip, each atomically."""
    n_samples = int(cfg.trainer.samples)
    posterior = model.posterior(sessions, n_samples=n_samples, seed=int(cfg.seed))
    written = []
    for i, (sess, post) in enumerate(zip(sessions, posterior, strict=True)):
        path = output_path(out, i)
        written.append(write_session_outputs(sess.path, path, as_output_datasets(post)))
    written.append(model.save(out / "model.ckpt"))
    written.append(write_config(out / "config.yaml", cfg, header=_fitted_from_note(model)))
    written.append(write_zip(out, [fitlog_path, *written[: len(sessions)], out / "model.ckpt"]))
    return written


def write_config(path: Path, cfg: DictConfig, header: str | None = None) -> Path:
    """The fully resolved config as YAML, atomically; `header` as a comment line first."""
    with atomic_path(path) as tmp:
        comment = f"# {header}\n" if header else ""
        tmp.write_text(comment + OmegaConf.to_yaml(cfg, resolve=True))
    return path


def _fitted_from_note(model: LFADS) -> str | None:
    """One line on where a model fitted `--from` a checkpoint came from, else None."""
    origin = model.fitted_from
    if not origin:
        return None
    sessions = ", ".join(origin.get("sessions", []))
    return (
        f"fitted --from {origin.get('checkpoint')} (sessions: {sessions}): only "
        f"{'/'.join(origin.get('trained', []))} of the new session trained, the rest frozen"
    )


def write_zip(out: Path, files: Sequence[Path]) -> Path:
    """`autolfads.zip` with the NeuroCAAS files (fitlog.csv, lfads_output_sess*.h5, model.ckpt)."""
    path = out / ZIP_NAME
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for f in files:
                zf.write(f, arcname=Path(f).name)
    return path


def train_summary(result: FitResult) -> str:
    """One line on how a single model's training went."""
    return (
        f"trained {result.epochs_run} epochs ({result.stop_reason}); best valid/recon_smth "
        f"{result.best_score:.4f} at epoch {result.best_epoch}"
    )


def pbt_summary(result: PBTResult, metric: str) -> str:
    """One line on how a population run went and which worker won (`metric`: `pbt.metric`)."""
    b = result.best
    value = -b.score if metric in HIGHER_IS_BETTER else b.score
    return (
        f"AutoLFADS: {result.generations} generations, {result.epochs} epochs ({result.stop_reason}); "
        f"best worker {b.worker} of generation {b.generation}, {metric} {value:.4f}"
    )
