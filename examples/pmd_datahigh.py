"""AutoLFADS on a real recording: macaque premotor cortex (PMd) during delayed reaches.

The data are DataHigh's example 2 (Byron Yu's lab; see the README.md next to the data):
112 trials x 1018 ms x 61 neurons at 1 ms, two reach conditions, no kinematics. The script

1. bins the first 1000 ms at 20 ms (50 bins), holds out ~25 % of the neurons (chosen at random with
   a fixed seed; they are reconstruction-only channels appended last, so `{split}_encod_data` has
   N_in channels and `{split}_recon_data` N_in + N_out), splits the trials of each condition
   60/20/20 into train, valid and test (68/22/22 trials) and writes the session file of
   docs/data-format.md (`OUT/pmd_datahigh.h5`, with `test_recon_data`);
2. runs AutoLFADS on it (`autolfads run`, through `autolfads.cli.main`) into `OUT/autolfads/`;
3. scores co-bps (bits/spike on the held-out neurons) of the AutoLFADS rates
   (`autolfads.analysis.evaluate`) and of a smoothing + Poisson GLM baseline
   (`autolfads.analysis.baselines`) on the test trials, prints both (and the valid scores) and
   writes `OUT/co_bps.json`.

Usage, from the repository root:

    .venv/bin/python examples/pmd_datahigh.py -o pmd_out               # ~8 min on 2 cores
    .venv/bin/python examples/pmd_datahigh.py -o pmd_out --baseline-only
    .venv/bin/python examples/pmd_datahigh.py -o pmd_out --workers 16 --epochs 600 --overwrite \\
        pbt.hps.dropout_rate.max=0.7        # extra key=value words go to `autolfads run`

PBT ranks workers by their valid-split loss (held-in and held-out neurons), so valid co-bps
flatters AutoLFADS a little; the test trials are seen by no selection and give the honest
comparison. The GLM is fit on the train trials; its settings are fixed beforehand, not tuned on
valid or test.
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

from autolfads import cli
from autolfads._atomic import atomic_path
from autolfads.analysis.baselines import session_glm_co_bps
from autolfads.analysis.evaluate import evaluate_run
from autolfads.data import read_session

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "datahigh_pmd"
NPZ_NAME = "ex2_rawspiketrains_trials_1ms.npz"

# A model for ~90 train trials x 50 bins x 46 neurons: small encoders and generator, a one-dimensional
# inferred input (task events need not fall at the same time in every trial); dropout, coordinated
# dropout, L2 and KL weights are searched by PBT over the packaged default ranges.
BURN_IN, INTERVAL = 50, 25  # PBT: epochs before the first exploit, then epochs per generation
MODEL = [
    "model.ic_enc_dim=32",
    "model.ci_enc_dim=16",
    "model.con_dim=16",
    "model.co_dim=1",
    "model.ic_dim=32",
    "model.gen_dim=64",
    "model.fac_dim=12",
    "datamodule.batch_size=23",  # 3 steps per epoch on 68 train trials
    "trainer.ramp_epochs=50",
    "trainer.samples=50",
    f"pbt.burn_in_period={BURN_IN}",
    f"pbt.perturbation_interval={INTERVAL}",
    "pbt.patience=6",
]


# --------------------------------------------------------------------------- data


def load_binned_spikes(
    data_dir: Path, bin_ms: int, window_ms: int = 1000
) -> tuple[np.ndarray, ...]:
    """Spike counts (B, T, N) in `bin_ms` bins over the first `window_ms` ms, and condition (B,)."""
    path = data_dir / NPZ_NAME
    if not path.is_file():
        raise SystemExit(f"error: {path}: no such file (pass --data DIR holding {NPZ_NAME})")
    with np.load(path) as npz:
        spikes_ms, condition = npz["spikes"], npz["condition"].astype(np.int64)  # (B, 1018, N)
    if window_ms % bin_ms or window_ms > spikes_ms.shape[1]:
        raise SystemExit(f"error: --bin-ms {bin_ms}: expected a divisor of {window_ms} ms")
    n_trials, _, n_neurons = spikes_ms.shape
    cropped = spikes_ms[:, :window_ms].astype(np.int64)
    counts = cropped.reshape(n_trials, window_ms // bin_ms, bin_ms, n_neurons).sum(axis=2)
    return counts, condition  # (B, T, N), (B,)


def choose_heldout(
    n_neurons: int, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, ...]:
    """Held-in and held-out neuron indices (each sorted): a random `fraction` of the neurons is held out."""
    n_out = int(round(fraction * n_neurons))
    heldout = np.sort(rng.choice(n_neurons, size=n_out, replace=False))
    return np.setdiff1d(np.arange(n_neurons), heldout), heldout


def split_within_condition(
    condition: np.ndarray,
    valid_fraction: float,
    rng: np.random.Generator,
    test_fraction: float = 0.0,
) -> dict[str, np.ndarray]:
    """Sorted trial indices of each split, stratified by condition: 'train', 'valid' and, with
    `test_fraction` > 0, 'test' (that fraction of each condition's trials, at least one).

    The valid trials are drawn first, as without a test split, so adding one takes its trials
    from train and leaves valid as it was.
    """
    valid = []
    for c in np.unique(condition):
        trials = np.flatnonzero(condition == c)
        n_valid = max(1, int(round(valid_fraction * trials.size)))
        valid.append(rng.choice(trials, size=n_valid, replace=False))
    valid_inds = np.sort(np.concatenate(valid))
    splits = {"valid": valid_inds}
    if test_fraction > 0:
        test = []
        for c in np.unique(condition):
            trials = np.setdiff1d(np.flatnonzero(condition == c), valid_inds)
            n_test = max(1, int(round(test_fraction * np.count_nonzero(condition == c))))
            if n_test >= trials.size:
                raise SystemExit(
                    f"error: --test-fraction {test_fraction}: condition {c} would have no "
                    "train trials left"
                )
            test.append(rng.choice(trials, size=n_test, replace=False))
        splits["test"] = np.sort(np.concatenate(test))
    held = np.concatenate(list(splits.values()))
    return {"train": np.setdiff1d(np.arange(condition.size), held), **splits}


def session_arrays(
    counts: np.ndarray,
    condition: np.ndarray,
    heldin: np.ndarray,
    heldout: np.ndarray,
    split_inds: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """The docs/data-format.md datasets: held-in encod data, held-in + held-out recon data, and labels."""
    arrays: dict[str, np.ndarray] = {}
    recon_order = np.concatenate([heldin, heldout])  # held-out neurons are the last channels
    for split, inds in split_inds.items():
        arrays[f"{split}_encod_data"] = counts[inds][:, :, heldin].astype(np.float32)
        arrays[f"{split}_recon_data"] = counts[inds][:, :, recon_order].astype(np.float32)
        arrays[f"{split}_inds"] = inds.astype(np.int64)
        arrays[f"{split}_condition"] = condition[inds]
    arrays["heldin_neurons"] = heldin.astype(np.int64)  # column indices in the original recording
    arrays["heldout_neurons"] = heldout.astype(np.int64)
    return arrays


def write_session(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write the datasets to a new HDF5 file, atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as file:
        for key, value in arrays.items():
            file.create_dataset(key, data=value)
    return path


def prepare_session(args: argparse.Namespace, path: Path) -> dict[str, object]:
    """Bin, hold out, split and write the session file; returns a summary of the data."""
    counts, condition = load_binned_spikes(Path(args.data), args.bin_ms)
    rng = np.random.default_rng(args.split_seed)
    heldin, heldout = choose_heldout(counts.shape[2], args.heldout_fraction, rng)
    splits = split_within_condition(condition, 0.2, rng, test_fraction=args.test_fraction)
    write_session(path, session_arrays(counts, condition, heldin, heldout, splits))
    return {
        "file": str(path),
        "bin_ms": args.bin_ms,
        "n_bins": int(counts.shape[1]),
        **{f"{split}_trials": int(inds.size) for split, inds in splits.items()},
        "heldin_neurons": int(heldin.size),
        "heldout_neurons": [int(i) for i in heldout],
        "split_seed": args.split_seed,
        "mean_rate_hz": float(counts.mean() * 1000 / args.bin_ms),
    }


# --------------------------------------------------------------------------- AutoLFADS


def run_autolfads(args: argparse.Namespace, data: Path, run_dir: Path, extra: list[str]) -> float:
    """`autolfads run DATA -o RUN_DIR ...`; returns the wall time in seconds (exits on failure)."""
    argv = ["run", str(data), "-o", str(run_dir), "--seed", str(args.seed)]
    argv += ["--resume"] if args.resume else ["--overwrite"] if args.overwrite else []
    argv += MODEL + [
        f"pbt.backend={args.backend}",
        f"pbt.num_workers={args.workers}",
        f"trainer.max_epochs={args.epochs}",
    ]
    argv += extra
    print("autolfads " + " ".join(argv), flush=True)
    if args.backend == "inline":
        # Batched workers of a model this small run fastest on one thread; two threads on busy
        # shared cores were 6x slower here (8 workers, 5 epochs: 132 s against 21 s).
        torch.set_num_threads(1)
    start = time.perf_counter()
    status = cli.main(argv)
    if status != 0:
        raise SystemExit(status)
    return time.perf_counter() - start


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Options of this script, and the `key=value` words passed on to `autolfads run`."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help=f"folder holding {NPZ_NAME}")
    p.add_argument("-o", "--out", default="pmd_datahigh_out", help="output folder")
    p.add_argument("--workers", type=int, default=12, help="PBT population size")
    p.add_argument("--epochs", type=int, default=300, help="epochs per worker (PBT budget)")
    p.add_argument(
        "--backend",
        default="inline",
        choices=["inline", "ray", "auto"],
        help="pbt.backend: inline = one process, one thread (steady on a shared machine)",
    )
    p.add_argument("--seed", type=int, default=0, help="AutoLFADS seed")
    p.add_argument(
        "--split-seed", type=int, default=0, help="seed of the held-out neurons and trial split"
    )
    p.add_argument("--bin-ms", type=int, default=20)
    p.add_argument("--heldout-fraction", type=float, default=0.25)
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="fraction of each condition's trials in the test split (scored, never selected on)",
    )
    p.add_argument(
        "--smooth-ms", type=float, default=50.0, help="GLM baseline: Gaussian kernel std"
    )
    p.add_argument("--l2", type=float, default=1e-2, help="GLM baseline: ridge penalty")
    p.add_argument(
        "--baseline-only", action="store_true", help="write the data, score the GLM, stop"
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted AutoLFADS run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run")
    args, extra = p.parse_known_args(argv)
    unknown = [w for w in extra if "=" not in w]
    if unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args, extra


def main(argv: list[str] | None = None) -> int:
    """Prepare the data, score the baseline, run and score AutoLFADS, write OUT/co_bps.json."""
    args, extra = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_path = out / "pmd_datahigh.h5"
    summary = {"data": prepare_session(args, data_path)}
    session = read_session(data_path)
    scored = [s for s in ("valid", "test") if s in session.recon]
    final = scored[-1]  # the split the comparison is scored on: test when there is one
    smooth_bins = args.smooth_ms / args.bin_ms
    glm = {
        s: session_glm_co_bps(session, smooth_bins=smooth_bins, l2=args.l2, split=s) for s in scored
    }
    summary["glm"] = {
        "co_bps": glm[final],
        "split": final,
        **{f"{s}/co_bps": v for s, v in glm.items()},
        "smooth_ms": args.smooth_ms,
        "l2": args.l2,
    }
    scores = ", ".join(f"{s} co-bps {v:.4f}" for s, v in glm.items())
    print(f"smoothing + Poisson GLM baseline: {scores}", flush=True)
    if not args.baseline_only:
        run_dir = out / "autolfads"
        wall = run_autolfads(args, data_path, run_dir, extra)
        metrics = evaluate_run(run_dir)["sess0"]
        summary["autolfads"] = {
            "co_bps": metrics[f"{final}/co_bps"],
            "split": final,
            "metrics": metrics,
            "workers": args.workers,
            "epochs": args.epochs,
            "overrides": MODEL + extra,
            "wall_s": wall,
        }
        for s in scored:
            role = "seen by no selection" if s == "test" else "PBT selected on these trials"
            print(
                f"{s} ({role}): AutoLFADS co-bps {metrics[f'{s}/co_bps']:.4f}, "
                f"GLM baseline {glm[s]:.4f}"
            )
        print(f"AutoLFADS wall {wall / 60:.1f} min")
    with atomic_path(out / "co_bps.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'co_bps.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
