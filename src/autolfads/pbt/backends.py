"""Backends run the shards of a population: `inline` steps them in the calling process in turn,
`ray` (autolfads.pbt.ray_backend) runs each shard in its own Ray actor, in parallel.

A backend exposes two calls: `call(i, method, *args)` on shard i and `call_all(method, args_per_shard)`
on every shard (in parallel where the backend can). The methods are those of `ShardRunner`.
This module never imports Ray itself: `ShardLost` can be caught without it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from autolfads.accel.loader import load_kernels
from autolfads.data import SessionData
from autolfads.errors import ConfigError
from autolfads.model.structure import LFADSStructure
from autolfads.pbt.runner import ShardRunner, ShardSpec

__all__ = [
    "Backend",
    "InlineBackend",
    "ShardLost",
    "auto_plan",
    "cpu_count",
    "make_backend",
    "ray_address",
    "ray_available",
]


class ShardLost(RuntimeError):
    """A shard's process (Ray actor) or its node died; its state is gone.

    The driver restarts the shard (`backend.restart(shard)`) and reloads every shard from the last
    generation checkpoint.

    Attributes:
        shard: the first lost shard's index.
        shards: every shard found lost by the failed call (a lost node takes all of its shards).
    """

    def __init__(self, shard: int, message: str, shards: tuple[int, ...] | None = None) -> None:
        super().__init__(message)
        self.shard = int(shard)
        self.shards = tuple(shards) if shards else (self.shard,)


class Backend(Protocol):
    """Where and how shards run."""

    name: str

    def call(self, shard: int, method: str, *args: Any) -> Any:
        """Run `method(*args)` on one shard and return its result."""
        ...

    def call_all(self, method: str, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Run `method(*args[i])` on every shard i; results in shard order."""
        ...

    def shutdown(self) -> None:
        """Release processes and resources."""
        ...


class InlineBackend:
    """Every shard in the calling process, stepped one after another."""

    name = "inline"

    def __init__(self, specs: Sequence[ShardSpec], sessions: Sequence[SessionData]) -> None:
        self.runners = [ShardRunner(spec, sessions) for spec in specs]

    def call(self, shard: int, method: str, *args: Any) -> Any:
        return getattr(self.runners[shard], method)(*args)

    def call_all(self, method: str, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        return [getattr(r, method)(*a) for r, a in zip(self.runners, args, strict=True)]

    def shutdown(self) -> None:
        self.runners = []


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


def _gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def auto_plan(
    n_workers: int,
    structure: LFADSStructure,
    batch_size: int,
    device: str,
    *,
    cpus: int | None = None,
    gpus: int | None = None,
) -> tuple[int, int]:
    """Shard sizes for parallel shards on this machine: (workers_per_shard, cpus_per_shard).

    On CPU: one shard per core group, shards = min(n_workers, cores), the workers split evenly
    over them. Each shard gets one thread, or its whole core group (cores // shards threads) when
    cores outnumber workers and the model is not small (tiny models run fastest on one thread).
    On CUDA: one shard per GPU, one CPU each. Other devices: one shard.

    Args:
        n_workers: the population size K.
        structure, batch_size: the model and batch, to judge whether the model is small.
        device: "cpu", "cuda" or "cuda:i".
        cpus, gpus: override the counts of this machine (tests, or to plan for another machine).
    """
    n_workers = max(1, int(n_workers))
    if device.startswith("cuda"):
        shards = min(n_workers, max(1, _gpu_count() if gpus is None else int(gpus)))
        return math.ceil(n_workers / shards), 1
    if device != "cpu":
        return n_workers, 1
    cores = cpu_count() if cpus is None else max(1, int(cpus))
    shards = min(n_workers, cores)
    small = structure.gen_dim <= 64 and batch_size * structure.recon_seq_len <= 100 * 50
    threads = 1 if small else max(1, cores // shards)
    return math.ceil(n_workers / shards), threads


def _auto_picks_ray(specs: Sequence[ShardSpec], address: str | None) -> bool:
    """`auto`: Ray when it is installed and a cluster is named or more than one shard can run at once."""
    if not ray_available():
        return False
    if address:
        return True
    if len(specs) < 2:
        return False
    on_cuda = any(spec.device.startswith("cuda") for spec in specs)
    return cpu_count() > 1 or (on_cuda and _gpu_count() >= len(specs))


def make_backend(
    name: str,
    specs: Sequence[ShardSpec],
    sessions: Sequence[SessionData],
    *,
    address: str | None = None,
    cpus_per_shard: float | None = 1,
    gpus_per_shard: float | None = None,
) -> Backend:
    """Build the backend named by `pbt.backend` (auto | inline | ray).

    `auto` is `ray` when Ray is importable and either a cluster `address` is given, or there is
    more than one shard and the machine has more than one CPU (or a GPU per shard); `inline`
    otherwise. `address` is passed to Ray as given (None: a private local Ray); resolve
    `pbt.address` / $RAY_ADDRESS with `ray_address` first. `cpus_per_shard` None means 1;
    `gpus_per_shard` None means 0 on CPU and the GPUs shared evenly on CUDA (see `RayBackend`).
    """
    if name == "inline" or (name == "auto" and not _auto_picks_ray(specs, address)):
        return InlineBackend(specs, sessions)
    if any(spec.device == "cpu" for spec in specs):
        load_kernels()  # a first-time build happens here, once, not in every shard actor at once
    if name in ("auto", "ray"):
        if not ray_available():
            raise ConfigError(
                "pbt.backend=ray: Ray is not installed (pip install 'ray[default]'); "
                "or use pbt.backend=inline"
            )
        from autolfads.pbt.ray_backend import RayBackend

        return RayBackend(
            specs,
            sessions,
            address=address,
            cpus_per_shard=1 if cpus_per_shard is None else cpus_per_shard,
            gpus_per_shard=gpus_per_shard,
        )
    raise ConfigError(f"pbt.backend={name!r}: expected auto, inline or ray")
