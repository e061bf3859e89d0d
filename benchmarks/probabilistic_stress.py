"""The calibrated quantiles on stress-suite sets (issue 18, checked on data unlike the calibration's).

    PYTHONPATH=. python benchmarks/probabilistic_stress.py --sets coarse-4x noise-20 \\
        --out benchmarks/results/probabilistic/stress.md

For each set (``panda_fm.eval.stress``; 3 windows a system, seed 0, as the stress suite draws them) the shipped
checkpoint's quantiles with its calibration, with the climatology half reflected about the point forecast (the
default before the eighteenth round), with the lags in steps (before the nineteenth), with the noise correction
unfaded on stretched lags (before the twentieth), without the spread floor on series of 1-2 channels (before the
twenty-first), with that floor the same whatever the sampling (before the twenty-fourth), with the lagged ensemble's noise correction off (the eighth round's calibration; on contexts under
192 steps the default since the thirteenth) and with the calibration before the fourteenth round (inflation 0.7, no
lead correction), on the same windows, scored by the probabilistic benchmark at 64, 128 and 256 steps: CRPS,
coverage of the 50% and 80% intervals (with their intervals over systems) and the horizon's Spearman correlation.
``--noise 0 0.05`` scores each set at those observation noise levels instead of its own, ``--baselines`` the
probabilistic baselines beside the model, ``--candidate FIELD=VALUE ...`` a calibration round's candidate too:

    PYTHONPATH=. python benchmarks/probabilistic_stress.py --sets context-128 --noise 0 0.05 --baselines

``--by-system`` adds one table a system of each set (for sets of few systems, such as ``recordings``);
``--figures DIR`` also draws each set's reliability diagram and the fans of its first windows (one a system, for
the first eight systems; the shipped calibration) into DIR.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from _common import SHIPPED, write_markdown
from probabilistic import candidate_variants, draw_figures

from panda_fm import PandaPipeline
from panda_fm.eval.probabilistic import (
    ModelQuantiles,
    default_baselines,
    evaluate_quantiles,
    markdown_table,
    summarise,
)
from panda_fm.eval.stress import stress_config, stress_dataset, stress_sets
from panda_fm.systems.store import open_dataset

FANS = 8  # the fans drawn with --figures: the first window of each of the first this many systems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", required=True, help="stress sets (panda_fm.eval.stress.stress_sets)")
    p.add_argument("--checkpoint", default=str(SHIPPED), help="checkpoint (default: the shipped one)")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "panda_fm" / "stress-v1"))
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument(
        "--noise",
        type=float,
        nargs="+",
        default=None,
        help="observation noise levels in place of each set's own (e.g. 0 0.05)",
    )
    p.add_argument(
        "--baselines",
        action="store_true",
        help="also the probabilistic baselines (NVAR with bootstrap intervals, analogue ensemble, climatology)",
    )
    p.add_argument(
        "--candidate",
        nargs="+",
        action="append",
        default=None,
        metavar="FIELD=VALUE",
        help="also the default calibration with these CalibrationConfig fields replaced, as the variant "
        "'candidate' (as in benchmarks/probabilistic.py)",
    )
    p.add_argument("--out", default=None, help="also write the report to this markdown file")
    p.add_argument("--by-system", action="store_true", help="also one table a system of each set")
    p.add_argument("--figures", default=None, help="also draw reliability diagrams and fans into this folder")
    args = p.parse_args(argv)
    specs = stress_sets()
    unknown = [s for s in args.sets if s not in specs]
    if unknown:
        p.error(f"unknown sets {unknown}; choose among {sorted(specs)}")
    torch.set_num_threads(args.threads)
    pipe = PandaPipeline.from_pretrained(args.checkpoint)
    name = Path(args.checkpoint).name
    off = replace(pipe.calibration, lagged_noise_scale=0.0, short_lagged_noise_scale=0.0)
    command = shlex.join(["python", "benchmarks/probabilistic_stress.py", *(argv or sys.argv[1:])])
    lines = ["# Calibrated quantiles on stress sets", "", f"`{command}`"]
    for set_name in args.sets:
        spec = specs[set_name]
        config = replace(stress_config(spec, 3, 0), horizons=(64, 128, 256), rollout=0, batch_size=8)
        if args.noise is not None:
            config = replace(config, noise=tuple(args.noise))
        variants = {
            # the default before the eighteenth round (docs/probabilistic.md)
            f"{name}/symmetric": ("mixture", replace(pipe.calibration, combine="symmetric")),
            # the default before the nineteenth round (the lags in steps whatever the context's time scale)
            f"{name}/lags in steps": ("mixture", replace(pipe.calibration, lag_timescale=0.0)),
            # the default before the twentieth round (the noise correction unfaded on stretched lags)
            f"{name}/noise correction unfaded": (
                "mixture",
                replace(pipe.calibration, lagged_noise_stretch_power=0.0),
            ),
            # the default before the twenty-first round (no spread floor on series of 1-2 channels)
            f"{name}/no spread floor": (
                "mixture",
                replace(pipe.calibration, spread_floor=0.0, spread_floor_wide=0.0),
            ),
            # the default before the thirty-second round (no floor on series of 3 or more channels)
            f"{name}/no wide floor": ("mixture", replace(pipe.calibration, spread_floor_wide=0.0)),
            # the default before the twenty-fourth round (the floor the same whatever the sampling)
            f"{name}/floor unstretched": (
                "mixture",
                replace(pipe.calibration, spread_floor_stretch_power=0.0),
            ),
            f"{name}/no noise correction": ("mixture", off),
            # the calibration before the fourteenth round (docs/probabilistic.md)
            f"{name}/x0.7 no lead correction": (
                "mixture",
                replace(pipe.calibration, inflation=0.7, lagged_lead_power=0.0),
            ),
        }
        variants |= candidate_variants(name, pipe.calibration, args.candidate)
        method = ModelQuantiles(pipe, name, variants, batch_size=8)
        methods = [method, *(default_baselines() if args.baselines else [])]
        t = time.perf_counter()
        report = evaluate_quantiles(
            methods, open_dataset(stress_dataset(set_name, args.cache)), config, n_samples=FANS
        )
        lines += [
            "",
            f"## {set_name}: {spec.description} (context {config.context_length}; {time.perf_counter() - t:.0f} s)",
            markdown_table(report),
        ]
        if args.by_system:
            for sid in sorted({r["system"] for r in report["per_window"]}):
                rows = [r for r in report["per_window"] if r["system"] == sid]
                alone = {**report, "summary": summarise(rows, report["methods"], config.noise)}
                lines += [
                    "",
                    f"### {set_name}: {sid} ({len(rows) // len(report['methods'])} windows)",
                    markdown_table(alone),
                ]
        if args.figures:
            draw_figures(report, name, Path(args.figures), set_name)
    write_markdown(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
