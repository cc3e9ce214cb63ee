"""Training one LFADS model (K = 1): warm-up, learning-rate decay on plateau, early stopping.

The loop reads top to bottom: train an epoch, evaluate, log, keep the best weights, decide.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from autolfads.analysis.metrics import bits_per_spike, r2_score, smooth_metric
from autolfads.data import SessionData
from autolfads.data.tensors import SessionTensors, to_tensors
from autolfads.model.structure import LFADSStructure
from autolfads.outputs.checkpoint import LFADS
from autolfads.outputs.fitlog import FitLog
from autolfads.progress import ProgressLine
from autolfads.train.alignment import align_network
from autolfads.train.objective import short_warmup_note
from autolfads.train.shard import HP_NAMES, Shard, TrainSettings
from autolfads.train.transfer import Transfer

__all__ = [
    "FitResult",
    "fit_single_model",
    "hps_from_config",
    "start_session_maps",
    "validation_extras",
]


@dataclass
class FitResult:
    """The best model found and how training went (`fitlog`: one row per epoch)."""

    model: LFADS
    best_epoch: int
    best_score: float
    epochs_run: int
    stop_reason: str
    fitlog: pd.DataFrame


def hps_from_config(cfg: DictConfig, n_workers: int) -> dict[str, np.ndarray]:
    """Per-worker hyperparameters all set to the config's `model` values: name -> (K,)."""
    return {n: np.full(n_workers, float(cfg.model[n])) for n in HP_NAMES}


def validation_extras(
    shard: Shard, sessions: Sequence[SessionData], means: Sequence[np.ndarray | None]
) -> dict[str, np.ndarray]:
    """'valid/r2' (truth present) and 'valid/bps' (Poisson) per worker, from valid-split means.

    Each is the mean over the sessions where it is computable; with several sessions each
    session's own value is added as 'valid/r2/sess{i}' and 'valid/bps/sess{i}' (i its index in
    `sessions`, as in `lfads_output_sess{i}.h5`). Every value is a (K,) array.
    """
    workers = range(shard.n_workers)
    poisson = shard.structure.reconstruction == "poisson"
    per_session: dict[str, dict[int, np.ndarray]] = {"valid/r2": {}, "valid/bps": {}}
    for i, (sess, mean) in enumerate(zip(sessions, means, strict=True)):
        if mean is None:
            continue
        if "valid" in sess.truth:
            truth = sess.truth["valid"]
            per_session["valid/r2"][i] = np.array([r2_score(truth, mean[w]) for w in workers])
        if poisson:
            target = sess.recon["valid"]
            per_session["valid/bps"][i] = np.array(
                [bits_per_spike(mean[w], target) for w in workers]
            )
    extras = {
        name: np.mean(list(values.values()), axis=0)
        for name, values in per_session.items()
        if values
    }
    if len(sessions) > 1:
        for name, values in per_session.items():
            extras.update({f"{name}/sess{i}": v for i, v in values.items()})
    return extras


def start_session_maps(
    shard: Shard,
    data: Sequence[SessionTensors],
    sessions: Sequence[SessionData],
    new_session: bool = False,
) -> list[str]:
    """Start each session's read-out at its channel means, then, with `align_readin`, the
    read-ins in one shared space (`autolfads.train.alignment`). Returns notes for the user."""
    shard.init_readout_biases(data)
    if not shard.settings.align_readin:
        return []
    return align_network(shard.net, sessions, new_session=new_session)


