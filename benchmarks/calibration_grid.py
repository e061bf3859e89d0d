"""A grid over the in-context calibration's settings on the calibration split (issue 18), scored offline.

    python benchmarks/calibration_grid.py --cache DIR                      # the model's runs: about 6 min
    python benchmarks/calibration_grid.py --cache DIR --inflation 0.85 1.0 --scale-spread 1.0 1.25 \\
        --lagged-floor 0 0.5 --lags 1,2,4,8 1,2,4,8,16 [--data DATASET_DIR [--generated-stride 4 \\
        --generated-systems 144]] [--workers 2] [--out benchmarks/results/probabilistic/grid.md]

The 16 training founders of ``benchmarks/probabilistic.py --split calibration``, 5 windows each, drawn with seeds
1 and 2, clean and with 5% noise; with ``--data``, also training systems of that generated dataset (every
``--generated-stride``-th of its training split, at most ``--generated-systems``; 12 and 48 up to the tenth round),
one window each per seed. The first call with a ``--cache`` folder runs the checkpoint once per window (its point
forecast, its in-context errors and its lagged members 1, 2, 4, 8, 16 and 32 steps short; caches of rounds before
the eleventh hold 1, 2, 4, 8) and saves them there; every candidate (the shipped calibration with ``inflation``,
``scale_spread``, ``lagged_floor``, ``lagged_blend``, ``noise_inflation``, ``lagged_noise_scale`` and ``lags``
replaced; each defaults to the shipped value, so the grids of rounds before the blend existed need
``--lagged-blend 0``, and those before the ninth ``--lagged-noise-scale 0``) is then scored from those runs with
the benchmark's own scoring, its predictability horizon (read off the lagged ensemble of its ``lags``) included.
The rule of every round: among the candidates whose 50% and 80% central intervals cover 0.40-0.60 and 0.70-0.90
of the truth at 64, 128 and 256 steps, clean and noisy (on each source of windows apart), the lowest mean CRPS
summed over the three horizons, both noise levels and the sources. From the fourteenth round (``--near-best
0.001``): among those within 0.1% of that lowest CRPS sum, the lowest lead-coverage error (the mean absolute
difference between observed and nominal coverage of both intervals over bins of leads 1-2, 3-4, ..., 129-256,
both noise levels and the sources), the shipped calibration kept unless that error is at least 0.01 lower. The
table also gives each candidate's Spearman correlation between its predicted horizon and the realised valid
prediction time.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import pickle
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from probabilistic import CALIBRATION_SYSTEMS

from panda_fm.uncertainty import COMBINES, CalibrationConfig

# each setting's default in the grid: the shipped calibration's, its lags in steps (a cache holds the members at
# fixed lags, CACHED_LAGS: the nineteenth round's stretch on slowly varying contexts, lag_timescale, is off in
# every score made from one; docs/probabilistic.md)
SHIPPED = CalibrationConfig(lag_timescale=0.0)

HORIZONS = (64, 128, 256)
NOISE = (0.0, 0.05)
TARGETS = {"cov50": (0.40, 0.60), "cov80": (0.70, 0.90)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--cache",
        required=True,
        help="folder of the model's saved runs (made on first use; one folder per checkpoint and --data)",
    )
    p.add_argument("--checkpoint", default="panda-fm-small", help="checkpoint (default: %(default)s)")
    for name, meaning in SETTINGS.items():  # each setting's values; default: the shipped calibration's
        flag = "--" + name.replace("_", "-")
        p.add_argument(flag, type=float, nargs="+", default=[getattr(SHIPPED, name)], help=meaning)
    p.add_argument(
        "--lags",
        nargs="+",
        default=[",".join(map(str, SHIPPED.lags))],
        help="lagged ensembles to try, each a comma-separated list of lags among CACHED_LAGS (default: %(default)s)",
    )
    p.add_argument(
        "--combine",
        nargs="+",
        default=[SHIPPED.combine],
        choices=COMBINES,
        help="ways the Gaussian part and the climatology join (CalibrationConfig.combine; default: %(default)s)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="also calibrate on training systems of this generated dataset (the held-out splits' other kind)",
    )
    p.add_argument(
        "--generated-stride",
        type=int,
        default=12,
        help="with --data: every this many of its training systems (default: %(default)s)",
    )
    p.add_argument(
        "--generated-systems",
        type=int,
        default=48,
        help="with --data: at most this many of them (default: %(default)s)",
    )
    p.add_argument(
        "--context-length",
        type=int,
        default=512,
        help="steps of each window's context (default: %(default)s; shorter ones use the short origins)",
    )
    p.add_argument(
        "--near-best",
        type=float,
        default=0.0,
        help="the fourteenth round's rule: among the candidates in every target within this fraction of the "
        "lowest CRPS sum, the lowest lead-coverage error (0: the lowest CRPS sum; default: %(default)s)",
    )
    p.add_argument("--out", default=None, help="also write the table to this markdown file")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes scoring candidates side by side (default: %(default)s)",
    )
    return p.parse_args(argv)


#: the lags whose members a cache holds (a candidate's lags are any of them); caches made before the eleventh
#: round (lists of rows) hold 1, 2, 4, 8
CACHED_LAGS = (1, 2, 4, 8, 16, 32)


def windows(
    seed: int,
    data: str | None = None,
    stride: int = 12,
    n: int = 48,
    context: int = 512,
    split: str | None = "train",
) -> Iterator[tuple[str, float, list, np.ndarray]]:
    """The windows of :func:`model_runs`, system by system: ``(system, noise, windows, contexts)`` as
    :func:`panda_fm.eval.runner.noisy_batches` yields them (``contexts`` ``(B, T, C)`` as the model sees them)."""
    from panda_fm.eval.runner import EvalConfig, _test_ids, noisy_batches, system_windows
    from panda_fm.eval.testsets import FounderTestsetConfig, founders_testset
    from panda_fm.systems.store import open_dataset

    if data is None:
        root = founders_testset(
            Path.home() / ".cache" / "panda_fm" / "calibration-founders",
            FounderTestsetConfig(systems=CALIBRATION_SYSTEMS),
        )
        split, per_system = "test", 5
    else:
        root, per_system = Path(data), 1
    config = EvalConfig(
        horizons=HORIZONS,
        windows_per_system=per_system,
        noise=NOISE,
        rollout=0,
        seed=seed,
        batch_size=8,
        split=split,
        context_length=context,
    )
    dataset = open_dataset(root)
    systems = _test_ids(dataset, config)
    if data is not None:
        systems = systems[::stride][:n]
    for system in systems:
        for sigma, _, batch, seen in noisy_batches(system, system_windows(dataset, system, config), config):
            yield system, sigma, batch, seen


def model_runs(
    checkpoint: str,
    seed: int,
    data: str | None = None,
    stride: int = 12,
    n: int = 48,
    context: int = 512,
    split: str | None = "train",
) -> list[dict]:
    """Per window: the point forecast, in-context errors, lagged members at :data:`CACHED_LAGS` (standardised)
    and the truth; of the calibration founders, or with ``data`` of that generated dataset's ``split`` (its
    training systems; ``"test"`` only for a diagnosis, ``benchmarks/coverage_by_lead.py --heldout``), every
    ``stride``-th, at most ``n`` (:func:`windows`)."""
    from panda_fm import PandaPipeline

    pipe = PandaPipeline.from_pretrained(checkpoint)
    rows = []
    for system, sigma, batch, seen in windows(seed, data, stride, n, context, split):
        seen32 = seen.astype(np.float32)
        point, errors, prefix, x, loc, scale, _ = pipe.incontext_errors(seen32, 256, 8, pipe.calibration)
        members = pipe.lagged_forecasts(seen32, 256, CACHED_LAGS, loc, scale, 8)
        for i, w in enumerate(batch):
            rows.append(
                dict(noise=sigma, point=point[i], errors=errors[i], prefix=prefix, x=x[i], loc=loc[i],
                     scale=scale[i], members=members[i], context=w.context, truth=w.truth[:256])
            )  # fmt: skip
        print(f"seed {seed}: {system}, {len(rows)} windows", flush=True)
    return rows


def score(rows: list[dict], cal, cached_lags: tuple[int, ...]) -> dict[tuple[float, str], float]:
    """Mean CRPS and coverages per noise level and horizon of one calibration on the saved runs (their lagged
    members at ``cached_lags``), and the Spearman correlation of its predicted horizon with the realised VPT."""
    from panda_fm.eval import metrics
    from panda_fm.eval.probabilistic import LEVELS, score_quantiles
    from panda_fm.eval.runner import EvalConfig
    from panda_fm.uncertainty import ForecastDistribution, lagged_spread

    levels = np.array(LEVELS)
    config = EvalConfig(horizons=HORIZONS, rollout=0)
    pick = [cached_lags.index(g) for g in cal.lags]
    scores: dict[tuple[float, str], list[float]] = {}
    for r in rows:
        lagged = lagged_spread(r["members"][None, pick], r["point"][None]) if cal.needs_lagged else None
        dist = ForecastDistribution.calibrated(
            r["point"][None], r["errors"][None], r["prefix"], r["x"][None], cal, lagged, with_horizon=True
        )
        q = dist.quantiles(levels)[0] * r["scale"][..., None] + r["loc"][..., None]
        out = score_quantiles(r["context"], r["truth"], q, dist.horizon_spread[0], None, config, levels)
        for width in (50, 80):  # coverage at each lead, averaged over the bins of :data:`BINS`
            lo, hi = (int(np.argmin(np.abs(levels - (100 + sign * width) / 200))) for sign in (-1, 1))
            inside = ((r["truth"] >= q[..., lo]) & (r["truth"] <= q[..., hi])).mean(axis=1)  # (H,)
            for a, b in BINS:
                out[f"cov{width} {a}-{b}"] = float(inside[a - 1 : b].mean())
        keys = [f"{m}@{h}" for m in ("crps", *TARGETS) for h in HORIZONS] + ["vpt", "predicted_horizon"]
        for key in keys + [f"cov{w} {a}-{b}" for w in (50, 80) for a, b in BINS]:
            scores.setdefault((r["noise"], key), []).append(out[key])
    means = {k: float(np.mean(v)) for k, v in scores.items() if k[1] not in ("vpt", "predicted_horizon")}
    for n in {n for n, _ in scores}:
        means[n, "spearman"] = metrics.horizon_correlation(scores[n, "predicted_horizon"], scores[n, "vpt"])
    return means


#: the settings a grid varies: CalibrationConfig's fields (each a flag, ``--lagged-blend`` for ``lagged_blend``)
SETTINGS = {
    "inflation": "CalibrationConfig.inflation: the factor on the in-context spread",
    "scale_spread": "CalibrationConfig.scale_spread: a, the Gaussian part a mixture over scales s exp(a z)",
    "lagged_floor": "CalibrationConfig.lagged_floor: the spread at least k times the lagged disagreement",
    "lagged_blend": "CalibrationConfig.lagged_blend: the spread s^(1 - b) L^b, L the lagged ensemble's "
    "disagreement",
    "noise_inflation": "CalibrationConfig.noise_inflation: the spread times (1 + beta nu), nu the RMS in-context "
    "error at leads 1-4 (context stds, over origins and channels: the context's noise level)",
    "lagged_noise_scale": "CalibrationConfig.lagged_noise_scale: c, the lagged disagreement divided by "
    "sqrt(1 + nu^2 / (nu^2 + c^2)), nu the context's noise level (0: no correction)",
    "short_lagged_noise_scale": "CalibrationConfig.short_lagged_noise_scale: c for contexts under "
    "lagged_noise_min_context steps (0: no correction)",
    "lagged_noise_min_context": "CalibrationConfig.lagged_noise_min_context: observed steps from which the "
    "lagged_noise_scale applies (shorter contexts: short_lagged_noise_scale)",
    "extrapolation": "CalibrationConfig.extrapolation: beyond the longest measured lead the in-context spread grows "
    "on at this fraction of its measured rate (0: held)",
    "lagged_lead_power": "CalibrationConfig.lagged_lead_power: p, the lagged disagreement's lead offset undone "
    "for an error growing as lead^p (0: no correction)",
    "lagged_noise_floor": "CalibrationConfig.lagged_noise_floor: k, with a lead correction the disagreement up "
    "to k nu is left as it is",
    "lagged_lead_measured": "CalibrationConfig.lagged_lead_measured: 1, the lead offset undone with the error "
    "growth the in-context errors measure (0: as the lead power says); not with a lead power",
    "min_spread": "CalibrationConfig.min_spread: the smallest spread, in context stds (the in-context spread's "
    "and the lagged disagreement's floor)",
}

#: bins of leads for the coverage by lead (the lead-coverage error, :func:`lead_error`)
BINS = ((1, 2), (3, 4), (5, 8), (9, 16), (17, 32), (33, 64), (65, 128), (129, 256))


def lead_error(s: dict[tuple[float, str], float]) -> float:
    """The mean over noise levels, the 50% and 80% intervals and the lead bins of :data:`BINS` of
    ``|observed coverage - nominal|``, from one source's :func:`score`."""
    return float(
        np.mean([abs(s[n, f"cov{w} {a}-{b}"] - w / 100) for n in NOISE for w in (50, 80) for a, b in BINS])
    )


