"""`autolfads train DATA... -o OUT`: one LFADS model, no PBT, the same outputs as `run`.

`autolfads train NEW.h5 --from CKPT` fits one new session onto a trained model: only its read-in,
read-out and observation model are trained, everything else is the checkpoint's, frozen
(`autolfads.train.transfer`).
"""

from __future__ import annotations

import argparse

from autolfads.analysis.report import report_at_end
from autolfads.commands.workflow import (
    config_from_args,
    load_sessions,
    prepare_out_dir,
    train_summary,
    write_final_outputs,
)
from autolfads.config import split_overrides
from autolfads.errors import UsageError
from autolfads.train.fit import fit_single_model
from autolfads.train.transfer import Transfer

__all__ = ["train_command"]


def train_command(args: argparse.Namespace) -> int:
    """Validate everything, train, write outputs. Returns the exit status."""
    paths, overrides = split_overrides(args.items)
    from_ckpt = getattr(args, "from_ckpt", None)
    if args.resume:
        if from_ckpt is not None:
            raise UsageError("autolfads train: --from starts a new fit; it cannot --resume")
        raise UsageError(
            "autolfads train: --resume is for `autolfads run`; train again with --overwrite"
        )
    transfer = Transfer.load(from_ckpt) if from_ckpt is not None else None
    if transfer is None:
        cfg = config_from_args(args, overrides)
        sessions = load_sessions(paths, cfg, quiet=args.quiet)
    else:  # the checkpoint's config under the command's; its structure; data checked against it
        cfg = config_from_args(args, overrides, transfer.config_base(), str(transfer.path))
        transfer.check_config(cfg)
        sessions = load_sessions(paths, cfg, quiet=args.quiet, read=transfer.read_sessions)
    out = prepare_out_dir(args.out, overwrite=args.overwrite)
    result = fit_single_model(cfg, sessions, out, quiet=args.quiet, transfer=transfer)
    written = write_final_outputs(out, result.model, sessions, cfg, out / "fitlog.csv")
    if not args.quiet:
        if transfer is not None:
            print(
                f"fitted {sessions[0].name} onto {transfer.path}: its read-in, read-out and "
                "observation model trained, every other weight the checkpoint's"
            )
        print(train_summary(result))
        print(f"outputs in {out}: " + ", ".join(p.name for p in written))
    report_at_end(out, quiet=args.quiet)
    return 0
