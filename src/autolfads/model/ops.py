"""The operations an accelerator may take over, in plain PyTorch: the reference.

`LFADSNetwork`, the loss, coordinated dropout and `PopulationAdam` call these through the `Ops`
object they were built with (`autolfads.accel.choose_ops` picks it, once). An accelerator subclasses
`Ops` and overrides what it implements, with the same signatures and the same values (to float32
rounding; its random numbers may come from another generator of the same distribution). The three
training hooks at the end return None / False here: the caller then runs its own PyTorch code.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from autolfads.model.controller import LoopWeights, controlled_generator
from autolfads.model.gru import BidirectionalGRU, ClippedGRUCell
from autolfads.model.linear import per_worker

__all__ = ["Ops", "REFERENCE", "LossBatch", "lagged"]


class LossBatch(Protocol):
    """What the loss reads of a training batch (`autolfads.train.augment.PreparedBatch` is one)."""

    target: Tensor  # (B, T_rec, N_rec) reconstruction target
    loss_mask: Tensor  # (K|1, B, T_rec, N_rec) float, 1 where the entry counts
    grad_mask: Tensor | None  # (K, B, T_rec, N_rec) bool, None = gradient everywhere
    sv_mask: Tensor | None  # (B, T_rec, N_rec) float, 1 on sample-validation entries


def lagged(fwd: Tensor, bwd: Tensor, lag: int, total_steps: int) -> Tensor:
    """Controller input per step: forward state from t - lag, backward state from t + lag.

    fwd, bwd: (K, B, T_enc, H) -> (K, B, total_steps, 2H), zeros where the lagged step is outside
    the encoder's window (e.g. forward-prediction steps past T_enc).
    """
    k, b, t, h = fwd.shape
    out = fwd.new_zeros(k, b, total_steps, 2 * h)
    out[:, :, lag:t, :h] = fwd[:, :, : t - lag]
    out[:, :, : t - lag, h:] = bwd[:, :, lag:]
    return out


class Ops:
    """Reference operations (any device, any float dtype)."""

    name = "none"

    # ------------------------------------------------------------- random numbers
    def uniform(self, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """U(0, 1) numbers shaped like `like` (K, ...), from `generator` (global RNG when None)."""
        return torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    def normal(self, shape: tuple[int, ...], like: Tensor, generator=None) -> Tensor:
        """N(0, 1) numbers of `shape` (K, B, T, n), `like`'s dtype and device."""
        return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)

    def step_noise(self, shape: tuple[int, ...], like: Tensor, generator=None) -> Tensor:
        """N(0, 1) draws (K, B, T, U) of the inferred inputs' posterior samples."""
        return self.normal(shape, like, generator)

    def dropout_mask(self, like: Tensor, rate: Tensor, generator=None) -> Tensor:
        """Inverted-dropout mask shaped like `like` (K, ...): 1 / (1 - rate_k) where kept (its
        `uniform` number below 1 - rate_k), 0 where dropped. rate: (K,)."""
        keep = 1.0 - per_worker(rate.to(like.dtype), like)
        return (self.uniform(like, generator) < keep).to(like.dtype) / keep.clamp_min(1e-6)

    def state_masks(self, shape: tuple[int, ...], like: Tensor, rate: Tensor, generator=None):
        """Dropout masks (K, B, T + 1, G) of the generator states (`dropout_mask` of that shape)."""
        return self.dropout_mask(like.new_empty(shape), rate, generator)

    def dropout(self, x: Tensor, rate: Tensor, training: bool, generator=None) -> Tensor:
        """Inverted dropout of x (K, ...) at rate_k per worker; x itself when not training."""
        return x * self.dropout_mask(x, rate, generator) if training else x

    # ------------------------------------------------------------- recurrences
    def encoders(
        self, x: Tensor, ic_encoder: BidirectionalGRU, ci_encoder: BidirectionalGRU | None
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Both encoders over the read-in data x (K, B, T_enc, n): the IC encoder's final states
        (K, B, H_ic) each direction, and the controller-input encoder's states (K, B, T_enc, H_ci)
        each direction (None, None without controller)."""
        ic_fwd, ic_bwd = ic_encoder(x, keep_states=False)
        if ci_encoder is None:
            return ic_fwd, ic_bwd, None, None
        return (ic_fwd, ic_bwd, *ci_encoder(x))

    def lagged_dropout(
        self, fwd, bwd, lag: int, total_steps: int, rate: Tensor, training: bool, generator=None
    ) -> Tensor:
        """The controller's input (K, B, T_rec, 2H): `lagged` encoder states, then dropout."""
        return self.dropout(lagged(fwd, bwd, lag, total_steps), rate, training, generator)

    def generator(self, cell: ClippedGRUCell, gen_x: Tensor, gen_init: Tensor) -> Tensor:
        """The generator without controller: inputs (K, B, T, 3G), g_init (K, B, G) -> (K, B, T, G)."""
        return cell.sequence(gen_x, gen_init)

    def controlled_generator(
        self,
        con_x: Tensor,
        gen_x: Tensor,
        gen_init: Tensor,
        con_h0: Tensor,
        weights: LoopWeights,
        masks: Tensor | None,
        noise: Tensor | None,
        clip: float,
        samples: int = 1,
        con_projection: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """`autolfads.model.controller.controlled_generator`."""
        return controlled_generator(
            con_x, gen_x, gen_init, con_h0, weights, masks, noise, clip, samples, con_projection
        )

    # ------------------------------------------------------------- training hooks
    def poisson_recon(self, obs, params: Tensor, batch: LossBatch) -> Tensor | None:
        """(K,) masked mean Poisson NLL of a training batch in one pass, or None: the loss then
        computes it from `obs.log_likelihood`."""
        return None

    def coordinated_dropout(self, x: Tensor, cd_rate: Tensor, recon_shape, generator=None):
        """(scaled input, grad_mask) of coordinated dropout in one pass, or None (PyTorch then)."""
        return None

    def adam_step(self, p, grad, exp_avg, exp_avg_sq, coef, beta1, beta2, eps) -> bool:
        """One population Adam step of one parameter in place; False if not taken here."""
        return False


REFERENCE = Ops()
