"""A shard: K LFADS workers with their own weights, optimiser state and hyperparameters, trained in
one batched loop in one process. One model is a shard with K = 1; a PBT population is several shards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from autolfads._memory import keep_freed_memory
from autolfads.accel import accelerate
from autolfads.config import packaged_defaults
from autolfads.data.tensors import SessionTensors, epoch_batches, split_batches
from autolfads.errors import ConfigError
from autolfads.model.lfads import LFADSNetwork
from autolfads.model.structure import LFADSStructure
from autolfads.train.augment import build_augmentations, prepare_batch
from autolfads.train.objective import lfads_loss, ramp_factor
from autolfads.train.optim import PopulationAdam

__all__ = ["TrainSettings", "Shard", "HP_NAMES"]

# Per-worker hyperparameters: these live as (K,) tensors and PBT may change them between epochs.
HP_NAMES = (
    "lr_init",
    "dropout_rate",
    "cd_rate",
    "l2_gen_scale",
    "l2_con_scale",
    "l2_ic_enc_scale",
    "l2_ci_enc_scale",
    "kl_ic_scale",
    "kl_co_scale",
    "l2_gamma_scale",
    "gamma_prior",
)


_DEFAULTS = packaged_defaults()  # the one source of the defaults (defaults.yaml)


@dataclass(frozen=True)
class TrainSettings:
    """Fixed training settings shared by every worker of a shard (defaults: `defaults.yaml`).

    `temporal_shift` turns on the EMG temporal-shift augmentation of training batches
    (`autolfads.train.shift`): each channel of each trial moved by round(Normal(0,
    `temporal_shift_std`)) bins, clamped to +-`temporal_shift_max`, independently for the input and
    the target. `augmentations` are further training-batch augmentations by name or dotted path
    (`autolfads.train.augment.Augmentation`), applied after it in order. Neither is applied in
    evaluation or posterior sampling. `align_readin` starts several sessions' read-ins and
    read-outs in one shared space (`autolfads.train.alignment`).
    """

    batch_size: int = _DEFAULTS.datamodule.batch_size
    ramp_epochs: int = _DEFAULTS.trainer.ramp_epochs
    ramp_start: int = _DEFAULTS.trainer.ramp_start
    loss_scale: float = _DEFAULTS.model.loss_scale
    max_grad_norm: float = _DEFAULTS.model.max_grad_norm
    temporal_shift: bool = _DEFAULTS.datamodule.temporal_shift.enabled
    temporal_shift_std: float = _DEFAULTS.datamodule.temporal_shift.std
    temporal_shift_max: int = _DEFAULTS.datamodule.temporal_shift.max
    augmentations: tuple[str, ...] = tuple(_DEFAULTS.datamodule.augmentations)
    align_readin: bool = _DEFAULTS.model.align_readin

    def __post_init__(self) -> None:
        if not self.temporal_shift_std >= 0:
            raise ConfigError(
                f"datamodule.temporal_shift.std must be >= 0 bins, got {self.temporal_shift_std!r}"
            )
        if not isinstance(self.temporal_shift_max, int) or self.temporal_shift_max < 0:
            raise ConfigError(
                "datamodule.temporal_shift.max must be an integer >= 0 bins, "
                f"got {self.temporal_shift_max!r}"
            )

    @classmethod
    def from_config(cls, cfg: Mapping) -> TrainSettings:
        """From a checked configuration (`autolfads.config.load_config`)."""
        data, trainer, model = cfg["datamodule"], cfg["trainer"], cfg["model"]
        shift = data["temporal_shift"]
        return cls(
            batch_size=data["batch_size"],
            ramp_epochs=trainer["ramp_epochs"],
            ramp_start=trainer["ramp_start"],
            loss_scale=model["loss_scale"],
            max_grad_norm=model["max_grad_norm"],
            temporal_shift=shift["enabled"],
            temporal_shift_std=shift["std"],
            temporal_shift_max=shift["max"],
            augmentations=tuple(data["augmentations"]),
            align_readin=model["align_readin"],
        )


def _hp_tensor(values: Sequence[float] | np.ndarray | Tensor, device: torch.device) -> Tensor:
    """(K,) float32 copy of per-worker values on `device`.

    Always a copy: tables arriving from Ray's object store are read-only NumPy arrays, which
    `torch.as_tensor` would share (and warn about).
    """
    if isinstance(values, Tensor):
        return values.detach().to(device=device, dtype=torch.float32).clone()
    return torch.tensor(np.array(values, dtype=np.float32), device=device)


def _metrics_mean(acc: dict[str, Tensor], weight: float, parts: dict[str, Tensor]) -> None:
    for name, value in parts.items():
        acc[name] = acc.get(name, 0.0) + value * weight


class Shard:
    """K workers trained together.

    Args:
        structure: the model structure shared by the workers.
        settings: batch size, warm-up and loss constants.
        hps: name -> (K,) values of the per-worker hyperparameters (`HP_NAMES`).
        device: where weights and data live.
        seed: seeds weight initialisation and all training randomness of this shard.
        accel: auto | cpp | none, or None for $AUTOLFADS_ACCEL / auto (`autolfads.accel`); the
            network chooses its operations once, and the loss, the masks and the optimiser use them.
        frozen: weights by state-dict name, one worker's rows each (a K = 1 model's tensors), that
            every worker starts from and never trains (`autolfads.train.transfer`): their
            parameters get `requires_grad` False and are left out of the optimiser, so no step,
            clipping norm or fused kernel reads their gradients or writes them. The other
            parameters (`trainable`) start as a fresh model's and are trained.
    """

    def __init__(
        self,
        structure: LFADSStructure,
        settings: TrainSettings,
        hps: Mapping[str, Sequence[float] | np.ndarray | Tensor],
        device: torch.device | str = "cpu",
        seed: int = 0,
        accel: str | None = None,
        frozen: Mapping[str, Tensor] | None = None,
    ) -> None:
        self.device = torch.device(device)
        if self.device.type == "cpu":
            keep_freed_memory()  # every step reuses the last step's pages (see autolfads._memory)
        self.structure, self.settings = structure, settings
        missing = [n for n in HP_NAMES if n not in hps]
        if missing:
            raise ValueError(f"hyperparameters missing: {missing}")
        self.n_workers = len(np.asarray(hps["lr_init"]))
        torch.manual_seed(seed)  # weight initialisation
        # All training randomness of this shard comes from its own generators, so that shards are
        # reproducible wherever they run (same process, another process, resumed).
        self.generator = torch.Generator().manual_seed(seed)  # batch order (CPU)
        self.noise = torch.Generator(device=self.device).manual_seed(seed + 1)  # masks, samples
        # on its device before the operations are chosen: a GPU network never builds the CPU kernels
        self.net = accelerate(LFADSNetwork(structure, self.n_workers).to(self.device), accel)
        if frozen:  # before the optimiser: it takes the parameters that need gradients
            self._freeze(frozen)
        shift = (settings.temporal_shift_std, settings.temporal_shift_max)
        self.augmentations = build_augmentations(
            settings.augmentations, shift if settings.temporal_shift else None
        )
        self.hps = {n: _hp_tensor(hps[n], self.device) for n in HP_NAMES}
        self._apply_hps_to_net()
        self.optimizer = PopulationAdam(
            list(self.net.parameters()),
            self.hps["lr_init"],
            settings.max_grad_norm,
            ops=self.net.ops,
        )

    @property
    def trainable(self) -> list[str]:
        """Names of the parameters the optimiser trains (all of them unless some are `frozen`)."""
        return [name for name, p in self.net.named_parameters() if p.requires_grad]

    @torch.no_grad()
    def _freeze(self, frozen: Mapping[str, Tensor]) -> None:
        """Copy `frozen` (one worker's rows) into every worker and stop those parameters training."""
        params = dict(self.net.named_parameters())
        tensors = {**dict(self.net.named_buffers()), **params}
        unknown = sorted(set(frozen) - set(tensors))
        if unknown:
            raise ValueError(f"frozen weights the network does not have: {unknown}")
        k = self.n_workers
        for name, value in frozen.items():
            target = tensors[name]
            rows = (target.shape[0] // k, *target.shape[1:]) if target.dim() else ()
            if tuple(value.shape) != rows:
                raise ValueError(
                    f"frozen weight {name}: shape {tuple(value.shape)}, the network's worker has "
                    f"{rows}"
                )
            value = value.to(target.device, target.dtype)
            target.copy_(value.repeat(k, *[1] * (value.dim() - 1)) if target.dim() else value)
            if name in params:
                params[name].requires_grad_(False)

    # ----------------------------------------------------------------- hyperparameters
    def set_hps(self, table: Mapping[str, Sequence[float] | np.ndarray]) -> None:
        """Overwrite some per-worker hyperparameters in place (tensors keep their identity)."""
        for name, values in table.items():
            if name not in self.hps:
                raise KeyError(f"unknown hyperparameter {name!r}")
            self.hps[name].copy_(_hp_tensor(values, self.device))
        self._apply_hps_to_net()

    def hp_table(self) -> dict[str, np.ndarray]:
        """name -> (K,) current values."""
        return {n: t.detach().cpu().double().numpy().copy() for n, t in self.hps.items()}

    def _apply_hps_to_net(self) -> None:
        for obs in self.net.observation:
            if hasattr(obs, "gamma_prior"):
                obs.gamma_prior.copy_(self.hps["gamma_prior"])

    # ----------------------------------------------------------------- training
    def init_readout_biases(self, data: Sequence[SessionTensors]) -> None:
        """Start each session's observation model from its training targets (e.g. the
        zero-inflated gamma's scales) and its read-out at their channel means."""
        for s, d in enumerate(data):
            targets = d.recon["train"].flatten(0, 1)  # (B T, N), NaN where not observed
            self.net.observation_model(s).init_from_data(targets)
            mean = torch.nanmean(targets, dim=0)
            self.net.init_readout_bias(s, torch.nan_to_num(mean, nan=0.0))

    def train_epoch(self, data: Sequence[SessionTensors], epoch: int) -> dict[str, np.ndarray]:
        """One pass over the training trials of every session. Returns 'train/<part>' -> (K,).

        No step waits for the device (no `.item()`, `.cpu()`, `bool(tensor)` or copy from the host
        inside the loop; tests/train/test_no_sync.py): the few host decisions are made before the
        loop, and the metrics are gathered once, after it.
        """
        self.net.train()
        ramp = ramp_factor(epoch, self.settings.ramp_epochs, self.settings.ramp_start)
        cd_any = bool((self.hps["cd_rate"] > 0).any())  # HPs change only between epochs
        acc: dict[str, Tensor] = {}
        total = 0
        for session, idx in epoch_batches(data, self.settings.batch_size, self.generator):
            d = data[session]
            encod, recon, ext = d.batch("train", idx)
            sv = d.sv_mask[idx] if d.sv_mask is not None else None
            for augment in self.augmentations:
                encod, recon, sv = augment(encod, recon, sv, self.noise)
            obs = self.net.observation_model(session)
            batch = prepare_batch(
                encod,
                recon,
                self.n_workers,
                cd_rate=self.hps["cd_rate"],
                sv_mask=sv,
                placeholder=obs.placeholder,
                training=True,
                generator=self.noise,
                ops=self.net.ops,
                cd_any=cd_any,
            )
            out = self.net(
                batch.encod_input, session, ext, self.hps["dropout_rate"], True, self.noise
            )
            loss, parts = lfads_loss(
                self.net, out, batch, session, self.hps, ramp, self.settings.loss_scale
            )
            self.optimizer.zero_grad()
            loss.sum().backward()
            self.optimizer.step()
            _metrics_mean(acc, len(idx), parts)
            total += len(idx)
        return {f"train/{k}": (v / max(total, 1)).cpu().double().numpy() for k, v in acc.items()}

    @torch.no_grad()
    def evaluate(
        self,
        data: Sequence[SessionTensors],
        epoch: int,
        split: str = "valid",
        return_means: bool = False,
    ) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], list[np.ndarray | None]]:
        """Loss parts on a split, no dropout and no coordinated dropout.

        Returns '<split>/<part>' -> (K,); with `return_means`, also per session the observation
        model's mean (K, B, T_rec, N_rec) (one posterior sample), or None for a session without `split`.
        """
        self.net.eval()
        means: list[np.ndarray | None] = []
        ramp = ramp_factor(epoch, self.settings.ramp_epochs, self.settings.ramp_start)
        acc: dict[str, Tensor] = {}
        total = 0
        for session, d in enumerate(data):
            if split not in d.recon:
                means.append(None)
                continue
            obs = self.net.observation_model(session)
            pieces = []
            for idx in split_batches(d.n_trials(split), self.settings.batch_size, self.device):
                encod, recon, ext = d.batch(split, idx)
                batch = prepare_batch(
                    encod, recon, self.n_workers, placeholder=obs.placeholder, training=False
                )
                out = self.net(batch.encod_input, session, ext, None, True, self.noise)
                _, parts = lfads_loss(
                    self.net, out, batch, session, self.hps, ramp, self.settings.loss_scale
                )
                _metrics_mean(acc, len(idx), parts)
                total += len(idx)
                if return_means:
                    pieces.append(obs.mean(out.params).cpu())
            means.append(torch.cat(pieces, dim=1).numpy() if return_means else None)
        metrics = {
            f"{split}/{k}": (v / max(total, 1)).cpu().double().numpy() for k, v in acc.items()
        }
        return (metrics, means) if return_means else metrics

    # ----------------------------------------------------------------- worker copies
    def _worker_buffers(self) -> dict[str, Tensor]:
        """Buffers with a worker axis (0-d buffers are constants shared by all workers)."""
        return {name: b for name, b in self.net.named_buffers() if b.dim() > 0}

    @torch.no_grad()
    def copy_workers(self, src: Sequence[int], dst: Sequence[int]) -> None:
        """Workers `dst` become exact copies of workers `src`: weights, optimiser state, HPs."""
        if len(src) == 0:
            return
        s = torch.as_tensor(list(src), device=self.device)
        t = torch.as_tensor(list(dst), device=self.device)
        k = self.n_workers
        for tensor in [*self.net.parameters(), *self._worker_buffers().values()]:
            view = tensor.view(k, tensor.shape[0] // k, *tensor.shape[1:])
            view[t] = view[s].clone()
        # Read every source HP before writing any: optimizer.lr is hps["lr_init"] itself, so copying it
        # in the optimiser first would change sources that are also destinations.
        source_hps = {name: value[s].clone() for name, value in self.hps.items()}
        self.optimizer.copy_worker(s, t)
        for name, value in self.hps.items():
            value[t] = source_hps[name]
        self._apply_hps_to_net()

    def worker_state(self, k: int) -> dict[str, object]:
        """Everything of worker k (weights, optimiser moments and step, HPs), as CPU tensors."""
        n = self.n_workers

        def rows(t: Tensor) -> Tensor:
            return t.detach().view(n, t.shape[0] // n, *t.shape[1:])[k].cpu().clone()

        return {
            "params": {name: rows(p) for name, p in self.net.named_parameters()},
            "buffers": {name: rows(b) for name, b in self._worker_buffers().items()},
            "exp_avg": [rows(t) for t in self.optimizer.exp_avg],
            "exp_avg_sq": [rows(t) for t in self.optimizer.exp_avg_sq],
            "steps": self.optimizer.steps[k].cpu().clone(),
            "hps": {name: float(v[k]) for name, v in self.hps.items()},
        }

    @torch.no_grad()
    def load_worker_state(self, k: int, state: Mapping[str, object]) -> None:
        """Make worker k a copy of a `worker_state` (possibly from another shard)."""
        n = self.n_workers

        def put(t: Tensor, value: Tensor) -> None:
            t.view(n, t.shape[0] // n, *t.shape[1:])[k] = value.to(t.device, t.dtype)

        params = dict(self.net.named_parameters())
        buffers = self._worker_buffers()
        for name, value in state["params"].items():  # type: ignore[union-attr]
            put(params[name], value)
        for name, value in state["buffers"].items():  # type: ignore[union-attr]
            put(buffers[name], value)
        for t, value in zip(self.optimizer.exp_avg, state["exp_avg"], strict=True):  # type: ignore[arg-type]
            put(t, value)
        for t, value in zip(self.optimizer.exp_avg_sq, state["exp_avg_sq"], strict=True):  # type: ignore[arg-type]
            put(t, value)
        self.optimizer.steps[k] = state["steps"]  # type: ignore[assignment]
        for name, value in state["hps"].items():  # type: ignore[union-attr]
            self.hps[name][k] = float(value)
        self._apply_hps_to_net()

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, object]:
        """Weights, optimiser state, HPs and RNG state (tensors only: weights_only-loadable)."""
        return {
            "net": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "hps": {k: v.cpu().clone() for k, v in self.hps.items()},
            "generator": self.generator.get_state(),
            "noise": self.noise.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore a `state_dict`."""
        self.net.load_state_dict(state["net"])  # type: ignore[arg-type]
        for name, value in state["hps"].items():  # type: ignore[union-attr]
            self.hps[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])  # type: ignore[arg-type]
        self.generator.set_state(state["generator"])  # type: ignore[arg-type]
        self.noise.set_state(state["noise"])  # type: ignore[arg-type]
        self._apply_hps_to_net()
