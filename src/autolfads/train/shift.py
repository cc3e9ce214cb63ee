"""Temporal-shift augmentation for EMG (Wimalasena et al. 2022, J Neural Eng 19:036013).

During training only, every channel of every trial is moved in time by its own random whole number
of bins, drawn from Normal(0, std), rounded, and clamped to [-max_shift, max_shift] (clamped, not
redrawn: the tails pile up at +-max_shift). Shifts for the encoder input and for the reconstruction
target are drawn independently, so the model cannot learn the exact alignment of one muscle to
another, which varies in EMG from trial to trial.

A shift of s moves values s bins later: out[b, t, n] = x[b, t - s, n]. Bins shifted in from outside
the trial are NaN, i.e. unobserved (SBTT): zero at the input and left out of the loss.

Shapes: B trials, T bins, N channels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from autolfads.errors import ConfigError

__all__ = ["draw_shifts", "shift_channels", "temporal_shift", "shift_training_batch"]


def _check_settings(std: float, max_shift: int) -> None:
    if not std >= 0:
        raise ConfigError(f"temporal shift `std` must be >= 0 bins, got {std!r}")
    if not isinstance(max_shift, int) or isinstance(max_shift, bool) or max_shift < 0:
        raise ConfigError(f"temporal shift `max` must be an integer >= 0 bins, got {max_shift!r}")


def draw_shifts(
    n_trials: int,
    n_channels: int,
    std: float,
    max_shift: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Integer shift per trial and channel: round(Normal(0, std)) clamped to [-max_shift, max_shift].

    Args:
        n_trials, n_channels: B and N.
        std: standard deviation of the shift, in bins (>= 0).
        max_shift: largest shift in either direction, in bins (>= 0).
        generator: source of the draws (global RNG when None); its device is used when `device` is None.
    Returns:
        (B, N) int64 shifts; positive = moved later in time.
    """
    _check_settings(std, max_shift)
    if device is None:
        device = generator.device if generator is not None else "cpu"
    z = torch.randn(n_trials, n_channels, generator=generator, device=device)
    return (z * std).round().clamp(-max_shift, max_shift).long()


def shift_channels(x: Tensor, shifts: Tensor, fill: float = float("nan")) -> Tensor:
    """Move each channel of each trial in time by its own number of bins.

    Args:
        x: (B, T, N) signal.
        shifts: (B, N) integer shifts; out[b, t, n] = x[b, t - shifts[b, n], n].
        fill: value of the bins shifted in from outside the trial (NaN = unobserved).
    Returns:
        (B, T, N) shifted copy of `x`.
    """
    if shifts.shape != (x.shape[0], x.shape[2]):
        raise ValueError(
            f"`shifts` must have shape (B, N) = {(x.shape[0], x.shape[2])} for `x` of shape "
            f"{tuple(x.shape)}, got {tuple(shifts.shape)}"
        )
    t = x.shape[1]
    steps = torch.arange(t, device=x.device)[None, :, None]  # (1, T, 1)
    source = steps - shifts.to(x.device)[:, None, :]  # (B, T, N) bin each value comes from
    inside = (source >= 0) & (source < t)
    moved = torch.gather(x, 1, source.clamp(0, t - 1))
    return torch.where(inside, moved, torch.full_like(moved, fill))


def temporal_shift(
    x: Tensor, std: float, max_shift: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """`x` (B, T, N) with every channel of every trial shifted by its own random number of bins.

    Shifts come from `draw_shifts` (one (B, N) draw from `generator`); bins shifted in are NaN.
    Returns a new (B, T, N) tensor.
    """
    shifts = draw_shifts(
        x.shape[0], x.shape[2], std, max_shift, generator=generator, device=x.device
    )
    return shift_channels(x, shifts)


def shift_training_batch(
    encod: Tensor,
    recon: Tensor,
    std: float,
    max_shift: int,
    *,
    sv_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Shift a training batch: the input and the target each with their own independent draw.

    Sample-validation entries move with their values: a held-out value is hidden from the input
    (NaN) wherever the input's shift takes it, and is scored as held out wherever the target's
    shift takes it. A held-out value that the target's shift moves beyond the input's steps or
    channels (forward-prediction bins, held-out neurons) is dropped from the loss (NaN).

    Args:
        encod: (B, T_enc, N_enc) encoder data, NaN where unobserved.
        recon: (B, T_rec, N_rec) target, NaN where unobserved.
        std, max_shift: see `draw_shifts`.
        sv_mask: (B, T_enc, N_enc) bool sample-validation entries, or None.
        generator: source of the shifts; encod is drawn first, then recon.
    Returns:
        (encod, recon, sv_mask) shifted, same shapes; sv_mask None when given None.
    """
    b, t_enc, n_enc = encod.shape
    enc_shifts = draw_shifts(b, n_enc, std, max_shift, generator=generator, device=encod.device)
    rec_shifts = draw_shifts(
        b, recon.shape[2], std, max_shift, generator=generator, device=recon.device
    )
    if sv_mask is None:
        return shift_channels(encod, enc_shifts), shift_channels(recon, rec_shifts), None
    hidden = torch.where(sv_mask, torch.full_like(encod, float("nan")), encod)
    new_encod = shift_channels(hidden, enc_shifts)
    held_out = torch.zeros(recon.shape, dtype=recon.dtype, device=recon.device)
    held_out[:, :t_enc, :n_enc] = sv_mask.to(recon.dtype)
    held_out = shift_channels(held_out, rec_shifts, fill=0.0) > 0  # (B, T_rec, N_rec)
    new_recon = shift_channels(recon, rec_shifts)
    beyond_input = held_out.clone()
    beyond_input[:, :t_enc, :n_enc] = False
    new_recon = torch.where(beyond_input, torch.full_like(new_recon, float("nan")), new_recon)
    return new_encod, new_recon, held_out[:, :t_enc, :n_enc]
