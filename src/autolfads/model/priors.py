"""Priors of LFADS and their KL terms: a Gaussian prior on the generator's initial condition and an
autoregressive AR(1) prior on the inferred inputs (Sussillo et al. 2016; Pandarinath et al. 2018).

Both are swappable parts (`model.ic_prior`, `model.co_prior`: a name of `IC_PRIORS` / `CO_PRIORS` or
a dotted path to a subclass of `ICPrior` / `InputPrior`).

Shapes: K workers, B trials, T bins, U inferred inputs (co_dim), I = ic_dim.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from autolfads.errors import ConfigError

__all__ = [
    "gaussian_kl",
    "gaussian_log_pdf",
    "ICPrior",
    "InputPrior",
    "GaussianICPrior",
    "AR1Prior",
    "ar1_kl_one_sample",
    "IC_PRIORS",
    "CO_PRIORS",
]

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_kl(
    post_mean: Tensor, post_var: Tensor, prior_mean: Tensor, prior_var: Tensor
) -> Tensor:
    """Elementwise KL(N(post_mean, post_var) || N(prior_mean, prior_var)); arguments broadcast.

    KL = (log(prior_var / post_var) + (post_var + (post_mean - prior_mean)^2) / prior_var - 1) / 2.
    """
    prior_var = torch.as_tensor(prior_var, dtype=post_mean.dtype, device=post_mean.device)
    return 0.5 * (
        torch.log(prior_var)
        - torch.log(post_var)
        + (post_var + (post_mean - prior_mean) ** 2) / prior_var
        - 1.0
    )


def gaussian_log_pdf(x: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """Elementwise log N(x; mean, exp(log_var)); arguments broadcast."""
    return -0.5 * (_LOG_2PI + log_var + (x - mean) ** 2 * torch.exp(-log_var))


class ICPrior(nn.Module):
    """Interface: a prior p(z) on the initial condition z (K, B, I), built as
    `cls(n_workers, ic_dim, **settings)` (settings: `ic_prior_var`)."""

    def kl(self, post_mean: Tensor, post_var: Tensor) -> Tensor:
        """(K, B) KL(q(z) || p(z)) of each trial, q = N(post_mean, post_var), both (K, B, I)."""
        raise NotImplementedError


class InputPrior(nn.Module):
    """Interface: a prior p(u) on the inferred inputs u (K, B, T, U), built as
    `cls(n_workers, co_dim, **settings)` (settings: `co_prior_tau`, `co_prior_nvar`)."""

    def kl(self, u: Tensor, post_mean: Tensor, post_var: Tensor) -> Tensor:
        """(K, B) KL(q(u) || p(u)) of each trial, or its estimate from the sample u ~ q; q has
        independent Gaussian steps N(post_mean, post_var), all (K, B, T, U)."""
        raise NotImplementedError


class GaussianICPrior(ICPrior):
    """Prior of the generator's initial condition g0 ~ N(mu_k, ic_prior_var I) for worker k.

    The mean mu (K, I) is learned, initialised at 0; the variance is fixed (buffer `ic_prior_var`).

    Args:
        n_workers: K.
        ic_dim: I.
        ic_prior_var: prior variance, > 0.
    """

    def __init__(self, n_workers: int, ic_dim: int, ic_prior_var: float = 0.1) -> None:
        super().__init__()
        if not ic_prior_var > 0:
            raise ConfigError(f"`ic_prior_var` must be > 0, got {ic_prior_var!r}")
        self.mean = nn.Parameter(torch.zeros(n_workers, ic_dim))
        self.register_buffer("ic_prior_var", torch.tensor(float(ic_prior_var)))

    def kl(self, post_mean: Tensor, post_var: Tensor) -> Tensor:
        """KL(q(g0) || prior) summed over I.

        Args:
            post_mean, post_var: (K, B, I) posterior mean and variance.

        Returns:
            (K, B) KL of each trial.
        """
        prior_mean = self.mean[:, None, :]  # (K, 1, I)
        return gaussian_kl(post_mean, post_var, prior_mean, self.ic_prior_var).sum(-1)


class AR1Prior(InputPrior):
    """Autoregressive prior on the inferred inputs u (K, B, T, U), independent across dimensions:

        u_1 ~ N(0, nvar),   u_t | u_{t-1} ~ N(alpha u_{t-1}, nvar (1 - alpha^2)),
        alpha = exp(-1/tau),

    so each dimension is stationary with variance nvar and autocorrelation time tau (bins). tau and
    nvar are learned per worker and dimension, stored as `log_tau`, `log_nvar` (K, U).

    Args:
        n_workers: K.
        co_dim: U.
        co_prior_tau: initial autocorrelation time in bins, > 0.
        co_prior_nvar: initial stationary variance, > 0.
    """

    def __init__(
        self, n_workers: int, co_dim: int, co_prior_tau: float = 10.0, co_prior_nvar: float = 0.1
    ) -> None:
        super().__init__()
        for arg, value in (("co_prior_tau", co_prior_tau), ("co_prior_nvar", co_prior_nvar)):
            if not value > 0:
                raise ConfigError(f"`{arg}` must be > 0, got {value!r}")
        self.log_tau = nn.Parameter(torch.full((n_workers, co_dim), math.log(co_prior_tau)))
        self.log_nvar = nn.Parameter(torch.full((n_workers, co_dim), math.log(co_prior_nvar)))

    def alpha(self) -> Tensor:
        """(K, U) autoregression coefficient exp(-1/tau)."""
        return torch.exp(-torch.exp(-self.log_tau))

    def log_process_var(self) -> Tensor:
        """(K, U) log of the innovation variance nvar (1 - alpha^2), without cancellation."""
        one_minus_alpha_sq = -torch.expm1(-2.0 * torch.exp(-self.log_tau))
        return self.log_nvar + torch.log(one_minus_alpha_sq)

    def log_prob(self, u: Tensor) -> Tensor:
        """log p(u) under the AR(1) prior, summed over T and U.

        Args:
            u: (K, B, T, U) inferred inputs.

        Returns:
            (K, B) log density of each trial.
        """
        alpha = self.alpha()[:, None, None, :]  # (K, 1, 1, U)
        log_nvar = self.log_nvar[:, None, None, :]
        log_pvar = self.log_process_var()[:, None, None, :]
        first = gaussian_log_pdf(u[:, :, :1], torch.zeros_like(u[:, :, :1]), log_nvar)
        rest = gaussian_log_pdf(u[:, :, 1:], alpha * u[:, :, :-1], log_pvar)  # (K, B, T-1, U)
        return first.sum(dim=(-2, -1)) + rest.sum(dim=(-2, -1))

    def kl(self, u: Tensor, post_mean: Tensor, post_var: Tensor) -> Tensor:
        """(K, B) one-sample estimate of the KL (`ar1_kl_one_sample`)."""
        return ar1_kl_one_sample(u, post_mean, post_var, self)


def ar1_kl_one_sample(u: Tensor, post_mean: Tensor, post_var: Tensor, prior: AR1Prior) -> Tensor:
    """One-sample estimate of KL(q(u) || p_AR1(u)) for a sample u ~ q (as in the LFADS papers).

    KL ~= sum_{t,u} log N(u_t; post_mean_t, post_var_t) - log p_AR1(u).

    Args:
        u: (K, B, T, U) a sample from the posterior q.
        post_mean, post_var: (K, B, T, U) the posterior's independent Gaussian means and variances.
        prior: the AR(1) prior.

    Returns:
        (K, B) estimate for each trial.
    """
    log_q = gaussian_log_pdf(u, post_mean, torch.log(post_var)).sum(dim=(-2, -1))
    return log_q - prior.log_prob(u)


IC_PRIORS: dict[str, type[ICPrior]] = {"gaussian": GaussianICPrior}
"""IC priors by name (`model.ic_prior`)."""

CO_PRIORS: dict[str, type[InputPrior]] = {"ar1": AR1Prior}
"""Inferred-input priors by name (`model.co_prior`)."""
