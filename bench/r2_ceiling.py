"""Diagnostic (issue #3): how much of the chaotic-RNN R^2 gap is spiking noise, how much the model.

Same latent rates and settings as `bench/chaotic_rnn.py` (g = 2.5, 400 conditions x 5 trials,
seed 0; `kl_*_scale` 1e-6 as in its recorded runs), but the spike counts are drawn at
`--rate-scale` times the firing rates (Poisson, so at x50 about 7.5 spikes per bin instead of
0.15: nearly noise-free). A model that cannot reach R^2 0.90 on these
counts cannot reach it on the real ones with the same sizes and training length. Reports the
50-sample posterior-mean R^2 against the true rates for valid and train trials.

    .venv/bin/python bench/r2_ceiling.py [--rate-scale 50] [--epochs 80] [--threads 1] [k=v ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from chaotic_rnn import simulate_data, training_config  # noqa: E402

from autolfads.analysis.metrics import r2_score  # noqa: E402
from autolfads.commands.workflow import prepare_out_dir  # noqa: E402
from autolfads.data import read_sessions  # noqa: E402
from autolfads.train.fit import fit_single_model  # noqa: E402


def rescale_counts(path, scale: float, seed: int) -> None:
    """Redraw every split's counts as Poisson(scale x true rate x bin width), in place."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "r+") as f:
        bin_width = 1.0 / float(f["conversion_factor"][()])
        for split in ("train", "valid"):
            counts = rng.poisson(f[f"{split}_truth"][:] * bin_width * scale).astype(np.int32)
            for key in ("encod_data", "recon_data"):
                del f[f"{split}_{key}"]
                f[f"{split}_{key}"] = counts
        f["conversion_factor"][()] = float(f["conversion_factor"][()]) / scale  # rates stay in Hz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate-scale", type=float, default=50.0)
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench/out/r2_ceiling")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = prepare_out_dir(args.out, overwrite=True)
    data_path = simulate_data(out, seed=0)
    rescale_counts(data_path, args.rate_scale, seed=1)
    kl = ["model.kl_co_scale=1e-6", "model.kl_ic_scale=1e-6"]
    cfg = training_config(args.epochs, 0, [*kl, *args.overrides])
    sessions = read_sessions([data_path])
    cfg.model.update(sessions[0].dims.as_dict())
    start = time.perf_counter()
    result = fit_single_model(cfg, sessions, out, quiet=True)
    post = result.model.posterior(sessions, n_samples=50)[0]
    truth = sessions[0].truth
    report = {
        "rate_scale": args.rate_scale,
        "epochs": args.epochs,
        "overrides": args.overrides,
        "wall_s": round(time.perf_counter() - start, 1),
        "valid_rate_r2": r2_score(truth["valid"], post["valid"]["output_params"]),
        "train_rate_r2": r2_score(truth["train"], post["train"]["output_params"]),
    }
    print(json.dumps(report, indent=2))
    (out / "result.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
