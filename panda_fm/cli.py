"""The ``panda-fm`` command line: one subcommand per job, each a thin wrapper over the library."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[argparse.Namespace], int]


class _HelpFormatter(argparse.HelpFormatter):
    """Help that ends each option with its default, unless it has none (None, False) or says it already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text, default = action.help or "", action.default
        if (
            not action.option_strings
            or action.required
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or default == []
            or "default" in text
        ):
            return action.help
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def _version() -> str:
    """The installed distribution's version; ``panda_fm.__version__`` when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("panda-fm")
    except PackageNotFoundError:
        from panda_fm import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="panda-fm", description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="on an error, show its full traceback")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_demo,
        _add_forecast,
        _add_convert,
        _add_generate,
        _add_merge,
        _add_evaluate,
        _add_pretrain,
        _add_finetune,
        _add_fit_chooser,
    ):
        add(sub)
    for subparser in sub.choices.values():
        subparser.formatter_class = _HelpFormatter
    for subparser in sub.choices.values():  # --debug also after the subcommand
        subparser.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="on an error, show its full traceback",
        )
    return parser


# Errors that mean "the input is wrong" (exit code 2, like argparse's usage errors); any other error exits 1.
_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    KeyError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
)
# The package's expected errors, reported by their message alone; anything else is reported with its type, as
# unexpected.
_EXPECTED_ERRORS: tuple[type[BaseException], ...] = (*_INPUT_ERRORS, OSError)


def main(argv: list[str] | None = None) -> int:
    """Run the ``panda-fm`` command line.

    Every error is reported as one line on stderr, ``panda-fm COMMAND: error: MESSAGE``, without a traceback
    (``--debug`` prints it first). Usage errors are argparse's.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when None.

    Returns:
        The exit code: 0 on success, 2 for usage and input errors (bad values, missing files or checkpoints),
        1 for other errors (network, disk, unexpected ones), 130 when interrupted (Ctrl-C), or a subcommand's
        own code.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    with warnings.catch_warnings():
        # a warning is one logged line, as an error is one line on stderr (--debug: both in full)
        if not getattr(args, "debug", False):
            warnings.showwarning = _log_warning
        try:
            return args.handler(args)
        except KeyboardInterrupt:
            _report_error(args, "interrupted")
            return 130
        except Exception as err:
            _report_error(args, _one_line(err))
            return 2 if isinstance(err, _INPUT_ERRORS) else 1


def _log_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """``warnings.showwarning`` for the command line: the message as one line of the log."""
    logging.getLogger("panda_fm").warning("%s", " ".join(str(message).split()))


def _one_line(err: Exception) -> str:
    """``err``'s message on one line; unexpected error types are named, with the way to see more."""
    if isinstance(err, KeyError) and len(err.args) == 1 and " " not in str(err.args[0]):
        text = f"no entry {err.args[0]!r}"  # a bare dict lookup: str(err) would be the key alone
    else:
        text = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
    if isinstance(err, _EXPECTED_ERRORS):
        return text
    return f"{type(err).__name__}: {text} (unexpected: rerun with --debug for the traceback, and please report it)"


def _report_error(args: argparse.Namespace, message: str) -> None:
    """Print ``message`` as one line on stderr, after the traceback when --debug is on."""
    if getattr(args, "debug", False):
        traceback.print_exc(file=sys.stderr)
    print(f"panda-fm {args.command}: error: {message}", file=sys.stderr)


