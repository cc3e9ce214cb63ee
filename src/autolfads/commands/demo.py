"""`autolfads demo`: simulate chaotic-RNN data, run a CPU-sized AutoLFADS on it, write the outputs
and the report."""

from __future__ import annotations

import argparse
import time

from autolfads.analysis.evaluate import evaluate_run
from autolfads.analysis.report import report_at_end
from autolfads.commands.workflow import load_sessions, prepare_out_dir, write_final_outputs
from autolfads.config import check_device, load_config
from autolfads.data.synthetic import simulate_to_file
from autolfads.pbt.population import run_pbt

__all__ = ["demo_command", "DEMO_DATA"]

# The demo data set: chaotic RNN (LFADS 2018), 100 conditions x 5 trials, 50 bins of 10 ms, 50 neurons.
DEMO_DATA = ["g=1.5", "n_conditions=100", "trials_per_condition=5", "n_steps=50"]


def demo_command(args: argparse.Namespace) -> int:
    """Simulate, run AutoLFADS with the packaged `demo` config, write outputs, say where they are."""
    check_device(args.device)
    out = prepare_out_dir(args.out, resume=args.resume, overwrite=args.overwrite)
    cfg = load_config("demo", [f"device={args.device}"])
    n = int(cfg.pbt.num_workers)
    print(
        f"autolfads demo: simulating a chaotic-RNN data set (400 train / 100 valid trials, 50 neurons),\n"
        f"then running AutoLFADS with {n} workers on {args.device} (a few minutes on a 2-core CPU).\n"
        f"Ctrl-C stops it; `autolfads demo -o {out} --resume` continues.",
        flush=True,
    )
    data_path = out / "demo_data.h5"
    if not data_path.exists():
        simulate_to_file("chaotic-rnn", data_path, seed=int(cfg.seed), overrides=DEMO_DATA)
    sessions = load_sessions([str(data_path)], cfg)
    start = time.perf_counter()
    try:
        result = run_pbt(cfg, sessions, out, resume=args.resume)
    except KeyboardInterrupt:
        print(f"interrupted: run `autolfads demo -o {out} --resume` to continue")
        return 130
    write_final_outputs(out, result.model, sessions, cfg, out / "fitlog.csv")
    minutes = (time.perf_counter() - start) / 60
    r2 = evaluate_run(out)["sess0"]["valid/r2"]  # from the outputs just written
    report = report_at_end(out, quiet=True)  # a failure warns on stderr and keeps the run
    b = result.best
    print(
        f"\ndone in {minutes:.1f} min: {result.generations} generations ({result.stop_reason}).\n"
        f"best worker {b.worker} (generation {b.generation}): valid/recon_smth {b.score:.4f}, "
        f"rate R^2 vs the true rates {r2:.3f}\n"
        f"outputs in {out}/:\n"
        f"  autolfads.zip           fitlog.csv + lfads_output_sess0.h5 + model.ckpt (NeuroCAAS layout)\n"
        f"  lfads_output_sess0.h5   inferred rates (valid_output_params), factors, inputs, ...\n"
        f"  fitlog.csv              one row per worker per epoch; pbt_history.csv: every exploit/explore\n"
        f"  model.ckpt              autolfads.LFADS.load_from_checkpoint('{out}/model.ckpt')"
    )
    if report is not None:
        print(f"  report/index.html       plots of the fit on one page: open {report} in a browser")
    return 0
