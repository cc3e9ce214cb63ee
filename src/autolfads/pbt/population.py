"""The AutoLFADS generation loop: train every worker for a generation, score, exploit, explore, repeat.

Workers are split into shards (batched workers); a backend runs the shards. The policy (who copies whom,
new hyperparameters, when to stop) comes from the pure functions of `autolfads.pbt.policy`.
The population is checkpointed atomically after every generation (`pbt_state.pt`), so a run interrupted
at any point resumes from the last finished generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from autolfads._atomic import atomic_path
from autolfads.data import SessionData
from autolfads.errors import ConfigError, UsageError
from autolfads.model.structure import LFADSStructure
from autolfads.outputs.checkpoint import LFADS
from autolfads.outputs.fitlog import FitLog
from autolfads.pbt.backends import Backend, make_backend
from autolfads.pbt.hps import HPSpec, hp_specs_from_config, sample_initial
from autolfads.pbt.policy import BestSnapshot, exploit, explore, should_stop, smooth_metric
from autolfads.pbt.runner import ShardSpec
from autolfads.progress import ProgressLine
from autolfads.train.fit import hps_from_config
from autolfads.train.shard import HP_NAMES, Shard, TrainSettings

__all__ = ["PBTResult", "run_pbt", "plan_shards", "default_workers_per_shard", "STATE_FILE"]

STATE_FILE = "pbt_state.pt"
STATE_FORMAT = "autolfads-pbt-1"


@dataclass
class PBTResult:
    """The outcome of a population run."""

    model: LFADS
    best: BestSnapshot
    generations: int
    epochs: int
    stop_reason: str


@dataclass
class _PopulationState:
    """Everything the driver carries from one generation to the next (and saves for resume)."""

    generation: int = 0
    epoch: int = 0
    smoothed: np.ndarray = field(default_factory=lambda: np.zeros(0))
    copied_from: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    best_per_generation: list[float] = field(default_factory=list)
    best: BestSnapshot | None = None
    best_state: dict | None = None
    history: list[dict] = field(default_factory=list)
    stop_reason: str = ""


def default_workers_per_shard(structure: LFADSStructure, batch_size: int, n_workers: int) -> int:
    """Workers batched per shard when `pbt.workers_per_shard` is null.

    Batching pays for small models (up to 1.6x on a 2-core CPU) and not for medium or large ones
    (bench/population.py); the size is judged by the generator's work per step.
    """
    small = structure.gen_dim <= 64 and batch_size * structure.recon_seq_len <= 100 * 50
    return n_workers if small else 1


def plan_shards(n_workers: int, workers_per_shard: int) -> list[tuple[int, ...]]:
    """Global worker ids of each shard, in order."""
    size = max(1, min(int(workers_per_shard), n_workers))
    return [tuple(range(i, min(i + size, n_workers))) for i in range(0, n_workers, size)]


def _searched_specs(cfg: DictConfig) -> list[HPSpec]:
    specs = hp_specs_from_config(cfg.pbt.hps)
    for spec in specs:
        if spec.name not in HP_NAMES:
            raise ConfigError(
                f"pbt.hps.{spec.name}: not a searchable hyperparameter (searchable: {', '.join(HP_NAMES)})"
            )
    return specs


def _initial_table(cfg: DictConfig, specs: Sequence[HPSpec], rng: np.random.Generator) -> dict:
    n = int(cfg.pbt.num_workers)
    table = hps_from_config(cfg, n)
    table.update(sample_initial(specs, n, rng=rng))
    return table


def _merge(per_shard: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-shard (K_s,) arrays into population (K,) arrays, keeping common keys."""
    keys = set(per_shard[0]).intersection(*per_shard[1:]) if len(per_shard) > 1 else per_shard[0]
    return {
        k: np.concatenate([np.asarray(d[k]) for d in per_shard]) for k in per_shard[0] if k in keys
    }


