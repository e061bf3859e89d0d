"""Would another backtest choose the experts better? A probe on the stress sets, without any network.

The untrained prior picks, per window, the expert with the smallest mean log backtest error over the
channels; the backtest forecasts the context's last V steps (a third of the context, at most 128) from the
steps before them, once, and scores them against the context itself. This script scores that choice and
variants of it on the stress windows of ``benchmarks/stress.py`` (same seed and windows per system), with
experts version 3's five experts, each fitted to all channels jointly (no channel groups: the sets probed
have at most 3 channels):

- ``one origin``: the prior's backtest;
- ``smoothed target``: the same forecasts scored against a Savitzky-Golay smoothing (11 steps, cubic) of the
  context, so observation noise weighs less;
- ``3 origins`` (and smoothed): the log errors summed over backtests ending V/2 and V steps earlier too;
- ``mean of best 2``: the mean forecast of the two best-backtested experts;
- ``soft mix``: the experts weighted by softmax(-2 x log error).

Median sMAPE@128, with the oracle (the best expert on each window's truth) for scale.

    PYTHONPATH=. python benchmarks/backtest_variants.py --sets noise-10 noise-20 observed-x0 coarse-4x projected
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from panda_fm.eval import metrics
from panda_fm.eval.runner import noisy_batches, standardise_by_context, system_windows
from panda_fm.eval.stress import stress_config, stress_dataset, stress_sets
from panda_fm.forecasters.experts import EXPERT_VERSIONS, backtest_length
from panda_fm.forecasters.tensor.denoise import savgol_smooth
from panda_fm.forecasters.tensor.experts import run_experts, tensor_expert
from panda_fm.systems.store import open_dataset

HORIZON = 128
COLUMNS = (
    "oracle",
    "one origin",
    "smoothed target",
    "3 origins",
    "3 origins, smoothed",
    "mean of best 2",
    "soft mix",
)
MIN_FIT = 80  # steps an origin must leave before it for the experts to fit


@torch.no_grad()
def window_scores(experts: list, contexts: np.ndarray, truths: list[np.ndarray]) -> list[list[float]]:
    """Per window, sMAPE@128 of the oracle and of each choice in :data:`COLUMNS` (after the oracle)."""
    x = torch.as_tensor(contexts, dtype=torch.float64)
    mu, sd = x.mean(dim=1, keepdim=True), x.std(dim=1, keepdim=True)
    z = (x - mu) / sd  # (B, T, C)
    T = z.shape[1]
    V = backtest_length(T, 128, 3)
    forecasts = run_experts(experts, z, HORIZON) * sd[:, None] + mu[:, None]  # (B, E, H, C)
    smooth = savgol_smooth(z, 11, 3)
    errors = {}  # (target, origin) -> (B, E) mean log error over channels
    for k, origin in enumerate(o for o in (T - V, T - V - V // 2, T - 2 * V) if o >= MIN_FIT):
        past = run_experts(experts, z[:, :origin], V)  # (B, E, V, C)
        for name, target in (("raw", z), ("smooth", smooth)):
            miss = (past - target[:, None, origin : origin + V]).abs().mean(dim=2)  # (B, E, C)
            errors[name, k] = torch.nan_to_num(miss.clamp_min(1e-6).log().mean(dim=2), nan=30.0)
    origins = len(errors) // 2
    picks = [
        errors["raw", 0],
        errors["smooth", 0],
        sum(errors["raw", k] for k in range(origins)),
        sum(errors["smooth", k] for k in range(origins)),
    ]
    rows = []
    for i, (context, truth) in enumerate(zip(contexts, truths, strict=True)):

        def score(f: np.ndarray, context=context, truth=truth) -> float:
            return metrics.smape(*standardise_by_context(context, truth[:HORIZON], f))

        alone = [score(forecasts[i, e].numpy()) for e in range(len(experts))]
        best_two = picks[0][i].argsort()[:2]
        weights = torch.softmax(-2.0 * picks[0][i], dim=0)[:, None, None]  # (E, 1, 1)
        rows.append(
            [
                min(alone),
                *(alone[int(p[i].argmin())] for p in picks),
                score(forecasts[i, best_two].mean(dim=0).numpy()),
                score((forecasts[i] * weights).sum(dim=0).numpy()),
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--sets", nargs="+", default=["noise-10", "noise-20", "observed-x0", "coarse-4x", "projected"]
    )
    p.add_argument("--windows-per-system", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None, help="the stress suite's cache (default ~/.cache/panda_fm)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    registry = EXPERT_VERSIONS[3]
    experts = [tensor_expert(make()) for make in registry.values()]
    cache = Path(args.cache) if args.cache else Path.home() / ".cache" / "panda_fm"
    sets = stress_sets()
    print("| set | windows | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for name in args.sets:
        spec = sets[name]
        config = stress_config(spec, args.windows_per_system, args.seed)
        dataset = open_dataset(stress_dataset(name, cache))
        rows = []
        for sid in dataset.ids("test"):
            for _, _, batch, seen in noisy_batches(sid, system_windows(dataset, sid, config), config):
                rows += window_scores(experts, seen, [w.truth for w in batch])
        medians = np.median(np.asarray(rows), axis=0)
        print(f"| {name} | {len(rows)} | " + " | ".join(f"{m:.1f}" for m in medians) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
