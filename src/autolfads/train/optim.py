"""Adam for a population: per-worker learning rates and per-worker gradient-norm clipping.

Every parameter has a leading worker axis K (a bidirectional encoder stores 2 rows per worker); the
optimiser state has the same layout, so copying a worker is an index copy of weights and state alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from autolfads.model.ops import REFERENCE, Ops

__all__ = ["PopulationAdam"]


class PopulationAdam:
    """Adam (Kingma & Ba) over K workers at once.

    Args:
        params: parameters whose first dimension is K or a multiple of K. Those that do not
            require gradients (frozen, `Shard(frozen=...)`) are left out: no step, moment,
            gradient-norm share or fused-kernel call ever touches them.
        lr: (K,) learning rate of each worker (a tensor, so changing it never recompiles anything).
        max_grad_norm: each worker's gradient is rescaled to at most this L2 norm.
        betas, eps: Adam's constants.
        ops: where the per-parameter step may run in one pass (`Ops.adam_step`; the shard's).

    A worker whose gradient is not finite skips the update (its weights and moments stay as they were).
    """

    def __init__(
        self,
        params: Sequence[nn.Parameter],
        lr: Tensor,
        max_grad_norm: float = 200.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        ops: Ops = REFERENCE,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.n_workers = int(lr.shape[0])
        self.lr = lr  # shared with the caller: changing it changes the step size
        self.max_grad_norm = float(max_grad_norm)
        self.betas, self.eps, self.ops = betas, eps, ops
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = torch.zeros(self.n_workers, dtype=torch.float64, device=lr.device)

    def _per_worker(self, value: Tensor, p: Tensor) -> Tensor:
        """(K,) -> broadcastable against p (K*m, ...)."""
        m = p.shape[0] // self.n_workers
        return value.repeat_interleave(m).view(-1, *([1] * (p.dim() - 1))).to(p.dtype)

    def zero_grad(self) -> None:
        """Drop the gradients."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def grad_norms(self) -> Tensor:
        """(K,) L2 norm of each worker's whole gradient."""
        k = self.n_workers
        total = torch.zeros(k, device=self.lr.device)
        for p in self.params:
            if p.grad is not None:
                total += p.grad.reshape(k, -1).float().pow(2).sum(1)
        return total.sqrt()

    @torch.no_grad()
    def step(self) -> Tensor:
        """Clip each worker's gradient, then take one Adam step. Returns the (K,) pre-clip norms."""
        norms = self.grad_norms()
        finite = torch.isfinite(norms)
        clip = torch.where(
            finite, (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0), torch.zeros_like(norms)
        )
        self.steps += finite.to(self.steps.dtype)
        b1, b2 = self.betas
        bias1 = 1 - b1 ** self.steps.clamp_min(1)
        bias2 = 1 - b2 ** self.steps.clamp_min(1)
        step_size = (self.lr / bias1).float()
        denom_scale = bias2.sqrt().float()
        coef = torch.stack([finite.float(), clip.float(), step_size, denom_scale], dim=1)
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            if p.grad is None:
                continue
            if self.ops.adam_step(p, p.grad, m, v, coef, b1, b2, self.eps):  # one pass, in place
                continue
            ok = self._per_worker(finite, p).bool()
            g = torch.where(ok, p.grad * self._per_worker(clip, p), torch.zeros_like(p.grad))
            m.copy_(torch.where(ok, m * b1 + g * (1 - b1), m))
            v.copy_(torch.where(ok, v * b2 + g * g * (1 - b2), v))
            denom = v.sqrt() / self._per_worker(denom_scale, p) + self.eps
            update = self._per_worker(step_size, p) * m / denom
            p.sub_(torch.where(ok, update, torch.zeros_like(update)))
        return norms

    def state_dict(self) -> dict[str, object]:
        """Tensors only, loadable with `torch.load(weights_only=True)`."""
        return {
            "lr": self.lr.clone(),
            "steps": self.steps.clone(),
            "exp_avg": [t.clone() for t in self.exp_avg],
            "exp_avg_sq": [t.clone() for t in self.exp_avg_sq],
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore a `state_dict`."""
        self.lr.copy_(state["lr"])  # type: ignore[arg-type]
        self.steps.copy_(state["steps"])  # type: ignore[arg-type]
        for dst, src in zip(self.exp_avg, state["exp_avg"], strict=True):  # type: ignore[arg-type]
            dst.copy_(src)
        for dst, src in zip(self.exp_avg_sq, state["exp_avg_sq"], strict=True):  # type: ignore[arg-type]
            dst.copy_(src)

    @torch.no_grad()
    def copy_worker(self, src: Tensor, dst: Tensor) -> None:
        """Make the optimiser state of workers `dst` equal to that of workers `src` (index tensors)."""
        self.lr[dst] = self.lr[src].clone()
        self.steps[dst] = self.steps[src].clone()
        for state in (*self.exp_avg, *self.exp_avg_sq):
            _copy_rows(state, src, dst, self.n_workers)


def _copy_rows(t: Tensor, src: Tensor, dst: Tensor, k: int) -> None:
    """Copy worker rows of a (K*m, ...) tensor."""
    view = t.view(k, t.shape[0] // k, *t.shape[1:])
    view[dst] = view[src].clone()
