"""Training-time treatment of a batch: augmentations (temporal shift, a user's), unobserved entries
(SBTT), coordinated dropout, sample validation.

Masks, all broadcastable to (K, B, T_rec, N_rec):
- `loss_mask`: entries that count in the reconstruction loss (observed and not held out for validation).
- `grad_mask`: entries whose loss may send gradient (coordinated dropout: only the entries that were
  dropped from the input; entries the encoders never see, such as held-out neurons or forward-prediction
  steps, always do).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from autolfads.data.tensors import encoder_input
from autolfads.model.linear import per_worker
from autolfads.model.ops import REFERENCE, Ops
from autolfads.parts import build_part
from autolfads.train.shift import shift_training_batch

__all__ = [
    "Augmentation",
    "TemporalShift",
    "AUGMENTATIONS",
    "build_augmentations",
    "PreparedBatch",
    "prepare_batch",
    "coordinated_dropout",
]


class Augmentation:
    """Interface: an augmentation of training batches (never of evaluation or sampling), built
    once per shard as `cls()` (`datamodule.augmentations`: a name of `AUGMENTATIONS` or a dotted
    path to a subclass).

    Called on every training batch with encod (B, T_enc, N_enc) and recon (B, T_rec, N_rec), NaN
    where unobserved, sv_mask (B, T_enc, N_enc) bool sample-validation entries or None, and the
    shard's generator; returns the three, same shapes.
    """

    def __call__(
        self, encod: Tensor, recon: Tensor, sv_mask: Tensor | None, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        raise NotImplementedError


class TemporalShift(Augmentation):
    """The EMG temporal shift (`autolfads.train.shift.shift_training_batch`)."""

    def __init__(self, std: float, max_shift: int) -> None:
        self.std, self.max_shift = std, max_shift

    def __call__(self, encod, recon, sv_mask, generator):
        return shift_training_batch(
            encod, recon, self.std, self.max_shift, sv_mask=sv_mask, generator=generator
        )


AUGMENTATIONS: dict[str, type[Augmentation]] = {}
"""Augmentations by name (the temporal shift has its own settings, `datamodule.temporal_shift`)."""


def build_augmentations(
    names: Sequence[str], temporal_shift: tuple[float, int] | None = None
) -> list[Augmentation]:
    """The training-batch augmentations in the order they apply: the temporal shift (std, max)
    when given, then `names` (`datamodule.augmentations`)."""
    out: list[Augmentation] = [TemporalShift(*temporal_shift)] if temporal_shift else []
    for name in names:
        out.append(build_part("datamodule.augmentations", name, AUGMENTATIONS, Augmentation))
    return out


@dataclass
class PreparedBatch:
    """A batch ready for the network and the loss."""

    encod_input: Tensor  # (K, B, T_enc, N_enc) encoder input
    target: Tensor  # (B, T_rec, N_rec) reconstruction target, unobserved entries filled
    loss_mask: Tensor  # (K|1, B, T_rec, N_rec) float, 1 where the entry counts in the loss
    grad_mask: Tensor | None  # (K, B, T_rec, N_rec) bool, None = gradient everywhere
    sv_mask: Tensor | None  # (B, T_rec, N_rec) float, 1 on sample-validation entries


def _pad_to(mask: Tensor, shape: torch.Size, fill: bool) -> Tensor:
    """Pad a (..., T_enc, N_enc) mask to (..., T_rec, N_rec) with `fill`."""
    t, n = shape[-2], shape[-1]
    out = torch.full((*mask.shape[:-2], t, n), fill, dtype=torch.bool, device=mask.device)
    out[..., : mask.shape[-2], : mask.shape[-1]] = mask
    return out


def prepare_batch(
    encod: Tensor,
    recon: Tensor,
    n_workers: int,
    *,
    cd_rate: Tensor | None = None,
    sv_mask: Tensor | None = None,
    placeholder: float = 0.0,
    training: bool = True,
    generator: torch.Generator | None = None,
    ops: Ops = REFERENCE,
    cd_any: bool | None = None,
) -> PreparedBatch:
    """Build the encoder input, the target and the masks of one batch.

    Args:
        encod: (B, T_enc, N_enc) data, NaN where unobserved.
        recon: (B, T_rec, N_rec) target, NaN where unobserved; its first T_enc steps and N_enc channels
            are the same entries as `encod`.
        n_workers: K.
        cd_rate: (K,) coordinated-dropout rate per worker; None or training=False disables it.
        sv_mask: (B, T_enc, N_enc) bool, entries held out for sample validation (zeroed at the input,
            left out of the loss, scored separately).
        placeholder: valid data value written into unobserved target entries.
        training: apply coordinated dropout.
        generator: source of the coordinated-dropout masks (global RNG when None).
        ops: the operations making the masks (the network's `ops`).
        cd_any: whether any worker's `cd_rate` is above 0, when the caller knows it; None reads it
            from `cd_rate`, which waits for the device. The shard decides once per epoch, so that
            no training step waits for the GPU.
    """
    x = encoder_input(encod, n_workers, sv_mask)  # (K, B, T_enc, N_enc)

    observed_out = ~torch.isnan(recon)
    target = torch.where(observed_out, recon, torch.full_like(recon, placeholder))
    loss_mask = observed_out
    sv_full = None
    if sv_mask is not None:
        sv_full = _pad_to(sv_mask, recon.shape, False)
        loss_mask = loss_mask & ~sv_full
        sv_full = (sv_full & observed_out).to(recon.dtype)
    loss_mask = loss_mask.unsqueeze(0).to(recon.dtype)

    grad_mask = None
    if cd_any is None and training and cd_rate is not None:
        cd_any = bool((cd_rate > 0).any())
    if training and cd_rate is not None and cd_any:
        x, grad_mask = coordinated_dropout(x, cd_rate, recon.shape, generator, ops)
    return PreparedBatch(x, target, loss_mask, grad_mask, sv_full)


def coordinated_dropout(
    x: Tensor,
    cd_rate: Tensor,
    recon_shape: torch.Size,
    generator: torch.Generator | None = None,
    ops: Ops = REFERENCE,
) -> tuple[Tensor, Tensor]:
    """Coordinated dropout of the encoder input: (scaled input, grad_mask).

    Each element is kept when its `ops.uniform` number is >= rate_k; kept ones are scaled by
    1 / (1 - rate_k). grad_mask is True where the element was dropped, for every element of a worker
    with rate 0, and on entries of the recon grid the encoder never sees.

    Args:
        x: (K, B, T_enc, N_enc) encoder input.  cd_rate: (K,) rate per worker.
        recon_shape: (B, T_rec, N_rec), T_rec >= T_enc and N_rec >= N_enc.
    Returns:
        (K, B, T_enc, N_enc) input and (K, B, T_rec, N_rec) bool grad_mask.
    """
    fast = ops.coordinated_dropout(x, cd_rate, recon_shape, generator)
    if fast is not None:
        return fast
    rate = per_worker(cd_rate.to(x.dtype), x)
    keep = ops.uniform(x, generator) >= rate  # (K, B, T_enc, N_enc)
    x = x * keep / (1.0 - rate).clamp_min(1e-6)
    dropped = ~keep | per_worker(cd_rate <= 0, x)  # no CD for a worker with rate 0
    return x, _pad_to(dropped, recon_shape, True)
