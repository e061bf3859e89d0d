"""S-maps (locally weighted linear maps on a delay embedding) as a classical forecaster for scalar and noisy data:
the settings chosen on training founders, then one run on the stress suite.

    PYTHONPATH=. python benchmarks/smap.py --threads 2 --out benchmarks/results/stress/smap.md

Selection: the 16 training founders of the probabilistic calibration split (never held out), integrated as the
stress suite integrates the held-out ones (100 samples per period, 4096 samples), seen clean, through their first
coordinate, and with 10% and 20% observation noise; 3 windows per system, context 512 (seed 1, so that no window
position repeats the suite's). Each candidate's median sMAPE@128 per condition; the rule: the lowest mean of the
four medians. The chosen S-map then runs once on the stress sets beside the analogues (``--sets``; default: every
set but the two 32-channel fields, whose 128-entry delay vectors make an S-map step cost minutes).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _common import median_report, write_markdown
from probabilistic import CALIBRATION_SYSTEMS

from panda_fm.eval.baselines import make_baselines
from panda_fm.eval.runner import EvalConfig, evaluate
from panda_fm.eval.stress import _first_coordinate, dominant_period, founder_trajectories, stress_sets
from panda_fm.forecasters import SMapForecaster
from panda_fm.systems.store import DatasetWriter, open_dataset

NARROW, WIDE = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0), (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
#: name -> the S-map's settings (theta None: chosen per series from thetas on the context's end)
CANDIDATES = {
    "chosen 0-8, ridge 1e-6": {"theta": None, "thetas": NARROW, "ridge": 1e-6},
    "chosen 0-32, ridge 1e-6": {"theta": None, "thetas": WIDE, "ridge": 1e-6},
    "chosen 0-32, ridge 1e-3": {"theta": None, "thetas": WIDE, "ridge": 1e-3},
    "chosen 0-32, ridge 1e-3, 6 entries": {"theta": None, "thetas": WIDE, "ridge": 1e-3, "min_embedding": 6},
    "theta 8, ridge 1e-3": {"theta": 8.0, "ridge": 1e-3},
    "theta 16, ridge 1e-6": {"theta": 16.0, "ridge": 1e-6},
    "theta 16, ridge 1e-3": {"theta": 16.0, "ridge": 1e-3},
    "theta 32, ridge 1e-3": {"theta": 32.0, "ridge": 1e-3},
}
#: condition -> (dataset, observation noise)
CONDITIONS = {
    "clean": ("full", 0.0),
    "first coordinate": ("x0", 0.0),
    "noise 10%": ("full", 0.1),
    "noise 20%": ("full", 0.2),
}
NON_FIELD_SETS = [name for name in stress_sets() if not name.startswith("spatiotemporal")]


def selection_data(cache: Path) -> dict[str, Path]:
    """The training founders' trajectories, whole and through their first coordinate, as datasets (built once)."""
    trajectories = founder_trajectories(CALIBRATION_SYSTEMS)
    out = {}
    for kind, observe in (("full", lambda sid, traj: traj), ("x0", _first_coordinate)):
        root = cache / f"smap-selection-v1-{kind}"
        if not (root / "manifest.jsonl").exists():
            with DatasetWriter(root, metadata={"kind": "S-map selection", "observed": kind}) as writer:
                for sid, (traj, dt) in trajectories.items():
                    record = {
                        "id": sid,
                        "split": "test",
                        "dt": float(dt),
                        "period": dominant_period(traj, dt),
                    }
                    writer.add({**record, "founders": [sid]}, observe(sid, traj))
        out[kind] = root
    return out


def median_smape(methods: list, dataset: Path, noise: float, seed: int) -> list[float]:
    """Each method's median sMAPE@128 over the dataset's windows (3 per system, context 512)."""
    config = EvalConfig(horizons=(128,), windows_per_system=3, noise=(noise,), rollout=0, seed=seed)
    rows = evaluate(methods, open_dataset(dataset), config).report["per_window"]
    return [
        float(np.median([r["metrics"]["smape@128"] for r in rows if r["method"] == m.name])) for m in methods
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=NON_FIELD_SETS, help="stress sets of the test run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default=None, help="where datasets are built (default ~/.cache/panda_fm)")
    p.add_argument("--out", default=None, help="write the report to this markdown file too")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cache = Path(args.cache) if args.cache else Path.home() / ".cache" / "panda_fm"
    started = time.perf_counter()
    data = selection_data(cache)
    candidates = [replace(SMapForecaster(), name=name, **settings) for name, settings in CANDIDATES.items()]
    table = np.array(
        [median_smape(candidates, data[kind], noise, seed=1) for kind, noise in CONDITIONS.values()]
    ).T  # (candidates, conditions)
    means = table.mean(axis=1)
    best = int(np.argmin(means))
    selection = median_report(
        "S-maps: settings chosen on training founders, then the stress suite",
        f"`python benchmarks/smap.py {' '.join(sys.argv[1:] if argv is None else argv)}`\n\n"
        f"Selection on {len(CALIBRATION_SYSTEMS)} training founders, 3 windows each, context 512: median "
        "sMAPE@128 per condition and their mean (the rule: the lowest mean).",
        ("candidate", "systems"),
        [*CONDITIONS, "mean"],
        [
            (name, len(CALIBRATION_SYSTEMS), [*row, m])
            for name, row, m in zip(CANDIDATES, table, means, strict=True)
        ],
    )
    chosen = replace(candidates[best], name="smap")
    print(f"chosen: {list(CANDIDATES)[best]}", flush=True)
    methods = [chosen, *make_baselines(["analogue", "analogue_auto", "nvar", "selector"])]
    from panda_fm.eval.stress import evaluate_stress

    report = evaluate_stress(methods, args.sets, cache_dir=cache, windows_per_system=3)
    rows = [
        (name, s["windows"], [s["metrics"][m.name]["smape@128"]["median"] for m in methods])
        for name, s in report["sets"].items()
    ]
    test = median_report(
        "",
        f"Chosen: {list(CANDIDATES)[best]}. Stress sets, the suite's windows (3 per system, seed 0): median "
        f"sMAPE@128 ({time.perf_counter() - started:.0f} s in all).",
        ("set", "windows"),
        [m.name for m in methods],
        rows,
    )[2:]
    write_markdown([*selection, "", *test], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
