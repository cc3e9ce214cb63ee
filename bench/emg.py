"""Benchmark: the EMG model (gamma LFADS, `-c emg`) versus a low-pass filter (issue #6).

Data: `autolfads simulate emg` (defaults: 20 conditions x 20 trials, 12 muscles, 100 bins of
10 ms, gamma observations with shape 5, artifacts of 10-30x the mean signal with probability
0.002 per muscle and bin). Truth: the muscle activations in (0, 1); with `amplitude` 1 the
expected signal (truth / conversion_factor) is the activation itself.

Methods, both estimating the expected signal per bin, both scored on the valid trials:
- EMG model: `autolfads train DATA -c emg` (gamma observations, log(1 + x) input, temporal
  shift augmentation), one model; its `valid_output_params` (posterior-mean signal).
- low-pass filter: the rectified signal |x| smoothed by a zero-phase Gaussian
  (`analysis.baselines.gaussian_smooth`: kernel cut at 4 std, reflected at the trial edges).
  The std is the one of `--widths` with the best R^2 on the TRAIN trials; the valid trials are
  used only to score it.

Score: `metrics.r2_score` against the true activations (per muscle over valid trials x bins,
then averaged over muscles, as sklearn's uniform average), on all bins and, separately, on the
bins without an artifact (`{split}_artifacts` mask) to show how much the artifacts cost.

    nice -n 10 .venv/bin/python bench/emg.py [--epochs 150] [--ramp-epochs 30] [--batch-size 32]
        [--patience 50] [--quick] [k=v ...]

`k=v` are config overrides for the fit (e.g. `model.gen_dim=32`). `--quick` is a < 1 min smoke
run. Writes bench/out/emg/ (data, fit) and bench/out/emg.md / emg.json.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from variant_fits import (
    add_fit_arguments,
    apply_quick,
    command_line,
    fit_epochs,
    machine_line,
    model_sizes,
    read_splits,
    run_cli,
    train,
    write_report,
)

from autolfads.analysis.baselines import gaussian_smooth
from autolfads.analysis.metrics import r2_score

DEFAULT_WIDTHS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0)  # std, bins


def expected_signal(arrays: dict, split: str) -> np.ndarray:
    """(B, T, M) true expected signal in data units: truth / conversion_factor."""
    return arrays[f"{split}_truth"] / arrays["conversion_factor"]


def scores(arrays: dict, estimate: np.ndarray, split: str = "valid") -> dict[str, float]:
    """R^2 of `estimate` (B, T, M) against the truth on all bins and on artifact-free bins."""
    truth = expected_signal(arrays, split)
    clean_truth = np.where(arrays[f"{split}_artifacts"], np.nan, truth)  # NaN rows are dropped
    return {"r2": r2_score(truth, estimate), "r2_no_artifact_bins": r2_score(clean_truth, estimate)}


def low_pass(data: np.ndarray, std_bins: float) -> np.ndarray:
    """The rectified signal (B, T, M) smoothed in time by a Gaussian of std `std_bins` bins."""
    return gaussian_smooth(np.abs(data), std_bins)


def masked_low_pass(data: np.ndarray, artifacts: np.ndarray, std_bins: float) -> np.ndarray:
    """`low_pass` that skips the bins marked in `artifacts` (B, T, M): an oracle, not a method.

    Normalised convolution: smooth(|x| * keep) / smooth(keep), so each bin is a weighted mean of
    the artifact-free bins near it (the true artifact mask is not known in real data).
    """
    keep = (~artifacts).astype(np.float64)
    weight = gaussian_smooth(keep, std_bins)
    return gaussian_smooth(np.abs(data) * keep, std_bins) / np.maximum(weight, 1e-12)


def choose_width(
    arrays: dict,
    widths: tuple[float, ...],
    smoother: Callable[[np.ndarray, float], np.ndarray] | None = None,
) -> tuple[float, dict[float, float]]:
    """The Gaussian std (bins) with the best R^2 on the train trials, and R^2 of each std.

    `smoother(data, std)` defaults to `low_pass`.
    """
    smoother = smoother or low_pass
    truth = expected_signal(arrays, "train")
    data = arrays["train_encod_data"]
    train_r2 = {w: r2_score(truth, smoother(data, w)) for w in widths}
    return max(train_r2, key=train_r2.__getitem__), train_r2


def fit_model(data: Path, out: Path, args: argparse.Namespace) -> dict:
    """Train the EMG model; wall time, epochs and best epoch from fitlog.csv."""
    wall = train("emg", data, out, args)
    epochs, best_epoch = fit_epochs(out)
    return {"wall_s": round(wall, 1), "epochs": epochs, "best_epoch": best_epoch}


def model_summary(out: Path) -> str:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(out / "config.yaml")
    m = cfg.model
    shift = cfg.datamodule.temporal_shift
    return (
        f"-c emg, {model_sizes(m)}"
        + f", reconstruction {m.reconstruction}, log_input {m.log_input}, temporal shift "
        f"{'on' if shift.enabled else 'off'} (std {shift.std}, max {shift.max} bins), "
        f"batch {cfg.datamodule.batch_size}"
    )


def markdown(report: dict) -> str:
    lines = [
        "# EMG model (gamma LFADS) vs a low-pass filter on simulated EMG",
        "",
        f"`{report['command']}`",
        "",
        f"{report['date']}; {report['machine']}.",
        "",
        f"Data: {report['data']}",
        f"Model: {report['model']}",
        "",
        "R^2 of the estimated signal against the true activations on the valid trials (per "
        "muscle over trials x bins, averaged over muscles); the last column leaves out the bins "
        "with an artifact. The filter's width was chosen on the train trials.",
        "",
        "| method | valid R^2 | valid R^2, artifact-free bins | train R^2 | notes |",
        "|---|---:|---:|---:|---|",
    ]
    for name, row in report["results"].items():
        lines.append(
            f"| {name} | {row['r2']:.3f} | {row['r2_no_artifact_bins']:.3f} | "
            f"{row['train_r2']:.3f} | {row['notes']} |"
        )
    lines += [
        "",
        "Filter train R^2 by Gaussian std (bins): "
        + ", ".join(f"{w}: {r:.3f}" for w, r in report["filter_train_r2_by_std"].items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fit_arguments(parser, epochs=150, ramp=30, batch=32, patience=50)
    parser.add_argument("--conditions", type=int, default=20)
    parser.add_argument("--trials", type=int, default=20, help="trials per condition")
    parser.add_argument("--steps", type=int, default=100, help="bins per trial")
    parser.add_argument("--widths", type=float, nargs="+", default=list(DEFAULT_WIDTHS))
    parser.add_argument("--samples", type=int, default=50, help="posterior samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="default bench/out/emg[_quick]")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (< 1 min)")
    parser.add_argument("overrides", nargs="*", help="k=v config overrides for the fit")
    args = parser.parse_args(argv)
    apply_quick(args, "emg")
    if args.quick:
        args.conditions, args.trials, args.steps = 4, 5, 30
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "emg.h5"
    run_cli(
        [
            "simulate",
            "emg",
            str(data),
            "--seed",
            str(args.seed),
            f"n_conditions={args.conditions}",
            f"trials_per_condition={args.trials}",
            f"n_steps={args.steps}",
        ]
    )
    arrays = read_splits(data, ["encod_data", "truth", "artifacts", "inds"])
    width, train_r2 = choose_width(arrays, tuple(args.widths))
    filtered = low_pass(arrays["valid_encod_data"], width)
    oracle_width, oracle_train_r2 = choose_width(
        arrays,
        tuple(args.widths),
        lambda data, w: masked_low_pass(data, arrays["train_artifacts"], w),
    )
    oracle = masked_low_pass(arrays["valid_encod_data"], arrays["valid_artifacts"], oracle_width)
    fit = fit_model(data, out / "fit", args)
    outputs = read_splits(out / "fit" / "lfads_output_sess0.h5", ["output_params", "inds"])
    for split in ("train", "valid"):
        assert np.array_equal(outputs[f"{split}_inds"], arrays[f"{split}_inds"]), split
    model_train_r2 = r2_score(expected_signal(arrays, "train"), outputs["train_output_params"])
    results = {
        "EMG model (-c emg)": {
            **scores(arrays, outputs["valid_output_params"]),
            "train_r2": model_train_r2,
            "notes": (
                f"{fit['epochs']} epochs (best {fit['best_epoch']} by valid/recon_smth), "
                f"{fit['wall_s']:.0f} s"
            ),
        },
        f"Gaussian low-pass, std {width:g} bins ({width * 10:g} ms)": {
            **scores(arrays, filtered),
            "train_r2": train_r2[width],
            "notes": "std chosen on train trials",
        },
        f"oracle: low-pass skipping the true artifact bins, std {oracle_width:g} bins": {
            **scores(arrays, oracle),
            "train_r2": oracle_train_r2[oracle_width],
            "notes": "uses the true artifact mask (not available in real data); std chosen on train",
        },
    }
    n_artifacts = int(arrays["valid_artifacts"].sum())
    report = {
        "command": command_line("bench/emg.py", argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_line(),
        "data": (
            f"`autolfads simulate emg --seed {args.seed}` n_conditions={args.conditions} "
            f"trials_per_condition={args.trials} n_steps={args.steps} (other parameters default; "
            f"{len(arrays['train_inds'])} train / {len(arrays['valid_inds'])} valid trials, "
            f"12 muscles; {n_artifacts} artifact bins in the valid split)."
        ),
        "model": (
            model_summary(out / "fit")
            + f"; {args.epochs} max epochs, ramp {args.ramp_epochs}, early-stopping patience "
            f"{args.patience}, "
            f"{args.samples} posterior samples."
            + (f" Overrides: {' '.join(args.overrides)}." if args.overrides else "")
        ),
        "filter_std_bins": width,
        "filter_train_r2_by_std": {f"{w:g}": round(r, 4) for w, r in train_r2.items()},
        "fit": fit,
        "results": {
            name: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
            for name, row in results.items()
        },
    }
    assert all(math.isfinite(r["r2"]) for r in results.values())
    write_report(out, report, markdown(report))


if __name__ == "__main__":
    main()
