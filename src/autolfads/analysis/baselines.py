"""A smoothing + Poisson GLM baseline for co-smoothing (Pei et al. 2021, Neural Latents Benchmark).

No latent dynamics: the held-in spikes of each trial are smoothed in time with a Gaussian kernel,
and each held-out neuron's counts are regressed on the smoothed held-in rates of the same bin with
a Poisson GLM (log link, bias, small L2 ridge), fit on the train trials and applied to the valid
trials. Its co-bps is the bar a latent dynamics model (LFADS) should clear: whatever it gains above
this comes from pooling over time and trials, not from instantaneous correlations alone.

The GLM is fit by Newton's method (IRLS) on the penalised mean negative log-likelihood
`mean_i [exp(x_i w + b) - y_i (x_i w + b)] + (l2 / 2) |w|^2` (the bias is not penalised; the
scaling is that of `sklearn.linear_model.PoissonRegressor(alpha=l2)`), all output neurons at once.

Shape legend: B trials, T bins, N_in held-in neurons, N_out held-out neurons, D regressors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from autolfads.analysis.metrics import bits_per_spike

if TYPE_CHECKING:
    from autolfads.data import SessionData

__all__ = [
    "fit_poisson_glm",
    "gaussian_kernel",
    "gaussian_smooth",
    "glm_co_bps",
    "predict_poisson_glm",
    "session_glm_co_bps",
    "smoothed_glm_rates",
    "smoothing_matrix",
]

KERNEL_WIDTH_STDS = 4.0  # the Gaussian kernel is cut at +-4 std (it then holds 99.99 % of its mass)
MAX_LOG_RATE = (
    30.0  # linear predictors are clipped here before exp, so a wild Newton step stays finite
)


# --------------------------------------------------------------------------- smoothing


def gaussian_kernel(std_bins: float) -> np.ndarray:
    """Gaussian kernel of standard deviation `std_bins` bins, cut at +-4 std, summing to 1.

    Returns:
        (2R + 1,) weights for offsets -R..R bins, R = ceil(4 * std_bins); `[1.0]` if std is 0.
    """
    if not std_bins >= 0:
        raise ValueError(f"smooth_bins: got {std_bins}; expected a kernel std in bins >= 0")
    radius = int(np.ceil(KERNEL_WIDTH_STDS * std_bins))
    if radius == 0:
        return np.ones(1)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / std_bins) ** 2)
    return weights / weights.sum()


def smoothing_matrix(n_bins: int, std_bins: float) -> np.ndarray:
    """(T, T) matrix S with `smoothed = S @ counts`: the Gaussian kernel, reflected at the edges.

    Kernel mass that would fall before the first or after the last bin is reflected back into the
    trial (half-sample symmetric boundary, like `scipy.ndimage` mode 'reflect'). S is symmetric
    with rows and columns summing to 1, so smoothing preserves each trial's spike count.
    """
    kernel = gaussian_kernel(std_bins)
    radius = kernel.size // 2
    matrix = np.zeros((n_bins, n_bins))
    for t in range(n_bins):
        source = _reflect_index(t + np.arange(-radius, radius + 1), n_bins)
        np.add.at(matrix[t], source, kernel)
    return matrix


def gaussian_smooth(spikes: np.ndarray, std_bins: float) -> np.ndarray:
    """Smooth spike counts in time, trial by trial, with a Gaussian kernel (see `smoothing_matrix`).

    Args:
        spikes: (B, T, N) counts; must be finite.
        std_bins: kernel standard deviation in bins (e.g. 2 bins = 40 ms at 20 ms bins).

    Returns:
        (B, T, N) smoothed counts per bin; each trial and neuron keeps its total count.
    """
    spikes = _as_trials(spikes, "spikes")
    matrix = smoothing_matrix(spikes.shape[1], std_bins)
    return np.einsum("ts,bsn->btn", matrix, spikes)  # (B, T, N)


def _reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """Map any integer positions into 0..n-1 by reflecting at the edges (... c b a | a b c ...)."""
    folded = np.mod(index, 2 * n)
    return np.where(folded < n, folded, 2 * n - 1 - folded)


# --------------------------------------------------------------------------- Poisson GLM


def fit_poisson_glm(
    x: np.ndarray,
    y: np.ndarray,
    *,
    l2: float = 0.0,
    max_iter: int = 100,
    tol: float = 1e-8,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit `y[:, m] ~ Poisson(exp(x @ weights[:, m] + bias[m]))` for every output m by Newton's method.

    Minimises, per output, `mean_i [exp(eta_i) - y_i eta_i] + (l2 / 2) |w|^2` with
    `eta = x w + b`; the bias is not penalised. Each Newton step is halved until the objective
    does not increase, so the fit converges from the start `w = 0, b = log(mean y)`.

    Args:
        x: (S, D) regressors, one row per sample (bin).
        y: (S, M) counts of M outputs; finite, >= 0.
        l2: ridge penalty on the weights (>= 0). With l2 = 0, an output with no spike has no
            finite optimum; its bias is driven towards -inf until `max_iter`.
        max_iter: most Newton steps.
        tol: stop when no parameter moves by more than this in a step.

    Returns:
        weights (D, M) and bias (M,).
    """
    x, y = _check_regression(x, y, l2)
    design = np.hstack([x, np.ones((x.shape[0], 1))])  # (S, D+1): the last column is the bias
    penalty = np.full(design.shape[1], float(l2))
    penalty[-1] = 0.0
    theta = np.zeros((design.shape[1], y.shape[1]))  # (D+1, M)
    theta[-1] = np.log(np.maximum(y.mean(axis=0), 1e-3))
    objective = _glm_objective(design, y, theta, penalty)
    for _ in range(max_iter):
        step = _newton_step(design, y, theta, penalty)
        theta, objective, moved = _damped_update(design, y, theta, step, objective, penalty)
        if moved <= tol:
            break
    return theta[:-1], theta[-1]


