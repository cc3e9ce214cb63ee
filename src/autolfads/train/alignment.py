"""Alignment initialisation of per-session read-ins and read-outs (Pandarinath et al. 2018).

Stitching sessions that recorded different neurons works when every session's read-in starts by
mapping its neurons into one shared space. Per session s (N_s encoder channels, M_s read-out channels):

    X_s   (R x N_s)  profiles: train data averaged by condition (conditions common to all sessions),
                     smoothed in time; rows R = conditions x time bins, the same rows in every session
    Z     (R x D)    the top D principal components of [X_1 ... X_S], every neuron z-scored
    W_s, b_s         read-in: least squares (ridge) of Z on X_s, so x W_s + b_s ~ z (the
                     principal-components regression of the original LFADS)
    V_s   (D x M_s)  the map back: least squares of the read-out targets' profiles on Z, in the
                     observation model's first parameter (e.g. the log-rate) at the channel means

All sessions' read-ins then start in one space. The read-outs keep their own initialisation by
default: starting them at V_s too (`apply_alignments(..., readout=True)`) was measured worse on
rates (bench/stitching.py, seed 0, 200 epochs: mean rate R^2 0.908 against 0.928 with the read-in
alone, latents alike; bench/RESULTS.md).
Without condition labels common to every session (or with one session, a new one brought to a
trained model), each session is aligned on its own smoothed single trials. A file's
`alignment_matrix_cxf` (N_s x D) and `alignment_bias_c` (N_s,) take precedence for its read-in,
as the original LFADS reads them: z = (x - bias_c) W_cxf.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from autolfads.data import SessionData
from autolfads.errors import DataError
from autolfads.model.lfads import LFADSNetwork
from autolfads.model.structure import LFADSStructure

__all__ = [
    "Alignment",
    "align_network",
    "align_sessions",
    "apply_alignments",
    "check_file_alignments",
    "profiles",
]

SMOOTH_BINS = 2.0  # std of the Gaussian kernel (bins) that smooths the profiles in time
RIDGE = 1e-4  # ridge of the regressions, relative to the mean eigenvalue of the regressors' Gram
MIN_SHARED_CONDITIONS = 2  # fewer conditions common to every session: align each session alone


@dataclass(frozen=True)
class Alignment:
    """One session's starting read-in and read-out in the shared space of width D.

    readin_weight (N_enc x D) and readin_bias (D,): z = x W + b.
    readout_weight (D x M): principal component -> each read-out channel's first observation
    parameter (the log-rate of a Poisson model), around the read-out bias.
    source: 'file', 'conditions' or 'trials', how the read-in was found.
    """

    readin_weight: np.ndarray
    readin_bias: np.ndarray
    readout_weight: np.ndarray
    source: str


def profiles(
    data: np.ndarray, conditions: np.ndarray | None, keep: np.ndarray | None
) -> np.ndarray:
    """Smoothed profiles (R x N) of train data (B x T x N), NaN read as the channel's mean.

    With `conditions` (B,) and `keep` (C,), the rows are the conditions in `keep`, in that order,
    times T (condition averages); otherwise every trial's T bins.
    """
    x = np.asarray(data, dtype=np.float64)
    channel_mean = np.nan_to_num(np.nanmean(x, axis=(0, 1)))
    x = np.where(np.isnan(x), channel_mean, x)
    if conditions is not None and keep is not None:
        x = np.stack([x[conditions == c].mean(axis=0) for c in keep])  # (C, T, N)
    return _smooth_time(x, SMOOTH_BINS).reshape(-1, x.shape[-1])


def align_sessions(
    sessions: Sequence[SessionData],
    readin_dim: int,
    log_input: bool = False,
) -> list[Alignment]:
    """Alignments of every session into one space of width D = `readin_dim`.

    Components beyond the data's rank get zero read-in columns and read-out rows.
    """
    shared = _shared_conditions(sessions)
    encod = [_encoder_profiles(s, shared, log_input) for s in sessions]
    recon = [_recon_profiles(s, shared) for s in sessions]
    from_file = [_file_readin(s, readin_dim) for s in sessions]
    if shared is not None:
        scores = [_principal_scores(encod, readin_dim)] * len(sessions)  # the same rows in each
        sources = ["conditions"] * len(sessions)
    else:
        scores = [_principal_scores([e], readin_dim) for e in encod]
        sources = ["trials"] * len(sessions)
    out = []
    for e, r, z, given, source in zip(encod, recon, scores, from_file, sources, strict=True):
        if given is not None:
            weight, bias = given
            z, source = e @ weight + bias, "file"
        else:
            weight, bias = _regression(e, z)
        out.append(Alignment(weight, bias, _regression(z, r)[0], source))
    return out


def check_file_alignments(sessions: Sequence[SessionData], structure: LFADSStructure) -> None:
    """Refuse, in one line, a file's `alignment_matrix_cxf` / `alignment_bias_c` whose shape does
    not fit the model's read-in (N_enc x `encoder_input_dim`, N_enc), before any work; a model
    without read-ins does not read them."""
    if structure.readin_dim is not None:
        for s in sessions:
            _file_readin(s, structure.encoder_input_dim)


def align_network(
    net: LFADSNetwork, sessions: Sequence[SessionData], new_session: bool = False
) -> list[str]:
    """Start the read-ins and read-outs of `net` aligned, when it has read-ins and stitches several
    sessions, brings `new_session` to trained dynamics, or a file gives `alignment_matrix_cxf`.
    Returns notes for the user.

    Call after `init_readout_bias` (the read-out's scale is taken at its bias).
    """
    given = any("alignment_matrix_cxf" in x.extra for x in sessions)
    if net.readin is None or (len(sessions) < 2 and not new_session and not given):
        return []
    s = net.structure
    alignments = align_sessions(sessions, s.encoder_input_dim, s.log_input)
    notes = apply_alignments(net, alignments, readout=False)
    if len(sessions) > 1 and any(a.source == "trials" for a in alignments):
        notes.append(
            "alignment: no condition labels (train_condition) common to every session; each "
            "session's read-in starts at its own principal components"
        )
    return notes


def apply_alignments(
    net: LFADSNetwork, alignments: Sequence[Alignment], readout: bool = True
) -> list[str]:
    """Write the alignments into the network's read-ins (and with `readout` its read-outs), every
    worker alike.

    Read-out weights are scaled from data units to the observation model's first parameter by the
    derivative of its mean at the read-out's current bias (the channel means: call
    `init_readout_bias` first). Returns notes on parts left at their own initialisation (maps
    without a (K, in, out) `weight`).
    """
    notes = []
    for session, align in enumerate(alignments):
        readin = net.readin[session] if net.readin is not None else None
        if not _write_map(readin, align.readin_weight, align.readin_bias):
            notes.append(
                f"alignment: session {session}'s read-in is not a linear map; left as built"
            )
        if not readout:
            continue
        obs, out_map = net.observation_model(session), net.readout[session]
        if not _has_weight(out_map):
            notes.append(
                f"alignment: session {session}'s read-out is not a linear map; left as built"
            )
            continue
        n_params, fac_dim = obs.n_params, out_map.weight.shape[1]
        bias = out_map.bias[0].detach().reshape(-1, n_params)  # (M, P)
        slope = _mean_slope(obs, bias).cpu().double().numpy()  # (M,) d mean / d first parameter
        per_param = align.readout_weight / slope  # (D, M)
        weight = torch.zeros(fac_dim, bias.shape[0], n_params, dtype=torch.float64)
        d = min(fac_dim, per_param.shape[0])
        weight[:d, :, 0] = torch.from_numpy(per_param[:d])
        with torch.no_grad():
            out_map.weight.copy_(weight.reshape(fac_dim, -1).expand_as(out_map.weight))
    return notes


# --------------------------------------------------------------------------- profiles


def _labels(session: SessionData, shared: np.ndarray | None) -> np.ndarray | None:
    return None if shared is None else np.asarray(session.extra["train_condition"]).reshape(-1)


def _shared_conditions(sessions: Sequence[SessionData]) -> np.ndarray | None:
    """Condition labels present in every session's train split, sorted; None if too few."""
    if len(sessions) < 2 or any("train_condition" not in s.extra for s in sessions):
        return None
    common = None
    for s in sessions:
        labels = np.unique(np.asarray(s.extra["train_condition"]).reshape(-1))
        common = labels if common is None else np.intersect1d(common, labels)
    return common if len(common) >= MIN_SHARED_CONDITIONS else None


