"""The `pbt` group read once into typed settings (after `check_config` has checked every value).

The values and their defaults come from the merged configuration alone (`defaults.yaml` is the one
source of defaults); the generation loop reads these fields, never the raw tree.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from autolfads.config.hps import HPSpec, hp_specs_from_config

__all__ = ["PBTSettings"]


@dataclass(frozen=True)
class PBTSettings:
    """How a population is run: its size and layout, its schedule, and its policy.

    Attributes:
        num_workers: K, the population size.
        workers_per_shard, cpus_per_shard, gpus_per_shard: the layout (None = chosen per machine).
        backend: `auto`, `inline` or `ray`; address: a Ray cluster to join (None = a local Ray).
        device, seed: where the shards train, and the seed of the population's randomness.
        accel: the accelerator setting (`auto`, `cpp`, `none`; see `autolfads.accel`).
        max_epochs, burn_in, interval, warmup_end, max_generations: the generations' epochs
            (see `autolfads.pbt.schedule`).
        patience, min_improvement_ratio: the stop rule.
        metric: what ranks workers (`valid/recon_smth`, ...).
        exploit_method, exploit_quantile, resample_probability: exploit and explore.
        sv_rate: the fraction of training entries held out for sample validation.
        hps: the searched hyperparameters.
    """

    num_workers: int
    workers_per_shard: int | None
    cpus_per_shard: int | None
    gpus_per_shard: float | None
    backend: str
    address: str | None
    device: str
    seed: int
    accel: str
    max_epochs: int
    burn_in: int
    interval: int
    warmup_end: int
    max_generations: int | None
    patience: int
    min_improvement_ratio: float
    metric: str
    exploit_method: str
    exploit_quantile: float
    resample_probability: float
    sv_rate: float
    hps: tuple[HPSpec, ...]

    @classmethod
    def from_config(cls, cfg: DictConfig) -> PBTSettings:
        """From a checked configuration (`autolfads.config.load_config`)."""
        pbt, trainer = cfg.pbt, cfg.trainer
        return cls(
            num_workers=pbt.num_workers,
            workers_per_shard=pbt.workers_per_shard,
            cpus_per_shard=pbt.cpus_per_shard,
            gpus_per_shard=pbt.gpus_per_shard,
            backend=pbt.backend,
            address=pbt.address,
            device=cfg.device,
            seed=cfg.seed,
            accel=cfg.get("accel", "auto"),
            max_epochs=trainer.max_epochs,
            burn_in=pbt.burn_in_period,
            interval=pbt.perturbation_interval,
            warmup_end=trainer.ramp_start + trainer.ramp_epochs,
            max_generations=pbt.max_generations,
            patience=pbt.patience,
            min_improvement_ratio=pbt.min_improvement_ratio,
            metric=pbt.metric,
            exploit_method=pbt.exploit.method,
            exploit_quantile=pbt.exploit.quantile,
            resample_probability=pbt.explore.resample_probability,
            sv_rate=cfg.model.sv_rate,
            hps=tuple(hp_specs_from_config(pbt.hps)),
        )