class _Population:
    """Global worker ids mapped onto shards of a backend."""

    def __init__(self, backend: Backend, shards: Sequence[tuple[int, ...]]) -> None:
        self.backend, self.shards = backend, list(shards)
        self.where = {w: (s, i) for s, ids in enumerate(shards) for i, w in enumerate(ids)}

    def hp_table(self) -> dict[str, np.ndarray]:
        return _merge(self.backend.call_all("hp_table", [()] * len(self.shards)))

    def set_hps(self, table: dict[str, np.ndarray]) -> None:
        args = [({k: v[list(ids)] for k, v in table.items()},) for ids in self.shards]
        self.backend.call_all("set_hps", args)

    def worker_state(self, worker: int) -> dict:
        s, i = self.where[worker]
        return self.backend.call(s, "worker_state", i)

    def apply_copies(self, sources: np.ndarray) -> None:
        """Worker w becomes a copy of worker sources[w] (pre-copy states: all reads before writes)."""
        moves = [(int(src), w) for w, src in enumerate(sources) if int(src) != w]
        cross = {src for src, w in moves if self.where[src][0] != self.where[w][0]}
        fetched = {src: self.worker_state(src) for src in cross}
        for s in range(len(self.shards)):
            local = [
                (self.where[src][1], self.where[w][1])
                for src, w in moves
                if self.where[w][0] == s and self.where[src][0] == s
            ]
            if local:
                self.backend.call(s, "copy_workers", [a for a, _ in local], [b for _, b in local])
        for src, w in moves:
            s, i = self.where[w]
            if src in fetched:
                self.backend.call(s, "load_worker_state", i, fetched[src])


