"""The `ray` backend: every shard is a Ray actor, so shards train in parallel on the cores, GPUs and
nodes of a machine or a cluster.

Each actor wraps a `ShardRunner` (the same class the inline backend steps in-process) and reserves
`cpus_per_shard` CPUs (one torch thread per reserved CPU) and `gpus_per_shard` GPUs (fractions let
several shards share one GPU). The sessions go into Ray's object store once and every actor reads
them from there; worker states moved between shards (exploit) travel through the object store too.

Ray is joined in one of three ways: a Ray already initialised in this process is reused; an
explicit `address` joins that cluster; otherwise a private local Ray is started with
`address="local"` (never whatever `RAY_ADDRESS` or a running cluster might offer), without the
dashboard. `shutdown()` stops Ray only if this backend started it. A private Ray is watched by a
reaper process (`autolfads.pbt.reaper`) that ends all of its processes if the driver dies without
shutting it down (SIGKILL, OOM killer, closed SSH session); an attached cluster keeps its processes
and Ray itself drops the dead driver's actors.

When an actor or its node dies, the next call on that shard raises `ShardLost`; `restart(i)` makes
a fresh actor from the shard's spec, after which the driver reloads the shard's state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import ray
import ray.exceptions
import torch

from autolfads.data import SessionData
from autolfads.errors import ConfigError
from autolfads.pbt.reaper import Reaper
from autolfads.pbt.resources import cpu_count
from autolfads.pbt.runner import ShardLost, ShardRunner, ShardSpec

__all__ = ["RayBackend", "start_ray", "stop_ray"]

#: Errors meaning "this shard's actor is gone" (its process or its node died, or it is unreachable).
LOST_ERRORS = (ray.exceptions.RayActorError, ray.exceptions.NodeDiedError)


@contextlib.contextmanager
def _quiet_ray_logs() -> Iterator[None]:
    """Hide Ray's start-up notices (INFO/WARNING lines such as the token-auth banner)."""
    logger = logging.getLogger("ray")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


#: The reaper of the private local Ray this process started, if any (see `start_ray`).
_reaper: Reaper | None = None


def start_ray(address: str | None, num_cpus: int) -> bool:
    """Make sure this process is connected to Ray; True if this call started a new local Ray.

    A new local Ray gets no dashboard (nothing listens on port 8265) and a reaper that ends its
    processes should this process die without `stop_ray()`.

    Args:
        address: a cluster to join ("HOST:6379", "auto", "ray://..."); None starts a private
            local Ray with `num_cpus` CPUs, ignoring `RAY_ADDRESS` and any running cluster.
        num_cpus: CPUs the local Ray advertises (unused when joining a cluster).
    """
    global _reaper
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "configure_logging": False}
    with _quiet_ray_logs():
        if address:
            ray.init(address=address, **quiet)
            return False
        if _reaper is not None:  # a previous private Ray was shut down without stop_ray()
            _reaper.close()
        _reaper = Reaper.start()
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **quiet)
        except BaseException:
            stop_ray()  # the reaper ends whatever the failed start left behind
            raise
    if _reaper is not None:
        _reaper.ray_started()
    return True


def stop_ray() -> None:
    """Shut Ray down in this process; if this process started it, let its reaper end leftovers."""
    global _reaper
    if ray.is_initialized():
        ray.shutdown()
    if _reaper is not None:
        _reaper.close()
        _reaper = None


def _on_cpu(value: Any) -> Any:
    """`value` with every tensor moved to the CPU (results leave a GPU actor for a driver that may
    have no GPU)."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(v) for v in value)
    return value


class _ShardActor:
    """Body of a shard's Ray actor: a `ShardRunner` plus a way to say where it runs."""

    def __init__(self, spec: ShardSpec, sessions: Sequence[SessionData]) -> None:
        self.runner = ShardRunner(spec, sessions)

    def call(self, method: str, *args: Any) -> Any:
        return _on_cpu(getattr(self.runner, method)(*args))

    def where(self) -> dict[str, Any]:
        """Node id, IP, process id, torch threads and device of this actor."""
        context = ray.get_runtime_context()
        return {
            "node_id": context.get_node_id(),
            "ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
            "threads": torch.get_num_threads(),
            "device": str(self.runner.shard.device),
        }


