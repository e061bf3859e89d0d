"""Real inputs (issue 16): the gap, channel and unit suites on held-out systems, full sizes.

    python benchmarks/real_inputs.py [--checkpoint checkpoints/panda-fm-small] [--systems 8]
        [--windows-per-system 4] [--out benchmarks/results/real-inputs] [--seed 0] [--threads 1] [--quick]

Runs the checkpoint, the classical NVAR and the context-mean forecaster on the same windows
(:mod:`panda_fm.eval.realinputs`) and writes ``summary.md``, ``summary.json`` (summaries only, no per-window
records) and ``real_inputs.png`` into ``--out``. Trajectories come from the founders cache
(``~/.cache/panda_fm``; built on first use, seconds to a minute per system). ``--quick`` cuts the case lists
for a smoke run, e.g. ``--systems 2 --windows-per-system 1 --quick``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from _common import output_folder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; every default is shown in ``--help``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--checkpoint",
        default="checkpoints/panda-fm-small",
        help="checkpoint directory, registered name or hub id (default: %(default)s)",
    )
    p.add_argument(
        "--systems",
        type=int,
        default=8,
        help="held-out systems per suite (default: %(default)s; stacking 13 systems draws on all 13 3-channel ones)",
    )
    p.add_argument(
        "--windows-per-system",
        type=int,
        default=4,
        help="windows per system, at most 6 (default: %(default)s)",
    )
    p.add_argument(
        "--out", default="benchmarks/results/real-inputs", help="output folder (default: %(default)s)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seeds windows, gaps, noise, partners (default: %(default)s)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument(
        "--baselines",
        default="nvar,mean",
        help="classical forecasters, comma-separated (default: %(default)s)",
    )
    p.add_argument("--no-copies", action="store_true", help="do not stack copies of the same system")
    p.add_argument("--quick", action="store_true", help="cut the case lists (smoke runs and tests)")
    p.add_argument("--cache-dir", default=None, help="founders cache root (default: ~/.cache/panda_fm)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the three suites and write the summary; returns the exit status."""
    args = parse_args(argv)
    import torch

    from panda_fm import PandaPipeline
    from panda_fm.eval.baselines import make_baselines
    from panda_fm.eval.realinputs import RealInputsConfig, run_real_inputs, write_real_inputs

    out = output_folder(args.out)
    if out is None:
        return 2
    torch.set_num_threads(args.threads)
    pipe = PandaPipeline.from_pretrained(args.checkpoint)
    name = Path(str(args.checkpoint)).name
    methods = {name: pipe}
    names = [b.strip() for b in args.baselines.split(",") if b.strip()]
    methods.update({b.name: b for b in make_baselines(names)})
    config = RealInputsConfig(
        systems=args.systems,
        windows_per_system=args.windows_per_system,
        context_length=pipe.config.context_length,
        prediction_length=pipe.config.prediction_length,
        seed=args.seed,
        quick=args.quick,
        copies=not args.no_copies,
        cache_dir=args.cache_dir,
    )
    t0 = time.perf_counter()
    summary = run_real_inputs(methods, config)
    summary["threads"] = args.threads
    summary["checkpoint"] = str(args.checkpoint)
    command = "python benchmarks/real_inputs.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    paths = write_real_inputs(summary, out, command=command.strip())
    print(paths["markdown"].read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
