"""Benchmark: one AutoLFADS generation of 16 workers with `pbt.backend=auto` versus `inline`.

Chaotic-RNN data (g = 2.5, 400 conditions x 5 trials: 1600 train / 400 valid, 100 bins, 50 neurons) and
the chaotic-RNN model size; one generation of `--epochs` epochs. Reports wall seconds per trained
worker-epoch (training + validation, Ray start-up included for auto).

    .venv/bin/python bench/backends.py [--workers 16] [--epochs 1] [--backends auto inline] [k=v ...]

Extra `key=value` words are config overrides for every run (e.g. `pbt.workers_per_shard=2`: eight
shards of two workers as eight single-thread Ray actors sharing the cores).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from autolfads.commands.workflow import load_sessions, prepare_out_dir
from autolfads.config import load_config
from autolfads.data.synthetic import simulate_to_file
from autolfads.pbt.population import run_pbt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--backends", nargs="+", default=["auto", "inline"])
    parser.add_argument("--out", default="bench/out/backends")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data.h5"
    if not data.exists():
        simulate_to_file(
            "chaotic-rnn", data, overrides=["g=2.5", "n_conditions=400", "trials_per_condition=5"]
        )
    rows = []
    for backend in args.backends:
        cfg = load_config(
            None,
            [
                f"pbt.backend={backend}",
                f"pbt.num_workers={args.workers}",
                f"pbt.burn_in_period={args.epochs}",
                f"pbt.perturbation_interval={args.epochs}",
                f"trainer.ramp_epochs={args.epochs}",
                "pbt.max_generations=1",
                "trainer.samples=1",
                *args.overrides,
            ],
        )
        sessions = load_sessions([str(data)], cfg)
        run_dir = prepare_out_dir(out / backend, overwrite=True)
        start = time.perf_counter()
        run_pbt(cfg, sessions, run_dir, quiet=True)
        wall = time.perf_counter() - start
        worker_epochs = args.workers * args.epochs
        rows.append(
            {
                "backend": backend,
                "overrides": " ".join(args.overrides),
                "wall_s": round(wall, 1),
                "worker_epochs": worker_epochs,
                "s_per_worker_epoch": round(wall / worker_epochs, 2),
            }
        )
        print(rows[-1], flush=True)
    report = {
        "command": f"python bench/backends.py --workers {args.workers} --epochs {args.epochs} "
        f"--backends {' '.join(args.backends)} {' '.join(args.overrides)}".strip(),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "results": rows,
    }
    (out / "result.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