def _workers_label(spec: ShardSpec) -> str:
    ids = spec.worker_ids
    if not ids:
        return "no workers"
    return f"worker {ids[0]}" if len(ids) == 1 else f"workers {ids[0]}-{ids[-1]}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class RayBackend:
    """Every shard in its own Ray actor; `call_all` runs the shards in parallel.

    Args:
        specs: one `ShardSpec` per shard (workers, HPs, structure, settings, device, seed).
        sessions: the data, put once into Ray's object store and shared by every actor.
        address: a Ray cluster to join; None starts a private local Ray (see `start_ray`).
        cpus_per_shard: CPUs reserved per actor; it also sets the actor's torch threads
            (unless the spec sets `threads`).
        gpus_per_shard: GPUs reserved per actor, fractions allowed (0.5: two shards per GPU).
            None: 0 on CPU; on CUDA, the cluster's GPUs shared evenly (at most one per shard).
            With GPUs the actor trains on "cuda" (Ray exposes its GPU as device 0).
        start_timeout: seconds to wait for every actor to be placed and built.
    """

    name = "ray"

    def __init__(
        self,
        specs: Sequence[ShardSpec],
        sessions: Sequence[SessionData],
        address: str | None = None,
        cpus_per_shard: float = 1,
        gpus_per_shard: float | None = None,
        *,
        start_timeout: float = 600.0,
    ) -> None:
        if cpus_per_shard <= 0:
            raise ConfigError(f"pbt.cpus_per_shard must be > 0, got {cpus_per_shard}")
        if gpus_per_shard is not None and gpus_per_shard < 0:
            raise ConfigError(f"pbt.gpus_per_shard must be >= 0, got {gpus_per_shard}")
        self.start_timeout = float(start_timeout)
        self.cpus_per_shard = float(cpus_per_shard)
        n_local = max(cpu_count(), math.ceil(len(specs) * self.cpus_per_shard))
        self.started_ray = start_ray(address, n_local)
        self.actors: list[Any] = []
        try:
            self.gpus_per_shard = self._resolve_gpus(specs, gpus_per_shard)
            self._check_fits(len(specs))
            self.specs = [self._actor_spec(spec) for spec in specs]
            self.sessions_ref = ray.put(list(sessions))
            self.actors = [self._new_actor(spec) for spec in self.specs]
            self.places = self._wait_placed(list(range(len(self.specs))))
        except BaseException:
            self.shutdown()
            raise

    # ----------------------------------------------------------------- set-up
    @staticmethod
    def _resolve_gpus(specs: Sequence[ShardSpec], gpus: float | None) -> float:
        on_cuda = any(spec.device.startswith("cuda") for spec in specs)
        if gpus is None:
            if not on_cuda:
                return 0.0
            total = ray.cluster_resources().get("GPU", 0.0)
            if total < 1:
                raise ConfigError(
                    "device=cuda with pbt.backend=ray: the Ray cluster has no GPU; "
                    "use device=cpu or join a cluster with GPUs (pbt.address)"
                )
            return 1.0 / math.ceil(len(specs) / int(total))
        if on_cuda and gpus == 0:
            raise ConfigError(
                "pbt.gpus_per_shard=0 with device=cuda: Ray hides the GPUs from actors that "
                "reserve none; set pbt.gpus_per_shard (1, or 0.5 for two shards per GPU) or null"
            )
        return float(gpus)

    def _check_fits(self, n_shards: int) -> None:
        """Fail early when the cluster can never hold every shard at once (calls would hang)."""
        total = ray.cluster_resources()
        for key, per in (("CPU", self.cpus_per_shard), ("GPU", self.gpus_per_shard)):
            need, have = n_shards * per, total.get(key, 0.0)
            if per > 0 and need > have + 1e-9:
                raise ConfigError(
                    f"pbt.{key.lower()}s_per_shard={per:g} x {n_shards} shards needs {need:g} {key}s, "
                    f"the Ray cluster has {have:g}; lower pbt.{key.lower()}s_per_shard or put more "
                    "workers in each shard (pbt.workers_per_shard)"
                )

    def _actor_spec(self, spec: ShardSpec) -> ShardSpec:
        on_gpu = self.gpus_per_shard > 0 and spec.device.startswith("cuda")
        device = "cuda" if on_gpu else spec.device  # Ray shows the actor its GPUs from index 0
        threads = spec.threads or max(1, int(self.cpus_per_shard))
        return dataclasses.replace(spec, device=device, threads=threads)

    def _new_actor(self, spec: ShardSpec) -> Any:
        actor_class = ray.remote(_ShardActor).options(
            num_cpus=self.cpus_per_shard, num_gpus=self.gpus_per_shard, max_restarts=0
        )
        return actor_class.remote(spec, self.sessions_ref)

    def _wait_placed(self, shards: list[int]) -> dict[int, dict[str, Any]]:
        """Wait until the actors of `shards` are built; where each runs (node id, IP, pid)."""
        refs = [self.actors[i].where.remote() for i in shards]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.start_timeout)
        places = {}
        for i, ref in zip(shards, refs, strict=True):
            if ref not in ready:
                raise ShardLost(
                    i,
                    f"shard {i} ({_workers_label(self.specs[i])}): Ray could not start its actor "
                    f"within {self.start_timeout:g} s (needs {self.cpus_per_shard:g} CPU, "
                    f"{self.gpus_per_shard:g} GPU; free: {ray.available_resources()})",
                )
            try:
                places[i] = ray.get(ref)
            except LOST_ERRORS as error:
                raise RuntimeError(
                    f"shard {i} ({_workers_label(self.specs[i])}): its Ray actor failed to start: "
                    f"{error}"
                ) from error
        return places

    # ----------------------------------------------------------------- calls
    def call(self, shard: int, method: str, *args: Any) -> Any:
        """Run `method(*args)` on shard `shard`'s runner and return its result."""
        return self._gather([shard], [self.actors[shard].call.remote(method, *args)])[0]

    def call_all(self, method: str, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Run `method(*args[i])` on every shard i in parallel; results in shard order."""
        if len(args) != len(self.actors):
            raise ValueError(
                f"call_all({method!r}): {len(args)} argument tuples for {len(self.actors)} shards"
            )
        refs = [actor.call.remote(method, *a) for actor, a in zip(self.actors, args, strict=True)]
        return self._gather(list(range(len(refs))), refs)

    def _gather(self, shards: list[int], refs: list[Any]) -> list[Any]:
        """Results of `refs` (one per shard); ShardLost naming every lost shard, if any."""
        ray.wait(refs, num_returns=len(refs))
        results, lost = [], {}
        for i, ref in zip(shards, refs, strict=True):
            try:
                results.append(ray.get(ref))
            except LOST_ERRORS as error:
                lost[i] = error
        if lost:
            messages = [self._lost_message(i, error) for i, error in lost.items()]
            raise ShardLost(sorted(lost)[0], "; ".join(messages), shards=tuple(sorted(lost)))
        return results

    def _lost_message(self, shard: int, error: BaseException) -> str:
        """Which shard, where it ran, and whether its node is gone."""
        place = self.places.get(shard, {})
        node, ip, pid = place.get("node_id", "?"), place.get("ip", "?"), place.get("pid", "?")
        head = f"shard {shard} ({_workers_label(self.specs[shard])})"
        if self._node_alive(node) is False:
            return f"{head} lost: node {node} ({ip}) is gone from the Ray cluster"
        return f"{head} lost: its Ray actor (pid {pid} on node {node}, {ip}) died: {_first_line(error)}"

    @staticmethod
    def _node_alive(node_id: str) -> bool | None:
        try:
            for node in ray.nodes():
                if node.get("NodeID") == node_id:
                    return bool(node.get("Alive"))
        except Exception:  # the cluster state is unavailable: we cannot tell
            return None
        return False

    # ----------------------------------------------------------------- faults and shutdown
    def restart(self, shard: int) -> None:
        """Replace shard `shard`'s actor by a fresh one built from its spec (initial state).

        The driver then restores the shard with `call(shard, "load_state_dict", state)`.
        """
        with contextlib.suppress(Exception):
            ray.kill(self.actors[shard], no_restart=True)
        self.actors[shard] = self._new_actor(self.specs[shard])
        self.places.update(self._wait_placed([shard]))

    def shutdown(self) -> None:
        """Kill the actors; stop Ray if this backend started it. Safe to call twice."""
        for actor in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self.actors = []
        if self.started_ray:
            stop_ray()
        self.started_ray = False