def fit_single_model(
    cfg: DictConfig,
    sessions: Sequence[SessionData],
    out: Path | None,
    quiet: bool = False,
    transfer: Transfer | None = None,
) -> FitResult:
    """Train one model on `sessions` and return the best one (by valid/recon_smth).

    With `transfer` (`autolfads train --from`), the weights the sessions share are the
    checkpoint's and stay frozen; only the session's read-in, read-out and observation model are
    trained (`autolfads.train.transfer`; `cfg` from `Transfer.config_base`). Writes
    `out/fitlog.csv` after every epoch; with `out` None nothing is written (the log is in the
    result).
    """
    device = torch.device(str(cfg.device))
    seed = int(cfg.seed)
    structure = LFADSStructure.from_config(cfg.model, [s.dims.as_dict() for s in sessions])
    settings = TrainSettings.from_config(cfg)
    hps = hps_from_config(cfg, 1)
    frozen = transfer.frozen_weights() if transfer is not None else None
    shard = Shard(
        structure, settings, hps, device=device, seed=seed, accel=cfg.get("accel"), frozen=frozen
    )
    data: list[SessionTensors] = to_tensors(sessions, device, float(cfg.model.sv_rate), seed)
    for line in start_session_maps(shard, data, sessions, new_session=transfer is not None):
        print(line, file=sys.stderr, flush=True)
    fitlog = FitLog(out / "fitlog.csv" if out is not None else None)

    max_epochs = int(cfg.trainer.max_epochs)
    warmup_end = settings.ramp_start + settings.ramp_epochs
    note = short_warmup_note(max_epochs, warmup_end)
    if note:
        print(note, file=sys.stderr, flush=True)
    lr_patience, lr_decay = int(cfg.model.lr_patience), float(cfg.model.lr_decay)
    lr_stop, stop_patience = float(cfg.model.lr_stop), int(cfg.trainer.early_stopping_patience)

    smoothed: float | None = None
    best_score, best_epoch, best_state = np.inf, -1, None
    plateau_best, since_plateau_best = np.inf, 0
    stop_reason = f"reached trainer.max_epochs={max_epochs}"
    epoch = 0
    with ProgressLine(max_epochs, quiet) as progress:
        for epoch in range(max_epochs):
            train_metrics = shard.train_epoch(data, epoch)
            valid_metrics, means = shard.evaluate(data, epoch, return_means=True)
            smoothed = smooth_metric(float(valid_metrics["valid/recon"][0]), smoothed)
            valid_metrics["valid/recon_smth"] = np.array([smoothed])
            extras = validation_extras(shard, sessions, means)
            fitlog.add_epoch(
                epoch, 0, {**train_metrics, **valid_metrics, **extras}, shard.hp_table(), [0]
            )
            fitlog.flush()

            if np.isfinite(smoothed) and smoothed < best_score:
                best_score, best_epoch = smoothed, epoch
                best_state = copy.deepcopy(shard.net.state_dict())
            summary = (
                f"train {train_metrics['train/recon'][0]:.4f}  valid {smoothed:.4f}  "
                f"best {best_score:.4f}@{best_epoch}  lr {float(shard.hps['lr_init'][0]):.2e}"
            )
            if "valid/r2" in extras:
                summary += f"  R2 {extras['valid/r2'][0]:.3f}"
            progress.update(epoch + 1, summary)

            if not np.isfinite(smoothed):
                stop_reason = f"validation loss is not finite at epoch {epoch}"
                break
            if epoch < warmup_end:  # no decay or stopping while KL/L2 are still ramping up
                continue
            if smoothed < plateau_best:
                plateau_best, since_plateau_best = smoothed, 0
            else:
                since_plateau_best += 1
                if since_plateau_best >= lr_patience:
                    shard.hps["lr_init"].mul_(lr_decay)
                    since_plateau_best = 0
            if float(shard.hps["lr_init"][0]) < lr_stop:
                stop_reason = f"learning rate fell below model.lr_stop={lr_stop}"
                break
            if epoch - max(best_epoch, warmup_end) >= stop_patience:
                stop_reason = f"no improvement for {stop_patience} epochs"
                break

    if best_state is not None:
        shard.net.load_state_dict(best_state)
    model = _single_model(shard, cfg, sessions)
    if transfer is not None:
        model.fitted_from = transfer.record()
    return FitResult(model, best_epoch, float(best_score), epoch + 1, stop_reason, fitlog.frame())


def _single_model(shard: Shard, cfg: DictConfig, sessions: Sequence[SessionData]) -> LFADS:
    hps = {name: float(v[0]) for name, v in shard.hp_table().items()}
    config = OmegaConf.to_container(cfg, resolve=True)
    return LFADS(shard.net, hps, config, [s.name for s in sessions])  # type: ignore[arg-type]
