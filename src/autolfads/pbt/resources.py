"""What this machine offers a population's shards: CPUs, GPUs, and whether Ray is there to use them."""

from __future__ import annotations

import os

import torch

__all__ = ["cpu_count", "gpu_count", "ray_available", "ray_address"]


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask where the OS reports one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def ray_available() -> bool:
    """True if Ray can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def ray_address(configured: str | None) -> str | None:
    """The Ray cluster to join: `pbt.address` if set, else $RAY_ADDRESS, else None (a local Ray)."""
    return configured or os.environ.get("RAY_ADDRESS") or None


def gpu_count() -> int:
    """GPUs torch sees on this machine (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
