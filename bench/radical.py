"""Benchmark: RADICaL (ZIG + SBTT at sub-frame resolution) versus frame-rate LFADS (issue #6).

Data: `autolfads simulate calcium` twice with the same seed, once with `subframes=K` (K = 4: each
neuron observed in the sub-frame bin of its scan row, NaN in the other K - 1) and once with
`subframes=1` (frame-rate events). The simulator always works on 12 fine bins per frame, so both
files hold the same trials, latents, events and train/valid split.

Fits (`autolfads train -c radical`, the same model size, epochs and seed for both):
- RADICaL: zero-inflated gamma on the sub-frame file (T = K x frames bins, SBTT);
- LFADS: the same config on the frame-rate file (T = frames bins).

Scores, all on the held-out (valid) trials, one row per model and resolution:
- latent R^2: a ridge map (`metrics.ridge_decoding_r2`, alpha 1e-2) from the posterior-mean
  rates (`valid_output_params`) or the factors to the true Lorenz latents (`{split}_latents`:
  the latents averaged over each written bin), fitted on the train trials, scored on the valid
  trials (uniform average over the 3 Lorenz dimensions).
- fast latent R^2: the same ridge predictions and the true latents are both high-passed, and R^2
  is taken on that fast component. High-pass = the signal minus its zero-phase Gaussian smoothing
  within each trial, Gaussian std `--fast-sigma` frames (default 1 frame = 33 ms at 30 Hz;
  the smoother's gain falls to 1/2 at 0.187 / std = 5.6 Hz, so the fast component is the content
  above ~5.6 Hz; `analysis.baselines.gaussian_smooth`: kernel cut at 4 std, reflected at the
  trial edges).
- rate R^2 vs truth: `metrics.r2_score` of output_params against the expected event per bin
  (truth / conversion_factor; at sub-frame resolution this includes the sub-bins where the neuron
  was not scanned, where the truth is the event it would have had if scanned there).

Resolutions:
- sub-frame (the headline rows): against the sub-frame latents and truth. LFADS's frame-rate
  outputs are linearly interpolated to the sub-frame bins (constant beyond the first and last
  placed value): each neuron's rate of frame f placed at its scan sub-bin `f K + floor(offset K)`
  (the frame-rate event is the one recorded at that scan), the factors at the frame centre
  `f K + (K - 1) / 2`. Also shown: everything at frame centres, and "repeated" (each frame's
  value copied to its K sub-bins).
- frame: against the frame-rate latents and truth; RADICaL's rates and factors averaged over each
  frame's K sub-bins for the latents, and its rates at each neuron's scan sub-bin (exactly the
  frame truth's time) for the rate R^2.
- ceiling: the true expected events in place of a model's rates.

    nice -n 10 .venv/bin/python bench/radical.py [--epochs 50] [--ramp-epochs 15] [--batch-size 50]
        [--conditions 40] [--trials 20] [--neurons 40] [--frames 50] [--subframes 4] [--seed 0]
        [--quick] [--score-only] [k=v ...]

`k=v` overrides go to both fits (e.g. `model.gen_dim=64`). `--quick` is a < 1 min smoke run;
`--score-only` re-scores the data and fits already in the output folder.
Writes bench/out/radical/ (data, fits) and bench/out/radical.md / radical.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
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

from autolfads.analysis.bands import high_pass
from autolfads.analysis.metrics import r2_score, ridge_decoding_r2
from autolfads.analysis.subframe_scores import at_scan_subbins
from autolfads.data.subframe import subframe_index

Resample = Callable[[np.ndarray], np.ndarray]

RIDGE_ALPHA = 1e-2  # the default of metrics.ridge_decoding_r2


# --------------------------------------------------------------------------- signal helpers


def frames_to_subframes(
    x: np.ndarray, k: int, how: str, anchor: np.ndarray | None = None
) -> np.ndarray:
    """(B, T, C) frame-rate values at the (B, T k, C) sub-frame bins.

    'repeat': each frame's value in its k sub-bins. 'interp': linear interpolation in time, the
    value of frame f of channel c placed at sub-bin `f k + anchor[c]` (default: the frame centre,
    anchor (k - 1) / 2), constant before the first and after the last placed value.
    """
    if how == "repeat":
        return np.repeat(x, k, axis=1)
    n_frames, n_channels = x.shape[1], x.shape[2]
    anchor = np.full(n_channels, (k - 1) / 2) if anchor is None else np.asarray(anchor, float)
    position = (np.arange(n_frames * k)[:, None] - anchor[None, :]) / k  # (T k, C), in frames
    position = np.clip(position, 0.0, n_frames - 1)
    lo = np.floor(position).astype(int)
    hi = np.minimum(lo + 1, n_frames - 1)
    w = (position - lo)[None]
    x_lo = np.take_along_axis(x, lo[None], axis=1)
    x_hi = np.take_along_axis(x, hi[None], axis=1)
    return x_lo * (1.0 - w) + x_hi * w


def subframes_to_frames(x: np.ndarray, k: int) -> np.ndarray:
    """(B, T k, C) sub-frame values averaged over each frame: (B, T, C)."""
    b, n, c = x.shape
    return x.reshape(b, n // k, k, c).mean(axis=2)


def ridge_predictions(
    train_x: np.ndarray, train_y: np.ndarray, valid_x: np.ndarray, alpha: float = RIDGE_ALPHA
) -> np.ndarray:
    """Valid-trial predictions (B, T, D) of the ridge map fitted on the train trials.

    The same closed form as `metrics.ridge_decoding_r2` (unpenalised intercept), so that its
    predictions can be high-passed.
    """
    x = train_x.reshape(-1, train_x.shape[-1]).astype(np.float64)
    y = train_y.reshape(-1, train_y.shape[-1]).astype(np.float64)
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc + alpha * np.eye(x.shape[1])
    weights = np.linalg.lstsq(gram, xc.T @ yc, rcond=None)[0]
    return valid_x.astype(np.float64) @ weights + (y_mean - x_mean @ weights)


# --------------------------------------------------------------------------- runs


def simulate(out: Path, args: argparse.Namespace, subframes: int) -> Path:
    path = out / f"calcium_k{subframes}.h5"
    run_cli(
        [
            "simulate",
            "calcium",
            str(path),
            "--seed",
            str(args.seed),
            f"n_conditions={args.conditions}",
            f"trials_per_condition={args.trials}",
            f"n_neurons={args.neurons}",
            f"n_frames={args.frames}",
            f"subframes={subframes}",
        ]
    )
    return path


def fit(data: Path, out: Path, args: argparse.Namespace) -> dict:
    """Train one model with `-c radical`; returns wall time, epochs and the output arrays."""
    wall = train("radical", data, out, args)
    (out / "bench_fit.json").write_text(json.dumps({"wall_s": wall, "argv": sys.argv}) + "\n")
    return load_fit(out)


def load_fit(out: Path) -> dict:
    """A finished fit in `out`: wall time (bench_fit.json), epochs, best epoch and the outputs."""
    info = json.loads((out / "bench_fit.json").read_text())
    epochs, best = fit_epochs(out)
    arrays = read_outputs(out / "lfads_output_sess0.h5")
    fit_info = {"wall_s": info["wall_s"], "argv": info.get("argv", []), "epochs": epochs}
    return {**fit_info, "best_epoch": best, **arrays}


def read_outputs(path: Path) -> dict:
    keys = ["output_params", "factors", "latents", "truth", "inds"]
    return read_splits(path, keys, extra=("scan_offsets",))


# --------------------------------------------------------------------------- scores


def latent_scores(
    x: dict[str, np.ndarray], latents: dict[str, np.ndarray], fast_sigma: float
) -> dict[str, float]:
    """Latent R^2 overall (ridge) and of the fast component, valid trials."""
    overall = ridge_decoding_r2(x["train"], latents["train"], x["valid"], latents["valid"])
    pred = ridge_predictions(x["train"], latents["train"], x["valid"])
    check = r2_score(latents["valid"], pred)
    assert abs(check - overall) < 1e-6, (check, overall)  # same map as ridge_decoding_r2
    fast = r2_score(high_pass(latents["valid"], fast_sigma), high_pass(pred, fast_sigma))
    return {"latent_r2": overall, "fast_r2": fast}


def model_scores(
    outputs: dict,
    latents: dict,
    truth: dict,
    fast_sigma: float,
    resample: Resample,
    resample_rates: Resample | None = None,
) -> dict[str, float]:
    """Scores of one model's outputs brought to the target resolution.

    `resample` maps factors (B, T, F) and `resample_rates` (default: `resample`) the rates
    (B, T, N) to the resolution of `latents` and `truth`.
    """
    resample_rates = resample_rates or resample
    scores = {"latent_r2_factors": math.nan, "fast_r2_factors": math.nan}
    for what, name, how in (
        ("output_params", "rates", resample_rates),
        ("factors", "factors", resample),
    ):
        if f"train_{what}" not in outputs:
            continue
        x = {s: how(outputs[f"{s}_{what}"]) for s in ("train", "valid")}
        for key, value in latent_scores(x, latents, fast_sigma).items():
            scores[f"{key}_{name}"] = value
    rates = resample_rates(outputs["valid_output_params"])
    scores["rate_r2_vs_truth"] = r2_score(truth["valid"], rates)
    return scores


def score_all(radical: dict, lfads: dict, k: int, sigma_frames: float) -> dict:
    """Every row of the table: model x resolution -> scores."""
    sub_latents = {s: radical[f"{s}_latents"] for s in ("train", "valid")}
    sub_truth = {s: radical[f"{s}_truth"] / radical["conversion_factor"] for s in ("valid",)}
    frame_latents = {s: lfads[f"{s}_latents"] for s in ("train", "valid")}
    frame_truth = {s: lfads[f"{s}_truth"] / lfads["conversion_factor"] for s in ("valid",)}
    sub_sigma, frame_sigma = sigma_frames * k, sigma_frames
    scan_bin = subframe_index(radical["scan_offsets"], k)  # (N,) scan sub-bin of each neuron
    # the frame truth is the sub-frame truth at each neuron's scan sub-bin
    offsets = radical["scan_offsets"]
    assert np.allclose(at_scan_subbins(sub_truth["valid"], offsets, k), frame_truth["valid"])

    def same(a: np.ndarray) -> np.ndarray:
        return a

    def interp_centre(a: np.ndarray) -> np.ndarray:
        return frames_to_subframes(a, k, "interp")

    def interp_scan(a: np.ndarray) -> np.ndarray:
        return frames_to_subframes(a, k, "interp", anchor=scan_bin)

    def repeat(a: np.ndarray) -> np.ndarray:
        return frames_to_subframes(a, k, "repeat")

    def frame_means(a: np.ndarray) -> np.ndarray:
        return subframes_to_frames(a, k)

    def at_scans(a: np.ndarray) -> np.ndarray:
        return at_scan_subbins(a, offsets, k)

    sub = (sub_latents, sub_truth, sub_sigma)
    frame = (frame_latents, frame_truth, frame_sigma)
    rows = {
        "RADICaL (sub-frame)": model_scores(radical, *sub, same),
        "LFADS (frame, interpolated)": model_scores(lfads, *sub, interp_centre, interp_scan),
        "LFADS (frame, interpolated, rates at frame centres)": model_scores(
            lfads, *sub, interp_centre
        ),
        "LFADS (frame, repeated)": model_scores(lfads, *sub, repeat),
        "RADICaL (frame)": model_scores(radical, *frame, frame_means, at_scans),
        "LFADS (frame)": model_scores(lfads, *frame, same),
        "ceiling: true expected events (sub-frame)": model_scores(
            expected_events(radical), *sub, same
        ),
        "ceiling: true expected events (frame)": model_scores(expected_events(lfads), *frame, same),
    }
    return rows


def expected_events(outputs: dict) -> dict[str, np.ndarray]:
    """The noise-free truth (expected event per bin) in place of a model's rates: a ceiling."""
    factor = outputs["conversion_factor"]
    return {f"{s}_output_params": outputs[f"{s}_truth"] / factor for s in ("train", "valid")}


