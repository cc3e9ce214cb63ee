"""Benchmark: multi-session stitching (issue: multi-session stitching that works).

Data: `autolfads simulate lorenz DIR sessions=6` (one Lorenz system, conditions shared by every
session; each session observes 25-40 of a pool of 120 neurons through the pool's read-out, with
150-250 trials). Half of each session's valid trials (every other one) become a test split that
no training or selection sees; every score below is on those test trials.

Fits, at equal training compute (the same epochs over the same trials, no early stop):
  (a) one model stitched over sessions 0-4, read-ins/read-outs aligned (model.align_readin=true),
  (b) the same with random read-ins/read-outs (model.align_readin=false),
  (c) five separate single-session models (packaged defaults: no read-in),
  (d) session 5 brought to (a)'s frozen dynamics with `autolfads train sess5.h5 --from`.
Scores per session: rate R^2 of the 50-sample posterior mean vs the true rates; and the shared-latent
R^2: a ridge map from factors to the true Lorenz state fitted on session 0's valid trials, applied to
each session's own test factors.

    .venv/bin/python bench/stitching.py [--epochs 150] [--seeds 0 1 2] [--out bench/out/stitching]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from omegaconf import DictConfig

from autolfads.analysis.metrics import r2_score, ridge_decoding_r2
from autolfads.cli import main as cli_main
from autolfads.commands.workflow import prepare_out_dir
from autolfads.config import load_config
from autolfads.data import read_sessions
from autolfads.outputs.checkpoint import LFADS
from autolfads.train.fit import fit_single_model

STITCHED, NEW = range(5), 5  # sessions stitched in (a)/(b); the session brought in by --from
MOVED = ("encod_data", "truth", "inds", "condition", "latents")  # per-trial keys moved to test


def simulate(out: Path, seed: int) -> list[Path]:
    """Six sessions of one Lorenz system, each with half of its valid trials moved to `test_*`."""
    raw = out / "raw"
    code = cli_main(["simulate", "lorenz", str(raw), "sessions=6", "--seed", str(seed)])
    if code != 0:
        raise SystemExit(f"simulate failed with exit status {code}")
    return [_with_test_split(raw / f"sess{i}.h5", out / f"sess{i}.h5") for i in range(6)]


def _with_test_split(src: Path, dst: Path) -> Path:
    """Copy `src` to `dst`, moving every other valid trial to a test split."""
    with h5py.File(src, "r") as f:
        arrays = {k: f[k][()] for k in f}
    n_valid = arrays["valid_encod_data"].shape[0]
    test, keep = np.arange(1, n_valid, 2), np.arange(0, n_valid, 2)
    for kind in MOVED:
        if f"valid_{kind}" in arrays:
            values = arrays[f"valid_{kind}"]
            arrays[f"test_{kind}"], arrays[f"valid_{kind}"] = values[test], values[keep]
    arrays["valid_recon_data"] = arrays["valid_encod_data"]
    with h5py.File(dst, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return dst


def config(epochs: int, seed: int, *overrides: str) -> DictConfig:
    """Exactly `epochs` epochs (no early stop, no lr floor), 50 posterior samples."""
    return load_config(
        None,
        [
            f"trainer.max_epochs={epochs}",
            "trainer.early_stopping_patience=100000",
            "model.lr_stop=1e-12",
            "trainer.samples=50",
            "model.co_dim=0",  # the Lorenz system is autonomous: trials differ by their start
            f"seed={seed}",
            *overrides,
        ],
    )


def fit(paths: list[Path], cfg: DictConfig, out: Path) -> tuple[LFADS, float]:
    """Train one model on `paths` (one session each); the model and the training wall time."""
    sessions = read_sessions(paths)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        result = fit_single_model(cfg, sessions, out, quiet=True)
    return result.model, time.perf_counter() - start


def posterior(model: LFADS, paths: list[Path]) -> list[dict]:
    """Per session, split -> field -> array (50 samples)."""
    return model.posterior(read_sessions(paths), n_samples=50)


def scores(paths: list[Path], posts: list[dict], ref_post: dict, ref_path: Path) -> list[dict]:
    """Per session: test rate R^2 vs truth; test latent R^2 from a map fitted on `ref`'s valid."""
    ref = read_sessions([ref_path])[0]
    ref_x, ref_y = ref_post["valid"]["factors"], ref.extra["valid_latents"]
    rows = []
    for path, post in zip(paths, posts, strict=True):
        s = read_sessions([path])[0]
        rows.append(
            {
                "session": path.stem,
                "neurons": s.dims.encod_data_dim,
                "train_trials": s.encod["train"].shape[0],
                "rate_r2": r2_score(s.truth["test"], post["test"]["output_params"]),
                "latent_r2": ridge_decoding_r2(
                    ref_x, ref_y, post["test"]["factors"], s.extra["test_latents"]
                ),
            }
        )
    return rows