def name_of(cal: CalibrationConfig) -> str:
    """A candidate's name in the table: its inflation, scale mixture, lagged floor and blend (noise inflation,
    the lagged ensemble's noise correction, lags other than the shipped)."""
    name = f"x{cal.inflation} a{cal.scale_spread} floor {cal.lagged_floor} blend {cal.lagged_blend}"
    if cal.noise_inflation:
        name += f" noise {cal.noise_inflation}"
    if cal.lagged_noise_scale:
        name += f" lagged noise {cal.lagged_noise_scale}"
    if cal.short_lagged_noise_scale:
        name += f" short lagged noise {cal.short_lagged_noise_scale}"
    if cal.extrapolation:
        name += f" extrapolation {cal.extrapolation}"
    if cal.lagged_noise_min_context != SHIPPED.lagged_noise_min_context:
        name += f" lagged noise from {cal.lagged_noise_min_context} steps"
    if cal.lagged_lead_power:
        name += f" lead power {cal.lagged_lead_power} floor {cal.lagged_noise_floor}nu"
    if cal.lagged_lead_measured:
        name += f" lead measured floor {cal.lagged_noise_floor}nu"
    if cal.min_spread != SHIPPED.min_spread:
        name += f" min spread {cal.min_spread:g}"
    if cal.combine != SHIPPED.combine:
        name += f" {cal.combine}"
    return name + (f" lags {','.join(map(str, cal.lags))}" if cal.lags != SHIPPED.lags else "")


