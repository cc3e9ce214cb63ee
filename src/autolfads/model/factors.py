"""Factors: a linear, unit-norm read-out of the generator state, f_t = g_t W_fac."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FactorReadout"]


class FactorReadout(nn.Module):
    """Factors f = g W with each factor's weight vector (a column of W, (G,)) of unit norm.

    Shapes: g (K, ..., G) -> f (K, ..., F).
    """

    def __init__(self, n_workers: int, gen_dim: int, fac_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_workers, gen_dim, fac_dim))

    def normalized_weight(self) -> Tensor:
        """(K, G, F) weight whose columns have unit L2 norm."""
        return self.weight / self.weight.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def forward(self, g: Tensor) -> Tensor:
        k, *mid, gdim = g.shape
        if g.dim() == 4 and not _rows_are_a_view(g) and _rows_are_a_view(g.transpose(1, 2)):
            # states stored time-major (K, T, B, G), as an accelerator's loop writes them:
            # multiplied in that order, without a copy
            out = torch.bmm(g.transpose(1, 2).reshape(k, -1, gdim), self.normalized_weight())
            return out.view(k, mid[1], mid[0], -1).transpose(1, 2)
        out = torch.bmm(g.reshape(k, -1, gdim), self.normalized_weight())
        return out.reshape(k, *mid, -1)


def _rows_are_a_view(x: Tensor) -> bool:
    """True if x (K, ..., n) flattens to (K, M, n) rows without a copy."""
    try:
        x.view(x.shape[0], -1, x.shape[-1])
    except RuntimeError:
        return False
    return True
