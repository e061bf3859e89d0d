"""Does the analogue ensemble's spread rank the model's valid prediction time? (issue 18, a probe.)

    python benchmarks/horizon_analogue.py --cache DIR

``DIR`` is a cache of ``benchmarks/calibration_grid.py`` (the eleventh round's: ``--data data/evo700
--generated-stride 4 --generated-systems 144``). Per source and noise level: the Spearman correlation with the
model's realised VPT of the horizon read off the shipped lagged spread (lags 1, 2, 4, 8), off the analogue
ensemble's spread (:class:`panda_fm.eval.probabilistic.AnalogueEnsemble` on the same context), and off their
geometric mean. Result (2026-12-01): docs/probabilistic.md, "Left to do".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from calibration_grid import SHIPPED, saved_runs

from panda_fm.eval import metrics
from panda_fm.eval.probabilistic import AnalogueEnsemble, context_moments
from panda_fm.uncertainty import lagged_spread, noise_corrected


def horizon(spread: np.ndarray, threshold: float = 0.5) -> int:
    """The first lead whose spread (RMS over channels) passes ``threshold``; the length where none does."""
    over = np.flatnonzero(np.sqrt((spread**2).mean(axis=1)) > threshold)
    return int(over[0]) if over.size else len(spread)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True, help="a calibration_grid.py cache folder")
    args = p.parse_args()
    cal, analogue = SHIPPED, AnalogueEnsemble()
    for source, stem in (("founders", "calibration"), ("generated", "generated")):
        runs = [saved_runs(Path(args.cache, f"{stem}-seed{s}.pkl"), source == "generated") for s in (1, 2)]
        pick = [list(runs[0]["lags"]).index(g) for g in cal.lags]
        for noise in (0.0, 0.05):
            rows = [r for run in runs for r in run["rows"] if r["noise"] == noise]
            vpt, found = [], {"lagged": [], "analogue": [], "geometric": []}
            for r in rows:
                mu, sd = context_moments(r["context"])
                truth, point = (r["truth"] - mu) / sd, (r["point"] * r["scale"] + r["loc"] - mu) / sd
                vpt.append(metrics.valid_prediction_time(truth[:256], point[:256], 0.5, scale=1.0))
                lag = lagged_spread(r["members"][None, pick], r["point"][None])
                lag = noise_corrected(lag, r["x"][None], cal)[0]
                spread = analogue.members(np.nan_to_num(r["x"])[None], 256)[0].std(axis=0)
                found["lagged"].append(horizon(lag))
                found["analogue"].append(horizon(spread))
                found["geometric"].append(horizon(np.sqrt(lag * spread)))
            rho = {k: round(metrics.horizon_correlation(v, vpt), 3) for k, v in found.items()}
            print(
                f"{source}, noise {noise}: {len(rows)} windows, Spearman with the model's VPT {rho}",
                flush=True,
            )


if __name__ == "__main__":
    main()