def _encoder_profiles(s: SessionData, shared: np.ndarray | None, log_input: bool) -> np.ndarray:
    """Profiles of what the read-in receives: the encoder data, log(1 + x) with `log_input`."""
    x = s.encod["train"]
    if log_input:
        x = np.log1p(np.clip(x, 0.0, None))
    return profiles(x, _labels(s, shared), shared)


def _recon_profiles(s: SessionData, shared: np.ndarray | None) -> np.ndarray:
    """Profiles of the read-out targets over the encoder's time bins (the same rows)."""
    t_enc = s.encod["train"].shape[1]
    return profiles(s.recon["train"][:, :t_enc], _labels(s, shared), shared)


def _smooth_time(x: np.ndarray, std: float) -> np.ndarray:
    """Gaussian smoothing along axis 1 (time) of (B, T, N), edges renormalised."""
    t = x.shape[1]
    lags = np.arange(t)[:, None] - np.arange(t)[None, :]
    kernel = np.exp(-0.5 * (lags / std) ** 2)
    kernel /= kernel.sum(axis=1, keepdims=True)  # (T, T), rows sum to 1
    return np.einsum("st,btn->bsn", kernel, x)


# --------------------------------------------------------------------------- regressions


def _principal_scores(blocks: Sequence[np.ndarray], dim: int) -> np.ndarray:
    """Scores (R x D) of the top D principal components of the z-scored columns of all blocks.

    Scaled together so that the D scores have unit variance on average; columns past the rank are
    zero.
    """
    x = np.concatenate(blocks, axis=1)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    u, sv, _ = np.linalg.svd(x, full_matrices=False)
    d = min(dim, int((sv > sv[0] * 1e-6).sum()) if sv.size else 0)
    scores = np.zeros((x.shape[0], dim))
    scores[:, :d] = u[:, :d] * sv[:d]
    scale = np.sqrt((scores**2).sum(0).sum() / (x.shape[0] * dim)) if d else 1.0
    return scores / scale


