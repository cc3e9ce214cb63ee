"""`autolfads evaluate OUT`: the docs/data-format.md, Metrics metrics of a finished run, printed and saved."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable
from pathlib import Path

from omegaconf import OmegaConf

from autolfads._atomic import atomic_path
from autolfads.analysis.metrics import session_metrics
from autolfads.data import read_session
from autolfads.errors import UsageError
from autolfads.outputs.files import output_files

__all__ = ["SPLIT_ROLES", "evaluate_run", "evaluate_command", "metric_order"]

SPLIT_ROLES = {
    "train": "fitted",
    "valid": "seen by selection (PBT ranking, best worker or epoch)",
    "test": "seen by no selection (the honest score)",
}
"""What each split's trials were used for; every metric is named `<split>/<metric>`."""


def evaluate_run(out: str | Path) -> dict[str, dict[str, float]]:
    """Metrics of every `lfads_output_sess{i}.h5` in OUT: 'sess{i}' -> metric name -> value.

    The output files hold the inputs (targets, truth, behaviour) next to `{split}_output_params`, so
    they are all that is needed; `config.yaml` says which observation model produced them. Every
    split with a target is scored, each metric named by its split (`valid/bps`, `test/bps`):
    valid is what selection saw (PBT ranking, best worker or epoch), test (a file with
    `test_recon_data`) what no selection saw, the honest score.
    """
    out = Path(out)
    files = output_files(out)
    if not files:
        raise UsageError(
            f"{out}: no lfads_output_sess*.h5 to evaluate (run `autolfads run` or `train` first)"
        )
    reconstruction = "poisson"
    if (out / "config.yaml").is_file():
        reconstruction = str(OmegaConf.load(out / "config.yaml").model.reconstruction)
    results = {}
    for path in files:
        session = read_session(path, reconstruction=reconstruction, allow_noninteger=True)
        params = {
            split: session.extra[f"{split}_output_params"]
            for split in session.recon
            if f"{split}_output_params" in session.extra
        }
        results[path.stem.replace("lfads_output_", "")] = session_metrics(
            params, session, reconstruction
        )
    return results


def metric_order(names: Iterable[str]) -> list[str]:
    """Metric names grouped by split (train, valid, test, then any other), sorted within each."""
    rank = {split: i for i, split in enumerate(SPLIT_ROLES)}
    return sorted(set(names), key=lambda n: (rank.get(n.split("/")[0], len(rank)), n))


def evaluate_command(args: argparse.Namespace) -> int:
    """Print a table of the metrics and write OUT/metrics.json."""
    results = evaluate_run(args.out)
    names = metric_order(name for metrics in results.values() for name in metrics)
    splits = [s for s in SPLIT_ROLES if any(n.startswith(f"{s}/") for n in names)]
    print("splits: " + "; ".join(f"{s}: {SPLIT_ROLES[s]}" for s in splits))
    width = max(len(n) for n in names) if names else 10
    print(f"{'metric':<{width}}  " + "  ".join(f"{s:>10}" for s in results))
    for name in names:
        values = [results[s].get(name, math.nan) for s in results]
        print(f"{name:<{width}}  " + "  ".join(f"{v:>10.4f}" for v in values))
    path = Path(args.out) / "metrics.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(results, indent=2, allow_nan=True))
    print(f"wrote {path}")
    return 0
