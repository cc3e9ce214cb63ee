"""The AutoLFADS generation loop: train every worker for a generation, score, exploit, explore, repeat.

Workers are split into shards (batched workers); a backend runs the shards. The policy (who copies whom,
new hyperparameters, when to stop) comes from the pure functions of `autolfads.pbt.policy`.
The population is checkpointed atomically after every generation (`pbt_state.pt`), so a run interrupted
at any point resumes from the last finished generation. Without an output folder (`autolfads.fit`
from Python) nothing is written: the checkpoint is kept in memory where a lost shard may need it.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from autolfads._atomic import atomic_path
from autolfads.analysis.metrics import smooth_metric
from autolfads.config.settings import PBTSettings
from autolfads.data import SessionData
from autolfads.errors import ConfigError, UsageError
from autolfads.model.structure import LFADSStructure
from autolfads.outputs.checkpoint import LFADS
from autolfads.outputs.fitlog import FitLog
from autolfads.pbt.backends import (
    Backend,
    ShardLost,
    _auto_picks_ray,
    auto_plan,
    make_backend,
    ray_address,
    ray_available,
)
from autolfads.pbt.hps import sample_initial
from autolfads.pbt.policy import (
    BestSnapshot,
    exploit,
    explore,
    ranking_scores,
    should_stop,
    update_best,
)
from autolfads.pbt.runner import ShardSpec
from autolfads.pbt.schedule import GenerationSchedule
from autolfads.progress import ProgressLine
from autolfads.train.fit import hps_from_config
from autolfads.train.shard import Shard, TrainSettings

__all__ = [
    "PBTResult",
    "run_pbt",
    "plan_shards",
    "default_workers_per_shard",
    "activation_bytes_per_worker",
    "STATE_FILE",
]

STATE_FILE = "pbt_state.pt"
STATE_FORMAT = "autolfads-pbt-1"


@dataclass
class PBTResult:
    """The outcome of a population run (`fitlog`: one row per worker per epoch)."""

    model: LFADS
    best: BestSnapshot
    generations: int
    epochs: int
    stop_reason: str
    fitlog: pd.DataFrame


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


SHARD_MEMORY_BUDGET = 4 * 2**30  # bytes of training activations one batched shard may hold


def activation_bytes_per_worker(structure: LFADSStructure, batch_size: int) -> int:
    """Rough peak training memory of one worker's activations (bytes).

    About 10 floats are kept per unit, step and trial for backpropagation; this matches
    bench/population.py's peaks (medium model ~150 MB, large ~1.2 GB per worker).
    """
    s = structure
    units = (
        s.gen_dim
        + s.con_dim
        + 2 * s.ic_enc_dim
        + 2 * s.ci_enc_dim
        + s.fac_dim
        + max(s.recon_data_dims)
        + max(s.encod_data_dims)
    )
    return int(batch_size * s.recon_seq_len * units * 4 * 10)


def default_workers_per_shard(structure: LFADSStructure, batch_size: int, n_workers: int) -> int:
    """Workers batched per shard when `pbt.workers_per_shard` is null and shards run inline.

    bench/population.py (2-core CPU, 2026-11-22): one batched shard beat the same workers trained one
    after another by 2.6x for the small model and 1.8x for the chaotic-RNN-sized one at K = 16. So
    every worker is batched, up to `SHARD_MEMORY_BUDGET` of activations per shard.
    """
    per_worker = max(1, activation_bytes_per_worker(structure, batch_size))
    return max(1, min(int(n_workers), SHARD_MEMORY_BUDGET // per_worker))


def plan_shards(n_workers: int, workers_per_shard: int) -> list[tuple[int, ...]]:
    """Global worker ids of each shard, in order."""
    size = max(1, min(int(workers_per_shard), n_workers))
    return [tuple(range(i, min(i + size, n_workers))) for i in range(0, n_workers, size)]


def _initial_table(cfg: DictConfig, pbt: PBTSettings, rng: np.random.Generator) -> dict:
    """name -> (K,) starting values: the model's values, the searched ones drawn from their ranges."""
    table = hps_from_config(cfg, pbt.num_workers)
    table.update(sample_initial(pbt.hps, pbt.num_workers, rng=rng))
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
        """name -> (K,) current HPs of the whole population."""
        return _merge(self.backend.call_all("hp_table", [()] * len(self.shards)))

    def set_hps(self, table: dict[str, np.ndarray]) -> None:
        """Give every shard its workers' rows of `table` (name -> (K,))."""
        args = [({k: v[list(ids)] for k, v in table.items()},) for ids in self.shards]
        self.backend.call_all("set_hps", args)

    def worker_state(self, worker: int) -> dict:
        """Weights, optimiser state and HPs of global worker `worker`."""
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


