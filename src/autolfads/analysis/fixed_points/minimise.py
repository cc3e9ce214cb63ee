"""Batched minimisation of the speed q(h) = 0.5 ||F(h) - h||^2: Adam, then Levenberg-Marquardt.

Every row of h is its own search; rows never interact, so all M run as one batch.
Shape legend: M states being searched, H state size.
"""

from __future__ import annotations

import torch
from torch import Tensor

from autolfads.analysis.fixed_points.linearize import StepFn, step_jacobians

__all__ = ["speed", "adam_search", "levenberg_marquardt"]


def speed(step: StepFn, h: Tensor) -> Tensor:
    """(M,) q(h) = 0.5 ||F(h) - h||^2 of each row."""
    return 0.5 * (step(h) - h).pow(2).sum(dim=-1)


def adam_search(
    step: StepFn, h: Tensor, n_iters: int, lr: float, lr_final: float, stop_tol: float
) -> Tensor:
    """Adam on the summed speed (rows do not interact), learning rate decaying to `lr_final`.

    Written out (a few lines) rather than `torch.optim.Adam`, whose first step imports the
    compiler stack: seconds of start-up for a command that is otherwise quick.
    """
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    decay = (lr_final / lr) ** (1.0 / max(n_iters, 1))
    first, second = torch.zeros_like(h), torch.zeros_like(h)
    for i in range(1, n_iters + 1):
        with torch.enable_grad():
            states = h.detach().requires_grad_(True)
            speeds = speed(step, states)
            if speeds.max().item() < stop_tol:
                break
            (grad,) = torch.autograd.grad(speeds.sum(), states)
        first.lerp_(grad, 1 - beta1)
        second.lerp_(grad * grad, 1 - beta2)
        size = lr * decay ** (i - 1) / (1 - beta1**i)
        h = h - size * first / ((second / (1 - beta2**i)).sqrt() + eps)
    return h.detach()


def levenberg_marquardt(step: StepFn, h: Tensor, n_steps: int, stop_tol: float) -> Tensor:
    """Damped Gauss-Newton on the residual r = F(h) - h, one damping factor per row.

    d = -(A^T A + mu I)^{-1} A^T r with A = J - I; a step is kept only if it lowers q, and mu
    shrinks after a kept step and grows after a refused one. Converges quadratically to fixed
    points and still descends towards slow points (local minima of q with q > 0). Only rows still
    above `stop_tol` and not stuck (mu at its ceiling) are worked on: the Jacobians are the cost.
    """
    max_damping = 1e8
    h = h.clone()
    eye = torch.eye(h.shape[1], dtype=h.dtype, device=h.device)
    damping = torch.full((h.shape[0],), 1e-2, dtype=h.dtype, device=h.device)
    with torch.no_grad():
        speeds = speed(step, h)
    for _ in range(n_steps):
        active = torch.nonzero((speeds >= stop_tol) & (damping < max_damping)).squeeze(1)
        if active.numel() == 0:
            break
        x, q, mu = h[active], speeds[active], damping[active]
        a = step_jacobians(step, x) - eye  # (A, H, H)
        with torch.no_grad():
            residual = step(x) - x  # (A, H)
            normal = a.transpose(1, 2) @ a + mu[:, None, None] * eye
            gradient = (a.transpose(1, 2) @ residual.unsqueeze(-1)).squeeze(-1)
            trial = x - torch.linalg.solve(normal, gradient)
            trial_q = speed(step, trial)
        better = trial_q < q
        h[active] = torch.where(better[:, None], trial, x)
        speeds[active] = torch.where(better, trial_q, q)
        damping[active] = torch.where(better, mu / 3.0, mu * 2.0).clamp(1e-12, max_damping)
    return h