def run_pbt(
    cfg: DictConfig,
    sessions: Sequence[SessionData],
    out: Path,
    *,
    resume: bool = False,
    quiet: bool = False,
) -> PBTResult:
    """Run AutoLFADS on `sessions`, writing fitlog.csv, pbt_history.csv and pbt_state.pt into `out`."""
    seed = int(cfg.seed)
    n_workers = int(cfg.pbt.num_workers)
    if n_workers < 1:
        raise ConfigError(f"pbt.num_workers must be >= 1, got {n_workers}")
    structure = LFADSStructure.from_config(cfg.model, [s.dims.as_dict() for s in sessions])
    settings = TrainSettings.from_config(cfg)
    specs = _searched_specs(cfg)
    rng = np.random.default_rng(seed)
    table = _initial_table(cfg, specs, rng)
    per_shard = cfg.pbt.workers_per_shard
    per_shard = (
        int(per_shard)
        if per_shard
        else default_workers_per_shard(structure, settings.batch_size, n_workers)
    )
    shards = plan_shards(n_workers, per_shard)
    shard_specs = [
        ShardSpec(
            ids,
            {k: v[list(ids)] for k, v in table.items()},
            structure,
            settings,
            str(cfg.device),
            seed * 1000 + i,
            float(cfg.model.sv_rate),
        )
        for i, ids in enumerate(shards)
    ]
    backend = make_backend(str(cfg.pbt.backend), shard_specs, sessions)
    population = _Population(backend, shards)
    fitlog = FitLog(out / "fitlog.csv")
    state = _PopulationState(smoothed=np.full(n_workers, np.nan), copied_from=np.arange(n_workers))
    if resume and (out / STATE_FILE).exists():
        state, rng = _load_state(out / STATE_FILE, cfg, backend, len(shards))
        fitlog = _resumed_fitlog(out / "fitlog.csv", state.epoch)
        if state.stop_reason and not _stop_decision(cfg, state).stop:
            state.stop_reason = ""  # a finished run resumed with a looser stop rule trains on
    elif resume:
        raise UsageError(f"--resume: {out / STATE_FILE} not found; nothing to resume")
    else:  # the starting population, so that even generation 0 can be resumed or redone
        _save_state(out / STATE_FILE, cfg, state, rng, backend, len(shards))

    interval = int(cfg.pbt.perturbation_interval)
    first = max(int(cfg.pbt.burn_in_period), settings.ramp_start + settings.ramp_epochs, interval)
    max_generations = int(cfg.pbt.max_generations)
    stop_reason = state.stop_reason
    try:
        with ProgressLine(max_generations, quiet, label="generation") as progress:
            while not state.stop_reason:
                length = first if state.generation == 0 else interval
                start, stop = state.epoch, state.epoch + length
                results = backend.call_all("train_epochs", [(start, stop)] * len(shards))
                hps_now = population.hp_table()
                for offset in range(length):
                    metrics = _merge([r[offset] for r in results])
                    for w in range(n_workers):
                        state.smoothed[w] = smooth_metric(
                            float(metrics["valid/recon"][w]),
                            None if np.isnan(state.smoothed[w]) else float(state.smoothed[w]),
                        )
                    metrics["valid/recon_smth"] = state.smoothed.copy()
                    fitlog.add_epoch(
                        start + offset,
                        state.generation,
                        metrics,
                        hps_now,
                        range(n_workers),
                        extra={"copied_from": state.copied_from},
                    )
                state.epoch = stop
                scores = np.where(np.isfinite(state.smoothed), state.smoothed, np.nan)
                _update_best(state, scores, population)
                finite = scores[np.isfinite(scores)]
                state.best_per_generation.append(float(finite.min()) if finite.size else np.nan)
                decision = _stop_decision(cfg, state, finished=state.generation + 1)
                if decision.stop:
                    stop_reason = state.stop_reason = decision.reason
                    _record_generation(state, scores, hps_now, np.arange(n_workers), hps_now)
                    state.generation += 1
                    _save_state(out / STATE_FILE, cfg, state, rng, backend, len(shards))
                    fitlog.flush()
                    _write_history(out, state.history)
                    break
                sources = exploit(
                    np.nan_to_num(scores, nan=np.nan),
                    method=str(cfg.pbt.exploit.method),
                    quantile=float(cfg.pbt.exploit.quantile),
                    rng=rng,
                )
                new_table = explore(
                    hps_now,
                    sources,
                    specs,
                    rng=rng,
                    resample_probability=float(cfg.pbt.explore.resample_probability),
                )
                population.apply_copies(sources)
                population.set_hps(new_table)
                state.smoothed = state.smoothed[sources]
                state.copied_from = sources.copy()
                _record_generation(state, scores, hps_now, sources, new_table)
                copied = int(np.sum(sources != np.arange(n_workers)))
                state.generation += 1
                _save_state(out / STATE_FILE, cfg, state, rng, backend, len(shards))
                fitlog.flush()
                _write_history(out, state.history)
                progress.update(
                    state.generation,
                    f"epoch {state.epoch}  best {np.nanmin(scores):.4f}  median "
                    f"{np.nanmedian(scores):.4f}  copied {copied}/{n_workers}",
                )
    finally:
        backend.shutdown()
    model = _best_model(state, structure, settings, cfg, sessions)
    assert state.best is not None
    return PBTResult(model, state.best, state.generation, state.epoch, stop_reason)


def _stop_decision(cfg: DictConfig, state: _PopulationState, finished: int | None = None):
    """The stop rule on the generations finished so far (`finished`, default state.generation)."""
    return should_stop(
        state.best_per_generation,
        patience=int(cfg.pbt.patience),
        min_improvement_ratio=float(cfg.pbt.min_improvement_ratio),
        generation=state.generation if finished is None else finished,
        max_generations=int(cfg.pbt.max_generations),
    )


def _update_best(state: _PopulationState, scores: np.ndarray, population: _Population) -> None:
    """Keep a snapshot of the best worker seen in any generation."""
    if not np.isfinite(scores).any():
        return
    w = int(np.nanargmin(scores))
    if state.best is None or scores[w] < state.best.score:
        state.best = BestSnapshot(state.generation, w, float(scores[w]))
        state.best_state = population.worker_state(w)