def choose(
    total: dict[CalibrationConfig, float],
    by_lead: dict[CalibrationConfig, float],
    held: dict[CalibrationConfig, bool],
    near_best: float,
) -> CalibrationConfig | None:
    """The rule: among the candidates in every target, the lowest CRPS sum; with ``near_best`` > 0, among those
    within that fraction of it, the lowest lead-coverage error, the shipped calibration kept (if among them)
    unless that error is at least :data:`LEAD_MARGIN` lower."""
    eligible = [k for k in total if held[k]]
    if not eligible:
        return None
    best = min(eligible, key=total.get)
    if near_best <= 0:
        return best
    near = [k for k in eligible if total[k] <= (1 + near_best) * total[best]]
    chosen = min(near, key=by_lead.get)
    if SHIPPED in near and by_lead[SHIPPED] - by_lead[chosen] < LEAD_MARGIN:
        return SHIPPED
    return chosen


#: how much lower a candidate's lead-coverage error must be to replace the shipped calibration (``--near-best``)
LEAD_MARGIN = 0.01


def in_targets(s: dict[tuple[float, str], float]) -> bool:
    return all(
        lo <= s[n, f"{m}@{h}"] <= hi for m, (lo, hi) in TARGETS.items() for n in NOISE for h in HORIZONS
    )


