"""Coverage of the calibrated intervals by lead, on a calibration grid's saved runs (issue 18, twelfth round).

    python benchmarks/coverage_by_lead.py --cache DIR [--generated] [--lagged-lead-power 0 1 1.5] [--inflation 0.7]

``DIR`` is a ``benchmarks/calibration_grid.py`` cache (the eleventh round's: ``--data data/evo700
--generated-stride 4 --generated-systems 144``). For each lead power (``CalibrationConfig.lagged_lead_power``; 0:
the shipped calibration) and each source of windows (the calibration founders; with ``--generated`` the generated
systems too), clean and noisy: the mean coverage of the 50% and 80% central intervals over bins of leads, and the
median over windows of ``log(error / L)``, ``L`` the corrected lagged disagreement (root mean square over
channels) and ``error`` the point forecast's, by bin (0: ``L`` is the error's size at that lead).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from calibration_grid import BINS, saved_runs, score

from panda_fm.uncertainty import CalibrationConfig, corrected, lagged_spread


def by_lead(rows: list[dict], lags: tuple[int, ...], cal: CalibrationConfig, noise: float) -> list[str]:
    """The table's three rows for one calibration and noise level: the coverages by bin (the grid's own
    scoring, :func:`calibration_grid.score`) and the median log(error / L) by bin."""
    rows = [r for r in rows if r["noise"] == noise]
    s = score(rows, cal, lags)
    out = [f"cov{w} | " + " | ".join(f"{s[noise, f'cov{w} {a}-{b}']:.2f}" for a, b in BINS) for w in (50, 80)]
    pick = [lags.index(g) for g in cal.lags]
    ratio = []
    for r in rows:
        lagged = corrected(
            lagged_spread(r["members"][None, pick], r["point"][None]),
            r["x"][None],
            cal,
            r["errors"][None],
            r["prefix"],
        )[0]
        error = np.sqrt(((((r["truth"] - r["loc"]) / r["scale"]) - r["point"]) ** 2).mean(axis=1))
        ratio.append(np.log(error / np.maximum(np.sqrt((lagged**2).mean(axis=1)), 1e-12)))
    v = np.array(ratio)
    out.append("log(error / L) | " + " | ".join(f"{np.median(v[:, a - 1 : b]):+.2f}" for a, b in BINS))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True, help="a calibration_grid.py cache folder")
    p.add_argument(
        "--generated", action="store_true", help="also the cache's generated systems (stride 4, 144)"
    )
    p.add_argument("--lagged-lead-power", type=float, nargs="+", default=[0.0], help="lead powers to show")
    p.add_argument(
        "--inflation",
        type=float,
        default=CalibrationConfig().inflation,
        help="the calibration's inflation (default: the shipped %(default)s; the twelfth round's report: 0.7)",
    )
    args = p.parse_args(argv)
    sources = {"founders": "calibration"} | ({"generated": "generated"} if args.generated else {})
    header = "| lead power | windows | noise | measure | " + " | ".join(f"{a}-{b}" for a, b in BINS) + " |"
    lines = [header, "|" + "---|" * (4 + len(BINS))]
    for source, stem in sources.items():
        runs = [
            saved_runs(Path(args.cache) / f"{stem}-seed{seed}.pkl", source == "generated") for seed in (1, 2)
        ]
        rows, lags = [r for run in runs for r in run["rows"]], runs[0]["lags"]
        for power in args.lagged_lead_power:
            cal = replace(CalibrationConfig(), lagged_lead_power=power, inflation=args.inflation)
            for noise in sorted({r["noise"] for r in rows}):
                for row in by_lead(rows, lags, cal, noise):
                    lines.append(f"| {power} | {source} | {noise} | {row} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
