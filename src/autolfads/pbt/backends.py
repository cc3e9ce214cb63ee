"""Backends run the shards of a population: `inline` steps them in the calling process in turn,
`ray` (autolfads.pbt.ray_backend) runs each shard in its own Ray actor, in parallel.

A backend exposes two calls: `call(i, method, *args)` on shard i and `call_all(method, args_per_shard)`
on every shard (in parallel where the backend can). The methods are those of `ShardRunner`.
This module never imports Ray itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from autolfads.accel.loader import load_kernels
from autolfads.data import SessionData
from autolfads.errors import ConfigError
from autolfads.model.structure import LFADSStructure
from autolfads.pbt.resources import cpu_count, gpu_count, ray_address, ray_available
from autolfads.pbt.runner import ShardLost, ShardRunner, ShardSpec

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
        shards = min(n_workers, max(1, gpu_count() if gpus is None else int(gpus)))
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
    return cpu_count() > 1 or (on_cuda and gpu_count() >= len(specs))


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
