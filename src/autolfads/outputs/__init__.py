"""What a run leaves behind: posterior outputs, model checkpoint, fit log, zip (SPEC.md section 3)."""

from autolfads.outputs.checkpoint import LFADS as LFADS

__all__ = ["LFADS"]
