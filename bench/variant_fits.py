"""Pieces shared by bench/emg.py, bench/radical.py and bench/radical_sweep.py: run the CLI
in-process, train one model (or a population) with a packaged config, read its files back, and
write the markdown + JSON report (not a benchmark itself)."""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from autolfads.cli import main as autolfads_main

SIZE_KEYS = ["ic_enc_dim", "ci_enc_dim", "con_dim", "co_dim", "ic_dim", "gen_dim", "fac_dim"]
QUICK_MODEL = [
    "model.ic_enc_dim=8",
    "model.ci_enc_dim=8",
    "model.con_dim=8",
    "model.ic_dim=8",
    "model.gen_dim=16",
    "model.fac_dim=4",
]


def run_cli(argv: list[str]) -> None:
    """`autolfads ARGV...` in this process; a non-zero exit status is fatal."""
    print("$ autolfads " + " ".join(argv), flush=True)
    status = autolfads_main(argv)
    if status != 0:
        sys.exit(f"autolfads {argv[0]} failed with exit status {status}")


def train(
    config: str,
    data: Path,
    out: Path,
    args: argparse.Namespace,
    command: str = "train",
    extra: Sequence[str] = (),
) -> float:
    """`autolfads COMMAND DATA -c CONFIG -o OUT` (COMMAND `train`, or `run` for AutoLFADS) with the
    script's fit options, then the `extra` overrides, then the script's; returns wall seconds."""
    start = time.perf_counter()
    run_cli(
        [
            command,
            str(data),
            "-c",
            config,
            "-o",
            str(out),
            "--overwrite",
            "--quiet",
            "--seed",
            str(args.seed),
            "--samples",
            str(args.samples),
            f"trainer.max_epochs={args.epochs}",
            f"datamodule.batch_size={args.batch_size}",
            f"trainer.ramp_epochs={args.ramp_epochs}",
            f"trainer.early_stopping_patience={args.patience}",
            *extra,
            *args.overrides,
        ]
    )
    return time.perf_counter() - start


def fit_epochs(out: Path) -> tuple[int, int]:
    """(epochs run, best epoch by valid/recon_smth) from OUT/fitlog.csv."""
    with open(out / "fitlog.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    smth = [float(r["valid/recon_smth"]) for r in rows]
    return len(rows), int(np.argmin(smth))


def read_splits(
    path: Path,
    keys: list[str],
    extra: tuple[str, ...] = (),
    splits: tuple[str, ...] = ("train", "valid"),
) -> dict[str, np.ndarray]:
    """`{split}_{key}` for the `splits`, the scalar conversion_factor, and the `extra` datasets."""
    with h5py.File(path, "r") as f:
        arrays = {f"{s}_{k}": f[f"{s}_{k}"][()] for s in splits for k in keys}
        arrays["conversion_factor"] = float(f["conversion_factor"][()])
        arrays.update({key: f[key][()] for key in extra})
    return arrays


def model_sizes(model: object) -> str:
    """'ic_enc_dim 64, ci_enc_dim 64, ...' from a config's `model` group."""
    return ", ".join(f"{k} {model[k]}" for k in SIZE_KEYS)  # type: ignore[index]


def add_fit_arguments(
    parser: argparse.ArgumentParser, *, epochs: int, ramp: int, batch: int, patience: int
) -> None:
    """The fit options both scripts share, with each script's defaults."""
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--ramp-epochs", type=int, default=ramp, help="KL/L2 warm-up epochs")
    parser.add_argument("--batch-size", type=int, default=batch)
    parser.add_argument("--patience", type=int, default=patience, help="early-stopping patience")


def apply_quick(args: argparse.Namespace, name: str) -> None:
    """Default `--out` (bench/out/NAME[_quick]) and, with --quick, a tiny fit of a tiny model."""
    if args.out is None:
        args.out = f"bench/out/{name}_quick" if args.quick else f"bench/out/{name}"
    if args.quick:
        args.epochs, args.ramp_epochs, args.samples, args.batch_size = 2, 1, 2, 8
        args.overrides = [*QUICK_MODEL, *args.overrides]


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that reproduces this run."""
    return " ".join([".venv/bin/python", script, *(argv if argv is not None else sys.argv[1:])])


def machine_line() -> str:
    """Platform, CPUs, torch threads and version, and the load average now."""
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch "
        f"thread(s), torch {torch.__version__}, load average "
        f"{', '.join(f'{v:.2f}' for v in os.getloadavg())} at the end"
    )


def write_report(out: Path, report: dict, text: str) -> None:
    """OUT.md (the markdown) and OUT.json (the report) next to the OUT folder; print both paths."""
    md_path = out.parent / f"{out.name}.md"
    md_path.write_text(text)
    md_path.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(text)
    print(f"wrote {md_path} and {md_path.with_suffix('.json')}")
