"""Probabilistic forecasts (issue 18): the calibration's choice on training founders, then the held-out score.

    python benchmarks/probabilistic.py --split calibration [--out benchmarks/results/probabilistic]
    python benchmarks/probabilistic.py --split test [--out benchmarks/results/probabilistic]
    python benchmarks/probabilistic.py --split test --data DATASET_DIR --windows-per-system 3
    python benchmarks/probabilistic.py --split calibration --pts-per-period 400 --candidate lag_timescale=16

``calibration`` runs 16 training founders (never the held-out ones; with ``--data`` a generated dataset's training
split), ``test`` the 20 held-out founders (or with ``--data`` a generated dataset's test split); founders at 100
samples a dominant period, as the training data, or at ``--pts-per-period``; with ``--observe`` partially observed
(the first coordinate, or a random projection to 1-2 channels); with ``--missing`` a fraction of every context's
entries removed at random, with ``--gap`` a contiguous run of steps in every channel; with ``--truth observed``
scored against the continuation observed with new noise of the context's level. Each with the pipeline's
default calibration, its predictability horizon read off the calibrated spread instead of the time-lagged ensemble's
(the horizon before), the first round's plain mixture, the defaults before later rounds and the residual bootstrap
(on the calibration split also the horizon's other candidates), beside the probabilistic baselines (with
``--candidate``, a calibration round's choices too). Both at noise 0 and 0.05, horizons 64, 128 and 256, and write
``{split}.md`` and ``{split}.json`` (summaries; ``-generated``, ``-ppp{N}``, ``-{observe}``, ``-missing{PERCENT}``,
``-gap{N}`` and ``-observed`` added to the name as they apply), the reliability diagram ``{split}_reliability.png`` and fans of
the first system's first window into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import fields as fields_of
from dataclasses import replace
from pathlib import Path

from panda_fm.uncertainty import CalibrationConfig

#: Training founders (not held out) on which the calibration is chosen.
CALIBRATION_SYSTEMS = (
    "Aizawa",
    "Arneodo",
    "BurkeShaw",
    "Chen",
    "Chua",
    "Dadras",
    "Finance",
    "Halvorsen",
    "HindmarshRose",
    "Lorenz",
    "LuChen",
    "NoseHoover",
    "Rucklidge",
    "SprottA",
    "Thomas",
    "WangSun",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", choices=("calibration", "test"), required=True, help="which systems")
    p.add_argument("--checkpoint", default="panda-fm-small", help="checkpoint (default: %(default)s)")
    p.add_argument(
        "--out", default="benchmarks/results/probabilistic", help="output folder (default: %(default)s)"
    )
    p.add_argument(
        "--windows-per-system", type=int, default=5, help="windows per system (default: %(default)s)"
    )
    p.add_argument("--max-systems", type=int, default=None, help="only the first N systems (a smoke run)")
    p.add_argument(
        "--data",
        default=None,
        help="a generated dataset: with --split test its test split instead of the held-out founders (outputs "
        "named test-generated), with --split calibration its training split (calibration-generated)",
    )
    p.add_argument(
        "--candidate",
        nargs="+",
        action="append",
        default=None,
        metavar="FIELD=VALUE",
        help="also a calibration round's candidate, the default calibration with these CalibrationConfig fields "
        "replaced (numbers; true/false; text; comma-separated integers for a tuple), as the variant "
        "'candidate' on the same windows; given again, a second candidate ('candidate 2'), and so on",
    )
    p.add_argument(
        "--pts-per-period",
        type=int,
        default=100,
        help="samples per dominant period of the founders' trajectories (default: %(default)s, the training "
        "data's); another value adds '-ppp{N}' to the outputs' names",
    )
    p.add_argument(
        "--observe",
        choices=("all", "first", "projection", "alternate"),
        default="all",
        help="see every system partially: its first coordinate, a random projection to 1-2 channels (as the "
        "stress sets observed-x0 and projected), or every other coordinate of the systems of six or more "
        "(panda_fm.eval.stress.observed_dataset); adds '-first', '-projection' or '-alternate' to the outputs' names",
    )
    p.add_argument(
        "--missing",
        type=float,
        default=0.0,
        help="fraction of the context entries removed at random (EvalConfig.missing); the baselines that need "
        "complete contexts (NVAR, the analogue ensemble) are left out; adds '-missing{PERCENT}' to the outputs' names",
    )
    p.add_argument(
        "--gap",
        type=int,
        default=0,
        help="steps of one contiguous run removed from every channel of each context, anywhere in it "
        "(EvalConfig.gap); baselines as with --missing; adds '-gap{N}' to the outputs' names",
    )
    p.add_argument(
        "--truth",
        choices=("state", "observed"),
        default="state",
        help="score against the noise-free continuation (state) or against it observed with new noise of the "
        "context's level (observed: EvalConfig.noisy_truth); 'observed' adds '-observed' to the outputs' names",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    return p.parse_args(argv)


def candidate_fields(pairs: list[str]) -> dict[str, float | int | bool | str | tuple[int, ...]]:
    """``["inflation=0.9", "lagged_lead_measured=true", "min_prefix=96", "combine=split", "lags=2,4"]`` ->
    ``{"inflation": 0.9, "lagged_lead_measured": True, "min_prefix": 96, "combine": "split", "lags": (2, 4)}``
    (a field whose default is an integer reads one, a text field text, a tuple comma-separated integers)."""
    fields: dict[str, float | int | bool | str | tuple[int, ...]] = {}
    known = {f.name: f.default for f in fields_of(CalibrationConfig)}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key, low = key.strip(), value.strip().lower()
        if not sep or key not in known:
            raise SystemExit(f"--candidate takes FIELD=VALUE pairs of CalibrationConfig fields, got {pair!r}")
        if low in ("true", "false"):
            fields[key] = low == "true"
        elif type(known[key]) is int:
            fields[key] = int(value)
        elif isinstance(known[key], str):
            fields[key] = value.strip()
        elif isinstance(known[key], tuple):
            fields[key] = tuple(int(v) for v in value.split(","))
        else:
            fields[key] = float(value)
    return fields


def candidate_variants(name: str, cal: CalibrationConfig, groups: list[list[str]] | None) -> dict:
    """The ``--candidate`` groups as benchmark variants of ``cal``: ``{"NAME/candidate": ("mixture", config),
    "NAME/candidate 2": ...}``."""
    return {
        f"{name}/candidate" + (f" {i + 1}" if i else ""): ("mixture", replace(cal, **candidate_fields(pairs)))
        for i, pairs in enumerate(groups or [])
    }


def draw_figures(report: dict, name: str, folder: Path, tag: str, fans: int | None = None) -> None:
    """``TAG_reliability.png`` and the fans ``TAG_fan_SYSTEM_NOISE.png`` of the first ``fans`` windows ``report``
    keeps for the method ``name`` (all with None) in ``folder``."""
    from panda_fm.eval.plots import plot_fan, plot_reliability

    folder.mkdir(parents=True, exist_ok=True)
    plot_reliability(report, folder / f"{tag}_reliability.png")
    for sample in [s for s in report["samples"] if s["method"] == name][:fans]:
        noise = "clean" if sample["noise"] == 0 else f"noise{sample['noise']:g}"
        plot_fan(
            sample["context"],
            sample["quantiles"],
            report["levels"],
            folder / f"{tag}_fan_{sample['system']}_{noise}.png",
            truth=sample["truth"],
            title=f"{name} on {sample['system']} (noise {sample['noise']:g}): quantiles 0.05..0.95",
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from panda_fm import PandaPipeline
    from panda_fm.eval.probabilistic import (
        Climatology,
        ModelQuantiles,
        default_baselines,
        evaluate_quantiles,
        markdown_table,
    )
    from panda_fm.eval.report import json_default
    from panda_fm.eval.runner import EvalConfig
    from panda_fm.eval.testsets import FounderTestsetConfig, founders_testset
    from panda_fm.systems.store import open_dataset

    cache = Path.home() / ".cache" / "panda_fm"
    ppp = "" if args.pts_per_period == 100 else f"-ppp{args.pts_per_period}"
    if args.data and ppp:
        raise SystemExit("--pts-per-period resamples founders; a generated dataset (--data) keeps its own")
    if args.data:
        root = Path(args.data)
    elif args.split == "calibration":
        root = founders_testset(
            cache / f"calibration-founders{ppp}",
            FounderTestsetConfig(systems=CALIBRATION_SYSTEMS, pts_per_period=args.pts_per_period),
        )
    else:
        root = founders_testset(
            cache / f"founders-4096x1{ppp}", FounderTestsetConfig(pts_per_period=args.pts_per_period)
        )
    tag = (f"{args.split}-generated" if args.data else args.split) + ppp
    if args.observe != "all":
        from panda_fm.eval.stress import observed_dataset

        source = open_dataset(root)
        root = observed_dataset(
            root, cache / "observed" / f"{root.name}-{source.manifest_hash[:8]}-{args.observe}", args.observe
        )
        tag += f"-{args.observe}"
    if args.missing:
        tag += f"-missing{100 * args.missing:g}"
    if args.gap:
        tag += f"-gap{args.gap}"
    if args.truth == "observed":
        tag += "-observed"
    if args.missing or args.gap:
        import warnings

        from panda_fm import MissingDataWarning

        warnings.simplefilter("ignore", MissingDataWarning)  # every window has some: the point of the run
    config = EvalConfig(
        split="train" if args.data and args.split == "calibration" else "test",
        horizons=(64, 128, 256),
        windows_per_system=args.windows_per_system,
        noise=(0.0, 0.05),
        rollout=0,
        seed=1 if args.split == "calibration" else 0,
        max_systems=args.max_systems,
        batch_size=8,
        missing=args.missing,
        gap=args.gap,
        noisy_truth=args.truth == "observed",
    )
    pipe = PandaPipeline.from_pretrained(args.checkpoint)
    name = Path(args.checkpoint).name
    cal = pipe.calibration
    # the default before the symmetric construction (its quantiles; the horizon read off its spread)
    before = replace(
        cal,
        combine="mixture",
        inflation=1.0,
        noise_inflation=0.0,
        scale_spread=1.0,
        horizon="spread",
        lagged_blend=0.0,
    )
    variants = {
        f"{name}/horizon from spread": ("mixture", replace(cal, horizon="spread")),  # the horizon before
        f"{name}/mixture x1.0 a1": ("mixture", before),
        # the default before the lagged blend (the eighth round, docs/probabilistic.md)
        f"{name}/no lagged blend x0.85": (
            "mixture",
            replace(cal, inflation=0.85, lagged_blend=0.0, lagged_noise_scale=0.0),
        ),
        # the default before the lagged ensemble's noise correction (the ninth round)
        f"{name}/no noise correction": ("mixture", replace(cal, lagged_noise_scale=0.0)),
        # the default before the fourteenth round (inflation 0.7, no lead correction)
        f"{name}/x0.7 no lead correction": ("mixture", replace(cal, inflation=0.7, lagged_lead_power=0.0)),
        # the default before the eighteenth round (the climatology half reflected about the point forecast)
        f"{name}/symmetric": ("mixture", replace(cal, combine="symmetric")),
        # the default before the nineteenth round (the lags in steps whatever the context's time scale)
        f"{name}/lags in steps": ("mixture", replace(cal, lag_timescale=0.0)),
        # the default before the twentieth round (the noise correction unfaded on stretched lags)
        f"{name}/noise correction unfaded": ("mixture", replace(cal, lagged_noise_stretch_power=0.0)),
        # the default before the twenty-first round (no spread floor on series of 1-2 channels)
        f"{name}/no spread floor": ("mixture", replace(cal, spread_floor=0.0, spread_floor_wide=0.0)),
        # the default before the thirty-second round (no floor on series of 3 or more channels)
        f"{name}/no wide floor": ("mixture", replace(cal, spread_floor_wide=0.0)),
        # the default before the twenty-fourth round (the floor the same whatever the sampling)
        f"{name}/floor unstretched": ("mixture", replace(cal, spread_floor_stretch_power=0.0)),
        f"{name}/residual": ("residual", cal),
    }
    variants |= candidate_variants(name, cal, args.candidate)  # a round's choices beside the default
    if args.split == "calibration":  # the horizon's other candidates (docs/probabilistic.md)
        variants[f"{name}/horizon geometric"] = ("mixture", replace(cal, horizon="geometric"))
        variants[f"{name}/horizon lagged (4, 8)"] = ("mixture", replace(cal, lags=(4, 8)))
    # the baselines but the climatology need complete contexts
    baselines = [Climatology()] if args.missing or args.gap else default_baselines()
    methods = [ModelQuantiles(pipe, name, variants, batch_size=8), *baselines]
    t = time.perf_counter()
    report = evaluate_quantiles(methods, open_dataset(root), config)
    wall = time.perf_counter() - t
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "benchmarks/probabilistic.py", *(argv or sys.argv[1:])])
    table = markdown_table(report)
    (out / f"{tag}.md").write_text(
        f"# Probabilistic forecasts, {tag} split\n\n`{command}` ({wall:.0f} s)\n{table}"
    )
    summary = {k: v for k, v in report.items() if k not in ("per_window", "samples")}
    (out / f"{tag}.json").write_text(
        json.dumps({**summary, "command": command, "wall_s": wall}, indent=1, default=json_default)
    )
    draw_figures(report, name, out, tag, fans=2)  # the first system, clean and noisy
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