def _regression(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ridge least squares y ~ x W + b: W (in x out), b (out,)."""
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc
    ridge = RIDGE * max(np.trace(gram) / max(gram.shape[0], 1), 1e-12)
    weight = np.linalg.solve(gram + ridge * np.eye(gram.shape[0]), xc.T @ yc)
    return weight, y_mean - x_mean @ weight


def _file_readin(s: SessionData, dim: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The file's `alignment_matrix_cxf` (N x D) and the read-in bias -bias_c W, or None."""
    if "alignment_matrix_cxf" not in s.extra:
        return None
    matrix = np.asarray(s.extra["alignment_matrix_cxf"], dtype=np.float64)
    n = s.encod["train"].shape[-1]
    if matrix.shape != (n, dim):
        raise DataError(
            f"{s.path}: alignment_matrix_cxf has shape {matrix.shape}, expected "
            f"(encod channels, model read-in width) = ({n}, {dim})"
        )
    bias_c = np.asarray(s.extra.get("alignment_bias_c", np.zeros(n)), dtype=np.float64)
    if bias_c.shape != (n,):
        raise DataError(f"{s.path}: alignment_bias_c has shape {bias_c.shape}, expected ({n},)")
    return matrix, -bias_c @ matrix


# --------------------------------------------------------------------------- writing into the net


def _has_weight(part: nn.Module | None) -> bool:
    weight = getattr(part, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.dim() == 3


def _write_map(part: nn.Module | None, weight: np.ndarray, bias: np.ndarray) -> bool:
    """Copy W (in x out) and b (out,) into a (K, in, out) map for every worker."""
    if not _has_weight(part):
        return False
    with torch.no_grad():
        part.weight.copy_(torch.as_tensor(weight).expand_as(part.weight))
        if getattr(part, "bias", None) is not None:
            part.bias.copy_(torch.as_tensor(bias).expand_as(part.bias))
    return True


def _mean_slope(obs: nn.Module, bias: torch.Tensor, step: float = 1e-3) -> torch.Tensor:
    """d mean / d (first parameter) per channel at `bias` (M, P), by a central difference."""
    shift = torch.zeros_like(bias)
    shift[:, 0] = step
    with torch.no_grad():
        up = obs.mean((bias + shift)[None, None, None])  # (1, 1, 1, M)
        down = obs.mean((bias - shift)[None, None, None])
    slope = ((up - down) / (2 * step)).reshape(-1, bias.shape[0]).mean(0)  # workers averaged
    return torch.where(slope.abs() > 1e-6, slope, torch.full_like(slope, 1e-6))
