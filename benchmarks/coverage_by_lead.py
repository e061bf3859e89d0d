"""Coverage of the calibrated intervals by lead, on a calibration grid's saved runs (issue 18, twelfth round).

    python benchmarks/coverage_by_lead.py --cache DIR [--generated] [--lagged-lead-power 0 1 1.5] [--inflation 0.7]
    python benchmarks/coverage_by_lead.py --cache DIR --heldout DATASET_DIR   # a diagnosis of the held-out split

``DIR`` is a ``benchmarks/calibration_grid.py`` cache (the eleventh round's: ``--data data/evo700
--generated-stride 4 --generated-systems 144``). For each lead power (``CalibrationConfig.lagged_lead_power``; 0,
the default: no correction, as shipped before the fourteenth round; the shipped calibration's is 1) and each source of windows (the calibration founders; with ``--generated`` the generated
systems too), clean and noisy: the mean coverage of the 50% and 80% central intervals over bins of leads, and the
median over windows of ``log(error / L)``, ``L`` the corrected lagged disagreement (root mean square over
channels) and ``error`` the point forecast's, by bin (0: ``L`` is the error's size at that lead), and the share
of channel-leads whose error is under the smallest spread (``CalibrationConfig.min_spread``), where the floor, not
the forecast's error, sets the interval.

With ``--heldout`` the windows are instead those of ``benchmarks/probabilistic.py --split test --data DATASET_DIR
--windows-per-system 1`` (the generated test split, seed 0), run once into ``DIR/heldout-generated-seed0.pkl``
(about 6 minutes): a diagnosis of where its held-out coverage goes astray, never a place to choose a calibration.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from calibration_grid import BINS, SHIPPED, cached_runs, saved_runs, score

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
    under = np.array(
        [
            (np.abs((r["truth"] - r["loc"]) / r["scale"] - r["point"]) < cal.min_spread).mean(axis=1)
            for r in rows
        ]
    )  # (N, H): each window's share of channels
    out.append("error under floor | " + " | ".join(f"{under[:, a - 1 : b].mean():.2f}" for a, b in BINS))
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
    p.add_argument(
        "--heldout",
        default=None,
        metavar="DATASET_DIR",
        help="instead: the generated test split's windows of benchmarks/probabilistic.py (a diagnosis only)",
    )
    args = p.parse_args(argv)
    cache = Path(args.cache)
    if args.heldout:
        sources = {"held-out generated": None}
    else:
        sources = {"founders": "calibration"} | ({"generated": "generated"} if args.generated else {})
    header = "| lead power | windows | noise | measure | " + " | ".join(f"{a}-{b}" for a, b in BINS) + " |"
    lines = [header, "|" + "---|" * (4 + len(BINS))]
    for source, stem in sources.items():
        if stem is None:  # every system of the test split, one window each, as the benchmark draws them
            path = cache / "heldout-generated-seed0.pkl"
            runs = [cached_runs(path, "panda-fm-small", 0, args.heldout, 1, 10**9, split="test")]
        else:
            runs = [saved_runs(cache / f"{stem}-seed{seed}.pkl", source == "generated") for seed in (1, 2)]
        rows, lags = [r for run in runs for r in run["rows"]], runs[0]["lags"]
        for power in args.lagged_lead_power:
            cal = replace(SHIPPED, lagged_lead_power=power, inflation=args.inflation)
            for noise in sorted({r["noise"] for r in rows}):
                for row in by_lead(rows, lags, cal, noise):
                    lines.append(f"| {power} | {source} | {noise} | {row} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
