"""What a run leaves behind: posterior outputs, model checkpoint, fit log, zip (docs/data-format.md, Outputs)."""

from autolfads.outputs.checkpoint import LFADS as LFADS

__all__ = ["LFADS"]
