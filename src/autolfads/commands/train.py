"""`autolfads train DATA... -o OUT`: one LFADS model, no PBT, the same outputs as `run`."""

from __future__ import annotations

import argparse

from autolfads.analysis.report import report_at_end
from autolfads.commands.workflow import (
    config_from_args,
    load_sessions,
    prepare_out_dir,
    write_final_outputs,
)
from autolfads.config import split_overrides
from autolfads.errors import UsageError
from autolfads.train.fit import fit_single_model

__all__ = ["train_command"]


def train_command(args: argparse.Namespace) -> int:
    """Validate everything, train, write outputs. Returns the exit status."""
    paths, overrides = split_overrides(args.items)
    if args.resume:
        raise UsageError(
            "autolfads train: --resume is for `autolfads run`; train again with --overwrite"
        )
    cfg = config_from_args(args, overrides)
    sessions = load_sessions(paths, cfg, quiet=args.quiet)
    out = prepare_out_dir(args.out, overwrite=args.overwrite)
    result = fit_single_model(cfg, sessions, out, quiet=args.quiet)
    written = write_final_outputs(out, result.model, sessions, cfg, out / "fitlog.csv")
    if not args.quiet:
        print(
            f"trained {result.epochs_run} epochs ({result.stop_reason}); best valid/recon_smth "
            f"{result.best_score:.4f} at epoch {result.best_epoch}"
        )
        print(f"outputs in {out}: " + ", ".join(p.name for p in written))
    report_at_end(out, quiet=args.quiet)
    return 0
