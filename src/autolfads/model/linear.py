"""Affine maps with a leading worker axis K: K models' weights side by side, one batched matmul."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["BatchedLinear", "per_worker"]


def per_worker(value: Tensor, like: Tensor) -> Tensor:
    """View a per-worker vector (K,) so it broadcasts against `like` (K, ...)."""
    return value.view(value.shape[0], *([1] * (like.dim() - 1)))


class BatchedLinear(nn.Module):
    """K independent affine maps `y_k = x_k W_k + b_k` (read-in, read-out, posterior heads).

    Args:
        n_workers: K.
        in_features, out_features: sizes of x and y.
        bias: learn b_k when True.
        weight_std: initial N(0, std^2) weights; default 1 / sqrt(in_features).

    Shapes: x (K, ..., in_features) -> y (K, ..., out_features).
    """

    def __init__(
        self,
        n_workers: int,
        in_features: int,
        out_features: int,
        bias: bool = True,
        weight_std: float | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        std = weight_std if weight_std is not None else 1.0 / math.sqrt(max(in_features, 1))
        self.weight = nn.Parameter(torch.randn(n_workers, in_features, out_features) * std)
        self.bias = nn.Parameter(torch.zeros(n_workers, out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        k, *middle, _ = x.shape
        flat = x.reshape(k, -1, self.in_features)  # (K, M, in)
        if self.bias is None:
            out = torch.bmm(flat, self.weight)
        else:
            out = torch.baddbmm(self.bias.unsqueeze(1), flat, self.weight)
        return out.reshape(k, *middle, self.out_features)
