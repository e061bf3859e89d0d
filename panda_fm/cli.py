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
    for add in (_add_forecast, _add_pretrain):
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


# --- pretrain -------------------------------------------------------------------------------------


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    from panda_fm.training.config import override_keys

    p = sub.add_parser(
        "pretrain",
        usage="panda-fm pretrain --config FILE [--data DIR] [--devices N] [--out DIR] [--max-steps N] "
        "[--resume] [--SECTION.KEY VALUE ...]",
        help="pretrain a model on a generated dataset (Lightning; 1 CPU to many GPUs and nodes)",
        description="Pretrain a model. Settings come from --config, then --SECTION.KEY VALUE overrides "
        "(e.g. --model.d_model 128 --trainer.lr 3e-4), then the common options below.",
    )
    p.add_argument("--config", help="run config YAML, e.g. train/configs/tiny-cpu.yaml")
    p.add_argument("--data", help="dataset directory (data.path)")
    p.add_argument("--devices", type=int, help="devices per node (trainer.devices)")
    p.add_argument("--out", help="output directory (trainer.out_dir)")
    p.add_argument("--max-steps", type=int, help="optimizer steps (trainer.max_steps)")
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
        result = pretrain(config, resume=args.resume)
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


if __name__ == "__main__":
    raise SystemExit(main())
