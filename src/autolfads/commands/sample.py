"""`autolfads sample CKPT DATA... -o OUT`: posterior outputs of a saved model on (new) data."""

from __future__ import annotations

import argparse

from autolfads.commands.workflow import prepare_out_dir
from autolfads.config import check_device
from autolfads.data import read_sessions, write_session_outputs
from autolfads.outputs.checkpoint import LFADS
from autolfads.outputs.files import output_path
from autolfads.outputs.posterior import as_output_datasets

__all__ = ["sample_command"]


def sample_command(args: argparse.Namespace) -> int:
    """Load the model, check the data against it, write lfads_output_sess{i}.h5 into OUT."""
    check_device(args.device)
    model = LFADS.load_from_checkpoint(args.ckpt, device=args.device)
    cfg_model = model.config.get("model", {})
    sessions = read_sessions(
        args.data,
        reconstruction=model.structure.reconstruction,
        allow_noninteger=bool(cfg_model.get("allow_noninteger", False)),
    )
    model.check_sessions(sessions)
    out = prepare_out_dir(args.out, overwrite=args.overwrite)
    posterior = model.posterior(sessions, n_samples=args.samples, seed=args.seed)
    for i, (sess, post) in enumerate(zip(sessions, posterior, strict=True)):
        path = output_path(out, i)
        write_session_outputs(sess.path, path, as_output_datasets(post))
        print(f"wrote {path}")
    return 0