def run_seed(out: Path, seed: int, epochs: int) -> dict:
    """(a), (b), (c) and (d) for one seed of data and training."""
    paths = simulate(out / "data", seed)
    stitched = [paths[i] for i in STITCHED]
    result: dict = {"seed": seed}
    walls: dict[str, float] = {}
    for label, align in (("a", "true"), ("b", "false")):
        cfg = config(epochs, seed, f"model.align_readin={align}")
        model, walls[label] = fit(stitched, cfg, out / label)
        if label == "a":
            model.save(out / "a" / "model.ckpt")
        posts = posterior(model, stitched)
        result[label] = scores(stitched, posts, posts[0], stitched[0])
        if label == "a":
            a_session0 = posts[0]  # (d) shares (a)'s factor read-out: the same latent map
    separate, walls["c"] = [], 0.0
    for i, path in enumerate(stitched):
        model, wall = fit([path], config(epochs, seed), out / f"c{i}")
        walls["c"] += wall
        separate.append(posterior(model, [path])[0])
    result["c"] = scores(stitched, separate, separate[0], stitched[0])
    start = time.perf_counter()
    code = cli_main(
        [
            "train",
            str(paths[NEW]),
            "--from",
            str(out / "a" / "model.ckpt"),
            "-o",
            str(out / "d"),
            "--overwrite",
            "--quiet",
            f"trainer.max_epochs={epochs}",
            "trainer.early_stopping_patience=100000",
            "model.lr_stop=1e-12",
        ]
    )
    walls["d"] = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"train --from failed with exit status {code}")
    new_model = LFADS.load_from_checkpoint(out / "d" / "model.ckpt")
    result["d"] = scores([paths[NEW]], posterior(new_model, [paths[NEW]]), a_session0, stitched[0])
    result["wall_s"] = {k: round(v, 1) for k, v in walls.items()}
    return result


def table(results: list[dict]) -> str:
    """Markdown: every seed's sessions (fewest train trials first), then means over seeds."""
    lines = [
        "| seed | session | neurons | train trials | rate R2 (a) | (b) | (c) "
        "| latent R2 (a) | (b) | (c) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        order = sorted(range(len(r["a"])), key=lambda i: r["a"][i]["train_trials"])
        for i in order:
            row = r["a"][i]
            rate = " | ".join(f"{r[x][i]['rate_r2']:.3f}" for x in "abc")
            latent = " | ".join(f"{r[x][i]['latent_r2']:.3f}" for x in "abc")
            lines.append(
                f"| {r['seed']} | {row['session']} | {row['neurons']} | {row['train_trials']} "
                f"| {rate} | {latent} |"
            )

    def mean(label: str, key: str, pick) -> str:
        values = [pick(r[label], r)[key] for r in results]
        return f"{np.mean(values):.3f} +- {np.std(values):.3f}"

    def all_mean(label: str, key: str) -> str:
        values = [np.mean([row[key] for row in r[label]]) for r in results]
        return f"{np.mean(values):.3f} +- {np.std(values):.3f}"

    def fewest(rows: list[dict], r: dict) -> dict:
        i = min(range(len(r["a"])), key=lambda j: r["a"][j]["train_trials"])
        return rows[i]

    for name, fn in (("mean of the 5 sessions", None), ("session with the fewest trials", fewest)):
        cells = []
        for key in ("rate_r2", "latent_r2"):
            for x in "abc":
                cells.append(all_mean(x, key) if fn is None else mean(x, key, fn))
        lines.append(f"| all | {name} | | | {' | '.join(cells)} |")
    lines.append("")
    lines.append("(d) a sixth session fitted onto (a)'s frozen dynamics with `train --from`:")
    lines.append("")
    lines.append(
        "| seed | neurons | train trials | rate R2 (d) | (a) on its closest session "
        "| latent R2 (d) | wall s (d) | wall s (a) |"
    )
    lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        d = r["d"][0]
        near = min(r["a"], key=lambda row: abs(row["neurons"] - d["neurons"]))
        lines.append(
            f"| {r['seed']} | {d['neurons']} | {d['train_trials']} | {d['rate_r2']:.3f} "
            f"| {near['rate_r2']:.3f} ({near['neurons']} neurons) | {d['latent_r2']:.3f} "
            f"| {r['wall_s']['d']} | {r['wall_s']['a']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="bench/out/stitching")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = prepare_out_dir(args.out, overwrite=True)
    results = []
    for seed in args.seeds:
        results.append(run_seed(out / f"seed{seed}", seed, args.epochs))
        print(json.dumps(results[-1], indent=1), flush=True)
    report = {
        "results": results,
        "command": f"bench/stitching.py --epochs {args.epochs} --seeds {' '.join(map(str, args.seeds))}",
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    (out / "result.json").write_text(json.dumps(report, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
