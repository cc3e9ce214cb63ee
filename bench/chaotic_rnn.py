"""Benchmark: one LFADS model on chaotic-RNN data (issue: LFADS core).

Data: `autolfads simulate chaotic-rnn` with g = 2.5, 400 conditions x 5 trials (1600 train / 400 valid).
Model: ic_enc 64, ci_enc 32, con 32, co 2, ic 64, gen 100, fac 20, batch 100, dropout 0.1, CD 0.3,
lr 4e-3. Reports epochs, wall time, s/epoch, valid NLL next to the NLL of the true rates, and the valid
rate R^2 vs truth of the 50-sample posterior mean.

    .venv/bin/python bench/chaotic_rnn.py [--epochs 200] [--out bench/out/chaotic_rnn]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from autolfads.analysis.metrics import poisson_nll, r2_score
from autolfads.commands.workflow import prepare_out_dir
from autolfads.config import load_config
from autolfads.data import read_sessions
from autolfads.data.synthetic import simulate_to_file
from autolfads.train.fit import fit_single_model


def simulate_data(out: Path, seed: int) -> Path:
    """The benchmark's data file `out/data.h5`: g = 2.5, 400 conditions x 5 trials."""
    return simulate_to_file(
        "chaotic-rnn",
        out / "data.h5",
        seed=seed,
        overrides=["g=2.5", "n_conditions=400", "trials_per_condition=5"],
    )


def training_config(epochs: int, seed: int, overrides: list[str]) -> DictConfig:
    """Exactly `epochs` epochs (no early stop, no lr floor), 50 posterior samples, then `overrides`."""
    return load_config(
        None,
        [
            f"trainer.max_epochs={epochs}",
            "trainer.early_stopping_patience=1000",
            "model.lr_stop=1e-12",  # no learning-rate floor (must be > 0)
            "trainer.samples=50",
            f"seed={seed}",
            *overrides,
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--out", default="bench/out/chaotic_rnn")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = prepare_out_dir(args.out, overwrite=True)
    data_path = simulate_data(out, args.seed)
    cfg = training_config(args.epochs, args.seed, args.overrides)
    sessions = read_sessions([data_path])
    cfg.model.update(sessions[0].dims.as_dict())
    start = time.perf_counter()
    result = fit_single_model(cfg, sessions, out, quiet=False)
    train_s = time.perf_counter() - start
    t0 = time.perf_counter()
    post = result.model.posterior(sessions, n_samples=50)[0]
    sample_s = time.perf_counter() - t0
    sess = sessions[0]
    rates = post["valid"]["output_params"]
    counts = sess.recon["valid"]
    n_obs = counts.size
    report = {
        "epochs": result.epochs_run,
        "train_wall_s": round(train_s, 1),
        "s_per_epoch": round(train_s / result.epochs_run, 2),
        "posterior_50_samples_s": round(sample_s, 1),
        "total_wall_s": round(train_s + sample_s, 1),
        "valid_nll_model": poisson_nll(rates, counts) / n_obs,
        "valid_nll_truth": poisson_nll(sess.truth["valid"], counts) / n_obs,
        "valid_rate_r2": r2_score(sess.truth["valid"], rates),
        "best_epoch": result.best_epoch,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(report, indent=2))
    Path(out / "result.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
