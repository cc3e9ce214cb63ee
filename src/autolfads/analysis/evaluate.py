"""`autolfads evaluate OUT`: the docs/data-format.md, Metrics metrics of a finished run, printed and saved."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from omegaconf import OmegaConf

from autolfads._atomic import atomic_path
from autolfads.analysis.metrics import session_metrics
from autolfads.data import read_session
from autolfads.errors import UsageError
from autolfads.outputs.files import output_files

__all__ = ["evaluate_run", "evaluate_command"]


def evaluate_run(out: str | Path) -> dict[str, dict[str, float]]:
    """Metrics of every `lfads_output_sess{i}.h5` in OUT: 'sess{i}' -> metric name -> value.

    The output files hold the inputs (targets, truth, behaviour) next to `{split}_output_params`, so
    they are all that is needed; `config.yaml` says which observation model produced them.
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


def evaluate_command(args: argparse.Namespace) -> int:
    """Print a table of the metrics and write OUT/metrics.json."""
    results = evaluate_run(args.out)
    names = sorted({name for metrics in results.values() for name in metrics})
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
