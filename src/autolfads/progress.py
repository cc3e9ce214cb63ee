"""Progress display: a status line rewritten in place on a terminal (rich) or in a Jupyter
notebook (one output line updated in place), one plain line per update elsewhere, nothing when
quiet."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any

from rich.console import Console

__all__ = ["ProgressLine"]


class ProgressLine:
    """One status line rewritten in place: what is done, key numbers, and an ETA.

    On a terminal it is rich's status line; in a Jupyter notebook, one output line of the cell
    updated in place (IPython's display handle), so that a fit does not print a line per epoch;
    elsewhere (a log file, a pipe) one plain line per update on stderr.

    Args:
        total: number of units (epochs) expected at most.
        quiet: print nothing.
        label: the unit's name (`epoch`, `generation`).
    """

    def __init__(self, total: int, quiet: bool = False, label: str = "epoch") -> None:
        self.total, self.quiet, self.label = max(int(total), 1), quiet, label
        self.console = Console(stderr=True, highlight=False)
        self.start = time.monotonic()
        self.live = self.console.is_terminal
        self.notebook = self.console.is_jupyter and not self.live
        self._status = None
        self._cell: Any = None  # IPython's display handle of the notebook line

    def __enter__(self) -> ProgressLine:
        if self.quiet:
            return self
        if self.live:
            self._status = self.console.status("starting", spinner="dots")
            self._status.__enter__()
        elif self.notebook:
            self._cell = _NotebookLine(f"{self.label} 0/{self.total}  starting")
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
        elif self._cell is not None:
            self._cell.update(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def print(self, text: str) -> None:
        """A permanent line (not overwritten)."""
        if not self.quiet:
            self.console.print(text)


class _NotebookLine:
    """One line of plain text in a notebook cell's output, replaced by each `update`."""

    def __init__(self, text: str) -> None:
        from IPython.display import Pretty, display  # present wherever a notebook runs

        self._pretty = Pretty
        self._handle = display(Pretty(text), display_id=True)

    def update(self, text: str) -> None:
        self._handle.update(self._pretty(text))
