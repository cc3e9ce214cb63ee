"""What every report figure shares: fixed-layout panel grids, worker colours, the log-axis rule and
PNG rendering.

Every figure is a `matplotlib.figure.Figure` made with the object-oriented API (no pyplot, so no
global state and no display backend); `png_bytes` renders one with the Agg canvas.

Shape legend: K workers.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "png_bytes",
    "wants_log_axis",
    "finite_or_nan",
    "worker_colours",
    "panels",
    "grid_shape",
]

DPI = 90  # small PNGs: the HTML page embeds them all


def png_bytes(fig: Figure) -> bytes:
    """The figure rendered as PNG bytes by the Agg canvas."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def wants_log_axis(values: np.ndarray, min_decades: float = 1.0) -> bool:
    """True if every finite value is positive and together they span at least `min_decades` decades."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0 or np.any(v <= 0):
        return False
    return bool(np.log10(v.max() / v.min()) >= min_decades)


def finite_or_nan(values: pd.Series | np.ndarray) -> np.ndarray:
    """The values as float64, with NaN in place of infinities (so lines break there)."""
    v = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(v), v, np.nan)


def worker_colours(n_workers: int) -> list:
    """One viridis colour per worker, K of them, from dark to light."""
    cmap = colormaps["viridis"]
    return [cmap(i / max(n_workers - 1, 1) * 0.9) for i in range(n_workers)]


def panels(
    rows: int,
    cols: int,
    panel_width: float,
    panel_height: float,
    *,
    left: float = 0.75,
    right: float = 0.25,
    bottom: float = 0.55,
    top: float = 0.4,
    wgap: float = 0.8,
    hgap: float = 0.75,
    sharex: bool = False,
) -> tuple[Figure, np.ndarray]:
    """A figure holding a (rows, cols) grid of axes of the given size, margins and gaps (inches).

    A fixed layout: the constrained layout engine would double the drawing time.
    """
    width = left + right + cols * panel_width + (cols - 1) * wgap
    height = bottom + top + rows * panel_height + (rows - 1) * hgap
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=wgap / panel_width,
        hspace=hgap / panel_height,
    )
    return fig, fig.subplots(rows, cols, squeeze=False, sharex=sharex)


def grid_shape(n_panels: int, max_cols: int = 3) -> tuple[int, int]:
    """(rows, cols) of the smallest grid of at most `max_cols` columns holding `n_panels`."""
    cols = min(n_panels, max_cols)
    return -(-n_panels // cols), cols
