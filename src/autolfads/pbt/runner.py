"""A shard runner: one `Shard` plus its data, with the calls the PBT driver makes on it.

The same class runs in the driver's process (inline backend) or inside a Ray actor (ray backend).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from autolfads.data import SessionData
from autolfads.data.tensors import to_tensors
from autolfads.model.structure import LFADSStructure
from autolfads.train.fit import start_session_maps, validation_extras
from autolfads.train.shard import Shard, TrainSettings

__all__ = ["ShardSpec", "ShardRunner", "ShardLost"]


@dataclass(frozen=True)
class ShardSpec:
    """What a shard is: its workers' global ids, initial HPs, structure, settings, device, seed,
    and the accelerator setting (`autolfads.accel`)."""

    worker_ids: tuple[int, ...]
    hps: Mapping[str, np.ndarray]  # name -> (K_s,)
    structure: LFADSStructure
    settings: TrainSettings
    device: str = "cpu"
    seed: int = 0
    sv_rate: float = 0.0
    threads: int | None = None
    accel: str | None = None


class ShardRunner:
    """Trains one shard's workers for a span of epochs and answers the driver's requests."""

    def __init__(self, spec: ShardSpec, sessions: Sequence[SessionData]) -> None:
        if spec.threads:
            torch.set_num_threads(int(spec.threads))
        self.spec = spec
        self.sessions = list(sessions)
        self.shard = Shard(
            spec.structure, spec.settings, spec.hps, spec.device, spec.seed, accel=spec.accel
        )
        self.data = to_tensors(self.sessions, spec.device, spec.sv_rate, spec.seed)
        start_session_maps(self.shard, self.data, self.sessions)  # notes: `train` prints them

    def train_epochs(self, start: int, stop: int) -> list[dict[str, np.ndarray]]:
        """Train epochs [start, stop); per epoch, train and valid metrics -> (K_s,) arrays."""
        results = []
        for epoch in range(start, stop):
            metrics = self.shard.train_epoch(self.data, epoch)
            valid, means = self.shard.evaluate(self.data, epoch, return_means=True)
            metrics.update(valid)
            metrics.update(validation_extras(self.shard, self.sessions, means))
            results.append(metrics)
        return results

    def hp_table(self) -> dict[str, np.ndarray]:
        """Current HPs, name -> (K_s,)."""
        return self.shard.hp_table()

    def set_hps(self, table: Mapping[str, np.ndarray]) -> None:
        """Overwrite HPs (name -> (K_s,))."""
        self.shard.set_hps(table)

    def copy_workers(self, src: Sequence[int], dst: Sequence[int]) -> None:
        """Index copy inside the shard (local indices)."""
        self.shard.copy_workers(src, dst)

    def worker_state(self, k: int) -> dict[str, object]:
        """Local worker k's weights, optimiser state and HPs."""
        return self.shard.worker_state(k)

    def load_worker_state(self, k: int, state: Mapping[str, object]) -> None:
        """Overwrite local worker k."""
        self.shard.load_worker_state(k, state)

    def state_dict(self) -> dict[str, object]:
        """The whole shard, for the generation checkpoint."""
        return self.shard.state_dict()

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore the whole shard."""
        self.shard.load_state_dict(state)

    def ping(self) -> bool:
        """Liveness check."""
        return True


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
