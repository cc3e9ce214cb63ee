"""Benchmark: AutoLFADS versus the same population trained with fixed hyperparameters (issue: AutoLFADS).

Equal compute: both train `--workers` workers for the same epochs from the same initial population
(same seed, so the same initial weights and sampled HPs). "fixed" is `pbt.exploit.method=none` (no
copies, no explore). Reports, for the best worker of each (lowest smoothed valid NLL): valid NLL per bin,
rate R^2 vs truth of the posterior mean, and the NLL of the true rates.

    .venv/bin/python bench/pbt_vs_fixed.py [--workers 8] [--generations 8] [-c demo] [k=v ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from autolfads.analysis.metrics import poisson_nll, r2_score
from autolfads.commands.workflow import load_sessions, prepare_out_dir
from autolfads.config import load_config
from autolfads.data.synthetic import simulate_to_file
from autolfads.pbt.population import run_pbt


def run_one(method: str, args: argparse.Namespace, data: Path, out: Path) -> dict:
    cfg = load_config(
        args.config,
        [
            f"pbt.num_workers={args.workers}",
            f"pbt.max_generations={args.generations}",
            "pbt.patience=1000",  # equal compute: never stop early
            f"pbt.exploit.method={method}",
            f"seed={args.seed}",
            *args.overrides,
        ],
    )
    sessions = load_sessions([str(data)], cfg)
    run_dir = prepare_out_dir(out / method, overwrite=True)
    start = time.perf_counter()
    result = run_pbt(cfg, sessions, run_dir, quiet=args.quiet)
    wall = time.perf_counter() - start
    post = result.model.posterior(sessions, n_samples=int(cfg.trainer.samples))[0]
    s = sessions[0]
    rates, counts = post["valid"]["output_params"], s.recon["valid"]
    return {
        "method": method,
        "epochs": result.epochs,
        "worker_epochs": result.epochs * args.workers,
        "wall_s": round(wall, 1),
        "best_smoothed_valid_nll": round(result.best.score, 5),
        "valid_nll_posterior_mean": round(poisson_nll(rates, counts) / counts.size, 5),
        "valid_nll_true_rates": round(poisson_nll(s.truth["valid"], counts) / counts.size, 5),
        "valid_rate_r2": round(r2_score(s.truth["valid"], rates), 4),
        "best_worker": result.best.worker,
        "best_generation": result.best.generation,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("-c", "--config", default="demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench/out/pbt_vs_fixed")
    parser.add_argument(
        "--data", default="g=1.5 n_conditions=100 trials_per_condition=5 n_steps=50"
    )
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = simulate_to_file(
        "chaotic-rnn", out / "data.h5", seed=args.seed, overrides=args.data.split()
    )
    rows = [run_one(m, args, data, out) for m in ("binary_tournament", "none")]
    report = {
        "command": "python bench/pbt_vs_fixed.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k not in ("overrides", "quiet"))
        + " "
        + " ".join(args.overrides),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {args.threads} thread(s), torch {torch.__version__}",
        "results": rows,
    }
    print(json.dumps(report, indent=2))
    (out / "result.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
