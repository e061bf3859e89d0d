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
    for add in (_add_forecast,):
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


if __name__ == "__main__":
    raise SystemExit(main())
