"""Small sgemm calls as the C++ loops make them: W^T through a transpose flag versus a contiguous W^T.

One thread, 100 rows (a block of the recurrences), hidden sizes of the chaotic-RNN model; prints
GFLOP/s per product (torch.mm calls MKL's sgemm with the same flags the loops use). Not a test.

    .venv/bin/python bench/small_gemm.py
"""

import time

import torch


def _rate(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, calls: int = 3000) -> float:
    """GFLOP/s of `torch.mm(a, b, out=out)` repeated (after 100 warm-up calls)."""
    for _ in range(100):
        torch.mm(a, b, out=out)
    start = time.perf_counter()
    for _ in range(calls):
        torch.mm(a, b, out=out)
    flops = 2 * a.shape[0] * a.shape[1] * b.shape[1]
    return flops / ((time.perf_counter() - start) / calls) / 1e9


def main() -> None:
    torch.set_num_threads(1)
    rows = 100
    for h in (64, 100, 32):
        for name, n, k in (("gate", h, 2 * h), ("candidate", h, h)):
            a, w, out = torch.randn(rows, k), torch.randn(n, k), torch.empty(rows, n)
            flagged = _rate(a, w.T, out)
            contiguous = _rate(a, w.T.contiguous(), out)
            print(
                f"H {h:3d} backward {name:9s}: {flagged:5.1f} GFLOP/s with a transpose flag, "
                f"{contiguous:5.1f} with W^T contiguous"
            )


if __name__ == "__main__":
    main()