def _plan_layout(
    pbt: PBTSettings, structure: LFADSStructure, settings: TrainSettings, address: str | None
) -> tuple[list[tuple[int, ...]], str, int | None]:
    """(shards as global worker ids, backend name resolved from auto, threads per shard or None).

    Parallel shards (Ray) get one shard per core group or per GPU (`auto_plan`); shards run inline
    take the batching rule of `default_workers_per_shard` and the process's threads.
    """
    n_workers, name = pbt.num_workers, pbt.backend
    if pbt.workers_per_shard:
        per_shard, threads = pbt.workers_per_shard, 1
    elif name != "inline" and ray_available():
        per_shard, threads = auto_plan(n_workers, structure, settings.batch_size, pbt.device)
    else:
        per_shard, threads = default_workers_per_shard(structure, settings.batch_size, n_workers), 1
    shards = plan_shards(n_workers, per_shard)
    if name == "auto":
        probe = [ShardSpec(ids, {}, structure, settings, pbt.device) for ids in shards]
        name = "ray" if _auto_picks_ray(probe, address) else "inline"
    if pbt.cpus_per_shard:
        threads = pbt.cpus_per_shard
    return shards, name, (threads if name == "ray" else None)


def run_pbt(
    cfg: DictConfig,
    sessions: Sequence[SessionData],
    out: Path | None,
    *,
    resume: bool = False,
    quiet: bool = False,
) -> PBTResult:
    """Run AutoLFADS on `sessions`, writing fitlog.csv, pbt_history.csv and pbt_state.pt into `out`
    (nothing with `out` None)."""
    if resume and out is None:
        raise UsageError("--resume needs the output folder of the interrupted run")
    pbt = PBTSettings.from_config(cfg)
    structure = LFADSStructure.from_config(cfg.model, [s.dims.as_dict() for s in sessions])
    settings = TrainSettings.from_config(cfg)
    _check_metric(pbt.metric, structure, sessions)
    for line in schedule(pbt).notes():
        print(line, file=sys.stderr, flush=True)
    rng = np.random.default_rng(pbt.seed)
    table = _initial_table(cfg, pbt, rng)
    address = ray_address(pbt.address)
    shards, backend_name, threads = _plan_layout(pbt, structure, settings, address)
    shard_specs = [
        ShardSpec(
            ids,
            {k: v[list(ids)] for k, v in table.items()},
            structure,
            settings,
            pbt.device,
            pbt.seed * 1000 + i,
            pbt.sv_rate,
            threads,
            pbt.accel,
        )
        for i, ids in enumerate(shards)
    ]
    backend = make_backend(
        backend_name,
        shard_specs,
        sessions,
        address=address,
        cpus_per_shard=threads,
        gpus_per_shard=pbt.gpus_per_shard,
    )
    loop = _Loop(cfg, pbt, out, backend, shards, quiet)
    try:
        if resume and out is not None and (out / STATE_FILE).exists():
            loop.restore()
            # a finished run resumed with more epochs or a looser stop rule trains on
            loop.state.stop_reason = loop.stop_reason(loop.state.best_per_generation)
        elif resume:
            raise UsageError(f"--resume: {out / STATE_FILE} not found; nothing to resume")
        else:  # the starting population, so that even generation 0 can be resumed or redone
            loop.start(rng)
        loop.run()
    finally:
        backend.shutdown()
    state = loop.state
    model = _best_model(state, structure, settings, cfg, sessions)
    assert state.best is not None
    return PBTResult(
        model, state.best, state.generation, state.epoch, state.stop_reason, loop.fitlog.frame()
    )


