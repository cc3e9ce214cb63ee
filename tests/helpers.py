"""Small shared pieces for the model and training tests: a tiny structure, default per-worker
hyperparameters for a `Shard`, tiny Poisson data with latent structure, and worker slicing.

Import from a test module as `from helpers import ...` (pytest puts `tests/` on the path).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from autolfads.data.tensors import SessionTensors
from autolfads.model.structure import LFADSStructure
from autolfads.train.shard import HP_NAMES, TrainSettings

TINY_DIMS: dict[str, Any] = {
    "encod_data_dims": (6,),
    "recon_data_dims": (6,),
    "encod_seq_len": 8,
    "recon_seq_len": 8,
    "ic_enc_dim": 8,
    "ci_enc_dim": 6,
    "con_dim": 6,
    "co_dim": 2,
    "ic_dim": 4,
    "gen_dim": 10,
    "fac_dim": 4,
    "ci_lag": 1,
}

HP_DEFAULTS: dict[str, float] = {
    "lr_init": 1e-2,
    "dropout_rate": 0.0,
    "cd_rate": 0.0,
    "l2_gen_scale": 1e-3,
    "l2_con_scale": 1e-3,
    "l2_ic_enc_scale": 1e-3,
    "l2_ci_enc_scale": 1e-3,
    "kl_ic_scale": 1e-3,
    "kl_co_scale": 1e-3,
    "l2_gamma_scale": 0.0,
    "gamma_prior": 1.0,
}


def tiny_structure(**overrides: Any) -> LFADSStructure:
    """A small LFADS structure (T = 8, N = 6, gen 10, fac 4, controller on); kwargs override."""
    return LFADSStructure(**{**TINY_DIMS, **overrides})


def default_hps(n_workers: int, **overrides: float | Sequence[float]) -> dict[str, list[float]]:
    """name -> (K,) list for every `HP_NAMES` entry; an override is a scalar or a K-list."""
    assert set(HP_DEFAULTS) == set(HP_NAMES), "HP_DEFAULTS out of date with shard.HP_NAMES"
    out = {}
    for name in HP_NAMES:
        value = overrides.get(name, HP_DEFAULTS[name])
        out[name] = (
            [float(v) for v in value] if isinstance(value, Sequence) else [float(value)] * n_workers
        )
    return out


def tiny_settings(**overrides: Any) -> TrainSettings:
    """Training settings for tiny data: batch 16, KL/L2 ramp over 5 epochs, loss scale 1."""
    kwargs = {"batch_size": 16, "ramp_epochs": 5, "loss_scale": 1.0, "max_grad_norm": 200.0}
    return TrainSettings(**{**kwargs, **overrides})


def poisson_counts(shape: tuple[int, ...], rate: float = 1.5, seed: int = 0) -> Tensor:
    """Float32 Poisson counts of a constant rate."""
    g = torch.Generator().manual_seed(seed)
    return torch.poisson(torch.full(shape, rate), generator=g)


def rotating_latent_rates(
    n_trials: int, T: int, N: int, g: torch.Generator, angle: float = 0.5
) -> Tensor:
    """Rates (B, T, N) per bin driven by a 2-D rotating latent with a random phase per trial."""
    loadings = torch.randn(2, N, generator=g) * 0.9  # fixed across trials
    base = math.log(2.0) + 0.2 * torch.randn(N, generator=g)
    phase = torch.rand(n_trials, 1, generator=g) * 2 * math.pi
    theta = phase + angle * torch.arange(T, dtype=torch.float32)  # (B, T)
    latent = torch.stack([theta.cos(), theta.sin()], dim=-1)  # (B, T, 2)
    return torch.exp(base + latent @ loadings)  # (B, T, N)


def rotating_poisson_session(
    n_train: int = 64, n_valid: int = 32, T: int = 12, N: int = 8, seed: int = 0
) -> tuple[SessionTensors, dict[str, Tensor]]:
    """One session of Poisson counts from `rotating_latent_rates` (encod == recon), and the rates."""
    g = torch.Generator().manual_seed(seed)
    rates = rotating_latent_rates(n_train + n_valid, T, N, g)
    counts = torch.poisson(rates, generator=g)
    data = {"train": counts[:n_train], "valid": counts[n_train:]}
    truth = {"train": rates[:n_train], "valid": rates[n_train:]}
    recon = {k: v.clone() for k, v in data.items()}
    return SessionTensors(encod=data, recon=recon), truth


def worker_slice(t: Tensor, k: int, n_workers: int) -> Tensor:
    """Rows of worker k of a (K*m, ...) tensor (m = 2 for bidirectional encoders); 0-dim as is."""
    if t.dim() == 0:
        return t
    m = t.shape[0] // n_workers
    return t[k * m : (k + 1) * m]


def copy_worker_into(src: nn.Module, k: int, n_workers: int, dst: nn.Module) -> None:
    """Load worker k of a K-worker module into a 1-worker module of the same structure."""
    state = {name: worker_slice(t, k, n_workers) for name, t in src.state_dict().items()}
    dst.load_state_dict(state)


def on(t: Tensor | None, device: str) -> Tensor | None:
    """`t` on `device` (None stays None)."""
    return None if t is None else t.to(device)


def session_on(session: SessionTensors, device: str) -> SessionTensors:
    """A copy of `session`'s tensors on `device`."""

    def put(d: dict[str, Tensor]) -> dict[str, Tensor]:
        return {k: v.to(device) for k, v in d.items()}

    sv = session.sv_mask.to(device) if session.sv_mask is not None else None
    return SessionTensors(put(session.encod), put(session.recon), put(session.ext_input), sv)


def loosen(device: str) -> float:
    """Factor on a test's float64 tolerances on `device`: 1 on the CPU; 100 on a GPU, whose
    reductions and matrix products may add in another order for another batch shape."""
    return 1.0 if str(device) == "cpu" else 100.0


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run with `n` intra-op threads, then restore: tiny models are faster on one thread, and much
    faster than two threads on a busy 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# A tiny chaotic-RNN data set and model for end-to-end command tests (run, train, sample, demo).
TINY_DATA = ["n_conditions=6", "trials_per_condition=5", "n_steps=12", "n_neurons=8"]
TINY_MODEL = [
    "model.ic_enc_dim=4",
    "model.ci_enc_dim=4",
    "model.con_dim=4",
    "model.co_dim=1",
    "model.ic_dim=4",
    "model.gen_dim=8",
    "model.fac_dim=3",
    "datamodule.batch_size=8",
    "trainer.ramp_epochs=1",
    "trainer.samples=2",
]


def _cpp_ops():
    """The C++ operations, or None where they are switched off (AUTOLFADS_ACCEL=none) or unbuilt."""
    from autolfads.accel import accel_setting, cpp_ops

    return None if accel_setting() == "none" else cpp_ops()


CPP = _cpp_ops()
needs_cpp = pytest.mark.skipif(
    CPP is None, reason="C++ operations switched off or unavailable: the reference is tested alone"
)
