"""Evaluation metrics of docs/data-format.md, Metrics: likelihoods, bits per spike, rate and behaviour R^2.

Arrays are numpy and results plain floats. NaN in the observed data (counts, truth, behaviour)
means "not observed" (SBTT): those entries are left out of every sum and mean.

Shape legend: B trials, T bins, N channels, D behaviour dimensions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch  # only for a vectorised lgamma (numpy has none)

if TYPE_CHECKING:
    from autolfads.data import SessionData

__all__ = [
    "SMOOTHING_WEIGHT",
    "smooth_metric",
    "RATE_FLOOR",
    "bits_per_spike",
    "bps_ratio",
    "co_bps",
    "fp_bps",
    "poisson_nll",
    "r2_score",
    "ridge_decoding_r2",
    "session_metrics",
]

RATE_FLOOR = 1e-9  # rates are clipped here before the log, so a zero rate costs a finite penalty


def poisson_nll(rates: np.ndarray, counts: np.ndarray) -> float:
    """Total Poisson negative log-likelihood of `counts` given `rates`, over observed entries.

    Sums `rate - count * log(rate) + log(count!)` (the log-factorial is `lgamma(count + 1)`) over
    the entries where `counts` is not NaN. Rates are clipped at `RATE_FLOOR` before the log.

    Args:
        rates: expected counts per bin, any shape, e.g. (B, T, N).
        counts: observed counts, same shape; NaN where unobserved.

    Returns:
        The summed NLL in nats (0.0 if nothing is observed; NaN if a rate is NaN where observed).
    """
    rates, counts = _check_same_shape(rates, counts, "rates", "counts")
    observed = ~np.isnan(counts)
    return _poisson_nll_observed(rates[observed], counts[observed])


def bits_per_spike(rates: np.ndarray, counts: np.ndarray) -> float:
    """Bits per spike: how much better `rates` explain `counts` than each neuron's mean rate.

    `(NLL_null - NLL_model) / (total spikes * ln 2)`, where the null model predicts, for every
    bin, the neuron's mean count over all observed trials and bins (Pei et al. 2021). Zero means
    no better than the null; negative means worse.

    Args:
        rates: predicted counts per bin, (B, T, N) (any shape whose last axis is neurons).
        counts: observed counts, same shape; NaN where unobserved.

    Returns:
        Bits per spike, or NaN if no spike is observed.
    """
    rates, counts = _check_same_shape(rates, counts, "rates", "counts")
    observed = ~np.isnan(counts)
    total_spikes = float(np.sum(counts[observed]))
    if total_spikes <= 0:
        return math.nan
    null_rates = np.broadcast_to(_neuron_mean_rates(counts), counts.shape)[observed]
    k = counts[observed].astype(np.float64)
    model = np.maximum(rates[observed].astype(np.float64), RATE_FLOOR)
    null = np.maximum(null_rates.astype(np.float64), RATE_FLOOR)
    # The log-factorial terms of the two Poisson NLLs cancel in the difference.
    gain = np.sum(k * (np.log(model) - np.log(null)) - (model - null))
    return float(gain / (total_spikes * math.log(2)))


def bps_ratio(rates: np.ndarray, truth: np.ndarray, counts: np.ndarray) -> float:
    """The fraction of the true rates' bits/spike that `rates` reach on the same trials.

    `bits_per_spike(rates, counts) / bits_per_spike(truth, counts)`: 1 when the inferred rates
    explain the counts as well as the rates that generated them, 0 when no better than each
    neuron's mean rate. It can exceed 1 (inferred rates overfit to the noise of these counts) and
    is NaN when the truth's bits/spike is not positive (it carries no information to reach).

    Args:
        rates: inferred counts per bin, (B, T, N).
        truth: true counts per bin (the file's truth after `conversion_factor`), same shape.
        counts: observed counts, same shape; NaN where unobserved.
    """
    truth, counts = _check_same_shape(truth, counts, "truth", "counts")
    reachable = bits_per_spike(truth, counts)
    if not reachable > 0:
        return math.nan
    return bits_per_spike(rates, counts) / reachable


def co_bps(rates: np.ndarray, counts: np.ndarray, encod_data_dim: int) -> float:
    """Co-smoothing bits per spike: `bits_per_spike` on the held-out neurons only.

    Args:
        rates: predicted counts per bin, (B, T, N_rec).
        counts: observed counts, (B, T, N_rec); NaN where unobserved.
        encod_data_dim: number of held-in channels; channels `encod_data_dim:` are held out.
    """
    rates, counts = _check_same_shape(rates, counts, "rates", "counts", ndim=3)
    _check_split_point(encod_data_dim, counts.shape[2], "encod_data_dim", "channels")
    return bits_per_spike(rates[:, :, encod_data_dim:], counts[:, :, encod_data_dim:])


def fp_bps(rates: np.ndarray, counts: np.ndarray, encod_seq_len: int) -> float:
    """Forward-prediction bits per spike: `bits_per_spike` on the bins after the model's input.

    Args:
        rates: predicted counts per bin, (B, T_rec, N).
        counts: observed counts, (B, T_rec, N); NaN where unobserved.
        encod_seq_len: number of input bins; bins `encod_seq_len:` are forward predictions.
    """
    rates, counts = _check_same_shape(rates, counts, "rates", "counts", ndim=3)
    _check_split_point(encod_seq_len, counts.shape[1], "encod_seq_len", "time steps")
    return bits_per_spike(rates[:, encod_seq_len:], counts[:, encod_seq_len:])


def r2_score(truth: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination of `pred` against `truth`, averaged uniformly over neurons.

    Both are flattened over trials and time to (B*T, N), as `sklearn.metrics.r2_score` with
    `multioutput="uniform_average"`, except that neurons whose truth has zero variance are left
    out of the average (sklearn would count them as 0 or 1) and, per neuron, the rows where
    either array is NaN are dropped.

    Args:
        truth: true values, (B, T, N) or (B*T, N).
        pred: predictions, same shape.

    Returns:
        Mean over neurons of `1 - SSE / SST`; NaN if no neuron has variance.
    """
    truth, pred = _check_same_shape(truth, pred, "truth", "pred")
    truth = truth.reshape(-1, truth.shape[-1]) if truth.ndim > 1 else truth[:, None]
    pred = pred.reshape(truth.shape)
    scores = [
        score
        for n in range(truth.shape[1])
        if (score := _r2_one_column(truth[:, n], pred[:, n])) is not None
    ]
    return float(np.mean(scores)) if scores else math.nan


def ridge_decoding_r2(
    train_x: np.ndarray,
    train_y: np.ndarray,
    valid_x: np.ndarray,
    valid_y: np.ndarray,
    alpha: float = 1e-2,
) -> float:
    """Decode behaviour from rates with ridge regression; R^2 on the validation trials.

    The map `y = x W + b` is fit in closed form on the train bins (intercept not penalised:
    minimises `|y - x W - b|^2 + alpha |W|^2`), then scored with `r2_score` on the valid bins.
    Bins with a NaN in `x` or `y` are dropped from the fit.

    Args:
        train_x: rates, (B_train, T, N).
        train_y: behaviour, (B_train, T, D).
        valid_x: rates, (B_valid, T, N).
        valid_y: behaviour, (B_valid, T, D).
        alpha: ridge penalty (>= 0).

    Returns:
        R^2 on the valid bins, uniform average over the D behaviour dimensions.
    """
    if not alpha >= 0:
        raise ValueError(f"alpha: got {alpha}; expected a penalty >= 0")
    x_fit, y_fit = _paired_rows(train_x, train_y, "train_x", "train_y")
    x_val, y_val = _paired_rows(valid_x, valid_y, "valid_x", "valid_y")
    if x_val.shape[1] != x_fit.shape[1] or y_val.shape[1] != y_fit.shape[1]:
        raise ValueError(
            f"valid_x/valid_y: got {x_val.shape[1]} channels and {y_val.shape[1]} behaviour "
            f"dims; expected {x_fit.shape[1]} and {y_fit.shape[1]} as in train_x/train_y"
        )
    keep = ~(np.isnan(x_fit).any(axis=1) | np.isnan(y_fit).any(axis=1))
    if not keep.any():
        raise ValueError("train_x/train_y: no bin is observed in both; expected at least one")
    weights, intercept = _fit_ridge(x_fit[keep], y_fit[keep], alpha)
    return r2_score(y_val, x_val @ weights + intercept)


def session_metrics(
    output_params: dict[str, np.ndarray],
    session: SessionData,
    reconstruction: str = "poisson",
) -> dict[str, float]:
    """All section 5 metrics computable for one session's model outputs, named by their split.

    For each split `s` present in both `output_params` and `session.recon` (train and valid, and
    test when the file has `test_recon_data`): for a Poisson model `s/nll` (mean Poisson NLL per
    observed element), `s/bps`, `s/co_bps` (if there are held-out channels) and `s/fp_bps` (if
    there are forward-prediction steps); for every model `s/r2` (rates against
    `session.truth[s]`, when the file has truth); for a Poisson model with truth also
    `s/truth_bps` (the true rates' bits/spike on the same counts) and `s/bps_ratio` (`s/bps`
    over `s/truth_bps`). Adds `s/behavior_r2` for s in valid and test (ridge decoding, fit on
    train, scored on s) when `session.extra` holds `train_behavior` and `{s}_behavior`; rates are
    cut to the behaviour's number of bins.

    Valid scores are those every selection saw (PBT ranking, the best epoch or worker); test
    scores come from trials no selection saw.

    Args:
        output_params: split name ('train', 'valid', 'test') -> (B, T_rec, N_rec)
            posterior-mean rates (counts per bin), i.e. the `{split}_output_params` arrays of
            the output file.
        session: the session whose targets the outputs predict.
        reconstruction: the observation model the outputs come from.

    Returns:
        Metric name (`<split>/<metric>`) -> value.
    """
    dims = session.dims
    metrics: dict[str, float] = {}
    for split in [s for s in session.recon if s in output_params]:
        rates = np.asarray(output_params[split], dtype=np.float64)
        counts = np.asarray(session.recon[split], dtype=np.float64)
        _check_output_shape(rates, counts, split)
        truth = session.truth.get(split)
        if reconstruction == "poisson":  # bits/spike scores spike counts under Poisson rates
            n_observed = int(np.count_nonzero(~np.isnan(counts)))
            metrics[f"{split}/nll"] = poisson_nll(rates, counts) / max(n_observed, 1)
            metrics[f"{split}/bps"] = bits_per_spike(rates, counts)
            if dims.recon_data_dim > dims.encod_data_dim:
                metrics[f"{split}/co_bps"] = co_bps(rates, counts, dims.encod_data_dim)
            if dims.recon_seq_len > dims.encod_seq_len:
                metrics[f"{split}/fp_bps"] = fp_bps(rates, counts, dims.encod_seq_len)
            if truth is not None:
                metrics[f"{split}/truth_bps"] = bits_per_spike(truth, counts)
                metrics[f"{split}/bps_ratio"] = bps_ratio(rates, truth, counts)
        if truth is not None:
            metrics[f"{split}/r2"] = r2_score(truth, rates)
    for split in ("valid", "test"):
        needed = {"train_behavior", f"{split}_behavior"}
        if {"train", split} <= output_params.keys() and needed <= session.extra.keys():
            metrics[f"{split}/behavior_r2"] = _behavior_r2(output_params, session.extra, split)
    return metrics


# --- helpers ---------------------------------------------------------------------------------


def _check_same_shape(
    a: np.ndarray, b: np.ndarray, a_name: str, b_name: str, ndim: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as float64, after checking they have the same shape (and `ndim` if given)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(
            f"{a_name}/{b_name}: shapes {a.shape} and {b.shape}; expected equal shapes"
        )
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{a_name}: shape {a.shape}; expected {ndim} dimensions (B, T, N)")
    return a, b


def _check_split_point(value: int, size: int, name: str, what: str) -> None:
    """`value` must leave at least one of the `size` entries after it."""
    if not 0 <= value < size:
        raise ValueError(f"{name}: got {value}; expected 0 <= {name} < {size} ({what} in the data)")


def _check_output_shape(rates: np.ndarray, counts: np.ndarray, split: str) -> None:
    if rates.shape != counts.shape:
        raise ValueError(
            f"output_params['{split}']: shape {rates.shape}; expected {counts.shape} "
            f"as the session's {split}_recon_data"
        )


def _poisson_nll_observed(rates: np.ndarray, counts: np.ndarray) -> float:
    """Summed Poisson NLL of matching 1-D arrays of observed rates and counts."""
    if counts.size == 0:
        return 0.0
    rates = np.maximum(rates, RATE_FLOOR)
    log_factorial = torch.lgamma(torch.from_numpy(counts + 1.0)).sum().item()
    return float(np.sum(rates - counts * np.log(rates))) + log_factorial


def _neuron_mean_rates(counts: np.ndarray) -> np.ndarray:
    """Each neuron's mean count over the observed entries of all other axes, shape (N,).

    A neuron never observed gets 0 (it enters no sum anyway).
    """
    observed = ~np.isnan(counts)
    axes = tuple(range(counts.ndim - 1))
    totals = np.sum(np.where(observed, counts, 0.0), axis=axes)
    n_obs = np.sum(observed, axis=axes)
    return totals / np.maximum(n_obs, 1)


def _r2_one_column(truth: np.ndarray, pred: np.ndarray) -> float | None:
    """`1 - SSE / SST` of one neuron over rows where both are observed; None if SST is 0."""
    keep = ~(np.isnan(truth) | np.isnan(pred))
    truth, pred = truth[keep], pred[keep]
    if truth.size == 0:
        return None
    total = float(np.sum((truth - truth.mean()) ** 2))
    if total == 0.0:
        return None
    return 1.0 - float(np.sum((truth - pred) ** 2)) / total


def _paired_rows(
    x: np.ndarray, y: np.ndarray, x_name: str, y_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Rates and behaviour flattened over trials and time to (B*T, N) and (B*T, D)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 3 or y.ndim != 3 or x.shape[:2] != y.shape[:2]:
        raise ValueError(
            f"{x_name}/{y_name}: shapes {x.shape} and {y.shape}; "
            "expected (B, T, N) and (B, T, D) with the same B and T"
        )
    return x.reshape(-1, x.shape[2]), y.reshape(-1, y.shape[2])


def _fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge with an unpenalised intercept: weights (N, D) and intercept (D,)."""
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc + alpha * np.eye(x.shape[1])
    # lstsq rather than solve: with alpha = 0 and collinear rates the Gram matrix is singular
    weights = np.linalg.lstsq(gram, xc.T @ yc, rcond=None)[0]
    return weights, y_mean - x_mean @ weights


def _behavior_r2(
    output_params: dict[str, np.ndarray], extra: dict[str, np.ndarray], scored: str
) -> float:
    """Ridge decoding of `{split}_behavior` from the rates of its first T_behaviour bins: fit on
    train, scored on the split `scored`."""
    pairs = {}
    for split in ("train", scored):
        rates = np.asarray(output_params[split], dtype=np.float64)
        behavior = np.asarray(extra[f"{split}_behavior"], dtype=np.float64)
        if behavior.ndim == 2:
            behavior = behavior[:, :, None]  # (B, T) -> (B, T, 1): one behaviour variable
        if behavior.ndim != 3 or behavior.shape[0] != rates.shape[0]:
            raise ValueError(
                f"{split}_behavior: shape {behavior.shape}; expected (B, T, D) with "
                f"B = {rates.shape[0]} trials as in output_params['{split}']"
            )
        if behavior.shape[1] > rates.shape[1]:
            raise ValueError(
                f"{split}_behavior: {behavior.shape[1]} time steps; expected at most "
                f"{rates.shape[1]} as in output_params['{split}']"
            )
        pairs[split] = (rates[:, : behavior.shape[1]], behavior)
    return ridge_decoding_r2(*pairs["train"], *pairs[scored])


SMOOTHING_WEIGHT = 0.7
"""Weight of the current value in `valid/recon_smth`."""


def smooth_metric(current: float, previous_smoothed: float | None) -> float:
    """Exponentially smoothed metric: `0.7 * current + 0.3 * previous` (docs/data-format.md, Metrics).

    The first value (`previous_smoothed` None) is `current`. NaN in either stays NaN.
    """
    if previous_smoothed is None:
        return float(current)
    return SMOOTHING_WEIGHT * float(current) + (1.0 - SMOOTHING_WEIGHT) * float(previous_smoothed)
