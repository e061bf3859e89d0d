"""The stress suite (panda_fm.eval.stress): checkpoints and classical baselines on held-out data unlike the
training data: partial observation, other sampling rates, short contexts, strong noise, spatiotemporal
fields, non-polynomial and delay systems.

    PYTHONPATH=. python benchmarks/stress.py --checkpoint panda-fm-small --prior --threads 1 \\
        --out benchmarks/results/stress

A run may be split over processes by --sets and its parts merged with --merge DIR DIR --out OUT.
Writes OUT/stress.md (the first checkpoint against each set's best baseline: the ratio of their median
sMAPE@128 with a paired-bootstrap 95% interval; a summary table of median sMAPE@128 with bootstrap 95%
intervals; one table per set) and OUT/stress.json. The sets' trajectories are built once into --cache (default
~/.cache/panda_fm/stress-v1/).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from _common import output_folder

from panda_fm.eval.baselines import PipelineForecaster, checkpoint_forecasters, make_baselines
from panda_fm.eval.stress import evaluate_stress, merge_stress_reports, stress_sets, write_stress_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", nargs="*", default=[], help="checkpoint directories or registered names")
    p.add_argument(
        "--prior",
        action="store_true",
        help="also score the first checkpoint's experts chosen by the untrained backtest prior, as 'prior' "
        "(the checkpoint with its network's learned part off)",
    )
    p.add_argument(
        "--baselines",
        nargs="+",
        default=["mean", "naive", "nvar", "analogue", "selector"],
        help="baseline names, 'all' or 'none' (default: %(default)s)",
    )
    p.add_argument(
        "--sets",
        nargs="+",
        default=None,
        help=f"sets (default: those of {', '.join(stress_sets())} whose data can be read here; "
        '"recordings" needs pip install "panda-fm[recordings]")',
    )
    p.add_argument(
        "--windows-per-system", type=int, default=5, help="windows per system (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="seeds windows, noise and the bootstrap (default: 0)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--cache", default=None, help="where the sets' trajectories are built (default ~/.cache/panda_fm)"
    )
    p.add_argument("--out", default="benchmarks/results/stress", help="output folder (default: %(default)s)")
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="DIR",
        help="evaluate nothing: merge the stress.json of runs of the same methods on different --sets (one run "
        "split over processes) into --out",
    )
    args = p.parse_args(argv)
    command = "python benchmarks/stress.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.merge:
        parts = [json.loads((Path(d) / "stress.json").read_text()) for d in args.merge]
        out = output_folder(args.out)
        if out is None:
            return 2
        commands = "; ".join(part["command"] for part in parts)
        report = merge_stress_reports(parts)
        print(write_stress_report(report, out, commands, compare=parts[0].get("compare")).read_text())
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    out = output_folder(args.out)
    if out is None:
        return 2
    methods = checkpoint_forecasters(args.checkpoint)
    if args.prior:
        if not methods:
            p.error("--prior needs a --checkpoint whose experts it uses")
        methods.append(PipelineForecaster(methods[0].path, name="prior", prior=True))
    baselines = []
    if args.baselines != ["none"]:
        baselines = make_baselines("all" if args.baselines == ["all"] else args.baselines)
    methods += baselines
    t0 = time.perf_counter()
    report = evaluate_stress(methods, args.sets, args.cache, args.windows_per_system, args.seed)
    report["wall_s"] = time.perf_counter() - t0
    compare = (methods[0].name, [b.name for b in baselines]) if args.checkpoint and baselines else None
    print(write_stress_report(report, out, command, compare=compare).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