#: the saved runs of each source of windows and the lags of their members, for :func:`score_sources` in the
#: worker processes
SOURCES: dict[str, tuple[list[dict], tuple[int, ...]]] = {}


def score_sources(cal) -> dict[str, dict[tuple[float, str], float]]:
    """:func:`score` of one calibration on each source of :data:`SOURCES`."""
    out = {name: score(rows, cal, lags) for name, (rows, lags) in SOURCES.items()}
    print(f"{name_of(cal)}: scored", flush=True)
    return out


def cached_runs(
    path: Path,
    checkpoint: str,
    seed: int,
    data: str | None,
    stride: int,
    n: int,
    context: int = 512,
    split: str | None = "train",
) -> dict:
    """:func:`model_runs` as ``{"rows", "lags", "systems", "context", "split"}``, saved to ``path`` on first use
    and read from it afterwards (a cache of another selection of systems, context length or split is refused)."""
    systems = None if data is None else (stride, n)
    split = None if data is None else split  # the founders' windows have no split to choose
    if not path.exists():
        rows = model_runs(checkpoint, seed, data, stride, n, context, split)
        runs = dict(rows=rows, lags=CACHED_LAGS, systems=systems, context=context, split=split)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(runs))
        tmp.replace(path)  # a run that stops half-way leaves no half-written cache
    runs = saved_runs(path, generated=data is not None)
    if (runs["systems"], runs["context"], runs["split"]) != (systems, context, split):
        raise SystemExit(
            f"{path} holds generated systems (stride, count) {runs['systems']} of the {runs['split']!r} split "
            f"with contexts of {runs['context']} steps, not {systems} of {split!r} with {context}: give another "
            "--cache folder"
        )
    return runs


