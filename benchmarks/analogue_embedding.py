"""Candidate rules for the analogue's delay embedding chosen on the context, scored window by window.

    PYTHONPATH=. python benchmarks/analogue_embedding.py --seed 0

Runs the analogue with today's fixed embedding (4 delays, 4 steps apart) beside ``embedding="auto"`` rules
(:func:`panda_fm.forecasters.analogue.auto_embedding`: stride = correlation time / delays, the correlation
time the first lag at which the mean autocorrelation falls below ``acf_threshold``, delays raised until
``delays * C >= min_embedding``) and a few fixed strides, on stress sets and the clean held-out founders,
with the windows of ``benchmarks/stress.py`` (3 per system). Prints, per set and method, the median sMAPE@128,
its mean, and the fractions of windows it wins and loses against the fixed analogue. The chosen rule is
experts version 4's ``analogue_auto`` (acf_threshold 0.25, min_embedding 12); results in
benchmarks/results/stress/analogue_auto.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from panda_fm.eval.runner import EvalConfig, evaluate
from panda_fm.eval.stress import HORIZONS, stress_dataset, stress_sets
from panda_fm.eval.testsets import FounderTestsetConfig, founders_testset
from panda_fm.forecasters.analogue import AnalogueForecaster
from panda_fm.systems.store import open_dataset

SETS = (
    "observed-x0",
    "projected",
    "coarse-4x",
    "fine-4x",
    "noise-10",
    "spatiotemporal",
    "nonpolynomial",
    "founders",
)


def candidates() -> list[AnalogueForecaster]:
    """The fixed analogue, the auto rules (name: threshold, fewest entries) and fixed strides."""
    auto = {
        "auto_a": (0.5, 0),
        "auto_b": (0.5, 7),
        "auto_f": (0.35, 7),
        "auto_e": (0.25, 7),
        "auto_g": (0.25, 12),  # the chosen rule: analogue_auto
        "auto_c": (0.0, 7),
        "auto_d": (0.0, 0),
    }
    out = [AnalogueForecaster()]
    out += [
        AnalogueForecaster(name=n, embedding="auto", acf_threshold=th, min_embedding=m)
        for n, (th, m) in auto.items()
    ]
    out += [AnalogueForecaster(name=f"fixed_s{s}", stride=s) for s in (1, 2, 8)]
    return out + [AnalogueForecaster(name="fixed_d7s2", delays=7, stride=2)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--sets", nargs="+", default=list(SETS), help="stress sets and 'founders' (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the windows (default: %(default)s)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    methods = candidates()
    names = [m.name for m in methods]
    cache = Path.home() / ".cache" / "panda_fm"
    print(f"seed {args.seed}: median sMAPE@128 (mean; fraction of windows won / lost against analogue)\n")
    print("| set | windows | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for name in args.sets:
        if name == "founders":
            fc = FounderTestsetConfig(n_ics=1)
            dataset = open_dataset(founders_testset(cache / f"founders-{fc.n_steps}x{fc.n_ics}", fc))
            context, noise, scale = 512, 0.0, 1
        else:
            spec = stress_sets()[name]
            dataset = open_dataset(stress_dataset(name, cache))
            context, noise, scale = spec.context_length, spec.noise, spec.windows_scale
        config = EvalConfig(
            horizons=HORIZONS,
            context_length=context,
            windows_per_system=3 * scale,
            noise=(noise,),
            rollout=0,
            seed=args.seed,
        )
        rows = evaluate(methods, dataset, config).report["per_window"]
        scores = {m: np.array([r["metrics"]["smape@128"] for r in rows if r["method"] == m]) for m in names}
        base = scores["analogue"]
        cells = [
            f"{np.median(v):.1f} ({v.mean():.1f}; {np.mean(v < base):.2f}/{np.mean(v > base):.2f})"
            for v in scores.values()
        ]
        print(f"| {name} | {len(base)} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