# --- demo ----------------------------------------------------------------------------------------


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="zero-shot forecast of a held-out chaotic system, against baselines")
    p.add_argument(
        "--checkpoint",
        default="panda-fm-small",
        help="checkpoint directory, registered name or hub id (default: panda-fm-small, shipped in the package)",
    )
    p.add_argument("--system", default="Rossler", help="a dysts flow, e.g. one of the held-out founders")
    p.add_argument("--horizon", type=int, default=256, help="steps to forecast")
    p.add_argument("--out", default="demo", help="directory for the cached trajectory and the PNG")
    p.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from panda_fm.eval.demo import run_demo

    result = run_demo(args.checkpoint, args.out, system=args.system, horizon=args.horizon)
    log = logging.getLogger("panda_fm")
    log.info("%s, %d steps ahead, errors in units of the context's std:", result.system, result.horizon)
    for name, score in result.scores.items():
        log.info("  %-10s sMAPE %6.2f   MAE %6.3f", name, score["smape"], score["mae"])
    log.info("plot: %s", result.plot)
    return 0


# --- forecast / convert ---------------------------------------------------------------------------


def _add_forecast(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("forecast", help="zero-shot forecast of a series stored as .csv or .npy")
    p.add_argument(
        "--checkpoint", required=True, help="checkpoint directory, registered name (panda-fm-small) or hub id"
    )
    p.add_argument(
        "--input",
        required=True,
        help=".npy (T,), (T, C) or (B, T, C), or .csv (.tsv, .txt) with a column per channel: delimiter "
        "sniffed, header optional, empty cells missing",
    )
    p.add_argument(
        "--horizon", type=int, default=None, help="steps to forecast (default: the model's horizon)"
    )
    p.add_argument(
        "--out", required=True, help="where to write the forecast (.npy or .csv; missing folders are created)"
    )
    p.add_argument(
        "--plot", default=None, help="optional figure of context and forecast (.png, .pdf, .svg or .jpg)"
    )
    p.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--quantiles",
        nargs="+",
        type=float,
        default=None,
        metavar="LEVEL",
        help="write quantiles at these levels instead of the point forecast (a CSV column per channel and "
        "level, CHANNEL_qLEVEL; .npy (H, C, Q)) and draw a fan with --plot, e.g. --quantiles 0.1 0.5 0.9",
    )
    p.add_argument(
        "--observed",
        action="store_true",
        help="with --quantiles: quantiles of the values as they will be recorded, with the context's own "
        "observation noise added (default: of the noise-free state; the same on a clean series)",
    )
    p.set_defaults(handler=_forecast)


PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def _forecast(args: argparse.Namespace) -> int:
    from panda_fm.data.io import atomic_path, prepare_output, read_series_with_time, write_series
    from panda_fm.pipeline import PandaPipeline

    if args.observed and args.quantiles is None:
        raise ValueError(
            "--observed asks for quantiles of the recorded values: add --quantiles, e.g. 0.1 0.5 0.9"
        )
    out = prepare_output(args.out, (".npy", ".csv"), "--out")  # folders made and checked before any work
    plot = prepare_output(args.plot, PLOT_SUFFIXES, "--plot") if args.plot else None
    series, columns, time = read_series_with_time(args.input)
    if out.suffix == ".csv" and series.ndim == 3:
        raise ValueError(
            f"--out {out}: a CSV holds one series, and {args.input} holds a batch {series.shape}; "
            "write the forecasts to .npy"
        )
    pipe = PandaPipeline.from_pretrained(args.checkpoint, device=args.device)
    log = logging.getLogger("panda_fm")
    if args.quantiles is not None:
        return _forecast_quantiles(args, pipe, series, columns, out, plot, time)
    forecast = pipe.predict(series, args.horizon)
    if plot is not None:  # drawn first: a failure leaves no output at all
        from panda_fm.eval.plots import plot_forecast

        batch = series.ndim == 3
        title = f"series 0 of {len(series)}" if batch else None
        with atomic_path(plot) as tmp:
            plot_forecast(
                series[0] if batch else series,
                forecast[0] if batch else forecast,
                tmp,
                columns=columns,
                title=title,
            )
    write_series(out, forecast, columns, _future_times(time, len(forecast), out))
    log.info("wrote a forecast of shape %s to %s", forecast.shape, out)
    if plot is not None:
        log.info("plot: %s", plot)
    return 0


