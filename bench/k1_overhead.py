"""Does the worker axis cost anything at K = 1? The same GRU recurrence (T steps, forward + backward by
autograd) with K = 1 batched weights (`torch.bmm`) versus plain 2-D weights (`torch.mm`).

    .venv/bin/python bench/k1_overhead.py [--threads 1] [--batch 100] [--hidden 100] [--steps 100]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

from autolfads.model.gru import gru_step as gru_step_reference


def gru_step_2d(x, h, w_gate, w_cand, clip):
    """The same step as `gru_step_reference` with 2-D weights (no worker axis)."""
    n = h.shape[-1]
    ru = torch.sigmoid(x[..., : 2 * n] + torch.mm(h, w_gate))
    r, u = ru[..., :n], ru[..., n:]
    c = torch.tanh(x[..., 2 * n :] + torch.mm(r * h, w_cand))
    return F.hardtanh(c + u * (h - c), -clip, clip)


def time_loop(step, xs, h0, w_gate, w_cand, repeats=5) -> float:
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        h, total = h0, 0.0
        for x in xs:
            h = step(x, h, w_gate, w_cand, 5.0)
            total = total + h.sum()
        total.backward()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    b, n, t = args.batch, args.hidden, args.steps
    wg = (torch.randn(n, 2 * n) / n**0.5).requires_grad_()
    wc = (torch.randn(n, n) / n**0.5).requires_grad_()
    xs2 = [torch.randn(b, 3 * n) for _ in range(t)]
    plain = time_loop(gru_step_2d, xs2, torch.zeros(b, n), wg, wc)
    wg1 = wg.detach().unsqueeze(0).requires_grad_()
    wc1 = wc.detach().unsqueeze(0).requires_grad_()
    xs1 = [x.unsqueeze(0) for x in xs2]
    batched = time_loop(gru_step_reference, xs1, torch.zeros(1, b, n), wg1, wc1)
    print(
        f"T={t} B={b} H={n} threads={args.threads}: plain 2-D {plain * 1e3:.1f} ms, "
        f"K=1 batched {batched * 1e3:.1f} ms, ratio {batched / plain:.3f}"
    )


if __name__ == "__main__":
    main()
