"""`fitlog.csv`: one row per worker per epoch (docs/data-format.md, Outputs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from autolfads._atomic import atomic_path

__all__ = ["FitLog", "FIRST_COLUMNS"]

FIRST_COLUMNS = ["worker_id", "generation", "epoch"]


class FitLog:
    """Rows of per-worker metrics, rewritten atomically to `path` on every `flush` (kept in
    memory alone when `path` is None: a fit from Python without an output folder)."""

    def __init__(self, path: str | Path | None, rows: Sequence[Mapping[str, float]] = ()) -> None:
        self.path = Path(path) if path is not None else None
        self.rows: list[dict[str, float]] = [dict(r) for r in rows]

    def add_epoch(
        self,
        epoch: int,
        generation: int,
        metrics: Mapping[str, np.ndarray],
        hps: Mapping[str, np.ndarray],
        worker_ids: Sequence[int],
        extra: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Append one row per worker; `metrics`/`hps`/`extra` map names to (K,) arrays."""
        for k, wid in enumerate(worker_ids):
            row: dict[str, float] = {
                "worker_id": int(wid),
                "generation": generation,
                "epoch": epoch,
            }
            row.update({name: float(v[k]) for name, v in metrics.items()})
            row.update({f"hp/{name}": float(v[k]) for name, v in hps.items()})
            if extra:
                row.update({name: v[k] for name, v in extra.items()})
            self.rows.append(row)

    def frame(self) -> pd.DataFrame:
        """The log as a table, identifying columns first."""
        df = pd.DataFrame(self.rows)
        if df.empty:
            return pd.DataFrame(columns=FIRST_COLUMNS)
        rest = [c for c in df.columns if c not in FIRST_COLUMNS]
        return df[FIRST_COLUMNS + rest]

    def flush(self) -> Path | None:
        """Write `fitlog.csv` atomically (nothing without a path)."""
        if self.path is None:
            return None
        with atomic_path(self.path) as tmp:
            self.frame().to_csv(tmp, index=False)
        return self.path

    def truncate(self, last_epoch: int) -> None:
        """Drop rows after `last_epoch` (used on resume)."""
        self.rows = [r for r in self.rows if r["epoch"] <= last_epoch]
