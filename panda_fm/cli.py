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
    for add in (_add_forecast, _add_convert):
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


# --- forecast / convert ---------------------------------------------------------------------------


def _add_forecast(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("forecast", help="zero-shot forecast of a series stored as .csv or .npy")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or hub id")
    p.add_argument(
        "--input", required=True, help=".npy (T,), (T, C) or (B, T, C), or .csv with a column per channel"
    )
    p.add_argument(
        "--horizon", type=int, default=None, help="steps to forecast (default: the model's horizon)"
    )
    p.add_argument("--out", required=True, help="where to write the forecast (.npy or .csv)")
    p.add_argument("--plot", default=None, help="optional PNG of context and forecast")
    p.add_argument("--device", default="cpu")
    p.set_defaults(handler=_forecast)


def _forecast(args: argparse.Namespace) -> int:
    from panda_fm.io import read_series, write_series
    from panda_fm.pipeline import PandaPipeline

    series, columns = read_series(args.input)
    pipe = PandaPipeline.from_pretrained(args.checkpoint, device=args.device)
    forecast = pipe.predict(series, args.horizon)
    write_series(args.out, forecast, columns)
    logging.getLogger("panda_fm").info("wrote a forecast of shape %s to %s", forecast.shape, args.out)
    if args.plot:
        from panda_fm.plotting import plot_forecast

        plot_forecast(series, forecast, args.plot, columns=columns)
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
    logging.getLogger("panda_fm").info("wrote %s (%d parameters)", args.dst, pipe.model.num_parameters)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
