"""A grid over the in-context calibration's settings on the calibration split (issue 18), scored offline.

    python benchmarks/calibration_grid.py --cache DIR                      # the model's runs: about 6 min
    python benchmarks/calibration_grid.py --cache DIR --inflation 0.85 1.0 --scale-spread 1.0 1.25 \\
        --lagged-floor 0 0.5 [--out benchmarks/results/probabilistic/grid.md]

The 16 training founders of ``benchmarks/probabilistic.py --split calibration``, 5 windows each, drawn with seeds
1 and 2, clean and with 5% noise. The first call with a ``--cache`` folder runs the checkpoint once per window
(its point forecast, its in-context errors and its lagged members 1, 2, 4, 8 steps short) and saves them there;
every candidate (the shipped calibration with ``inflation``, ``scale_spread``, ``lagged_floor`` and
``noise_inflation`` replaced) is then scored from those runs with the benchmark's own scoring. The rule of every
round: among the candidates whose 50% and 80% central intervals cover 0.40-0.60 and 0.70-0.90 of the truth at
64, 128 and 256 steps, clean and noisy, the lowest mean CRPS summed over the three horizons and both noise
levels.
"""

from __future__ import annotations

import argparse
import itertools
import pickle
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from probabilistic import CALIBRATION_SYSTEMS

HORIZONS = (64, 128, 256)
NOISE = (0.0, 0.05)
TARGETS = {"cov50": (0.40, 0.60), "cov80": (0.70, 0.90)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True, help="folder of the model's saved runs (made on first use)")
    p.add_argument("--checkpoint", default="panda-fm-small", help="checkpoint (default: %(default)s)")
    p.add_argument("--inflation", type=float, nargs="+", default=[0.85])
    p.add_argument("--scale-spread", type=float, nargs="+", default=[1.25])
    p.add_argument("--lagged-floor", type=float, nargs="+", default=[0.0])
    p.add_argument(
        "--noise-inflation",
        type=float,
        nargs="+",
        default=[0.0],
        help="CalibrationConfig.noise_inflation: the spread times (1 + beta nu), nu the RMS in-context error at "
        "leads 1-4 (context stds, over origins and channels: the context's noise level)",
    )
    p.add_argument("--out", default=None, help="also write the table to this markdown file")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    return p.parse_args(argv)


def model_runs(checkpoint: str, seed: int) -> list[dict]:
    """Per window: the point forecast, in-context errors, lagged members (standardised) and the truth."""
    from panda_fm import PandaPipeline
    from panda_fm.eval.runner import EvalConfig, _test_ids, noisy_batches, system_windows
    from panda_fm.eval.testsets import FounderTestsetConfig, founders_testset
    from panda_fm.systems.store import open_dataset

    root = founders_testset(
        Path.home() / ".cache" / "panda_fm" / "calibration-founders",
        FounderTestsetConfig(systems=CALIBRATION_SYSTEMS),
    )
    config = EvalConfig(
        horizons=HORIZONS, windows_per_system=5, noise=NOISE, rollout=0, seed=seed, batch_size=8
    )
    pipe = PandaPipeline.from_pretrained(checkpoint)
    dataset = open_dataset(root)
    rows = []
    for system in _test_ids(dataset, config):
        for sigma, _, batch, seen in noisy_batches(system, system_windows(dataset, system, config), config):
            seen32 = seen.astype(np.float32)
            point, errors, prefix, x, loc, scale, _ = pipe.incontext_errors(seen32, 256, 8, pipe.calibration)
            members = pipe.lagged_forecasts(seen32, 256, pipe.calibration.lags, loc, scale, 8)
            for i, w in enumerate(batch):
                rows.append(
                    dict(noise=sigma, point=point[i], errors=errors[i], prefix=prefix, x=x[i], loc=loc[i],
                         scale=scale[i], members=members[i], context=w.context, truth=w.truth[:256])
                )  # fmt: skip
        print(f"seed {seed}: {system}, {len(rows)} windows", flush=True)
    return rows


def score(rows: list[dict], cal) -> dict[tuple[float, str], float]:
    """Mean CRPS and coverages per noise level and horizon of one calibration on the saved runs."""
    from panda_fm.eval.probabilistic import LEVELS, score_quantiles
    from panda_fm.eval.runner import EvalConfig
    from panda_fm.uncertainty import ForecastDistribution, lagged_spread

    levels = np.array(LEVELS)
    config = EvalConfig(horizons=HORIZONS, rollout=0)
    scores: dict[tuple[float, str], list[float]] = {}
    for r in rows:
        lagged = lagged_spread(r["members"][None], r["point"][None]) if cal.lagged_floor else None
        dist = ForecastDistribution.calibrated(
            r["point"][None], r["errors"][None], r["prefix"], r["x"][None], cal, lagged
        )
        q = dist.quantiles(levels)[0] * r["scale"][..., None] + r["loc"][..., None]
        out = score_quantiles(r["context"], r["truth"], q, dist.spread[0], None, config, levels)
        for key in [f"{m}@{h}" for m in ("crps", *TARGETS) for h in HORIZONS]:
            scores.setdefault((r["noise"], key), []).append(out[key])
    return {k: float(np.mean(v)) for k, v in scores.items()}


def in_targets(s: dict[tuple[float, str], float]) -> bool:
    return all(
        lo <= s[n, f"{m}@{h}"] <= hi for m, (lo, hi) in TARGETS.items() for n in NOISE for h in HORIZONS
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from panda_fm import PandaPipeline

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in (1, 2):
        path = cache / f"calibration-seed{seed}.pkl"
        if not path.exists():
            runs = model_runs(args.checkpoint, seed)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps(runs))
            tmp.replace(path)  # a run that stops half-way leaves no half-written cache
        rows += pickle.loads(path.read_bytes())
    shipped = PandaPipeline.calibration
    t = time.perf_counter()
    results = {}
    grid = itertools.product(args.inflation, args.scale_spread, args.lagged_floor, args.noise_inflation)
    for inflation, a, floor, beta in grid:
        cal = replace(shipped, inflation=inflation, scale_spread=a, lagged_floor=floor, noise_inflation=beta)
        results[inflation, a, floor, beta] = score(rows, cal)
        print(f"x{inflation} a{a} floor {floor} noise {beta}: scored", flush=True)
    total = {k: sum(s[n, f"crps@{h}"] for n in NOISE for h in HORIZONS) for k, s in results.items()}
    lines = [
        f"`{shlex.join(['python', 'benchmarks/calibration_grid.py', *(argv or sys.argv[1:])])}` "
        f"({len(rows)} windows, {time.perf_counter() - t:.0f} s scoring)",
        "",
        "| candidate | clean CRPS @64/128/256 | cov50 | cov80 | noisy CRPS @64/128/256 | cov50 | cov80 | CRPS sum | in targets |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (inflation, a, floor, beta), s in results.items():
        cells = [
            " / ".join(f"{s[n, f'{m}@{h}']:.{3 if m == 'crps' else 2}f}" for h in HORIZONS)
            for n in NOISE
            for m in ("crps", *TARGETS)
        ]
        verdict = "yes" if in_targets(s) else "no"
        name = f"x{inflation} a{a} floor {floor}" + (f" noise {beta}" if beta else "")
        lines.append(f"| {name} | {' | '.join(cells)} | {total[inflation, a, floor, beta]:.3f} | {verdict} |")
    chosen = min((k for k in results if in_targets(results[k])), key=total.get, default=None)
    lines += [
        "",
        f"Chosen by the rule: {'none' if chosen is None else 'x{} a{} floor {} noise {}'.format(*chosen)}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(f"# Calibration grid\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
