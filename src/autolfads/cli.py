"""The `autolfads` command line (README).

Exit status: 0 done; 2 bad input or usage (one line on stderr); 1 internal error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from autolfads.errors import AutoLFADSError, UsageError

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _cmd_simulate(args: argparse.Namespace) -> int:
    from autolfads.data.synthetic_sessions import write_simulation

    # every word is an override: a word without "=" is an error there, not silently dropped
    paths = write_simulation(args.name, args.out, seed=args.seed, overrides=args.overrides)
    if len(paths) == 1:
        print(f"wrote {paths[0]}")
    else:
        print(f"wrote {len(paths)} sessions: {paths[0]} ... {paths[-1]}")
    return EXIT_OK


def _cmd_train(args: argparse.Namespace) -> int:
    from autolfads.commands.train import train_command

    return train_command(args)


def _cmd_sample(args: argparse.Namespace) -> int:
    from autolfads.commands.sample import sample_command

    return sample_command(args)


def _cmd_run(args: argparse.Namespace) -> int:
    from autolfads.commands.run import run_command

    return run_command(args)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from autolfads.analysis.evaluate import evaluate_command

    return evaluate_command(args)


def _cmd_report(args: argparse.Namespace) -> int:
    from autolfads.analysis.report import report_command

    return report_command(args)


def _cmd_fixed_points(args: argparse.Namespace) -> int:
    from autolfads.analysis.fixed_points import fixed_points_command

    fixed_points_command(
        args.ckpt,
        args.data,
        args.out,
        n_inits=args.n_inits,
        device=args.device,
        seed=args.seed,
        bin_ms=args.bin_ms,
        speed_tol=args.speed_tol,
    )
    return EXIT_OK


def _cmd_convert_nwb(args: argparse.Namespace) -> int:
    from autolfads.commands.nlb import convert_nwb_command

    return convert_nwb_command(args)


def _cmd_nlb_submission(args: argparse.Namespace) -> int:
    from autolfads.commands.nlb import nlb_submission_command

    return nlb_submission_command(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from autolfads.commands.demo import demo_command

    return demo_command(args)


def _add_fit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "items", nargs="+", metavar="DATA|key=value", help="HDF5 file(s), then overrides"
    )
    p.add_argument("-c", "--config", help="YAML config file or packaged config name")
    p.add_argument("-o", "--out", default="autolfads_out", help="output folder")
    p.add_argument("--device", help="cpu | cuda | cuda:N (overrides device=)")
    p.add_argument("--seed", type=int, help="random seed (overrides seed=)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in OUT")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--samples", type=int, help="posterior samples averaged in the outputs")
    p.add_argument("--quiet", action="store_true", help="no progress display")


def _add_convert_nwb_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `convert nwb`, one per argument of `autolfads.data.nlb.nwb_to_session`."""
    p.add_argument("nwb", metavar="FILE.nwb", help="the NWB file (NLB: the *_train.nwb file)")
    p.add_argument("out", metavar="OUT.h5", help="the session file to write (replaced)")
    p.add_argument("--bin-ms", type=float, default=5.0, help="bin width in ms (default 5)")
    p.add_argument(
        "--align",
        metavar="FIELD",
        help="trials-table column of alignment times (default: the dataset's, else start_time)",
    )
    p.add_argument(
        "--window",
        nargs=2,
        type=float,
        metavar=("START", "END"),
        help="window in ms around the alignment time (default: the dataset's, else the shortest trial)",
    )
    p.add_argument(
        "--fp-ms",
        type=float,
        help="forward-prediction ms after the window (default: the dataset's 200, else 0)",
    )
    p.add_argument(
        "--behavior", nargs="+", metavar="KEY", help="behaviour TimeSeries, e.g. hand_vel"
    )
    p.add_argument(
        "--condition",
        nargs="+",
        metavar="FIELD",
        help="trials-table column(s) labelling conditions (adds {split}_condition and psth)",
    )
    p.add_argument(
        "--heldout-units",
        nargs="+",
        type=int,
        metavar="ROW",
        help="units-table rows to hold out (default: the file's /units/heldout flags)",
    )
    p.add_argument(
        "--dataset",
        metavar="NAME",
        help="the NLB dataset (mc_maze, mc_rtt, area2_bump, dmfc_rsg, mc_maze_large, "
        "mc_maze_medium, mc_maze_small): recorded for nlb-submission; sets NLB's "
        "--align, --window and --fp-ms",
    )
    p.add_argument(
        "--test",
        metavar="FILE_test.nwb",
        help="the NLB *_test.nwb file: its test trials become test_encod_data",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command registered."""
    parser = _Parser(prog="autolfads", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    p = sub.add_parser("run", help="AutoLFADS: population-based training, best model, outputs, zip")
    _add_fit_arguments(p)
    p.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("train", help="one LFADS model, no PBT, same outputs")
    _add_fit_arguments(p)
    p.add_argument(
        "--from",
        dest="from_ckpt",
        metavar="CKPT",
        help="fit one new session onto this model.ckpt: only its read-in/read-out are trained",
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sample", help="posterior outputs from a saved model")
    p.add_argument("ckpt", help="model.ckpt")
    p.add_argument("data", nargs="+", help="HDF5 file(s), one per session")
    p.add_argument("-o", "--out", default="autolfads_sample", help="output folder")
    p.add_argument("--samples", type=int, default=50, help="posterior samples to average")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("simulate", help="synthetic data with ground truth")
    p.add_argument("name", help="chaotic-rnn | lorenz | oscillator | calcium | emg")
    p.add_argument("out", help="output HDF5 file (a folder with sessions=S)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("report", help="plots and an HTML page for a finished or running OUT")
    p.add_argument("out", help="the output folder of `autolfads run` or `train`")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("evaluate", help="metrics to stdout and OUT/metrics.json")
    p.add_argument("out")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("fixed-points", help="slow points of a trained generator")
    p.add_argument("ckpt", help="model.ckpt of a run")
    p.add_argument("data", nargs="*", help="session files whose visited states start the search")
    p.add_argument("-o", "--out", default=None, help="output folder (default: next to CKPT)")
    p.add_argument("--n-inits", type=int, default=256, help="searches started")
    p.add_argument("--bin-ms", type=float, default=None, help="bin width, for frequencies in Hz")
    p.add_argument("--speed-tol", type=float, default=1e-8, help="largest q(h) kept as a point")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_fixed_points)

    p = sub.add_parser("convert", help="another format into a session file (NWB)")
    formats = p.add_subparsers(dest="format", parser_class=_Parser, required=True)
    p = formats.add_parser("nwb", help="an NWB (NLB) file binned into trials (README)")
    _add_convert_nwb_arguments(p)
    p.set_defaults(func=_cmd_convert_nwb)

    p = sub.add_parser("nlb-submission", help="the NLB submission file of a run on NLB data")
    p.add_argument("out", help="the output folder of `autolfads run` or `train`")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE.h5",
        help="the submission file to write (default: OUT/nlb_submission.h5)",
    )
    p.set_defaults(func=_cmd_nlb_submission)

    p = sub.add_parser("demo", help="simulate + run + report on the built-in demo, CPU-sized")
    p.add_argument("-o", "--out", default="autolfads_demo")
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--resume", action="store_true")
    p.set_defaults(func=_cmd_demo)
    return parser


def parse_command_line(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """Parse `argv`, letting positional words (data paths, `key=value`) follow options.

    argparse stops filling a `nargs="*"`/`"+"` positional at the first option, so in
    `simulate NAME OUT --seed 1 k=v` the `k=v` would be "unrecognized"; such leftover words are
    appended to the command's `overrides`/`items` list instead.
    """
    args, extra = parser.parse_known_args(argv)
    target = next(
        (n for n in ("overrides", "items") if isinstance(getattr(args, n, None), list)), None
    )
    unknown = [w for w in extra if target is None or w.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if target is not None:
        getattr(args, target).extend(extra)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, dispatch, and map errors to exit codes."""
    parser = build_parser()
    try:
        args = parse_command_line(parser, argv)
        if args.version:
            from autolfads import __version__

            print(__version__)
            return EXIT_OK
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        return int(args.func(args) or 0)
    except AutoLFADSError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