def _future_times(time: Any, horizon: int, out: Any) -> Any:
    """The input's time column continued over the forecast, for a CSV output; None without one."""
    from panda_fm.data.io import continue_times

    if time is None or out.suffix != ".csv":
        return None
    future = continue_times(time[1], horizon, repr(time[0]))
    if future is None:
        logging.getLogger("panda_fm").info(
            "column %r holds neither numbers nor ISO times that increase: the forecast has no time column",
            time[0],
        )
        return None
    return time[0], future


def _forecast_quantiles(
    args: argparse.Namespace, pipe: Any, series: Any, columns: Any, out: Any, plot: Any, time: Any
) -> int:
    """``forecast --quantiles``: quantiles written one column per channel and level, and the fan drawn."""
    from dataclasses import replace

    import numpy as np

    from panda_fm.data.io import atomic_path, write_series

    log = logging.getLogger("panda_fm")
    levels = list(args.quantiles)
    calibration = replace(pipe.calibration, observation_noise=True) if args.observed else None
    # (H, C, Q), or (H, Q) for one channel, or (B, H, C, Q) for a batch
    quantiles, _ = pipe.predict_quantiles(series, args.horizon, levels, calibration=calibration)
    if series.ndim == 1:
        quantiles = quantiles[:, None]  # (H, 1, Q)
    batch = series.ndim == 3
    if plot is not None:  # drawn first: a failure leaves no output at all
        from panda_fm.eval.plots import plot_fan

        with atomic_path(plot) as tmp:
            plot_fan(
                series[0] if batch else series,
                quantiles[0] if batch else quantiles,
                levels,
                tmp,
                columns=columns,
                title=f"series 0 of {len(series)}" if batch else None,
            )
    if out.suffix == ".csv":
        H, C, Q = quantiles.shape
        names = columns or [f"x{c}" for c in range(C)]
        header = [f"{name}_q{level:g}" for name in names for level in levels]
        write_series(out, np.asarray(quantiles).reshape(H, C * Q), header, _future_times(time, H, out))
    else:
        write_series(out, np.asarray(quantiles))
    log.info("wrote quantiles %s of shape %s to %s", levels, tuple(quantiles.shape), out)
    if plot is not None:
        log.info("plot: %s", plot)
    return 0


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a reference-format checkpoint to panda_fm's format")
    p.add_argument("src", help="reference checkpoint directory or hub id")
    p.add_argument("dst", help="output directory")
    p.add_argument(
        "--poly-indices",
        default=None,
        help="safetensors file with the index tuples, tensors named ...degree2, ...degree3, ... "
        "(default: reconstruct them from the training seed)",
    )
    p.set_defaults(handler=_convert)


def _convert(args: argparse.Namespace) -> int:
    from panda_fm.hub import read_poly_indices
    from panda_fm.pipeline import PandaPipeline

    indices = read_poly_indices(args.poly_indices) if args.poly_indices else None
    pipe = PandaPipeline.from_pretrained(args.src, poly_indices=indices)
    pipe.info.setdefault("name", f"panda_fm conversion of {args.src}")
    pipe.info.setdefault("converted_from", str(args.src))
    pipe.save_pretrained(args.dst)
    logging.getLogger("panda_fm").info("wrote %s (%d parameters)", args.dst, pipe.model.num_parameters())
    return 0


# --- generate / merge (panda_fm.systems.evolve) ---------------------------------------------------


