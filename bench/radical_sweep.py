"""Benchmark: RADICaL versus frame-rate LFADS as the latent dynamics outrun the frames (issue #24).

Question: does sub-frame binning (RADICaL: zero-inflated gamma + SBTT at K bins per frame) recover
latent dynamics that frame-rate LFADS cannot, once the dynamics are faster than the frame rate's
Nyquist frequency (frame_rate / 2 = 15 Hz at 30 Hz)?

Data, per speed S and seed: `autolfads simulate calcium speed=S test_fraction=0.2 --seed SEED`
twice, with `subframes=K` (each neuron observed in the sub-bin of its scan row, NaN in the other
K - 1) and `subframes=1` (frame-rate events); both files hold the same trials, latents, events
and train/valid/test split. The Lorenz latents' power peaks near 4 Hz x S (`calcium`'s docstring).

Fits (equal compute: the same packaged config `-c radical`, model size, epochs, batch size and
seed for both; a sub-frame epoch has K times the bins, so it costs about K times the time, which
the wall-time column shows):
- RADICaL: the sub-frame file (T = K x frames bins, SBTT);
- LFADS: the frame-rate file (T = frames bins), the same zero-inflated gamma model.
Default: one model each (`autolfads train`, `--epochs`, best epoch by valid/recon_smth). With
`--pbt N`: AutoLFADS (`autolfads run`, N workers, `--epochs` epochs each, `pbt.patience=1000` so
no run stops early, `pbt.max_generations` from `--generations` if given); epochs are then
worker-epochs.

Scores, all on the TEST trials (no fit or selection saw them; the output files hold their
posterior-averaged outputs, `--samples` samples), at sub-frame resolution:
- latent R^2: a ridge map (alpha 1e-2, as `metrics.ridge_decoding_r2`) from the factors (or the
  rates) to the true Lorenz latents (`{split}_latents`, averaged over each sub-frame bin), fitted on
  the train trials, R^2 on the test trials (uniform average over the 3 dimensions). LFADS's frame
  values are linearly interpolated to the sub-frame bins: factors placed at the frame centre,
  each neuron's rate at its scan sub-bin (`bench/radical.py`, `frames_to_subframes`).
- the same R^2 band by band (`analysis.bands`): the ridge prediction and the true latents are both
  split by Gaussian smoothings with half gain at the `--band-hz` cuts (default 5.6 Hz, the
  high-pass of `bench/radical.py`, and 15 Hz, the frame Nyquist frequency), and R^2 is taken per
  band.
- rate R^2 at the scanned sub-bins (`analysis.subframe_scores.sampled_subbin_r2`): the rates
  against the expected event (truth / conversion_factor) only at each neuron's scan sub-bin of
  each frame, the elements that were observed; LFADS's frame rate is its prediction there.

Runs (bench/RESULTS.md, "RADICaL vs frame-rate LFADS across latent speeds", has the commands,
tables and wall times):

    .venv/bin/python bench/radical_sweep.py --speeds 1 2 4 8 --seeds 0 1 2 --resume
    .venv/bin/python bench/radical_sweep.py --speeds 1 2 4 8 --seeds 0 1 2 --resume \
        --pbt 8 --out bench/out/radical_sweep_pbt pbt.backend=inline pbt.workers_per_shard=8 \
        pbt.perturbation_interval=10 pbt.burn_in_period=20

Single models of 50 epochs took ~25 min for the 12 speeds and seeds on a 2-core CPU (three seed
processes at once). AutoLFADS with 8 workers of 50 epochs (one shard of 8), two seed processes
sharing the 2 cores: RADICaL 13-18 min and LFADS 3-5 min per speed and seed, ~70 min a seed.
`--lfads-epochs E` gives LFADS E epochs (per worker) instead of `--epochs`: with E = K x `--epochs`
it gets about RADICaL's wall time rather than its epochs.

Other options: [--epochs 50] [--ramp-epochs 15] [--batch-size 50] [--conditions 40] [--trials 20]
[--neurons 40] [--frames 50] [--subframes 4] [--test-fraction 0.2] [--band-hz 5.6 15]
[--samples 50] [--lfads-epochs E] [--pbt N] [--generations G] [--resume] [--quick] [k=v ...]
(`k=v` config overrides go to every fit). `--quick` is a < 1 min smoke run (speeds 1 and 4,
seed 0, tiny data and model).
`--resume` keeps the fits already finished in the output folder. Writes bench/out/radical_sweep/
(data, fits), bench/out/radical_sweep.md / .json and bench/out/radical_sweep.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from radical import frames_to_subframes, ridge_predictions
from variant_fits import (
    add_fit_arguments,
    apply_quick,
    command_line,
    machine_line,
    model_sizes,
    read_splits,
    run_cli,
    train,
    write_report,
)

from autolfads.analysis.bands import band_components, band_r2, half_gain_std_bins
from autolfads.analysis.metrics import r2_score
from autolfads.analysis.report.canvas import panels, png_bytes
from autolfads.analysis.subframe_scores import sampled_subbin_r2
from autolfads.data.subframe import subframe_index

FRAME_RATE = 30.0  # `calcium`'s default, kept by this benchmark
MODELS = ("RADICaL", "LFADS")
SPLITS = ("train", "valid", "test")


# --------------------------------------------------------------------------- data and fits


def simulate(out: Path, args: argparse.Namespace, speed: float, seed: int, k: int) -> Path:
    """The calcium session file of one speed, seed and resolution (k sub-bins per frame)."""
    path = out / f"speed{speed:g}_seed{seed}_k{k}.h5"
    if args.resume and path.exists():
        return path
    run_cli(
        [
            "simulate",
            "calcium",
            str(path),
            "--seed",
            str(seed),
            f"speed={speed}",
            f"test_fraction={args.test_fraction}",
            f"n_conditions={args.conditions}",
            f"trials_per_condition={args.trials}",
            f"n_neurons={args.neurons}",
            f"n_frames={args.frames}",
            f"frame_rate={FRAME_RATE}",
            f"subframes={k}",
        ]
    )
    return path


def pbt_overrides(args: argparse.Namespace) -> list[str]:
    """Config overrides of an AutoLFADS fit: N workers, never stopped early."""
    extra = [f"pbt.num_workers={args.pbt}", "pbt.patience=1000"]
    if args.generations is not None:
        extra.append(f"pbt.max_generations={args.generations}")
    return extra


def fit(data: Path, out: Path, args: argparse.Namespace, seed: int, epochs: int) -> dict:
    """One fit (single model, or AutoLFADS with --pbt) of `data` for `epochs` epochs (per worker);
    returns its outputs and costs."""
    if not (args.resume and (out / "bench_fit.json").exists()):
        fit_args = argparse.Namespace(**{**vars(args), "seed": seed, "epochs": epochs})
        if args.pbt:
            wall = train("radical", data, out, fit_args, "run", pbt_overrides(args))
        else:
            wall = train("radical", data, out, fit_args)
        (out / "bench_fit.json").write_text(json.dumps({"wall_s": wall, "argv": sys.argv}) + "\n")
    info = json.loads((out / "bench_fit.json").read_text())
    keys = ["output_params", "factors", "latents", "truth", "inds"]
    arrays = read_splits(out / "lfads_output_sess0.h5", keys, ("scan_offsets",), SPLITS)
    return {"wall_s": info["wall_s"], **fit_compute(out / "fitlog.csv"), **arrays}


def fit_compute(fitlog: Path) -> dict[str, int]:
    """Epochs per worker and worker-epochs (rows: one per worker per epoch) of a fit's log."""
    with open(fitlog, newline="") as f:
        rows = list(csv.DictReader(f))
    return {"epochs": len({r["epoch"] for r in rows}), "worker_epochs": len(rows)}