def _record_generation(
    state: _PopulationState,
    scores: np.ndarray,
    before: dict[str, np.ndarray],
    sources: np.ndarray,
    after: dict[str, np.ndarray],
) -> None:
    for w in range(len(scores)):
        row = {
            "generation": state.generation,
            "epoch": state.epoch,
            "worker_id": w,
            "score": float(scores[w]),
            "copied_from": int(sources[w]),
        }
        row.update({f"hp_before/{k}": float(v[w]) for k, v in before.items()})
        row.update({f"hp_after/{k}": float(v[w]) for k, v in after.items()})
        state.history.append(row)


def _write_history(out: Path, history: list[dict]) -> None:
    with atomic_path(out / "pbt_history.csv") as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False)


def _best_model(
    state: _PopulationState,
    structure: LFADSStructure,
    settings: TrainSettings,
    cfg: DictConfig,
    sessions: Sequence[SessionData],
) -> LFADS:
    """The best snapshot as a K = 1 model."""
    if state.best_state is None:
        raise RuntimeError("every worker diverged: no finite validation score in any generation")
    hps = {k: np.array([v]) for k, v in state.best_state["hps"].items()}
    single = Shard(structure, settings, hps, device=str(cfg.device), seed=int(cfg.seed))
    single.load_worker_state(0, state.best_state)
    config = OmegaConf.to_container(cfg, resolve=True)
    return LFADS(single.net, state.best_state["hps"], config, [s.name for s in sessions])


def _save_state(
    path: Path,
    cfg: DictConfig,
    state: _PopulationState,
    rng: np.random.Generator,
    backend: Backend,
    n_shards: int,
) -> None:
    """The whole population after a generation, atomically (loads with weights_only=True)."""
    payload = {
        "format": STATE_FORMAT,
        "config": OmegaConf.to_yaml(cfg, resolve=True),
        "generation": state.generation,
        "epoch": state.epoch,
        "smoothed": torch.as_tensor(state.smoothed),
        "copied_from": torch.as_tensor(state.copied_from),
        "best_per_generation": list(state.best_per_generation),
        "best": None if state.best is None else vars(state.best).copy(),
        "best_state": state.best_state,
        "history": state.history,
        "stop_reason": state.stop_reason,
        "rng": rng.bit_generator.state,
        "shards": backend.call_all("state_dict", [()] * n_shards),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _load_state(
    path: Path, cfg: DictConfig, backend: Backend, n_shards: int
) -> tuple[_PopulationState, np.random.Generator]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != STATE_FORMAT:
        raise UsageError(f"--resume: {path} is not an autolfads population checkpoint")
    saved = OmegaConf.create(payload["config"])
    for key in ("model", "datamodule", "pbt.num_workers", "pbt.workers_per_shard", "seed"):
        if OmegaConf.select(saved, key) != OmegaConf.select(cfg, key):
            raise UsageError(
                f"--resume: config {key} differs from the interrupted run's; resume with the same config"
            )
    if len(payload["shards"]) != n_shards:
        raise UsageError("--resume: the interrupted run had a different number of shards")
    for i, shard_state in enumerate(payload["shards"]):
        backend.call(i, "load_state_dict", shard_state)
    rng = np.random.default_rng()
    rng.bit_generator.state = payload["rng"]
    best = payload["best"]
    state = _PopulationState(
        generation=int(payload["generation"]),
        epoch=int(payload["epoch"]),
        smoothed=payload["smoothed"].numpy().copy(),
        copied_from=payload["copied_from"].numpy().copy(),
        best_per_generation=list(payload["best_per_generation"]),
        best=None if best is None else BestSnapshot(**best),
        best_state=payload["best_state"],
        history=list(payload["history"]),
        stop_reason=str(payload["stop_reason"]),
    )
    return state, rng


def _resumed_fitlog(path: Path, last_epoch: int) -> FitLog:
    """The fit log up to the resumed generation's last epoch."""
    rows = pd.read_csv(path).to_dict("records") if path.exists() else []
    log = FitLog(path, rows)
    log.truncate(last_epoch - 1)
    return log
