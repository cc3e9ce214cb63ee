"""Progress display on the terminal (rich), silent when asked or when output is not a terminal."""

from __future__ import annotations

import sys
import time
from types import TracebackType

from rich.console import Console

__all__ = ["ProgressLine"]


class ProgressLine:
    """One status line rewritten in place: what is done, key numbers, and an ETA.

    Args:
        total: number of units (epochs) expected at most.
        quiet: print nothing.
    """

    def __init__(self, total: int, quiet: bool = False, label: str = "epoch") -> None:
        self.total, self.quiet, self.label = max(int(total), 1), quiet, label
        self.console = Console(stderr=True, highlight=False)
        self.start = time.monotonic()
        self.live = self.console.is_terminal
        self._status = None

    def __enter__(self) -> ProgressLine:
        if not self.quiet and self.live:
            self._status = self.console.status("starting", spinner="dots")
            self._status.__enter__()
        return self

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._status is not None:
            self._status.__exit__(exc_type, exc, tb)

    def update(self, done: int, text: str) -> None:
        """Report `done` units finished and a one-line summary."""
        if self.quiet:
            return
        elapsed = time.monotonic() - self.start
        eta = elapsed / max(done, 1) * (self.total - done)
        line = f"{self.label} {done}/{self.total}  {text}  elapsed {elapsed:.0f}s  eta<= {eta:.0f}s"
        if self._status is not None:
            self._status.update(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def print(self, text: str) -> None:
        """A permanent line (not overwritten)."""
        if not self.quiet:
            self.console.print(text)
