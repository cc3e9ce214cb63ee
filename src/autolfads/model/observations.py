"""Observation models: the distribution of the reconstruction data given the readout of the factors.

One instance per session. The readout produces `n_params` raw (unconstrained) numbers per bin and
channel; each model maps them to its distribution's parameters. Shapes: K workers, B trials, T bins,
N channels, P = `n_params`.

Build one by name with `build_observation_model("poisson", K, N)` or from a `_target_`-style dotted
path to a subclass of `ObservationModel`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from autolfads.errors import ConfigError
from autolfads.parts import build_part

__all__ = [
    "ObservationModel",
    "Poisson",
    "Gaussian",
    "Gamma",
    "ZeroInflatedGamma",
    "MSE",
    "OBSERVATION_MODELS",
    "build_observation_model",
]

MAX_LOG = 20.0  # log-parameters are clamped to [-MAX_LOG, MAX_LOG] before exp, against overflow
GAMMA_EPS = 1e-6  # gamma-distributed values are clamped at this floor (EMG contains exact zeros)
_LOG_2PI = math.log(2.0 * math.pi)


def _clamp_log(x: Tensor) -> Tensor:
    return x.clamp(-MAX_LOG, MAX_LOG)


def log_sigmoid(x: Tensor) -> Tensor:
    """Stable log(sigmoid(x)) = -softplus(-x).

    (`torch.nn.functional.logsigmoid` is ~1000x slower on CPU in some torch builds.)
    """
    return -torch.nn.functional.softplus(-x)


def gamma_log_pdf(y: Tensor, log_shape: Tensor, log_rate: Tensor) -> Tensor:
    """Elementwise log Gamma(y; shape alpha, rate beta) from log alpha and log beta:

        alpha log beta - lgamma(alpha) + (alpha - 1) log y - beta y.

    `y` must be positive; all arguments broadcast.
    """
    shape, rate = log_shape.exp(), log_rate.exp()
    return shape * log_rate - torch.lgamma(shape) + (shape - 1.0) * torch.log(y) - rate * y


class ObservationModel(nn.Module):
    """Interface: distribution of the data y given raw readout outputs `params`.

    Subclasses set `n_params` (raw numbers per channel and bin), `name` (registry name) and
    `placeholder` (a valid data value that callers substitute for unobserved entries before masking
    them), and implement `log_likelihood`, `mean` and `init_bias`. Calling the module is
    `log_likelihood`.

    Args:
        n_workers: K.
        n_channels: N.
        **kwargs: settings of other observation models; ignored.
    """

    n_params: int = 1
    name: str = "observation"
    placeholder: float = 0.0

    def __init__(self, n_workers: int, n_channels: int, **kwargs: Any) -> None:
        super().__init__()
        for arg, value in (("n_workers", n_workers), ("n_channels", n_channels)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"`{arg}` must be a positive integer, got {value!r}")
        self.n_workers = n_workers
        self.n_channels = n_channels
        # carries device and dtype for tensors made from nothing (regularizer); not saved
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def forward(self, data: Tensor, params: Tensor) -> Tensor:
        """Same as `log_likelihood`."""
        return self.log_likelihood(data, params)

    def log_likelihood(self, data: Tensor, params: Tensor) -> Tensor:
        """Elementwise log p(y | params).

        Args:
            data: (B, T, N) or (K, B, T, N) observations, no NaN.
            params: (K, B, T, N, P) raw readout outputs.

        Returns:
            (K, B, T, N) log-likelihood of each element.
        """
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        """E[y | params], (K, B, T, N), from raw params (K, B, T, N, P)."""
        raise NotImplementedError

    def regularizer(self) -> Tensor:
        """(K,) penalty on the model's own parameters, added to each worker's loss; zeros here."""
        return self._anchor.new_zeros(self.n_workers)

    def init_bias(self, mean_data: Tensor) -> Tensor:
        """(N, P) readout bias whose `mean` is close to `mean_data` (N,), channel means."""
        raise NotImplementedError

    def init_from_data(self, targets: Tensor) -> None:
        """Start the model's own parameters from the training targets (M, N), NaN where not
        observed; called once before training, before `init_bias`. Nothing here."""

    def _unbind_params(self, params: Tensor) -> tuple[Tensor, ...]:
        """Split raw params (..., P) into P tensors (...)."""
        if params.shape[-1] != self.n_params:
            raise ValueError(
                f"{type(self).__name__} expects `params` with last dimension {self.n_params}, "
                f"got shape {tuple(params.shape)}"
            )
        return params.unbind(-1)


class Poisson(ObservationModel):
    """Spike counts: y ~ Poisson(r), r = exp(log-rate), one raw param (the log-rate per bin).

    log p(y) = y log r - r - lgamma(y + 1) (the log-factorial term is included). The log-rate is
    clamped at 20 before exp. `mean` is r, the rate per bin.
    """

    n_params = 1
    name = "poisson"
    placeholder = 0.0

    def log_likelihood(self, data: Tensor, params: Tensor) -> Tensor:
        (log_rate,) = self._unbind_params(params)
        log_rate = log_rate.clamp(max=MAX_LOG)  # (K, B, T, N)
        return data * log_rate - log_rate.exp() - torch.lgamma(data + 1.0)

    def mean(self, params: Tensor) -> Tensor:
        (log_rate,) = self._unbind_params(params)
        return log_rate.clamp(max=MAX_LOG).exp()

    def init_bias(self, mean_data: Tensor) -> Tensor:
        # silent channels get a small rate instead of log(0) = -inf
        return mean_data.clamp_min(1e-4).log().unsqueeze(-1)


class Gaussian(ObservationModel):
    """y ~ Normal(m, v); raw params (m, log v), log v clamped to [-20, 20]. `mean` is m.

    log p(y) = -(log 2 pi + log v + (y - m)^2 / v) / 2.
    """

    n_params = 2
    name = "gaussian"
    placeholder = 0.0

    def log_likelihood(self, data: Tensor, params: Tensor) -> Tensor:
        mean, log_var = self._unbind_params(params)
        log_var = _clamp_log(log_var)  # (K, B, T, N)
        return -0.5 * (_LOG_2PI + log_var + (data - mean) ** 2 * torch.exp(-log_var))

    def mean(self, params: Tensor) -> Tensor:
        return self._unbind_params(params)[0]

    def init_bias(self, mean_data: Tensor) -> Tensor:
        """Mean = the data mean, log-variance 0 (unit variance)."""
        return torch.stack([mean_data, torch.zeros_like(mean_data)], dim=-1)


class Gamma(ObservationModel):
    """Non-negative signals such as rectified EMG: y ~ Gamma(shape alpha, rate beta).

    Raw params (log alpha, log beta), clamped to [-20, 20]. y is clamped at 1e-6 from below (EMG may
    contain exact zeros). log p(y) = alpha log beta - lgamma(alpha) + (alpha-1) log y - beta y;
    `mean` is alpha / beta.
    """

    n_params = 2
    name = "gamma"
    placeholder = 1.0

    def log_likelihood(self, data: Tensor, params: Tensor) -> Tensor:
        log_shape, log_rate = (_clamp_log(p) for p in self._unbind_params(params))
        return gamma_log_pdf(data.clamp_min(GAMMA_EPS), log_shape, log_rate)

    def mean(self, params: Tensor) -> Tensor:
        log_shape, log_rate = (_clamp_log(p) for p in self._unbind_params(params))
        return torch.exp(log_shape - log_rate)

    def init_bias(self, mean_data: Tensor) -> Tensor:
        """Exponential start: alpha = 1, beta = 1 / data mean."""
        log_mean = mean_data.clamp_min(GAMMA_EPS).log()
        return torch.stack([torch.zeros_like(log_mean), -log_mean], dim=-1)


class ZeroInflatedGamma(ObservationModel):
    """Zero-inflated gamma (Wei et al. 2019), for deconvolved calcium events (RADICaL).

    Generative model per bin and channel: with probability 1 - q, y = 0; otherwise
    y = s_min + g with g ~ Gamma(shape alpha, scale theta). Raw params (log alpha, logit q) per bin;
    theta = exp(`log_scale`) is a learned scale per worker and channel, (K, N). Hence

        log p(0) = log(1 - q),  log p(y > 0) = log q + log Gamma(y - s_min; alpha, theta),

    where y - s_min is clamped at 1e-6 (values in (0, s_min] count as just above s_min), and

        mean = E[y] = q * (s_min + alpha * theta).

    The scales are measured against a reference theta_ref (K, N), the buffer `scale_reference`:
    1 (so `gamma_prior` is the scales' value in data units) unless `gamma_scale_from_data` is set,
    when `init_from_data` makes it each channel's moment estimate of the scale from the training
    events (`moment_scales`), so the prior does not depend on the data's units. The scales start at
    gamma_prior * theta_ref, and `regularizer()` pulls them back there:

        R = mean over N of (theta / theta_ref - gamma_prior)^2, shape (K,).

    Args:
        n_workers: K.
        n_channels: N.
        s_min: smallest non-zero value (event threshold), > 0.
        gamma_prior: prior value of the scales theta over theta_ref, > 0; stored per worker in the
            buffer `gamma_prior` (K,), which PBT may change.
        gamma_scale_from_data: `init_from_data` sets theta_ref to the data's moment estimates.
    """

    n_params = 2
    name = "zig"
    placeholder = 0.0  # a zero observation: always a valid value

    def __init__(
        self,
        n_workers: int,
        n_channels: int,
        s_min: float = 0.1,
        gamma_prior: float = 1.0,
        gamma_scale_from_data: bool = False,
    ) -> None:
        super().__init__(n_workers, n_channels)
        for arg, value in (("s_min", s_min), ("gamma_prior", gamma_prior)):
            if not value > 0:
                raise ConfigError(f"zero-inflated gamma `{arg}` must be > 0, got {value!r}")
        self.s_min = float(s_min)
        self.gamma_scale_from_data = bool(gamma_scale_from_data)
        self.log_scale = nn.Parameter(torch.full((n_workers, n_channels), math.log(gamma_prior)))
        self.register_buffer("gamma_prior", torch.full((n_workers,), float(gamma_prior)))
        self.register_buffer("scale_reference", torch.ones(n_workers, n_channels))

    @torch.no_grad()
    def moment_scales(self, data: Tensor, min_events: int = 3) -> Tensor:
        """Each channel's gamma scale by the method of moments, var(g) / mean(g), over its events.

        g = y - s_min over the finite y > 0 of `data` (M, N) (NaN: not observed). A channel with
        fewer than `min_events` events, or no spread, gets the estimate of all channels' events
        pooled; with none of those either, 1. Returns (N,), > 0.
        """
        events = torch.isfinite(data) & (data > 0)
        g = torch.where(events, (data - self.s_min).clamp_min(GAMMA_EPS), torch.zeros_like(data))
        count = events.sum(0)
        mean = g.sum(0) / count.clamp_min(1)
        spread = torch.where(events, g - mean, torch.zeros_like(g)).pow(2).sum(0)
        scale = spread / (count - 1).clamp_min(1) / mean.clamp_min(GAMMA_EPS)
        pooled_g = g[events]
        pooled = pooled_g.var() / pooled_g.mean() if pooled_g.numel() >= min_events else None
        fallback = pooled if pooled is not None and pooled > 0 else torch.ones((), dtype=g.dtype)
        usable = (count >= min_events) & (scale > 0) & torch.isfinite(scale)
        return torch.where(usable, scale, fallback.to(scale))

    @torch.no_grad()
    def init_from_data(self, targets: Tensor) -> None:
        """With `gamma_scale_from_data`: theta_ref = `moment_scales(targets)` ((M, N) training
        targets, NaN where not observed) for every worker, and the scales restart at
        gamma_prior * theta_ref. Otherwise nothing."""
        if not self.gamma_scale_from_data:
            return
        reference = self.moment_scales(targets).to(self.scale_reference)
        self.scale_reference.copy_(reference.expand_as(self.scale_reference))
        self.log_scale.copy_((self.gamma_prior[:, None] * self.scale_reference).log())

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # checkpoints written before the reference existed measured the scales in data units
        state_dict.setdefault(prefix + "scale_reference", torch.ones_like(self.scale_reference))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _log_scale(self) -> Tensor:
        return self.log_scale[:, None, None, :]  # (K, 1, 1, N)

    def log_likelihood(self, data: Tensor, params: Tensor) -> Tensor:
        log_shape, logit_q = self._unbind_params(params)
        log_shape = _clamp_log(log_shape)
        excess = (data - self.s_min).clamp_min(GAMMA_EPS)
        log_rate = -self._log_scale()  # rate = 1 / scale
        log_nonzero = log_sigmoid(logit_q) + gamma_log_pdf(excess, log_shape, log_rate)
        log_zero = log_sigmoid(-logit_q)  # log(1 - q)
        return torch.where(data > 0, log_nonzero, log_zero)

    def mean(self, params: Tensor) -> Tensor:
        log_shape, logit_q = self._unbind_params(params)
        gamma_mean = torch.exp(_clamp_log(log_shape) + self._log_scale())
        return torch.sigmoid(logit_q) * (self.s_min + gamma_mean)

    def regularizer(self) -> Tensor:
        relative = self.log_scale.exp() / self.scale_reference  # (K, N)
        return ((relative - self.gamma_prior[:, None]) ** 2).mean(dim=-1)

    def init_bias(self, mean_data: Tensor) -> Tensor:
        """Bias (log alpha, logit q) giving mean m = `mean_data` per channel.

        q = m / (s_min + theta) with alpha = 1 where that q is below 0.9; else q = 0.9 and the alpha
        that gives mean m. theta is the current scale averaged over workers.
        """
        scale = self.log_scale.detach().exp().mean(0).to(mean_data)  # (N,)
        q = (mean_data / (self.s_min + scale)).clamp(1e-4, 0.9)
        shape = ((mean_data / q - self.s_min) / scale).clamp(min=math.exp(-MAX_LOG))
        return torch.stack([shape.log(), q.log() - torch.log1p(-q)], dim=-1)  # logit q


class MSE(ObservationModel):
    """Squared error as a "log-likelihood": log p(y) := -(y - m)^2, raw param m; `mean` is m.

    Not a normalised density: the negative log-likelihood is the squared error itself.
    """

    n_params = 1
    name = "mse"
    placeholder = 0.0

    def log_likelihood(self, data: Tensor, params: Tensor) -> Tensor:
        (mean,) = self._unbind_params(params)
        return -((data - mean) ** 2)

    def mean(self, params: Tensor) -> Tensor:
        return self._unbind_params(params)[0]

    def init_bias(self, mean_data: Tensor) -> Tensor:
        return mean_data.unsqueeze(-1).clone()


OBSERVATION_MODELS: dict[str, type[ObservationModel]] = {
    "poisson": Poisson,
    "gaussian": Gaussian,
    "gamma": Gamma,
    "zig": ZeroInflatedGamma,
    "mse": MSE,
}


def build_observation_model(
    spec: str, n_workers: int, n_channels: int, **kwargs: Any
) -> ObservationModel:
    """Build the observation model named `spec` for K = `n_workers` workers and N = `n_channels`.

    Args:
        spec: a key of `OBSERVATION_MODELS` or a dotted path to an `ObservationModel` subclass.
        n_workers, n_channels: K and N.
        **kwargs: settings such as `s_min`, `gamma_prior`; those the class does not take are
            ignored.

    Raises:
        ConfigError: `spec` names no known class.
    """
    return build_part(
        "model.reconstruction",
        spec,
        OBSERVATION_MODELS,
        ObservationModel,
        n_workers,
        n_channels,
        **kwargs,
    )
