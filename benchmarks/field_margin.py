"""How sure must the backtest be before version 5's NVAR trusts the field NVAR? A choice on training data.

    PYTHONPATH=. python benchmarks/field_margin.py --data data/evo700 [--margins 1 2 4 10 100]
        [--windows-per-system 2] [--out benchmarks/results/stress/field_margin.md]

``WideNVARForecaster`` forecasts a context of 8 or more channels with the field NVAR where its 64-step backtest
error is below the joint NVAR's divided by ``margin``. Wide systems that are no field (skew products of the
generated data) can win that backtest by chance and lose the forecast. Scored here, on data no test set
uses: windows of the dataset's train-split systems with 8 or more channels, clean and with 5% observation
noise, and Lorenz-96 and Kuramoto-Sivashinsky (32 sites) from the stretch of their trajectories after the
stress suite's 4096 steps. Mean and median sMAPE@128 of the joint NVAR, the field NVAR and the wide NVAR at
each margin (truth and forecast standardised by the clean context, as the benchmark).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import write_markdown

from panda_fm.eval.metrics import smape
from panda_fm.eval.stress import N_STEPS, kuramoto_sivashinsky, lorenz96
from panda_fm.forecasters import FieldNVARForecaster, NVARForecaster, WideNVARForecaster
from panda_fm.systems.store import open_dataset

CONTEXT, HORIZON = 512, 128


def generated_windows(data: str, per_system: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Windows (context and horizon) ``(B, CONTEXT + H, D)`` of the train-split systems with 8 or more channels,
    by channel count ``D``."""
    dataset = open_dataset(data)
    out: dict[int, list[np.ndarray]] = {}
    for sid in dataset.ids("train"):
        traj = dataset.load(sid)  # (K, T, D)
        if traj.shape[2] < 8:
            continue
        for _ in range(per_system):
            k, s = rng.integers(traj.shape[0]), rng.integers(0, traj.shape[1] - CONTEXT - HORIZON + 1)
            out.setdefault(traj.shape[2], []).append(traj[k, s : s + CONTEXT + HORIZON].astype(np.float64))
    return {d: np.stack(w) for d, w in out.items()}


def field_windows(traj: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` windows of context + horizon from ``traj`` ``(K, T, C)`` after its first ``N_STEPS`` steps."""
    k = rng.integers(traj.shape[0], size=count)
    s = rng.integers(N_STEPS, traj.shape[1] - CONTEXT - HORIZON + 1, size=count)
    return np.stack([traj[i, j : j + CONTEXT + HORIZON] for i, j in zip(k, s, strict=True)])


def scores(method, seg: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """sMAPE@128 per window of ``method`` on ``seg`` ``(B, CONTEXT + H, C)`` with observation noise."""
    clean, truth = seg[:, :CONTEXT], seg[:, CONTEXT:]
    m, s = clean.mean(axis=1, keepdims=True), clean.std(axis=1, keepdims=True)
    seen = clean + noise * s * rng.standard_normal(clean.shape)
    out = method.predict(seen, HORIZON)
    return np.array([smape((t - a) / b, (f - a) / b) for t, f, a, b in zip(truth, out, m, s, strict=True)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="generated dataset (its train split)")
    p.add_argument("--margins", type=float, nargs="+", default=[1, 2, 4, 10, 100])
    p.add_argument("--windows-per-system", type=int, default=2)
    p.add_argument(
        "--field-windows", type=int, default=8, help="windows of each field (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    groups: dict[str, tuple[np.ndarray, float]] = {}
    for d, seg in generated_windows(args.data, args.windows_per_system, rng).items():
        for noise in (0.0, 0.05):
            groups[f"generated, {d} channels, noise {noise:g}"] = (seg, noise)
    steps = 2 * N_STEPS
    groups["Lorenz-96, 32 sites"] = (field_windows(lorenz96(n_steps=steps), args.field_windows, rng), 0.0)
    ks = kuramoto_sivashinsky(n_steps=steps)
    groups["Kuramoto-Sivashinsky, 32 points"] = (field_windows(ks, args.field_windows, rng), 0.0)
    methods = {"joint nvar": NVARForecaster(), "field nvar": FieldNVARForecaster()}
    methods |= {f"wide, margin {m:g}": WideNVARForecaster(margin=m) for m in args.margins}
    rows, generated = [], {name: [] for name in methods}
    for group, (seg, noise) in groups.items():
        cells = []
        for name, method in methods.items():
            v = scores(
                method, seg, noise, np.random.default_rng(args.seed)
            )  # the same noise for every method
            cells.append(f"{v.mean():.1f} / {np.median(v):.1f}")
            if group.startswith("generated"):
                generated[name].extend(v)
        rows.append(f"| {group} ({len(seg)}) | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    rows.append(
        "| **generated, all** | "
        + " | ".join(f"**{np.mean(v):.2f}** / {np.median(v):.1f}" for v in generated.values())
        + " |"
    )
    write_markdown(
        [
            "# The field NVAR's margin, chosen on training data",
            "",
            f"`python benchmarks/field_margin.py --data {args.data} --margins {' '.join(f'{m:g}' for m in args.margins)}"
            f" --windows-per-system {args.windows_per_system} --field-windows {args.field_windows} --seed {args.seed}`",
            "",
            "Mean / median sMAPE@128 per group (windows in brackets).",
            "",
            "| group | " + " | ".join(methods) + " |",
            "|---|" + "---|" * len(methods),
            *rows,
        ],
        args.out,
    )


if __name__ == "__main__":
    main()