class _Loop:
    """The generation loop of one run: state, backend, logs, and recovery from a lost shard."""

    MAX_SHARD_RESTARTS = 3

    def __init__(
        self,
        cfg: DictConfig,
        pbt: PBTSettings,
        out: Path | None,
        backend: Backend,
        shards: Sequence[tuple[int, ...]],
        quiet: bool,
    ) -> None:
        self.cfg, self.pbt, self.out, self.backend = cfg, pbt, out, backend
        self.shards, self.quiet = list(shards), quiet
        self.n_workers = pbt.num_workers
        self.population = _Population(backend, shards)
        self.state = _PopulationState(
            smoothed=np.full(self.n_workers, np.nan), copied_from=np.arange(self.n_workers)
        )
        self.rng = np.random.default_rng()
        self.fitlog = FitLog(out / "fitlog.csv" if out is not None else None)
        self.schedule = schedule(pbt)
        self.saved: bytes | None = None  # the checkpoint in memory when there is no `out`

    def start(self, rng: np.random.Generator) -> None:
        """Begin from the initial population (and checkpoint it)."""
        self.rng = rng
        self.save()

    def save(self) -> None:
        """Checkpoint the population (pbt_state.pt, atomically; without `out`, in memory, and
        only where a lost shard could need it)."""
        if self.out is None and not hasattr(self.backend, "restart"):
            return
        path = self.out / STATE_FILE if self.out is not None else None
        self.saved = _save_state(
            path, self.cfg, self.state, self.rng, self.backend, len(self.shards)
        )

    def restore(self) -> None:
        """Every shard and the driver's state from the last generation checkpoint."""
        source = self.out / STATE_FILE if self.out is not None else self.saved
        assert source is not None, "no generation checkpoint to restore"
        self.state, self.rng = _load_state(source, self.cfg, self.backend, len(self.shards))
        if self.out is not None:
            self.fitlog = _resumed_fitlog(self.out / "fitlog.csv", self.state.epoch)
        else:
            self.fitlog.truncate(self.state.epoch - 1)

    def run(self) -> None:
        """Generations until the stop rule says stop; a lost shard is restarted and the generation redone."""
        restarts = 0
        with ProgressLine(self.schedule.n_generations(), self.quiet, "generation") as progress:
            while not self.state.stop_reason:
                try:
                    summary = self.generation()
                except ShardLost as lost:
                    restarts += 1
                    if restarts > self.MAX_SHARD_RESTARTS or not hasattr(self.backend, "restart"):
                        raise
                    progress.print(
                        f"{lost}; restarting it and redoing generation {self.state.generation} "
                        "from the last checkpoint"
                    )
                    for i in lost.shards:
                        self.backend.restart(i)  # type: ignore[attr-defined]
                    self.restore()
                    continue
                progress.update(self.state.generation, summary)

    def generation(self) -> str:
        """Train one generation, score, exploit/explore (or stop), checkpoint. Returns a summary."""
        state, n = self.state, self.n_workers
        start, stop = self.schedule.span(state.generation, state.epoch)
        results = self.backend.call_all("train_epochs", [(start, stop)] * len(self.shards))
        hps_now = self.population.hp_table()
        rows, smoothed = _smoothed_rows(results, start, state.smoothed)
        scores = ranking_scores(rows[-1][1], self.pbt.metric)  # at the generation's end
        self._update_best(scores)
        state.best_per_generation.append(_best_score(scores))
        state.epoch = stop
        stop_reason = self.stop_reason(state.best_per_generation, state.generation + 1)
        sources, new_table = np.arange(n), hps_now
        if not stop_reason:
            pbt = self.pbt
            sources = exploit(
                scores, method=pbt.exploit_method, quantile=pbt.exploit_quantile, rng=self.rng
            )
            new_table = explore(
                hps_now,
                sources,
                pbt.hps,
                rng=self.rng,
                resample_probability=pbt.resample_probability,
            )
            self.population.apply_copies(sources)
            self.population.set_hps(new_table)
        # (a shard lost above is recovered by `restore`, which replaces all of this state)
        for epoch, metrics in rows:
            extra = {"copied_from": state.copied_from}
            self.fitlog.add_epoch(epoch, state.generation, metrics, hps_now, range(n), extra=extra)
        _record_generation(state, scores, hps_now, sources, new_table)
        state.smoothed, state.copied_from = smoothed[sources], sources.copy()
        state.generation += 1
        state.stop_reason = stop_reason
        self.save()
        self.fitlog.flush()
        if self.out is not None:
            _write_history(self.out, state.history)
        copied = int(np.sum(sources != np.arange(n)))
        return f"epoch {stop}  best {np.nanmin(scores):.4f}  median {np.nanmedian(scores):.4f}  copied {copied}/{n}"

    def stop_reason(
        self, best_per_generation: Sequence[float], generations: int | None = None
    ) -> str:
        """Why the run stops after these generations: its length or the stop rule ("" = go on)."""
        done = len(best_per_generation) if generations is None else generations
        finished = self.schedule.finished(done, self.state.epoch)
        if finished:
            return finished
        decision = should_stop(
            best_per_generation,
            patience=self.pbt.patience,
            min_improvement_ratio=self.pbt.min_improvement_ratio,
        )
        return decision.reason if decision.stop else ""

    def _update_best(self, scores: np.ndarray) -> None:
        """Keep a snapshot of the best worker seen in any generation."""
        best, improved = update_best(self.state.best, self.state.generation, scores)
        if improved:
            assert best is not None
            self.state.best = best
            self.state.best_state = self.population.worker_state(best.worker)


