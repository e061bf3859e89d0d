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
    for add in (_add_forecast, _add_generate, _add_merge):
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="worker processes (results do not depend on it)")
    p.add_argument(
        "--shard", type=_shard_arg, default=(0, 1), help="i/n: generate part i of n independent parts"
    )
    p.add_argument("--points", type=int, default=4096, help="samples per trajectory")
    p.add_argument(
        "--periods", type=_range_arg, default=(40.0, 40.0), help="periods per trajectory: 40 or 20-60"
    )
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


if __name__ == "__main__":
    raise SystemExit(main())