def predict_poisson_glm(x: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Expected counts `exp(x @ weights + bias)`: (S, D) regressors -> (S, M) rates."""
    return np.exp(np.minimum(np.asarray(x, dtype=np.float64) @ weights + bias, MAX_LOG_RATE))


def _check_regression(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x/y: shapes {x.shape} and {y.shape}; expected (S, D) and (S, M) with the same S"
        )
    if y.shape[1] == 0 or x.shape[0] == 0:
        raise ValueError(
            f"x/y: shapes {x.shape} and {y.shape}; expected at least one sample and output"
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x/y: found NaN or inf; expected finite regressors and counts")
    if (y < 0).any():
        raise ValueError(f"y: found a negative count ({y.min():.6g}); expected counts >= 0")
    if not l2 >= 0:
        raise ValueError(f"l2: got {l2}; expected a ridge penalty >= 0")
    return x, y


def _glm_objective(
    design: np.ndarray, y: np.ndarray, theta: np.ndarray, penalty: np.ndarray
) -> np.ndarray:
    """Penalised mean Poisson NLL (without the log-factorial) of each output, (M,)."""
    eta = np.minimum(design @ theta, MAX_LOG_RATE)  # (S, M)
    nll = np.mean(np.exp(eta) - y * eta, axis=0)
    return nll + 0.5 * np.einsum("d,dm->m", penalty, theta**2)


def _newton_step(
    design: np.ndarray, y: np.ndarray, theta: np.ndarray, penalty: np.ndarray
) -> np.ndarray:
    """The Newton direction `-H^-1 g` of every output's objective, (D+1, M)."""
    n = design.shape[0]
    rates = np.exp(np.minimum(design @ theta, MAX_LOG_RATE))  # (S, M)
    grad = design.T @ (rates - y) / n + penalty[:, None] * theta  # (D+1, M)
    # one (D+1, D+1) matrix per output; a loop of matmuls is much faster than a 3-operand einsum
    hess = np.stack([(design * rates[:, [m]]).T @ design for m in range(y.shape[1])]) / n
    hess += np.diag(penalty)[None]
    hess += 1e-10 * np.eye(design.shape[1])[None]  # keeps H invertible for collinear regressors
    return -np.linalg.solve(hess, grad.T[:, :, None])[:, :, 0].T


def _damped_update(
    design: np.ndarray,
    y: np.ndarray,
    theta: np.ndarray,
    step: np.ndarray,
    objective: np.ndarray,
    penalty: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Take the largest of steps 1, 1/2, 1/4, ... that does not raise each output's objective.

    Returns the new parameters, their objectives and the largest parameter change.
    """
    scale = np.ones(theta.shape[1])
    for _ in range(30):
        candidate = theta + scale * step
        new_objective = _glm_objective(design, y, candidate, penalty)
        worse = new_objective > objective + 1e-12 * np.abs(objective)
        if not worse.any():
            break
        scale = np.where(worse, scale / 2, scale)
    else:  # no descent for some outputs: they are at their optimum to machine precision
        scale = np.where(worse, 0.0, scale)
        candidate = theta + scale * step
        new_objective = _glm_objective(design, y, candidate, penalty)
    moved = float(np.max(np.abs(candidate - theta))) if theta.size else 0.0
    return candidate, new_objective, moved


# --------------------------------------------------------------------------- co-smoothing


def smoothed_glm_rates(
    train_heldin: np.ndarray,
    train_heldout: np.ndarray,
    valid_heldin: np.ndarray,
    *,
    smooth_bins: float,
    l2: float = 1e-2,
) -> np.ndarray:
    """Predict the held-out neurons of the valid trials from their smoothed held-in spikes.

    The held-in counts are smoothed with `gaussian_smooth`, z-scored with the train bins' mean and
    std (so `l2` does not depend on the firing rates), and a Poisson GLM per held-out neuron is
    fit on every train bin, then applied to every valid bin.

    Args:
        train_heldin: (B_train, T, N_in) counts of the held-in neurons.
        train_heldout: (B_train, T, N_out) counts of the held-out neurons.
        valid_heldin: (B_valid, T, N_in) counts of the held-in neurons.
        smooth_bins: Gaussian kernel std in bins (40-50 ms is usual: 2-2.5 bins of 20 ms).
        l2: ridge penalty on the weights of the z-scored rates (see `fit_poisson_glm`).

    Returns:
        (B_valid, T, N_out) predicted counts per bin of the held-out neurons.
    """
    train_heldin = _as_trials(train_heldin, "train_heldin")
    train_heldout = _as_trials(train_heldout, "train_heldout")
    valid_heldin = _as_trials(valid_heldin, "valid_heldin")
    _check_matching(train_heldin, train_heldout, valid_heldin)
    x_train = _flatten(gaussian_smooth(train_heldin, smooth_bins))  # (B_train*T, N_in)
    x_valid = _flatten(gaussian_smooth(valid_heldin, smooth_bins))  # (B_valid*T, N_in)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # a silent neuron stays a zero regressor
    weights, bias = fit_poisson_glm((x_train - mean) / std, _flatten(train_heldout), l2=l2)
    rates = predict_poisson_glm((x_valid - mean) / std, weights, bias)
    return rates.reshape(valid_heldin.shape[0], valid_heldin.shape[1], -1)  # (B_valid, T, N_out)


def glm_co_bps(
    train_heldin: np.ndarray,
    train_heldout: np.ndarray,
    valid_heldin: np.ndarray,
    valid_heldout: np.ndarray,
    *,
    smooth_bins: float,
    l2: float = 1e-2,
) -> float:
    """Co-bps of the smoothing + GLM baseline: `bits_per_spike` of its valid held-out rates.

    Arguments as in `smoothed_glm_rates`, plus `valid_heldout` (B_valid, T, N_out), the counts
    it is scored on.
    """
    rates = smoothed_glm_rates(
        train_heldin, train_heldout, valid_heldin, smooth_bins=smooth_bins, l2=l2
    )
    return bits_per_spike(rates, _as_trials(valid_heldout, "valid_heldout"))


def session_glm_co_bps(
    session: SessionData, *, smooth_bins: float, l2: float = 1e-2, split: str = "valid"
) -> float:
    """`glm_co_bps` on a session file's held-out channels (recon channels beyond encod_data_dim).

    The GLM is fit on the train split alone and scored on `split` ('valid', or 'test' when the
    file has `test_recon_data`). Held-in spikes are `{split}_encod_data`; the score covers the
    first `encod_seq_len` bins (forward-prediction bins, if any, have no held-in spikes to smooth).

    Raises:
        ValueError: the session has no held-out channels, or no target for `split`.
    """
    dims = session.dims
    if dims.recon_data_dim <= dims.encod_data_dim:
        raise ValueError(
            f"{session.path}: recon_data has {dims.recon_data_dim} channels; expected more than "
            f"encod_data ({dims.encod_data_dim}): held-out neurons appended last"
        )
    if split == "train" or split not in session.recon:
        present = ", ".join(s for s in session.recon if s != "train")
        raise ValueError(f"split={split!r}; expected a scored split with a target ({present})")
    heldout = {
        s: session.recon[s][:, : dims.encod_seq_len, dims.encod_data_dim :]
        for s in ("train", split)
    }
    return glm_co_bps(
        session.encod["train"],
        heldout["train"],
        session.encod[split],
        heldout[split],
        smooth_bins=smooth_bins,
        l2=l2,
    )


def _as_trials(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 3:
        raise ValueError(f"{name}: shape {array.shape}; expected 3 dimensions (B, T, N)")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: found NaN or inf; expected finite counts (no unobserved bins)")
    return array


def _check_matching(train_heldin, train_heldout, valid_heldin) -> None:
    if train_heldout.shape[:2] != train_heldin.shape[:2]:
        raise ValueError(
            f"train_heldout: shape {train_heldout.shape}; expected the trials and bins "
            f"{train_heldin.shape[:2]} of train_heldin"
        )
    if valid_heldin.shape[1:] != train_heldin.shape[1:]:
        raise ValueError(
            f"valid_heldin: shape {valid_heldin.shape}; expected bins and neurons "
            f"{train_heldin.shape[1:]} as in train_heldin"
        )


def _flatten(array: np.ndarray) -> np.ndarray:
    """(B, T, N) -> (B*T, N): every bin of every trial is one sample."""
    return array.reshape(-1, array.shape[2])
