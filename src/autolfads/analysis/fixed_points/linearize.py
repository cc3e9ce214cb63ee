"""Linearisation of a one-step map F around given states: Jacobians dF/dh and their eigenvalues.

Shape legend: P states, H state size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["StepFn", "step_jacobians", "sorted_eigenvalues", "all_inside_unit_circle"]

StepFn = Callable[[Tensor], Tensor]


def step_jacobians(step: StepFn, states: Tensor, max_rows: int = 16384) -> Tensor:
    """dF/dh at each state: (P, H) -> (P, H, H), row i holding the derivatives of F_i.

    Every state is copied H times and copy i is differentiated through output unit i only, so one
    backward pass gives all rows (rows of `step` are independent). `max_rows` bounds P * H per
    pass. Plain autograd: any differentiable `step` works, custom autograd Functions included.
    A `step` with a `jacobian(states)` method (such as `GeneratorMap`) supplies its own instead.
    """
    p, h = states.shape
    if p == 0:
        return states.new_zeros(0, h, h)
    closed_form = getattr(step, "jacobian", None)
    if callable(closed_form):
        return closed_form(states.detach())
    chunk = max(1, max_rows // h)
    with torch.enable_grad():
        blocks = [_jacobian_block(step, states[i : i + chunk]) for i in range(0, p, chunk)]
    return torch.cat(blocks, dim=0)


def _jacobian_block(step: StepFn, states: Tensor) -> Tensor:
    """(P, H, H) Jacobians of one chunk of states (P, H) in a single backward pass."""
    p, h = states.shape
    copies = states.detach().repeat(h, 1).requires_grad_(True)  # (H * P, H), copy i = rows i*P...
    picked = (
        step(copies).reshape(h, p, h).diagonal(dim1=0, dim2=2)
    )  # (P, H): [p, i] = F_i of copy i
    (grad,) = torch.autograd.grad(picked.sum(), copies)
    return grad.reshape(h, p, h).permute(1, 0, 2)  # (P, H, H)


def sorted_eigenvalues(jacobians: Tensor) -> Tensor:
    """(P, H) complex eigenvalues of each Jacobian, largest modulus first."""
    eig = torch.linalg.eigvals(jacobians)
    order = torch.argsort(eig.abs(), dim=-1, descending=True)
    return eig.gather(-1, order)


def all_inside_unit_circle(eigenvalues: Tensor) -> Tensor:
    """(P,) True where every |lambda| < 1: a stable point of a discrete-time map."""
    return (eigenvalues.abs() < 1.0).all(dim=-1)