def _shard_arg(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes i/n, e.g. 0/4, got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard i/n needs 0 <= i < n, got {text!r}")
    return i, n


def _range_arg(text: str) -> tuple[float, float]:
    try:
        parts = [float(v) for v in text.split("-")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a range lo-hi, got {text!r}") from None
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected a number or a range lo-hi, got {text!r}")
    return parts[0], parts[1]


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="evolve chaotic systems into a dataset (resumes if OUT exists)")
    p.add_argument("--out", required=True, help="dataset directory")
    p.add_argument("--systems", type=int, required=True, help="number of systems wanted (in this shard)")
    p.add_argument("--seed", type=int, default=0, help="seeds the whole run: same seed, same dataset")
    p.add_argument("--workers", type=int, default=1, help="worker processes (results do not depend on it)")
    p.add_argument(
        "--shard", type=_shard_arg, default="0/1", help="i/n: generate part i of n independent parts"
    )
    p.add_argument("--points", type=int, default=4096, help="samples per trajectory")
    p.add_argument("--periods", type=_range_arg, default="40", help="periods per trajectory: 40 or 20-60")
    p.add_argument("--ics", type=int, default=1, help="initial conditions per system")
    p.add_argument("--max-dim", type=int, default=12, help="dimension cap")
    p.add_argument("--batch-size", type=int, default=64, help="systems per integration batch")
    p.add_argument("--tasks", type=int, default=16, help="batches per generation")
    p.add_argument("--p-skew", type=float, default=0.5, help="probability of a skew-product batch")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_generate)


def _generate(args: argparse.Namespace) -> int:
    from panda_fm.systems.evolve import EvolveConfig, dataset_size_bytes, generate

    cfg = EvolveConfig(
        seed=args.seed,
        shard=args.shard[0],
        n_shards=args.shard[1],
        n_points=args.points,
        periods=args.periods,
        n_ics=args.ics,
        max_dim=args.max_dim,
        batch_size=args.batch_size,
        tasks_per_generation=args.tasks,
        p_skew=args.p_skew,
    )
    log = logging.getLogger("panda_fm")
    try:
        summary = generate(args.out, args.systems, cfg, workers=args.workers, progress=not args.no_progress)
    except KeyboardInterrupt:
        log.warning("interrupted; run the same command again to resume after the last complete generation")
        return 130
    log.info("%s", summary.format())
    log.info("dataset %s: %.1f MB on disk", args.out, dataset_size_bytes(args.out) / 1e6)
    return 0


def _add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="merge dataset parts (from generate --shard i/n) into one dataset")
    p.add_argument("--out", required=True, help="merged dataset directory")
    p.add_argument("parts", nargs="+", help="dataset directories to merge")
    p.set_defaults(handler=_merge)


def _merge(args: argparse.Namespace) -> int:
    from panda_fm.systems.store import merge_datasets

    ds = merge_datasets(args.parts, args.out)
    logging.getLogger("panda_fm").info(
        "merged %d parts into %s: %d systems (%d train, %d test)",
        len(args.parts),
        args.out,
        len(ds),
        len(ds.ids("train")),
        len(ds.ids("test")),
    )
    return 0


