"""Session data as device tensors, and the order of training batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from autolfads.data import SessionData
from autolfads.data.validate import TARGET_SPLITS

__all__ = [
    "SessionTensors",
    "to_tensors",
    "epoch_batches",
    "split_batches",
    "encoder_input",
]


@dataclass
class SessionTensors:
    """One session's arrays on the training device (NaN = unobserved)."""

    encod: dict[str, Tensor]  # split -> (B, T_enc, N_enc)
    recon: dict[str, Tensor]  # split -> (B, T_rec, N_rec)
    ext_input: dict[str, Tensor] = field(default_factory=dict)  # split -> (B, T_rec, E)
    sv_mask: Tensor | None = None  # (B_train, T_enc, N_enc) bool, sample-validation entries

    def n_trials(self, split: str) -> int:
        """Trials in a split."""
        return int(self.encod[split].shape[0])

    def batch(self, split: str, idx: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(encod, recon or None, ext_input or None) for the trials `idx` of `split`."""
        recon = self.recon[split][idx] if split in self.recon else None
        ext = self.ext_input[split][idx] if split in self.ext_input else None
        return self.encod[split][idx], recon, ext


def _as_float_tensor(array: np.ndarray, device: torch.device | str) -> Tensor:
    """float32 tensor of `array` on `device`; a read-only array (Ray's object store) is copied
    first, since a tensor sharing it could be written to."""
    if not array.flags.writeable:
        array = array.copy()
    return torch.as_tensor(array, dtype=torch.float32, device=device)


def to_tensors(
    sessions: Sequence[SessionData], device: torch.device | str, sv_rate: float = 0.0, seed: int = 0
) -> list[SessionTensors]:
    """Move every session's arrays to `device` once; draw the fixed sample-validation mask.

    Only the train and valid targets travel: a test split's target (`test_recon_data`) stays
    behind, so that no training step, evaluation or selection can read it. Test trials keep their
    input (`encod`, `ext_input`) and get posterior outputs like the others.
    """
    out = []
    rng = np.random.default_rng(seed)
    for s in sessions:

        def put(d: dict[str, np.ndarray]) -> dict[str, Tensor]:
            return {k: _as_float_tensor(v, device) for k, v in d.items()}

        sv = None
        if sv_rate > 0:
            shape = s.encod["train"].shape
            sv = torch.as_tensor(rng.random(shape) < sv_rate, device=device)
        targets = {k: v for k, v in s.recon.items() if k in TARGET_SPLITS}
        out.append(SessionTensors(put(s.encod), put(targets), put(s.ext_input), sv))
    return out


def split_batches(n: int, batch_size: int, device: torch.device | str) -> list[Tensor]:
    """Consecutive index batches covering range(n) (evaluation order)."""
    idx = torch.arange(n, device=device)
    return list(idx.split(batch_size))


def epoch_batches(
    data: Sequence[SessionTensors], batch_size: int, generator: torch.Generator
) -> list[tuple[int, Tensor]]:
    """One epoch of training batches: (session, trial indices), shuffled, sessions interleaved.

    A trailing partial batch is kept only if it holds at least half a batch; a train split smaller
    than `batch_size` is one batch of all its trials.
    """
    batches: list[tuple[int, Tensor]] = []
    for s, d in enumerate(data):
        n = d.n_trials("train")
        # one copy to the device per session (each copy from the host waits for the device)
        perm = torch.randperm(n, generator=generator).to(d.encod["train"].device)
        for chunk in perm.split(batch_size):
            if len(chunk) == batch_size or len(chunk) * 2 >= batch_size or n < batch_size:
                batches.append((s, chunk))
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]


def encoder_input(encod: Tensor, n_workers: int, hidden: Tensor | None = None) -> Tensor:
    """Encoder input without augmentation: unobserved (NaN) and `hidden` entries set to zero.

    Args:
        encod: (B, T_enc, N_enc) data.  hidden: optional (B, T_enc, N_enc) bool of entries to hide.
    Returns:
        (K, B, T_enc, N_enc), a broadcast view over the worker axis.
    """
    observed = ~torch.isnan(encod)
    if hidden is not None:
        observed = observed & ~hidden
    x = torch.where(observed, encod, torch.zeros_like(encod))
    return x.unsqueeze(0).expand(n_workers, *x.shape)
