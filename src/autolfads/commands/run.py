"""`autolfads run DATA... -o OUT`: AutoLFADS, then the best worker's outputs and the zip."""

from __future__ import annotations

import argparse
import sys

from autolfads.analysis.report import report_at_end
from autolfads.commands.workflow import (
    config_from_args,
    load_sessions,
    pbt_summary,
    prepare_out_dir,
    write_final_outputs,
)
from autolfads.config import split_overrides
from autolfads.pbt.population import STATE_FILE, run_pbt

__all__ = ["run_command"]


def run_command(args: argparse.Namespace) -> int:
    """Validate everything, run the population, write outputs. Returns the exit status."""
    paths, overrides = split_overrides(args.items)
    if getattr(args, "address", None):
        overrides.append(f"pbt.address={args.address}")
    cfg = config_from_args(args, overrides)
    sessions = load_sessions(paths, cfg, quiet=args.quiet)
    out = prepare_out_dir(args.out, resume=args.resume, overwrite=args.overwrite)
    try:
        result = run_pbt(cfg, sessions, out, resume=args.resume, quiet=args.quiet)
    except KeyboardInterrupt:
        print(
            f"interrupted: the population is saved at its last finished generation in {out / STATE_FILE}; "
            "run the same command with --resume to continue",
            file=sys.stderr,
        )
        return 130
    written = write_final_outputs(out, result.model, sessions, cfg, out / "fitlog.csv")
    if not args.quiet:
        print(pbt_summary(result, str(cfg.pbt.metric)))
        print(f"outputs in {out}: " + ", ".join(p.name for p in written))
    report_at_end(out, quiet=args.quiet)
    return 0
