"""Backends run the shards of a population: `inline` steps them in the calling process in turn.

A backend exposes two calls: `call(i, method, *args)` on shard i and `call_all(method, args_per_shard)`
on every shard (in parallel where the backend can). The methods are those of `ShardRunner`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from autolfads.data import SessionData
from autolfads.errors import ConfigError
from autolfads.pbt.runner import ShardRunner, ShardSpec

__all__ = ["Backend", "InlineBackend", "make_backend"]


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


def make_backend(name: str, specs: Sequence[ShardSpec], sessions: Sequence[SessionData]) -> Backend:
    """Build the backend named by `pbt.backend` (auto | inline | ray)."""
    if name in ("auto", "inline"):
        return InlineBackend(specs, sessions)
    if name == "ray":
        raise ConfigError(
            "pbt.backend=ray: not built yet (issue: parallel shards on Ray); use inline"
        )
    raise ConfigError(f"pbt.backend={name!r}: expected auto, inline or ray")
