"""Names of a run's per-session output files (`lfads_output_sess{i}.h5`, docs/data-format.md, Outputs)."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["OUTPUT_PREFIX", "output_path", "output_files"]

OUTPUT_PREFIX = "lfads_output_sess"
_OUTPUT_NAME = re.compile(rf"{OUTPUT_PREFIX}(\d+)\.h5")


def output_path(out: Path, session: int) -> Path:
    """OUT/lfads_output_sess{session}.h5."""
    return Path(out) / f"{OUTPUT_PREFIX}{session}.h5"


def output_files(out: Path) -> list[Path]:
    """The `lfads_output_sess{i}.h5` files in `out`, sorted by session index i.

    Other files that merely start with the prefix (`lfads_output_sessX.h5`, a backup copy) are not
    outputs and are left out.
    """
    matches = [
        (m, p)
        for p in Path(out).glob(f"{OUTPUT_PREFIX}*.h5")
        if (m := _OUTPUT_NAME.fullmatch(p.name))
    ]
    return [p for m, p in sorted(matches, key=lambda mp: int(mp[0].group(1)))]