def fast_share(latents: np.ndarray, sigma: float) -> float:
    """Fraction of the latents' variance (pooled over dimensions) in the fast component."""
    fast = high_pass(latents, sigma)
    return float(fast.reshape(-1, 3).var(axis=0).sum() / latents.reshape(-1, 3).var(axis=0).sum())


# --------------------------------------------------------------------------- report

COLUMNS = [
    ("latent_r2_rates", "latent R^2 (rates)"),
    ("latent_r2_factors", "latent R^2 (factors)"),
    ("fast_r2_rates", "fast R^2 (rates)"),
    ("fast_r2_factors", "fast R^2 (factors)"),
    ("rate_r2_vs_truth", "rate R^2 vs truth"),
]


def markdown(report: dict) -> str:
    fits = report["fits"]
    lines = [
        "# RADICaL (ZIG + SBTT, sub-frame) vs frame-rate LFADS on simulated calcium events",
        "",
        f"`{report['command']}`",
        "",
        f"{report['date']}; {report['machine']}.",
        *(
            ["", f"Scores of the fits made earlier by `{report['fit_command']}`."]
            if "--score-only" in report["command"]
            else []
        ),
        "",
        f"Data: {report['data']}",
        f"Model: {report['model']}",
        "",
        "| fit | bins T | epochs (best) | wall s |",
        "|---|---:|---:|---:|",
    ]
    for name, f in fits.items():
        lines.append(
            f"| {name} | {f['T']} | {f['epochs']} ({f['best_epoch']}) | {f['wall_s']:.0f} |"
        )
    lines += [
        "",
        "Valid trials. Sub-frame rows score against the sub-frame latents/truth; frame rows "
        "against the frame-rate ones. " + report["definitions"],
        "",
        "| model (scored at) | " + " | ".join(title for _, title in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for name, scores in report["scores"].items():
        cells = " | ".join(
            "–" if scores[key] is None else f"{scores[key]:.3f}" for key, _ in COLUMNS
        )
        lines.append(f"| {name} | {cells} |")
    share = report["fast_share"]
    lines += [
        "",
        f"Share of the valid latents' variance in the fast component: {share['sub-frame']:.3f} "
        f"at sub-frame resolution, {share['frame']:.3f} at frame resolution.",
    ]
    return "\n".join(lines) + "\n"


def model_summary(out: Path) -> str:
    from omegaconf import OmegaConf

    m = OmegaConf.load(out / "config.yaml").model
    return f"-c radical, {model_sizes(m)}" + (
        f", s_min {m.s_min}, reconstruction {m.reconstruction}"
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fit_arguments(parser, epochs=50, ramp=15, batch=50, patience=1000)
    parser.add_argument("--conditions", type=int, default=40)
    parser.add_argument("--trials", type=int, default=20, help="trials per condition")
    parser.add_argument("--neurons", type=int, default=40)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--subframes", type=int, default=4)
    parser.add_argument("--fast-sigma", type=float, default=1.0, help="high-pass std, frames")
    parser.add_argument("--samples", type=int, default=50, help="posterior samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="default bench/out/radical[_quick]")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (< 1 min)")
    parser.add_argument(
        "--score-only",
        action="store_true",
        help="reuse the data and fits already in --out (same size options); only score",
    )
    parser.add_argument("overrides", nargs="*", help="k=v config overrides for both fits")
    args = parser.parse_args(argv)
    apply_quick(args, "radical")
    if args.quick:
        args.conditions, args.trials, args.neurons, args.frames = 4, 5, 10, 12
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    k = args.subframes
    if args.score_only:
        radical, lfads = load_fit(out / "radical"), load_fit(out / "lfads")
    else:
        data_sub = simulate(out, args, k)
        data_frame = simulate(out, args, 1)
        radical = fit(data_sub, out / "radical", args)
        lfads = fit(data_frame, out / "lfads", args)
    for split in ("train", "valid"):  # same seed: the same trials in the same split
        assert np.array_equal(radical[f"{split}_inds"], lfads[f"{split}_inds"]), split
    scores = score_all(radical, lfads, k, args.fast_sigma)
    n_train, n_valid = len(radical["train_inds"]), len(radical["valid_inds"])
    report = {
        "command": command_line("bench/radical.py", argv),
        "fit_command": " ".join([".venv/bin/python", *radical["argv"]]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_line(),
        "data": (
            f"`autolfads simulate calcium --seed {args.seed}` n_conditions={args.conditions} "
            f"trials_per_condition={args.trials} n_neurons={args.neurons} "
            f"n_frames={args.frames}, subframes={k} and subframes=1 "
            f"({n_train} train / {n_valid} valid trials, 30 Hz frames)."
        ),
        "model": (
            model_summary(out / "radical")
            + f"; batch {args.batch_size}, {args.epochs} max epochs, ramp {args.ramp_epochs}, "
            "early-stopping patience "
            f"{args.patience}, best epoch by valid/recon_smth, {args.samples} posterior samples."
            + (f" Overrides: {' '.join(args.overrides)}." if args.overrides else "")
        ),
        "definitions": (
            f"Latent R^2: ridge (alpha {RIDGE_ALPHA}) from rates or factors to the 3 Lorenz "
            "latents, fit on train trials, R^2 on valid. LFADS frame values are linearly "
            "interpolated to the sub-frame bins (rates placed at each neuron's scan sub-bin, "
            "factors at the frame centre, unless the row says otherwise) or repeated. RADICaL "
            "at frame resolution: frame means for the latents, the scan sub-bin for the rate "
            "R^2. Fast = "
            f"latents minus a zero-phase Gaussian smoothing of std {args.fast_sigma} frame(s) "
            f"(half-gain at {0.187 * 30 / args.fast_sigma:.1f} Hz), applied to the ridge "
            "prediction and to the truth. Rate R^2: output_params vs the expected event."
        ),
        "fast_share": {
            "sub-frame": round(fast_share(radical["valid_latents"], args.fast_sigma * k), 4),
            "frame": round(fast_share(lfads["valid_latents"], args.fast_sigma), 4),
        },
        "fits": {
            name: {
                "T": int(fit_["valid_output_params"].shape[1]),
                "epochs": fit_["epochs"],
                "best_epoch": fit_["best_epoch"],
                "wall_s": round(fit_["wall_s"], 1),
            }
            for name, fit_ in (("RADICaL", radical), ("LFADS", lfads))
        },
        "scores": {
            row: {key: None if math.isnan(v) else round(v, 4) for key, v in s.items()}
            for row, s in scores.items()
        },
    }
    write_report(out, report, markdown(report))


if __name__ == "__main__":
    main()
