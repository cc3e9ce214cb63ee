"""Benchmark: AutoLFADS against random search and the packaged defaults at equal compute, scored on
test trials that no selection saw (issue 22).

For each dataset and seed, three ways to spend the same budget of N x E worker-epochs:
- pbt:     AutoLFADS, N workers for E epochs each (binary tournament, explore within the ranges of
           `pbt.hps`), the best worker by valid/recon_smth;
- search:  random search, N models with hyperparameters drawn once from the same ranges (every
           searched HP drawn, also those the population starts at a fixed `init`), trained E epochs
           each with no exploit and no explore, the best by valid/recon_smth;
- default: one model at the packaged defaults (`autolfads train`), up to N x E epochs with its early
           stopping; its best epoch by valid/recon_smth.
The same seed gives all three the same data and the same first draw of random numbers. The chosen
model's 50-sample posterior-mean rates are scored on the test split (`analysis.metrics.session_metrics`):
with truth, rate R^2 and the fraction of the true rates' bits/spike reached (`test/bps_ratio`); on
the real recording, co-bps of the held-out neurons.

Datasets (built once under OUT/data/):
- anchor:    chaotic RNN, g 2.5, 400 conditions x 5 trials, 50 neurons, 100 bins: 3/1/1 trials of
             each condition in train/valid/test (1200/400/400).
- one_trial: the anchor with one trial per condition: one non-test trial of each condition, the
             conditions split 80/20 into train/valid (320/80), the anchor's 400 test trials.
- pmd:       DataHigh PMd example 2 (../shared/data/datahigh_pmd; skipped when absent), 20 ms bins,
             a quarter of the neurons held out, 68/22/22 trials, the example's model sizes
             (examples/pmd_datahigh.py).
- emg:       `simulate emg` (20 conditions x 20 trials, 12 muscles, artifacts), -c emg,
             12/4/4 trials per condition; R^2 of the mean activation against the true one.

Each (dataset, method, seed) is one job writing OUT/jobs/<dataset>-<method>-<seed>.json; finished
jobs are not run again, so an interrupted benchmark continues where it stopped. `--jobs 2` runs two
at a time (each one process, one thread). Then the table (mean +- std over seeds) goes to
OUT/table.md and OUT/results.json.

    .venv/bin/python bench/pbt_vs_search.py [--datasets anchor one_trial pmd emg] [--seeds 0 1 2]
        [--methods pbt search default] [--jobs 2] [--workers 8] [--out bench/out/pbt_vs_search]
        [--epochs E --interval I --burn-in B --ramp R] [--quick] [--table-only] [key=value ...]

`--epochs` and the PBT schedule options replace every chosen dataset's preset (use another
`--out` for another budget); `key=value` words go to every job's config, after the method's own
(e.g. `model.kl_ic_scale=1e-6` with `--methods default`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from autolfads.analysis.metrics import session_metrics
from autolfads.commands.workflow import load_sessions
from autolfads.config import load_config
from autolfads.data.synthetic import simulate, simulate_to_file, write_session_file
from autolfads.pbt.population import run_pbt
from autolfads.train.fit import fit_single_model

REPO = Path(__file__).resolve().parents[1]
METHODS = ("pbt", "search", "default")


@dataclass(frozen=True)
class Dataset:
    """One benchmark dataset: its config, the PBT schedule for its budget, the test metrics shown."""

    config: str | None
    epochs: int  # per worker; the budget is workers x epochs
    interval: int  # PBT: epochs per generation
    burn_in: int  # PBT: epochs before the first exploit
    ramp: int  # KL/L2 warm-up of the population's workers (E epochs in all)
    scores: tuple[str, ...]  # test metrics in the table; the first is the headline
    overrides: tuple[str, ...] = field(default=())


SPIKE_SCORES = ("test/bps_ratio", "test/r2", "test/bps", "test/truth_bps")
DATASETS = {
    "anchor": Dataset(None, 60, 10, 20, 20, SPIKE_SCORES),
    "one_trial": Dataset(None, 100, 15, 30, 30, SPIKE_SCORES),
    "pmd": Dataset(None, 150, 25, 50, 50, ("test/co_bps", "test/bps"), ()),  # model: see below
    "emg": Dataset("emg", 80, 15, 30, 30, ("test/r2",)),
}
QUICK = {  # a smoke run of every path: tiny data, 2 workers, a few epochs
    name: Dataset(d.config, 6, 2, 2, 2, d.scores, d.overrides) for name, d in DATASETS.items()
}


SCHEDULE = ("epochs", "interval", "burn_in", "ramp")  # options that replace a dataset's preset


def budget(name: str, args: argparse.Namespace) -> Dataset:
    """The dataset's preset (or the quick one), with the schedule options given on the command line."""
    preset = (QUICK if args.quick else DATASETS)[name]
    given = {k: getattr(args, k) for k in SCHEDULE if getattr(args, k) is not None}
    return dataclasses.replace(preset, **given)