# --- evaluate -------------------------------------------------------------------------------------


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="zero-shot benchmark of checkpoints and classical baselines on held-out systems",
        description="Forecast the same windows of every test system with each checkpoint and baseline; "
        "write OUT/report.md (tables), OUT/summary.json (aggregates), OUT/windows.json (per-window records) "
        "and PNG plots.",
    )
    p.add_argument("--checkpoint", nargs="+", default=[], metavar="DIR", help="checkpoint directories")
    p.add_argument(
        "--test",
        required=True,
        metavar="DATASET_DIR",
        help="dataset directory (its 'test' split), 'founders' for the 20 held-out dysts founders, or 'stress' for "
        "the stress suite (partial observation, sampling, short contexts, noise, spatiotemporal fields, "
        "non-polynomial and delay systems, real recordings: OUT/stress.md, OUT/stress.json)",
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
        help="baselines to run: 'all', 'none', or names (mean naive linear_ar nvar nvar2 field_nvar analogue analogue_auto smap selector)",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds window positions and noise")
    p.add_argument("--max-systems", type=int, default=None, help="evaluate only the first N test systems")
    p.add_argument("--batch-size", type=int, default=32, help="windows per predict call")
    p.add_argument("--device", default="cpu", help="where checkpoints run: cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--founders-cache",
        default=None,
        metavar="DIR",
        help="where '--test founders' caches its trajectories (default ~/.cache/panda_fm/founders-...), and "
        "'--test stress' its sets (in DIR/stress-v1; default ~/.cache/panda_fm)",
    )
    p.add_argument(
        "--founders-ics", type=int, default=1, help="trajectories per founder for '--test founders'"
    )
    p.add_argument(
        "--stress-sets",
        nargs="+",
        default=None,
        metavar="SET",
        help="sets of '--test stress' (default: all whose data can be read here; 'recordings' needs "
        'pip install "panda-fm[recordings]"; names in panda_fm.eval.stress.stress_sets())',
    )
    p.add_argument(
        "--quantiles",
        action="store_true",
        help="also score probabilistic forecasts (quantiles 0.05..0.95: CRPS, coverage, horizon correlation) of "
        "the checkpoints and the probabilistic baselines: OUT/probabilistic.md, .json, reliability.png, fan.png",
    )
    p.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    import shlex
    import sys
    from pathlib import Path

    from panda_fm.eval.baselines import checkpoint_forecasters, make_baselines
    from panda_fm.eval.plots import plot_report
    from panda_fm.eval.report import write_report
    from panda_fm.eval.runner import EvalConfig, evaluate
    from panda_fm.eval.testsets import FounderTestsetConfig, founders_testset
    from panda_fm.systems.store import open_dataset

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
    methods = checkpoint_forecasters(args.checkpoint, device=args.device)
    baselines = []
    if args.baselines != ["none"]:
        baselines = make_baselines("all" if args.baselines == ["all"] else args.baselines)
    methods += baselines
    if not methods:
        raise ValueError("nothing to evaluate: pass --checkpoint DIR and/or --baselines")
    from_shell = Path(sys.argv[0]).name in ("panda-fm", "cli.py")  # not when main() is called in-process
    command = shlex.join(["panda-fm", *sys.argv[1:]]) if from_shell else None
    if args.test == "stress":  # its own horizons (64, 128, 256), context lengths and noise per set
        from panda_fm.eval.stress import evaluate_stress, write_stress_report

        report = evaluate_stress(
            methods,
            args.stress_sets,
            args.founders_cache,
            args.windows_per_system,
            args.seed,
            args.batch_size,
        )
        compare = None  # the first checkpoint against the best baseline of each set
        if args.checkpoint and baselines:
            compare = (methods[0].name, [b.name for b in baselines])
        print(write_stress_report(report, args.out, command, compare=compare).read_text())
        return 0
    if args.test == "founders":
        founders = FounderTestsetConfig(n_ics=args.founders_ics)
        default = Path.home() / ".cache" / "panda_fm" / f"founders-{founders.n_steps}x{founders.n_ics}"
        root = founders_testset(Path(args.founders_cache) if args.founders_cache else default, founders)
    else:
        root = Path(args.test)
    result = evaluate(methods, open_dataset(root), config)
    md = write_report(result.report, args.out, command=command)
    plot_report(result.report, result.samples, args.out)
    logging.getLogger("panda_fm").info("wrote %s", md)
    print(md.read_text())
    if args.quantiles:
        _evaluate_quantiles(methods, open_dataset(root), config, Path(args.out), command)
    return 0


def _evaluate_quantiles(methods: list[Any], dataset: Any, config: Any, out: Any, command: str | None) -> None:
    """``evaluate --quantiles``: the probabilistic benchmark of the checkpoints beside the probabilistic baselines."""
    import json

    from panda_fm.eval.baselines import PipelineForecaster
    from panda_fm.eval.plots import plot_fan, plot_reliability
    from panda_fm.eval.probabilistic import (
        ModelQuantiles,
        default_baselines,
        evaluate_quantiles,
        markdown_table,
    )
    from panda_fm.eval.report import json_default

    models = [ModelQuantiles(m.load()._pipe, m.name) for m in methods if isinstance(m, PipelineForecaster)]
    report = evaluate_quantiles([*models, *default_baselines()], dataset, config)
    head = f"# Probabilistic forecasts\n\n`{command}`\n" if command else "# Probabilistic forecasts\n"
    (out / "probabilistic.md").write_text(head + markdown_table(report))
    summary = {k: v for k, v in report.items() if k != "samples"}
    (out / "probabilistic.json").write_text(json.dumps(summary, default=json_default))
    plot_reliability(report, out / "reliability.png")
    first = report["samples"][0] if report["samples"] else None
    if first is not None:
        plot_fan(
            first["context"],
            first["quantiles"],
            report["levels"],
            out / "fan.png",
            truth=first["truth"],
            title=f"{first['method']} on {first['system']} (noise {first['noise']})",
        )
    logging.getLogger("panda_fm").info("wrote %s", out / "probabilistic.md")
    print(markdown_table(report))


# --- pretrain -------------------------------------------------------------------------------------


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    from panda_fm.training.config import override_keys

    p = sub.add_parser(
        "pretrain",
        usage="panda-fm pretrain --config FILE [--data DIR] [--devices N] [--out DIR] [--max-steps N] "
        "[--max-minutes M] [--resume] [--SECTION.KEY VALUE ...]",
        help="pretrain a model on a generated dataset (Lightning; 1 CPU to many GPUs and nodes)",
        description="Pretrain a model. Settings come from --config, then --SECTION.KEY VALUE overrides "
        "(e.g. --model.d_model 128 --trainer.lr 3e-4), then the common options below.",
    )
    p.add_argument("--config", help="run config YAML, e.g. train/configs/tiny-cpu.yaml")
    p.add_argument("--data", help="dataset directory (data.path)")
    p.add_argument("--devices", type=int, help="devices per node (trainer.devices)")
    p.add_argument("--out", help="output directory (trainer.out_dir)")
    p.add_argument("--max-steps", type=int, help="optimizer steps (trainer.max_steps)")
    p.add_argument(
        "--max-minutes",
        type=float,
        help="wall-clock budget of this launch's training; the learning-rate schedule is fitted to the steps it "
        "allows (at most trainer.max_steps; --trainer.max_steps null for no step limit)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    group = p.add_argument_group("config overrides (any key of the config file)")
    for key in override_keys():
        group.add_argument(f"--{key}", dest=f"cfg:{key}", metavar="VALUE", default=argparse.SUPPRESS)
    p.set_defaults(handler=_pretrain)


def _pretrain(args: argparse.Namespace) -> int:
    from panda_fm.training.config import load_config
    from panda_fm.training.run import NonFiniteLossError, pretrain

    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:")}
    common = {"data.path": args.data, "trainer.devices": args.devices, "trainer.out_dir": args.out}
    common["trainer.max_steps"] = args.max_steps
    overrides.update({k: v for k, v in common.items() if v is not None})
    config = load_config(args.config, overrides)
    try:
        result = pretrain(config, resume=args.resume, max_minutes=args.max_minutes)
    except NonFiniteLossError as err:
        logging.getLogger("panda_fm").error("%s", err)
        return 3
    if result.rank == 0:
        logging.getLogger("panda_fm").info(
            "done: %d steps, %d windows; checkpoint %s; validation %s",
            result.steps,
            result.windows_seen,
            result.export_dir,
            result.metrics or "not run",
        )
    return 0


# --- finetune -------------------------------------------------------------------------------------


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a checkpoint on your own series (.csv with a column per channel, or .npy)",
        description="Fine-tune a checkpoint on one or more recordings of the same channels. The last "
        "--val-fraction of each recording is held out for validation and early stopping; the weights of the "
        "best validation are saved. NaN (empty CSV cells) marks missing values, which are masked.",
    )
    p.add_argument("--checkpoint", required=True, help="base checkpoint directory or hub id")
    p.add_argument("--data", required=True, nargs="+", help=".csv or .npy recording(s) of the same channels")
    p.add_argument("--out", required=True, help="directory for the fine-tuned checkpoint")
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget of training")
    p.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="optimizer steps at most (default: 500 without --max-minutes)",
    )
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-4)")
    p.add_argument(
        "--loss",
        choices=("mse", "mae", "smape"),
        default=None,
        help="training and validation loss (default: the base checkpoint's training loss, from its record)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="windows per step (default 16)")
    p.add_argument(
        "--val-fraction", type=float, default=None, help="held-out tail per recording (default 0.2); 0: none"
    )
    p.add_argument(
        "--patience",
        type=int,
        default=None,
        help="validations without improvement before stopping (default 4)",
    )
    p.add_argument(
        "--freeze-layers", type=int, default=None, help="freeze the embedding and first K layers (default 0)"
    )
    p.add_argument(
        "--min-context",
        type=int,
        default=None,
        help="fewest context steps of a window (default: a quarter of the model's context)",
    )
    p.add_argument(
        "--device", default=None, choices=("auto", "cpu", "gpu"), help="where to train (default auto)"
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--seed", type=int, default=None, help="seeds the windows (default 0)")
    p.add_argument("--name", default=None, help="model card name (default: BASE-finetuned)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_finetune)


def _finetune(args: argparse.Namespace) -> int:
    from panda_fm.pipeline import PandaPipeline
    from panda_fm.training.finetune import FineTuneConfig, fine_tune

    flags = {  # FineTuneConfig.from_settings keyword: value; an absent flag keeps the default
        "max_steps": args.max_steps,
        "max_minutes": args.max_minutes,
        "lr": args.lr,
        "loss": args.loss,
        "batch_size": args.batch_size,
        "val_fraction": args.val_fraction,
        "patience": args.patience,
        "freeze_layers": args.freeze_layers,
        "min_context": args.min_context,
        "accelerator": args.device,
        "torch_threads": args.threads,
        "seed": args.seed,
        "name": args.name,
        "progress_bar": False if args.no_progress else None,
    }
    config = FineTuneConfig.from_settings(**{k: v for k, v in flags.items() if v is not None})
    base = PandaPipeline.from_pretrained(args.checkpoint)
    data = args.data[0] if len(args.data) == 1 else args.data
    result = fine_tune(base.model, base.info, data, config)
    PandaPipeline(result.model, result.info).save_pretrained(args.out)
    logging.getLogger("panda_fm").info(
        "done: %d steps (%s), kept step %d; validation loss (%s) %s -> %s; checkpoint %s",
        result.steps,
        result.stopped,
        result.best_step,
        result.loss,
        "n/a" if result.val_loss_before is None else f"{result.val_loss_before:.4f}",
        "n/a" if result.val_loss_after is None else f"{result.val_loss_after:.4f}",
        args.out,
    )
    return 0


# --- fit-chooser ----------------------------------------------------------------------------------


def _add_fit_chooser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit-chooser",
        help="fit a checkpoint's evidence chooser among its experts on randomly observed training windows",
        description="Fit the evidence chooser (panda_fm.model.choice) of a checkpoint with in-context experts: "
        "windows of the dataset's train split are resampled, projected, cut short and made noisy at random, "
        "the checkpoint runs on them once, and the chooser alone is trained to pick the expert with the lowest "
        "sMAPE (a fifth of the systems held out for early stopping). The network's weights are not changed. "
        "The pool's progress is kept in OUT.pool.pt until the checkpoint is written: after an interruption, "
        "the same command resumes it.",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or hub id (incontext='experts')")
    p.add_argument("--data", required=True, help="generated dataset directory (its train split is used)")
    p.add_argument("--out", required=True, help="directory for the checkpoint with the fitted chooser")
    p.add_argument(
        "--windows-per-system", type=int, default=6, help="windows per training system (default 6)"
    )
    p.add_argument("--width", type=int, default=None, help="hidden width of a new chooser (default 64)")
    p.add_argument("--epochs", type=int, default=200, help="passes over the windows (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seeds the windows and the fit (default 0)")
    p.add_argument(
        "--add-expert",
        action="append",
        default=[],
        metavar="NAME=LIKE",
        help="add the expert NAME of --experts-version, its marker starting as the checkpoint's expert LIKE's "
        "(repeatable; e.g. smap=analogue); a new chooser is then fitted",
    )
    p.add_argument(
        "--experts-version", type=int, default=None, help="the experts' version with --add-expert (e.g. 7)"
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.set_defaults(handler=_fit_chooser)


def _fit_chooser(args: argparse.Namespace) -> int:
    import torch

    from panda_fm.pipeline import PandaPipeline
    from panda_fm.systems.store import open_dataset
    from panda_fm.training.choice import CHOOSER_WIDTH, choice_pool, fit_chooser, observed_windows

    if args.threads:
        torch.set_num_threads(args.threads)
    base = PandaPipeline.from_pretrained(args.checkpoint)
    cfg = base.model.config
    if cfg.incontext != "experts":
        raise ValueError(f"{args.checkpoint} has no in-context experts (incontext={cfg.incontext!r})")
    if args.add_expert:
        pairs = [spec.split("=") for spec in args.add_expert]
        if any(len(pair) != 2 or not all(pair) for pair in pairs) or args.experts_version is None:
            raise ValueError(
                f"--add-expert takes NAME=LIKE (the new expert, and the expert whose marker it starts from) and "
                f"needs --experts-version; got {args.add_expert} with version {args.experts_version}"
            )
        added = dict(pairs)  # new expert -> the expert whose marker it starts from
        base = PandaPipeline(base.model.with_experts(added, args.experts_version), base.info)
        cfg = base.model.config
    elif args.experts_version is not None:
        raise ValueError(
            "--experts-version goes with --add-expert; leave it out to keep the checkpoint's experts"
        )
    dataset = open_dataset(args.data)
    windows = observed_windows(
        dataset, args.windows_per_system, args.seed, cfg.context_length, cfg.prediction_length
    )
    if not windows:
        raise ValueError(f"{args.data} has no train split to draw windows from")
    model = base.model.eval()
    progress = Path(f"{Path(args.out)}.pool.pt")  # the pool's progress, for a rerun after an interruption
    log = logging.getLogger("panda_fm")
    try:
        pool = choice_pool(model, windows, resume=progress)
    except KeyboardInterrupt:
        log.warning("interrupted; run the same command again to resume the pool from %s", progress)
        return 130
    record = fit_chooser(model, pool, args.width or CHOOSER_WIDTH, args.epochs, args.seed)
    record |= {"data": str(args.data), "manifest": dataset.manifest_hash, "windows": len(windows)}
    record |= {"windows_per_system": args.windows_per_system, "seed": args.seed}
    if args.add_expert:  # how the network came to read experts it was not trained with
        record |= {"added_experts": added, "experts_version": args.experts_version}
    chooser_data = "The evidence chooser:"
    data = (
        f"{chooser_data} {len(windows)} randomly observed windows of the {len(dataset.ids('train'))} "
        f"training systems of dataset `{Path(args.data).name}` (manifest sha256 `{dataset.manifest_hash}`)."
    )
    # a refit replaces the previous chooser's sentence
    trained_on = base.info.get("training_data", "").split(chooser_data)[0].strip()
    info = {**base.info, "chooser": record, "training_data": f"{trained_on} {data}" if trained_on else data}
    PandaPipeline(model, info).save_pretrained(args.out)
    progress.unlink()
    log.info(
        "done: validation mean sMAPE of the choice, network %.2f -> with the chooser %.2f (oracle %.2f); "
        "checkpoint %s",
        record["validation_smape"]["network"],
        record["validation_smape"]["chooser"],
        record["validation_smape"]["oracle"],
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
