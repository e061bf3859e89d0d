"""Do a context's in-context errors tell a full state from a partial view? (issue 18, a probe.)

    python benchmarks/learning_curve.py --data data/evo700 [--windows 24] [--threads 2]

For one 512-step window of each of ``--windows`` evo700 training systems (every 7th, seen through every other
coordinate and fully observed), the 16 training founders (at 100 and 400 samples a period) and ``--windows``
windows of the spatiotemporal sites, clean and (four of the sets) with 5% noise, the shipped pipeline's errors from
its five in-context origins (:meth:`panda_fm.PandaPipeline.incontext_errors`) against the forecast's own error on
the continuation. Per set, medians over windows of:

- leads 1-4: the standard deviation over origins of the log root mean square error (how widely the origins'
  errors spread), and the forecast's error over the origins' geometric mean (weighted as the spread weighs them);
- leads 1-16: the slope of the log root mean square error against the log of the origins' prefix length (the
  learning curve; 10th / 50th / 90th percentiles), the forecast's error over the origins' unweighted geometric
  mean, the factor ``(512 / p)^slope`` that extrapolates the curve to the whole context (``p`` the weighted
  prefix), and the Spearman correlation of the slope with that error ratio; pooled over sets, that of the factor.

Result (2026-12-03): docs/probabilistic.md, "Twenty-ninth and thirtieth rounds".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _common import SHIPPED
from probabilistic import CALIBRATION_SYSTEMS
from scipy.stats import spearmanr

from panda_fm import PandaPipeline
from panda_fm.eval.stress import observed_dataset, stress_dataset
from panda_fm.eval.testsets import FounderTestsetConfig, founders_testset
from panda_fm.systems.store import open_dataset
from panda_fm.uncertainty import learning_slope

CONTEXT, AFTER = 512, 256


def window_stats(pipe: PandaPipeline, context: np.ndarray, truth: np.ndarray) -> tuple[float, ...]:
    """(sd of log rms over origins at leads 1-4, forecast error / weighted geometric mean at leads 1-4, slope at
    leads 1-16, forecast error / geometric mean at leads 1-16, extrapolated factor) of one window."""
    point, errors, prefix, _, loc, scale, _ = pipe.incontext_errors(context[None], AFTER)
    weight = (prefix / prefix.max()) ** pipe.calibration.recency
    out = []
    for leads in (slice(0, 4), slice(0, 16)):
        ms = np.nanmean(errors[0, :, leads] ** 2, axis=(1, 2))  # (O,) each origin's mean squared error
        ok = ~np.isnan(ms)
        log_ms, w = np.log(np.maximum(ms[ok], 1e-14)), weight[ok]
        realised = np.mean(((truth[leads] - loc[0]) / scale[0] - point[0, leads]) ** 2)
        if leads.stop == 4:
            out += [np.std(log_ms) / 2, np.sqrt(realised / np.exp(np.sum(w * log_ms) / w.sum()))]
        else:
            slope = float(learning_slope(errors, prefix, leads.stop)[0])
            weighted_prefix = np.exp(np.sum(w * np.log(prefix[ok])) / w.sum())
            out += [slope, np.sqrt(realised / np.exp(log_ms.mean())), (CONTEXT / weighted_prefix) ** slope]
    return tuple(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data", required=True, help="a generated dataset with systems of six or more coordinates"
    )
    p.add_argument(
        "--windows", type=int, default=24, help="evo700 systems and sites windows (default: %(default)s)"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cache = Path.home() / ".cache" / "panda_fm"
    pipe = PandaPipeline.from_pretrained(SHIPPED)
    rng = np.random.default_rng(args.seed)
    source = open_dataset(args.data)
    alternate = observed_dataset(
        args.data,
        cache / "observed" / f"{Path(args.data).name}-{source.manifest_hash[:8]}-alternate",
        "alternate",
    )
    ids = open_dataset(alternate).ids("train")[::7][: args.windows]
    founders = {
        ppp: founders_testset(
            cache / ("calibration-founders" + ("" if ppp == 100 else f"-ppp{ppp}")),
            FounderTestsetConfig(systems=CALIBRATION_SYSTEMS, pts_per_period=ppp),
        )
        for ppp in (100, 400)
    }
    sites = stress_dataset("spatiotemporal-sites", cache / "stress-v1")
    site_ids = open_dataset(sites).ids() * (args.windows // 2)
    founder_ids = open_dataset(founders[100]).ids()
    sets = [  # (label, dataset, systems, noise); the order fixes the windows drawn
        ("every other coordinate", alternate, ids, 0.0),
        ("the same systems fully observed", Path(args.data), ids, 0.0),
        ("training founders", founders[100], founder_ids, 0.0),
        ("training founders at 400 samples a period", founders[400], open_dataset(founders[400]).ids(), 0.0),
        ("spatiotemporal sites", sites, site_ids, 0.0),
        ("every other coordinate", alternate, ids, 0.05),
        ("the same systems fully observed", Path(args.data), ids, 0.05),
        ("training founders", founders[100], founder_ids, 0.05),
        ("spatiotemporal sites", sites, site_ids, 0.05),
    ]
    print(
        "| contexts | noise | windows | leads 1-4: sd of log rms over origins | error / in-context (1-4) "
        "| slope 10th / 50th / 90th | error / in-context (1-16) | extrapolated factor | Spearman(slope, ratio) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    pooled: dict[float, list[tuple[float, ...]]] = {0.0: [], 0.05: []}
    for label, root, systems, noise in sets:
        data = open_dataset(root)
        rows = []
        for sid in systems:
            traj = np.asarray(data.load(sid)[0], dtype=np.float64)
            start = rng.integers(0, traj.shape[0] - CONTEXT - AFTER)
            context, truth = traj[start : start + CONTEXT], traj[start + CONTEXT : start + CONTEXT + AFTER]
            if noise:
                context = context + noise * context.std(axis=0) * rng.standard_normal(context.shape)
            rows.append(window_stats(pipe, context, truth))
        r = np.array(rows)
        pooled[noise] += rows
        q = np.percentile(r[:, 2], [10, 50, 90])
        med = np.median(r, axis=0)
        print(
            f"| {label} | {noise:g} | {len(r)} | {med[0]:.2f} | {med[1]:.2f} | {q[0]:+.2f} / {q[1]:+.2f} / "
            f"{q[2]:+.2f} | {med[3]:.2f} | {med[4]:.2f} | {spearmanr(r[:, 2], r[:, 3])[0]:+.2f} |",
            flush=True,
        )
    for noise, rows in pooled.items():
        r = np.array(rows)
        print(
            f"pooled, noise {noise:g}: Spearman(extrapolated factor, error ratio at leads 1-16) "
            f"{spearmanr(r[:, 4], r[:, 3])[0]:+.2f} over {len(r)} windows"
        )


if __name__ == "__main__":
    main()