# --------------------------------------------------------------------------- scores


def band_names(cuts_hz: list[float]) -> list[str]:
    """'< 5.6 Hz', '5.6-15 Hz', '> 15 Hz' for cuts [5.6, 15]."""
    edges = [f"{c:g}" for c in cuts_hz]
    middle = [f"{a}-{b} Hz" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return [f"< {edges[0]} Hz", *middle, f"> {edges[-1]} Hz"]


def latent_scores(x: dict, latents: dict, cut_stds: list[float], names: list[str]) -> dict:
    """Latent R^2 of a ridge map from `x` (fitted on train trials) on the test trials, overall
    and per band."""
    pred = ridge_predictions(x["train"], latents["train"], x["test"])
    scores = {"all": r2_score(latents["test"], pred)}
    scores.update(zip(names, band_r2(latents["test"], pred, cut_stds), strict=True))
    return scores


def to_subframes(fit_: dict, k: int) -> dict[str, dict[str, np.ndarray]]:
    """A frame-rate fit's factors and rates at the sub-frame bins (factors anchored at the frame
    centre, each neuron's rate at its scan sub-bin); split -> field -> (B, T k, .)."""
    scan_bin = subframe_index(fit_["scan_offsets"], k)  # (N,)
    return {
        s: {
            "factors": frames_to_subframes(fit_[f"{s}_factors"], k, "interp"),
            "output_params": frames_to_subframes(
                fit_[f"{s}_output_params"], k, "interp", anchor=scan_bin
            ),
        }
        for s in SPLITS
    }


def score_fit(outputs: dict, target: dict, k: int, cut_stds: list[float], names: list[str]) -> dict:
    """Test-trial scores of one fit's sub-frame outputs against the sub-frame `target` file."""
    latents = {s: target[f"{s}_latents"] for s in ("train", "test")}
    scores: dict[str, float] = {}
    for source, field in (("factors", "factors"), ("rates", "output_params")):
        x = {s: outputs[s][field] for s in ("train", "test")}
        for band, value in latent_scores(x, latents, cut_stds, names).items():
            scores[f"latent_r2_{source} {band}"] = value
    truth = target["test_truth"] / target["conversion_factor"]
    rates = outputs["test"]["output_params"]
    scores["rate_r2_scanned"] = sampled_subbin_r2(truth, rates, target["scan_offsets"], k)
    return scores


def band_shares(latents: np.ndarray, cut_stds: list[float], names: list[str]) -> dict[str, float]:
    """Share of the (B, T, 3) latents' variance in each band (pooled over dimensions)."""
    total = latents.reshape(-1, latents.shape[-1]).var(axis=0).sum()
    parts = band_components(latents, cut_stds)
    return {
        name: float(p.reshape(-1, p.shape[-1]).var(axis=0).sum() / total)
        for name, p in zip(names, parts, strict=True)
    }


def run_one(out: Path, args: argparse.Namespace, speed: float, seed: int, bands: tuple) -> dict:
    """Simulate, fit both models and score them for one speed and seed."""
    k = args.subframes
    cut_stds, names = bands
    data = {
        model: simulate(out, args, speed, seed, res)
        for model, res in zip(MODELS, (k, 1), strict=True)
    }
    epochs = {"RADICaL": args.epochs, "LFADS": args.lfads_epochs or args.epochs}
    fits = {
        m: fit(data[m], out / f"speed{speed:g}_seed{seed}_{m}", args, seed, epochs[m])
        for m in MODELS
    }
    radical, lfads = fits["RADICaL"], fits["LFADS"]
    for split in SPLITS:  # same seed: the same trials in the same split
        assert np.array_equal(radical[f"{split}_inds"], lfads[f"{split}_inds"]), split
    sub = {s: {f: radical[f"{s}_{f}"] for f in ("factors", "output_params")} for s in SPLITS}
    outputs = {"RADICaL": sub, "LFADS": to_subframes(lfads, k)}
    return {
        "speed": speed,
        "seed": seed,
        "n_trials": {s: int(radical[f"{s}_inds"].size) for s in SPLITS},
        "band_shares": band_shares(radical["test_latents"], cut_stds, names),
        "models": {
            m: {
                "scores": score_fit(outputs[m], radical, k, cut_stds, names),
                "epochs": fits[m]["epochs"],
                "worker_epochs": fits[m]["worker_epochs"],
                "wall_s": round(fits[m]["wall_s"], 1),
                "T": int(fits[m]["test_output_params"].shape[1]),
            }
            for m in MODELS
        },
    }


# --------------------------------------------------------------------------- summary


def summarise(runs: list[dict]) -> dict:
    """speed -> model -> metric -> (mean, std over seeds, n); also costs and band shares."""
    summary: dict = {}
    for speed in sorted({r["speed"] for r in runs}):
        at_speed = [r for r in runs if r["speed"] == speed]
        entry: dict = {"band_shares": _mean_std([r["band_shares"] for r in at_speed])}
        for model in MODELS:
            fits_ = [r["models"][model] for r in at_speed]
            entry[model] = {
                "scores": _mean_std([f["scores"] for f in fits_]),
                "costs": _mean_std([{k: f[k] for k in ("worker_epochs", "wall_s")} for f in fits_]),
            }
        summary[f"{speed:g}"] = entry
    return summary


def _mean_std(dicts: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """key -> {mean, std (ddof 1; NaN for one value), n} over the dicts (NaN values left out)."""
    out = {}
    for key in dicts[0]:
        values = np.array([d[key] for d in dicts], dtype=float)
        values = values[np.isfinite(values)]
        std = float(values.std(ddof=1)) if values.size > 1 else math.nan
        mean = float(values.mean()) if values.size else math.nan
        out[key] = {"mean": mean, "std": std, "n": int(values.size)}
    return out


def json_safe(value: object) -> object:
    """`value` with every NaN float replaced by None (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def cell(stat: dict[str, float], digits: int = 3) -> str:
    """'0.912 ± 0.011' (mean ± std over seeds), or the mean alone for one seed."""
    if math.isnan(stat["mean"]):
        return "–"
    if math.isnan(stat["std"]):
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def markdown(report: dict) -> str:
    names = report["bands"]
    cost = "worker-epochs" if report["pbt"] else "epochs"
    lines = [
        "# RADICaL (ZIG + sub-frame SBTT) vs frame-rate LFADS across latent speeds",
        "",
        f"`{report['command']}`",
        "",
        f"{report['date']}; {report['machine']}.",
        "",
        f"Data: {report['data']}",
        f"Fits: {report['fits']}",
        "",
        report["definitions"],
        "",
    ]
    for source in ("factors", "rates"):
        metrics = [f"latent_r2_{source} {b}" for b in ("all", *names)] + ["rate_r2_scanned"]
        titles = [f"latent R^2 ({source})", *names, "rate R^2 at scanned sub-bins"]
        lines += [
            f"Test trials, latents decoded from the {source}; mean ± std over seeds "
            f"({report['n_seeds']} seed(s)).",
            "",
            "| speed | model | " + " | ".join(titles) + f" | {cost} | wall s |",
            "|---:|---|" + "---:|" * (len(titles) + 2),
        ]
        for speed, entry in report["summary"].items():
            for model in MODELS:
                s, c = entry[model]["scores"], entry[model]["costs"]
                cells = " | ".join(cell(s[m]) for m in metrics)
                lines.append(
                    f"| {speed} | {model} | {cells} | {c['worker_epochs']['mean']:.0f} | "
                    f"{c['wall_s']['mean']:.0f} |"
                )
        lines.append("")
    lines += [
        "Variance of each band of the test latents over the latents' variance (the Gaussian bands "
        "overlap at their soft edges, so the shares add up to less than 1):",
        "",
        "| speed | " + " | ".join(names) + " |",
        "|---:|" + "---:|" * len(names),
    ]
    for speed, entry in report["summary"].items():
        lines.append(
            f"| {speed} | " + " | ".join(cell(entry["band_shares"][b]) for b in names) + " |"
        )
    return "\n".join(lines) + "\n"


def figure(report: dict, path: Path) -> None:
    """R^2 (factors-decoded latents, all and per band; rates at scanned sub-bins) against speed,
    both models, mean ± std over seeds, as a PNG."""
    names = report["bands"]
    metrics = [f"latent_r2_factors {b}" for b in ("all", *names)] + ["rate_r2_scanned"]
    titles = ["latent R^2 (factors)", *[f"latent R^2, {b}" for b in names], "rate R^2, scanned"]
    fig, axes = panels(1, len(metrics), 2.6, 2.2, wgap=0.6)
    speeds = [float(s) for s in report["summary"]]
    for ax, metric, title in zip(axes[0], metrics, titles, strict=True):
        for model, colour in zip(MODELS, ("C3", "C0"), strict=True):
            stats = [report["summary"][f"{s:g}"][model]["scores"][metric] for s in speeds]
            mean = [st["mean"] for st in stats]
            std = [0.0 if math.isnan(st["std"]) else st["std"] for st in stats]
            ax.errorbar(speeds, mean, yerr=std, marker="o", ms=3, capsize=2, color=colour)
            ax.plot([], [], color=colour, label=model)
        ax.set_xscale("log", base=2)
        ax.set_xticks(speeds, [f"{s:g}" for s in speeds])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("latent speed")
    axes[0, 0].set_ylabel("R^2 (test trials)")
    axes[0, 0].legend(fontsize=8, frameon=False)
    path.write_bytes(png_bytes(fig))


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fit_arguments(parser, epochs=50, ramp=15, batch=50, patience=1000)
    parser.add_argument("--speeds", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--conditions", type=int, default=40)
    parser.add_argument("--trials", type=int, default=20, help="trials per condition")
    parser.add_argument("--neurons", type=int, default=40)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--subframes", type=int, default=4)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument(
        "--band-hz", type=float, nargs="+", default=[5.6, FRAME_RATE / 2], help="band cuts, Hz"
    )
    parser.add_argument("--samples", type=int, default=50, help="posterior samples")
    parser.add_argument(
        "--lfads-epochs",
        type=int,
        default=None,
        help="LFADS's epochs (per worker), default --epochs; e.g. K x --epochs gives it RADICaL's "
        "wall time",
    )
    parser.add_argument("--pbt", type=int, default=0, help="AutoLFADS with N workers (0: off)")
    parser.add_argument("--generations", type=int, default=None, help="pbt.max_generations")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="default bench/out/radical_sweep[_quick]")
    parser.add_argument("--resume", action="store_true", help="keep finished fits in --out")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (< 1 min)")
    parser.add_argument("overrides", nargs="*", help="k=v config overrides for every fit")
    args = parser.parse_args(argv)
    apply_quick(args, "radical_sweep")
    if args.quick:
        args.speeds, args.seeds = [1.0, 4.0], [0]
        args.conditions, args.trials, args.neurons, args.frames = 4, 5, 10, 12
    if args.pbt < 0 or (args.pbt == 1):
        parser.error(f"--pbt: got {args.pbt}; expected 0 (single models) or >= 2 workers")
    if sorted(args.band_hz) != args.band_hz or args.band_hz[0] <= 0:
        parser.error(f"--band-hz: got {args.band_hz}; expected increasing frequencies > 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bin_s = 1.0 / (FRAME_RATE * args.subframes)
    cut_stds = [half_gain_std_bins(hz, bin_s) for hz in args.band_hz]
    names = band_names(args.band_hz)
    runs = [
        run_one(out, args, speed, seed, (cut_stds, names))
        for speed in args.speeds
        for seed in args.seeds
    ]
    n = runs[0]["n_trials"]
    lfads_epochs = (
        f" (LFADS {args.lfads_epochs})" if args.lfads_epochs not in (None, args.epochs) else ""
    )
    fit_kind = (
        f"AutoLFADS (`autolfads run`), {args.pbt} workers, {args.epochs}{lfads_epochs} epochs each"
        + (f", at most {args.generations} generations" if args.generations else "")
        if args.pbt
        else f"one model each (`autolfads train`), {args.epochs}{lfads_epochs} max epochs, best "
        f"epoch by valid/recon_smth, early-stopping patience {args.patience}"
    )
    model = OmegaConf.load(next(out.glob("*_RADICaL/config.yaml"))).model
    report = {
        "command": command_line("bench/radical_sweep.py", argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_line(),
        "pbt": args.pbt,
        "n_seeds": len(args.seeds),
        "bands": names,
        "data": (
            f"`autolfads simulate calcium speed=S test_fraction={args.test_fraction} --seed SEED` "
            f"n_conditions={args.conditions} trials_per_condition={args.trials} "
            f"n_neurons={args.neurons} n_frames={args.frames}, subframes={args.subframes} "
            f"(RADICaL) and 1 (LFADS), {FRAME_RATE:g} Hz frames; {n['train']} train / "
            f"{n['valid']} valid / {n['test']} test trials; speeds "
            f"{' '.join(f'{s:g}' for s in args.speeds)}, seeds {' '.join(map(str, args.seeds))}."
        ),
        "fits": (
            f"-c radical, {model_sizes(model)}; {fit_kind}; batch {args.batch_size}, ramp "
            f"{args.ramp_epochs}, {args.samples} posterior samples; the fit's seed is the data's."
            + (f" Overrides: {' '.join(args.overrides)}." if args.overrides else "")
        ),
        "definitions": (
            "Latent R^2: ridge (alpha 1e-2) from the factors or rates to the 3 Lorenz latents at "
            f"sub-frame resolution ({args.subframes} bins per frame), fitted on train trials, R^2 "
            "on test trials; LFADS's frame values linearly interpolated to the sub-frame bins "
            "(factors at the frame centre, rates at each neuron's scan sub-bin). Bands: the "
            "prediction and the truth split by Gaussian smoothings with half gain at "
            f"{', '.join(f'{hz:g}' for hz in args.band_hz)} Hz (frame Nyquist "
            f"{FRAME_RATE / 2:g} Hz). Rate R^2: expected event vs output_params at each "
            "neuron's scanned sub-bin only."
        ),
        "summary": summarise(runs),
        "runs": runs,
    }
    write_report(out, json_safe(report), markdown(report))
    png = out.parent / f"{out.name}.png"
    figure(report, png)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