def saved_runs(path: Path, generated: bool) -> dict:
    """A saved cache of :func:`cached_runs` (of generated systems or not) as ``{"rows", "lags", "systems",
    "context", "split"}``, caches of earlier rounds included; a missing one is refused with the command that
    makes it."""
    if not path.exists():
        raise SystemExit(
            f"{path} does not exist: run benchmarks/calibration_grid.py --cache with its folder first"
        )
    runs = pickle.loads(path.read_bytes())
    if isinstance(runs, list):  # made before the eleventh round: the lags of its day, 48 generated systems
        runs = dict(rows=runs, lags=(1, 2, 4, 8), systems=(12, 48) if generated else None)
    # made before the thirteenth round: 512-step contexts; before the sixteenth, of training systems only
    return {"context": 512, "split": "train" if generated else None, **runs}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    # the windows of each source (the calibration founders, generated systems), read by the workers
    sources = {"founders": (None, "calibration")} | (
        {"generated": (args.data, "generated")} if args.data else {}
    )
    for name, (data, stem) in sources.items():
        runs = [
            cached_runs(
                cache / f"{stem}-seed{seed}.pkl",
                args.checkpoint,
                seed,
                data,
                args.generated_stride,
                args.generated_systems,
                args.context_length,
            )
            for seed in (1, 2)
        ]
        SOURCES[name] = ([r for run in runs for r in run["rows"]], runs[0]["lags"])
    lag_sets = [tuple(int(g) for g in text.split(",")) for text in args.lags]
    cached = set.intersection(*(set(lags) for _, lags in SOURCES.values()))
    if missing := {g for lags in lag_sets for g in lags} - cached:
        raise SystemExit(f"lags {sorted(missing)} are not in this --cache's runs ({sorted(cached)})")
    t = time.perf_counter()
    grid = []
    for lags, combine in itertools.product(lag_sets, args.combine):
        for values in itertools.product(*(getattr(args, name) for name in SETTINGS)):
            settings = dict(zip(SETTINGS, values, strict=True), combine=combine)
            settings["lagged_lead_measured"] = bool(settings["lagged_lead_measured"])
            settings["lagged_noise_min_context"] = int(settings["lagged_noise_min_context"])
            try:
                grid.append(replace(SHIPPED, lags=lags, **settings))
            except ValueError:  # settings that exclude each other (a lead power and a measured lead offset)
                continue
    with multiprocessing.get_context("fork").Pool(args.workers, torch.set_num_threads, (1,)) as pool:
        scored = pool.map(score_sources, grid)
    results = dict(zip(grid, scored, strict=True))
    total = {
        k: sum(s[n, f"crps@{h}"] for s in by_source.values() for n in NOISE for h in HORIZONS)
        for k, by_source in results.items()
    }
    held = {k: all(in_targets(s) for s in by_source.values()) for k, by_source in results.items()}
    by_lead = {
        k: float(np.mean([lead_error(s) for s in by_source.values()])) for k, by_source in results.items()
    }
    windows = ", ".join(f"{len(rows)} windows of {name}" for name, (rows, _) in SOURCES.items())
    lines = [
        f"`{shlex.join(['python', 'benchmarks/calibration_grid.py', *(argv or sys.argv[1:])])}` "
        f"({windows}; {time.perf_counter() - t:.0f} s scoring)",
        "",
        "| candidate | windows | clean CRPS @64/128/256 | cov50 | cov80 | noisy CRPS @64/128/256 | cov50 | cov80 "
        "| Spearman(horizon, VPT) clean / noisy | CRPS sum | lead-coverage error | in targets |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, by_source in results.items():
        name = name_of(key)
        for source, s in by_source.items():
            cells = [
                " / ".join(f"{s[n, f'{m}@{h}']:.{3 if m == 'crps' else 2}f}" for h in HORIZONS)
                for n in NOISE
                for m in ("crps", *TARGETS)
            ]
            cells.append(" / ".join(f"{s[n, 'spearman']:.2f}" for n in NOISE))
            verdict = "yes" if in_targets(s) else "no"
            lines.append(
                f"| {name} | {source} | {' | '.join(cells)} | {total[key]:.5f} | {by_lead[key]:.4f} | {verdict} |"
            )
    chosen = choose(total, by_lead, held, args.near_best)
    lines += [
        "",
        f"Chosen by the rule: {'none' if chosen is None else name_of(chosen)}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(f"# Calibration grid\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
