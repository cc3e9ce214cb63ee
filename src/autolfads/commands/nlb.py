"""`autolfads convert nwb` and `autolfads nlb-submission`: NWB files in, NLB submission files out.

The whole path (README, "NWB and the Neural Latents Benchmark"): an NWB file ->
`convert nwb` -> a session file -> `run` or `train` -> `nlb-submission` -> the file that the
benchmark's evaluation (EvalAI) takes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autolfads.data.nlb import nwb_to_session
from autolfads.errors import UsageError
from autolfads.outputs.nlb_submission import write_nlb_submission

__all__ = ["convert_nwb_command", "nlb_submission_command"]


def convert_nwb_command(args: argparse.Namespace) -> int:
    """Bin an NWB file into a session file (`autolfads.data.nlb.nwb_to_session`) and say what."""
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"{out}: is a folder; expected the session file to write (OUT.h5)")
    summary = nwb_to_session(
        args.nwb,
        out,
        bin_ms=args.bin_ms,
        align_field=args.align,
        window_ms=tuple(args.window) if args.window is not None else None,
        fp_ms=args.fp_ms,
        behavior_key=args.behavior,
        condition_field=args.condition,
        heldout_units=args.heldout_units,
        dataset=args.dataset,
        test_nwb=args.test,
    )
    trials = ", ".join(f"{n} {split}" for split, n in summary.trials.items())
    forward = f" + {summary.fp_steps} forward" if summary.fp_steps else ""
    print(
        f"wrote {out}: {trials} trials; {len(summary.heldin_units)} held-in + "
        f"{len(summary.heldout_units)} held-out units; {summary.encod_seq_len}{forward} bins "
        f"of {args.bin_ms:g} ms"
    )
    if summary.dropped_trials:
        print(f"note: {summary.dropped_trials} trials without an alignment time were left out")
    return 0


def nlb_submission_command(args: argparse.Namespace) -> int:
    """Write the NLB submission file of a finished run and describe each group."""
    dest = Path(args.output) if args.output else Path(args.out) / "nlb_submission.h5"
    if dest.is_dir():
        raise UsageError(f"{dest}: is a folder; expected the submission file to write (.h5)")
    groups = write_nlb_submission(args.out, dest)
    for group in groups:
        shapes = ", ".join(f"{k} {v.shape}" for k, v in group.arrays.items())
        print(
            f"{group.name} (eval = {group.eval_split} trials, from {group.source.name}): {shapes}"
        )
    print(f"wrote {dest}")
    return 0