# --------------------------------------------------------------------------- data


def anchor_arrays(quick: bool) -> dict[str, np.ndarray]:
    """The chaotic-RNN anchor set with a test split: 3/1/1 trials per condition."""
    size = {"n_conditions": 20, "n_steps": 20} if quick else {"n_conditions": 400}
    return simulate(
        "chaotic-rnn",
        seed=0,
        g=2.5,
        trials_per_condition=5,
        valid_fraction=0.2,
        test_fraction=0.2,
        **size,
    )


def one_trial_arrays(anchor: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One non-test trial of each condition (train/valid by condition, 80/20); the anchor's test."""
    rng = np.random.default_rng(1)
    pool = {"train": anchor["train_condition"], "valid": anchor["valid_condition"]}
    conditions = np.unique(anchor["test_condition"])
    valid_conditions = rng.choice(conditions, size=len(conditions) // 5, replace=False)
    picked: dict[str, list[tuple[str, int]]] = {"train": [], "valid": []}
    for c in conditions:
        # the condition's first train trial (its valid trial never trains: same origin for all)
        row = int(np.flatnonzero(pool["train"] == c)[0])
        picked["valid" if c in valid_conditions else "train"].append(("train", row))
    out: dict[str, np.ndarray] = {"conversion_factor": anchor["conversion_factor"]}
    per_trial = [k[len("train_") :] for k in anchor if k.startswith("train_")]
    for split, rows in picked.items():
        for key in per_trial:
            out[f"{split}_{key}"] = np.stack([anchor[f"{src}_{key}"][r] for src, r in rows])
    for key in per_trial:
        out[f"test_{key}"] = anchor[f"test_{key}"]
    return out


def pmd_example():
    """examples/pmd_datahigh.py as a module: its data preparation and model sizes."""
    if str(REPO / "examples") not in sys.path:
        sys.path.insert(0, str(REPO / "examples"))
    import pmd_datahigh

    return pmd_datahigh


def pmd_file(path: Path) -> Path | None:
    """DataHigh PMd example 2 written as the example does (68/22/22 trials); None if absent."""
    pmd_datahigh = pmd_example()
    source = pmd_datahigh.DEFAULT_DATA
    if not (source / pmd_datahigh.NPZ_NAME).is_file():
        print(f"pmd: {source / pmd_datahigh.NPZ_NAME} not found, skipped", flush=True)
        return None
    args = argparse.Namespace(
        data=str(source), bin_ms=20, split_seed=0, heldout_fraction=0.25, test_fraction=0.2
    )
    pmd_datahigh.prepare_session(args, path)
    return path


def pmd_overrides() -> tuple[str, ...]:
    """The example's model sizes; its PBT schedule is set by the dataset's budget here."""
    return tuple(o for o in pmd_example().MODEL if not o.startswith(("pbt.", "trainer.ramp")))


def build_data(name: str, folder: Path, quick: bool) -> Path | None:
    """The dataset's session file (written once), or None if its source is missing."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.h5"
    if path.is_file():
        return path
    attrs = {"benchmark": "pbt_vs_search", "dataset": name, "quick": quick}
    if name == "anchor":
        return write_session_file(path, anchor_arrays(quick), attrs)
    if name == "one_trial":
        return write_session_file(path, one_trial_arrays(anchor_arrays(quick)), attrs)
    if name == "pmd":
        return pmd_file(path)
    if name == "emg":
        size = ["n_conditions=6", "trials_per_condition=5"] if quick else []
        return simulate_to_file(
            "emg", path, seed=0, overrides=["valid_fraction=0.2", "test_fraction=0.2", *size]
        )
    raise SystemExit(f"error: --datasets {name}: expected one of {', '.join(DATASETS)}")


# --------------------------------------------------------------------------- fits


def job_config(name: str, data: Dataset, method: str, seed: int, workers: int, extra: list[str]):
    """The resolved config of one job (`extra`: the command line's `key=value` words, last)."""
    overrides = [f"seed={seed}", "pbt.backend=inline", *data.overrides]
    if name == "pmd":
        overrides += pmd_overrides()
    if method == "default":
        overrides += [f"trainer.max_epochs={workers * data.epochs}"]
    else:
        overrides += [
            f"pbt.num_workers={workers}",
            f"trainer.max_epochs={data.epochs}",
            f"trainer.ramp_epochs={data.ramp}",
            f"pbt.perturbation_interval={data.interval}",
            f"pbt.burn_in_period={data.burn_in}",
            "pbt.patience=100000",  # equal compute: no plateau stop
        ]
    if method == "search":
        cfg = load_config(data.config, overrides)
        draw_all = [f"pbt.hps.{hp}.init=null" for hp in cfg.pbt.hps if "init" in cfg.pbt.hps[hp]]
        overrides += ["pbt.exploit.method=none", *draw_all]
    return load_config(data.config, [*overrides, *extra])


def run_job(name: str, method: str, seed: int, args: argparse.Namespace) -> dict:
    """Fit one (dataset, method, seed), score the chosen model on every split; the job's record."""
    data = budget(name, args)
    path = build_data(name, Path(args.out) / "data", args.quick)
    if path is None:
        return {"dataset": name, "method": method, "seed": seed, "skipped": "no data"}
    cfg = job_config(name, data, method, seed, args.workers, args.overrides)
    sessions = load_sessions([str(path)], cfg, quiet=True)
    start = time.perf_counter()
    if method == "default":
        log_dir = Path(args.out) / "fitlogs" / f"{name}-{method}-{seed}"  # the epochs' scores
        log_dir.mkdir(parents=True, exist_ok=True)
        fit = fit_single_model(cfg, sessions, log_dir, quiet=True)
        model, epochs, worker_epochs = fit.model, fit.epochs_run, fit.epochs_run
        chosen = {"best_epoch": fit.best_epoch, "stop": fit.stop_reason}
    else:
        result = run_pbt(cfg, sessions, None, quiet=True)
        model, epochs = result.model, result.epochs
        worker_epochs = result.epochs * args.workers
        chosen = {"best_worker": result.best.worker, "best_generation": result.best.generation}
    wall = time.perf_counter() - start
    outputs = model.posterior(sessions, n_samples=int(cfg.trainer.samples))[0]
    params = {split: fields["output_params"] for split, fields in outputs.items()}
    metrics = session_metrics(params, sessions[0], str(cfg.model.reconstruction))
    return {
        "dataset": name,
        "method": method,
        "seed": seed,
        "epochs": epochs,
        "worker_epochs": worker_epochs,
        "wall_s": round(wall, 1),
        "metrics": {k: float(v) for k, v in metrics.items()},
        "hps": {k: float(v) for k, v in model.hps.items()},
        **chosen,
    }


# --------------------------------------------------------------------------- jobs and table


def job_path(out: Path, name: str, method: str, seed: int) -> Path:
    return out / "jobs" / f"{name}-{method}-{seed}.json"


def run_all(args: argparse.Namespace) -> None:
    """Every missing job, `--jobs` at a time, each in its own process (`--one`)."""
    out = Path(args.out)
    todo = [
        (d, m, s)
        for d in args.datasets
        for s in args.seeds
        for m in args.methods
        if not job_path(out, d, m, s).is_file()
    ]
    for name in args.datasets:  # data first, once, before jobs race to write it
        build_data(name, out / "data", args.quick)
    running: list[tuple[subprocess.Popen, str]] = []
    while todo or running:
        while todo and len(running) < args.jobs:
            d, m, s = todo.pop(0)
            cmd = [sys.executable, __file__, "--one", f"{d}:{m}:{s}", "--out", str(out)]
            cmd += args.overrides
            cmd += ["--workers", str(args.workers)] + (["--quick"] if args.quick else [])
            for option in SCHEDULE:
                if getattr(args, option) is not None:
                    cmd += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
            running.append((subprocess.Popen(cmd), f"{d}:{m}:{s}"))
            print(f"started {d} {m} seed {s}", flush=True)
        time.sleep(2)
        for proc, label in list(running):
            if proc.poll() is not None:
                running.remove((proc, label))
                print(f"finished {label} (exit {proc.returncode})", flush=True)


def one_job(spec: str, args: argparse.Namespace) -> None:
    name, method, seed = spec.split(":")
    torch.set_num_threads(1)
    record = run_job(name, method, int(seed), args)
    record["machine"] = f"{platform.machine()} {platform.processor()}, 1 thread".strip()
    record["torch"] = torch.__version__
    record["date"] = time.strftime("%Y-%m-%d")
    path = job_path(Path(args.out), name, method, int(seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)
    print(json.dumps({k: v for k, v in record.items() if k != "hps"}), flush=True)


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    a = np.asarray(values)
    return f"{a.mean():.3f} ± {a.std(ddof=1) if a.size > 1 else 0.0:.3f}"


def table(args: argparse.Namespace) -> str:
    """The markdown table of every finished job: one row per dataset and method."""
    out = Path(args.out)
    records = [json.loads(p.read_text()) for p in sorted((out / "jobs").glob("*.json"))]
    lines = []
    for name in args.datasets:
        data = budget(name, args)
        rows = [r for r in records if r["dataset"] == name and "skipped" not in r]
        if not rows:
            continue
        lines += [
            f"\n**{name}** (budget {args.workers} x {data.epochs} worker-epochs; test split)\n",
            "| method | seeds | " + " | ".join(data.scores) + " | worker-epochs | wall s |",
            "|---" * (len(data.scores) + 4) + "|",
        ]
        for method in args.methods:
            mine = [r for r in rows if r["method"] == method]
            if not mine:
                continue
            cells = [
                _mean_std([r["metrics"][k] for r in mine if k in r["metrics"]]) for k in data.scores
            ]
            we = _mean_std([r["worker_epochs"] for r in mine]).replace(".000", "")
            wall = np.mean([r["wall_s"] for r in mine])
            seeds = ",".join(str(r["seed"]) for r in mine)
            lines.append(f"| {method} | {seeds} | " + " | ".join(cells) + f" | {we} | {wall:.0f} |")
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    (out / "results.json").write_text(json.dumps(records, indent=1))
    return text


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--workers", type=int, default=8, help="N: population size and search size")
    p.add_argument("--epochs", type=int, help="E: epochs per worker (default: the dataset's)")
    p.add_argument(
        "--interval", type=int, help="PBT epochs per generation (default: the dataset's)"
    )
    p.add_argument("--burn-in", type=int, help="PBT epochs before the first exploit")
    p.add_argument("--ramp", type=int, help="the workers' KL/L2 warm-up epochs")
    p.add_argument("--jobs", type=int, default=2, help="jobs run at a time (one thread each)")
    p.add_argument("--out", default="bench/out/pbt_vs_search")
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny data, few epochs")
    p.add_argument("--table-only", action="store_true", help="only print the table of done jobs")
    p.add_argument("overrides", nargs="*", help="key=value config words for every job")
    p.add_argument("--one", metavar="DATASET:METHOD:SEED", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.workers = min(args.workers, 2)
        if args.out == p.get_default("out"):
            args.out += "_quick"
    return args


def main() -> None:
    args = parse_args()
    if args.one:
        one_job(args.one, args)
        return
    if not args.table_only:
        run_all(args)
    print(table(args))


if __name__ == "__main__":
    main()
