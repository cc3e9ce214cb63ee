"""`find_fixed_points`: check the settings, minimise the speed from every start, keep distinct points.

Shape legend: M initial states, P points found, H state size.
"""

from __future__ import annotations

import torch
from torch import Tensor

from autolfads.analysis.fixed_points.linearize import (
    StepFn,
    all_inside_unit_circle,
    sorted_eigenvalues,
    step_jacobians,
)
from autolfads.analysis.fixed_points.minimise import adam_search, levenberg_marquardt, speed
from autolfads.analysis.fixed_points.points import FixedPoints

__all__ = ["find_fixed_points", "check_search_settings"]


def find_fixed_points(
    step: StepFn,
    initial_states: Tensor,
    *,
    n_iters: int = 1000,
    lr: float = 1e-2,
    lr_final: float = 1e-3,
    n_polish: int = 25,
    speed_tol: float = 1e-8,
    dedupe_tol: float = 1e-3,
    bin_ms: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> FixedPoints:
    """Fixed points of a map F by minimising q(h) = 0.5 ||F(h) - h||^2 from every initial state.

    Args:
        step: F, mapping states (M, H) to next states (M, H) row by row (row m of the output depends
            on row m of the input only), differentiable by autograd.
        initial_states: (M, H) where the M searches start, all run as one batch.
        n_iters: Adam steps; the learning rate decays geometrically from `lr` to `lr_final`.
        n_polish: Levenberg-Marquardt steps after Adam (0 to skip).
        speed_tol: points with q below this are kept.
        dedupe_tol: kept points closer than this (Euclidean) are one point; the slowest stays.
        bin_ms: bin width in ms, for frequencies in Hz.
        dtype: precision of the search (float64 lets q reach ~1e-30 at true fixed points).
    Returns:
        The kept points with their Jacobians, eigenvalues and stability, plus every candidate.
    """
    check_search_settings(initial_states, n_iters, lr, lr_final, n_polish, speed_tol, dedupe_tol)
    if bin_ms is not None and not bin_ms > 0:
        raise ValueError(f"`bin_ms` must be > 0 (or None), got {bin_ms!r}")
    h = initial_states.detach().to(dtype)
    _check_step_shape(step, h)
    stop_tol = speed_tol * 1e-12  # well below the tolerance: one more Newton-like step at most
    h = adam_search(step, h, n_iters, lr, lr_final, stop_tol)
    h = levenberg_marquardt(step, h, n_polish, stop_tol)
    with torch.no_grad():
        speeds = speed(step, h)
    keep = _deduplicate(h, speeds, speeds < speed_tol, dedupe_tol)
    jacobians = step_jacobians(step, h[keep])
    eigenvalues = sorted_eigenvalues(jacobians)
    return FixedPoints(
        states=h[keep],
        speeds=speeds[keep],
        jacobians=jacobians,
        eigenvalues=eigenvalues,
        stable=all_inside_unit_circle(eigenvalues),
        candidate_states=h,
        candidate_speeds=speeds,
        bin_ms=bin_ms,
    )


def check_search_settings(
    initial_states: Tensor,
    n_iters: int,
    lr: float,
    lr_final: float,
    n_polish: int,
    speed_tol: float,
    dedupe_tol: float,
) -> None:
    """Raise ValueError naming the first of `find_fixed_points`' settings that is out of range."""
    if initial_states.dim() != 2 or initial_states.shape[0] < 1 or initial_states.shape[1] < 1:
        raise ValueError(
            f"`initial_states` must be (M, H) with M, H >= 1, got shape {tuple(initial_states.shape)}"
        )
    for name, value in (("n_iters", n_iters), ("n_polish", n_polish)):
        if value < 0:
            raise ValueError(f"`{name}` must be >= 0, got {value}")
    for name, value in (("lr", lr), ("lr_final", lr_final), ("speed_tol", speed_tol)):
        if not value > 0:
            raise ValueError(f"`{name}` must be > 0, got {value}")
    if not dedupe_tol >= 0:
        raise ValueError(f"`dedupe_tol` must be >= 0, got {dedupe_tol}")


def _check_step_shape(step: StepFn, h: Tensor) -> None:
    """Raise ValueError unless `step` maps one state (1, H) to one state (1, H)."""
    with torch.no_grad():
        out = step(h[:1])
    if out.shape != h[:1].shape:
        raise ValueError(
            f"`step` must map states (M, H) to (M, H); got {tuple(out.shape)} from {tuple(h[:1].shape)}"
        )


def _deduplicate(h: Tensor, speeds: Tensor, keep: Tensor, tol: float) -> Tensor:
    """Indices of kept rows, slowest first, dropping any row within `tol` of a slower kept row."""
    order = torch.argsort(speeds)
    order = order[keep[order]]
    if order.numel() == 0:
        return order
    distances = torch.cdist(h[order], h[order])  # (P0, P0), in speed order
    chosen: list[int] = []
    for i in range(order.numel()):
        if not chosen or bool((distances[i, chosen] > tol).all()):
            chosen.append(i)
    return order[chosen]
