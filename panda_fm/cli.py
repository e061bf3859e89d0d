"""The ``panda-fm`` command line: one subcommand per job, each a thin wrapper over the library."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="panda-fm", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_forecast, _add_evaluate):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as err:
        logging.getLogger("panda_fm").error("%s", err)
        return 2


# --- forecast -------------------------------------------------------------------------------------


def _add_forecast(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("forecast", help="zero-shot forecast of a CSV or .npy series")
    p.set_defaults(handler=_forecast)


def _forecast(args: argparse.Namespace) -> int:
    raise NotImplementedError


# --- evaluate -------------------------------------------------------------------------------------


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="zero-shot benchmark of checkpoints and classical baselines on held-out systems",
        description="Forecast the same windows of every test system with each checkpoint and baseline; "
        "write OUT/report.json, OUT/report.md and PNG plots.",
    )
    p.add_argument("--checkpoint", nargs="+", default=[], metavar="DIR", help="checkpoint directories")
    p.add_argument(
        "--test",
        required=True,
        metavar="DATASET_DIR",
        help="dataset directory (its 'test' split), or 'founders' for the 20 held-out dysts founders",
    )
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="output directory for report and plots")
    p.add_argument("--horizons", nargs="+", type=int, default=[128, 256, 512], help="scored horizons (steps)")
    p.add_argument("--context-length", type=int, default=512, help="context steps each method sees")
    p.add_argument("--windows-per-system", type=int, default=5, metavar="K", help="windows drawn per system")
    p.add_argument(
        "--noise",
        nargs="+",
        type=float,
        default=[0.0],
        metavar="SIGMA",
        help="observation noise on the context, fraction of each channel's std; several levels allowed",
    )
    p.add_argument(
        "--rollout", type=int, default=2048, help="rollout steps for distributional metrics (0: off)"
    )
    p.add_argument(
        "--baselines",
        nargs="+",
        default=["all"],
        help="baselines to run: 'all', 'none', or names (mean naive linear_ar nvar analogue)",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds window positions and noise")
    p.add_argument("--max-systems", type=int, default=None, help="evaluate only the first N test systems")
    p.add_argument("--batch-size", type=int, default=32, help="windows per predict call")
    p.add_argument(
        "--founders-cache",
        default=None,
        metavar="DIR",
        help="where '--test founders' caches its trajectories (default ~/.cache/panda_fm/founders)",
    )
    p.add_argument(
        "--founders-ics", type=int, default=1, help="trajectories per founder for '--test founders'"
    )
    p.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    import shlex
    import sys
    from pathlib import Path

    from panda_fm.baselines import make_baselines
    from panda_fm.evaluate import EvalConfig, PipelineForecaster, evaluate
    from panda_fm.plotting import plot_report
    from panda_fm.report import write_report
    from panda_fm.systems.store import open_dataset
    from panda_fm.testsets import FounderTestsetConfig, founders_testset

    config = EvalConfig(
        horizons=tuple(args.horizons),
        context_length=args.context_length,
        windows_per_system=args.windows_per_system,
        noise=tuple(args.noise),
        rollout=args.rollout,
        seed=args.seed,
        batch_size=args.batch_size,
        max_systems=args.max_systems,
    )
    methods = [PipelineForecaster(path) for path in args.checkpoint]
    if args.baselines != ["none"]:
        methods += make_baselines("all" if args.baselines == ["all"] else args.baselines)
    if not methods:
        raise ValueError("nothing to evaluate: pass --checkpoint DIR and/or --baselines")
    if args.test == "founders":
        founders = FounderTestsetConfig(n_ics=args.founders_ics)
        default = Path.home() / ".cache" / "panda_fm" / f"founders-{founders.n_steps}x{founders.n_ics}"
        root = founders_testset(Path(args.founders_cache) if args.founders_cache else default, founders)
    else:
        root = Path(args.test)
    result = evaluate(methods, open_dataset(root), config)
    from_shell = Path(sys.argv[0]).name in ("panda-fm", "cli.py")  # not when main() is called in-process
    command = shlex.join(["panda-fm", *sys.argv[1:]]) if from_shell else None
    md = write_report(result.report, args.out, command=command)
    plot_report(result.report, result.samples, args.out)
    logging.getLogger("panda_fm").info("wrote %s", md)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
