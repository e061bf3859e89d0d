"""What ``predict_quantiles`` costs beside ``predict``, by channel count (issue 18, a measurement).

    python benchmarks/quantiles_cost.py [--channels 3 16 64] [--threads 2] [--profile 64]

Contexts: 512 steps of Lorenz-96 with that many sites (F = 8, RK4 at dt 0.01, every 5th step kept after a
2000-step transient). Each call is timed once, ``predict`` first, then ``predict_quantiles`` (256 steps, the
shipped checkpoint), side by side in one run; prints the seconds and their ratio. With ``--profile C`` the
quantile call on C channels also runs under cProfile, and the functions of most own time are printed.
Result (2026-12-03): docs/probabilistic.md, "Left to do".
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np
import torch
from _common import SHIPPED

from panda_fm import PandaPipeline


def lorenz96(
    sites: int, steps: int = 512, forcing: float = 8.0, dt: float = 0.01, every: int = 5
) -> np.ndarray:
    """``(steps, sites)`` of Lorenz-96 after a transient of 2000 integration steps."""

    def rate(x: np.ndarray) -> np.ndarray:
        return (np.roll(x, -1) - np.roll(x, 2)) * np.roll(x, 1) - x + forcing

    x = forcing + 0.01 * np.random.default_rng(0).standard_normal(sites)
    kept = []
    for i in range(2000 + steps * every):
        k1 = rate(x)
        k2 = rate(x + dt / 2 * k1)
        k3 = rate(x + dt / 2 * k2)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + rate(x + dt * k3))
        if i >= 2000 and i % every == 0:
            kept.append(x.copy())
    return np.array(kept[:steps])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, nargs="+", default=[3, 16, 64])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--profile", type=int, default=None, help="also profile the quantile call on this many channels"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pipe = PandaPipeline.from_pretrained(SHIPPED)
    print("| channels | predict (s) | predict_quantiles (s) | ratio |\n|---|---|---|---|")
    for c in args.channels:
        context = lorenz96(c)
        t0 = time.perf_counter()
        pipe.predict(context, 256)
        point = time.perf_counter() - t0
        profiler = cProfile.Profile() if c == args.profile else None
        t0 = time.perf_counter()
        if profiler:
            profiler.enable()
        pipe.predict_quantiles(context, 256)
        if profiler:
            profiler.disable()
        quantiles = time.perf_counter() - t0
        print(f"| {c} | {point:.1f} | {quantiles:.1f} | {quantiles / point:.1f} |", flush=True)
        if profiler:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(8)


if __name__ == "__main__":
    main()