def _check_metric(metric: str, structure: LFADSStructure, sessions: Sequence[SessionData]) -> None:
    """Refuse a `pbt.metric` that this run cannot compute, before any work."""
    available = ["valid/recon_smth", "valid/recon", "valid/loss"]
    if all("valid" in s.truth for s in sessions):
        available.append("valid/r2")
    if structure.reconstruction == "poisson":
        available.append("valid/bps")
    if metric not in available:
        raise ConfigError(
            f"pbt.metric={metric!r}: not available for this run; expected one of {', '.join(available)}"
            " (valid/r2 needs valid_truth in every file, valid/bps a Poisson model)"
        )


def _smoothed_rows(
    results: Sequence[list[dict[str, np.ndarray]]], start: int, smoothed: np.ndarray
) -> tuple[list[tuple[int, dict[str, np.ndarray]]], np.ndarray]:
    """Each epoch's population metrics (shards merged) with `valid/recon_smth`, and its last value.

    Args:
        results: per shard, per epoch of the generation, metric -> (K_s,).
        start: the generation's first epoch.
        smoothed: (K,) `valid/recon_smth` before the generation (NaN: none yet).
    """
    smoothed = smoothed.copy()
    rows = []
    for offset in range(len(results[0])):
        metrics = _merge([r[offset] for r in results])
        for w, current in enumerate(metrics["valid/recon"]):
            previous = None if np.isnan(smoothed[w]) else float(smoothed[w])
            smoothed[w] = smooth_metric(float(current), previous)
        metrics["valid/recon_smth"] = smoothed.copy()
        rows.append((start + offset, metrics))
    return rows, smoothed


def _best_score(scores: np.ndarray) -> float:
    """The lowest finite score (NaN when every worker diverged)."""
    finite = scores[np.isfinite(scores)]
    return float(finite.min()) if finite.size else np.nan


def schedule(pbt: PBTSettings) -> GenerationSchedule:
    """The generations' epochs from `trainer.max_epochs` and the `pbt` burn-in and interval."""
    return GenerationSchedule(
        max_epochs=pbt.max_epochs,
        burn_in=pbt.burn_in,
        interval=pbt.interval,
        warmup_end=pbt.warmup_end,
        max_generations=pbt.max_generations,
    )


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
    single = Shard(
        structure, settings, hps, device=cfg.device, seed=cfg.seed, accel=cfg.get("accel")
    )
    single.load_worker_state(0, state.best_state)
    config = OmegaConf.to_container(cfg, resolve=True)
    return LFADS(single.net, state.best_state["hps"], config, [s.name for s in sessions])


def _save_state(
    path: Path | None,
    cfg: DictConfig,
    state: _PopulationState,
    rng: np.random.Generator,
    backend: Backend,
    n_shards: int,
) -> bytes | None:
    """The whole population after a generation, atomically (loads with weights_only=True);
    with `path` None, the file's bytes are returned instead."""
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
    if path is None:
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return None


def _load_state(
    path: Path | bytes, cfg: DictConfig, backend: Backend, n_shards: int
) -> tuple[_PopulationState, np.random.Generator]:
    source = io.BytesIO(path) if isinstance(path, bytes) else path
    payload = torch.load(source, map_location="cpu", weights_only=True)
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
