"""Evaluation of fitted models: the metrics of docs/data-format.md, Metrics (bits/spike, R^2, decoding).

Shape legend: B trials, T bins, N channels, D behaviour dimensions.
"""

from autolfads.analysis.metrics import bits_per_spike as bits_per_spike
from autolfads.analysis.metrics import bps_ratio as bps_ratio
from autolfads.analysis.metrics import co_bps as co_bps
from autolfads.analysis.metrics import fp_bps as fp_bps
from autolfads.analysis.metrics import poisson_nll as poisson_nll
from autolfads.analysis.metrics import r2_score as r2_score
from autolfads.analysis.metrics import ridge_decoding_r2 as ridge_decoding_r2
from autolfads.analysis.metrics import session_metrics as session_metrics

__all__ = [
    "bits_per_spike",
    "bps_ratio",
    "co_bps",
    "fp_bps",
    "poisson_nll",
    "r2_score",
    "ridge_decoding_r2",
    "session_metrics",
]
