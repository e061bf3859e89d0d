"""Trajectories per second per CPU core: panda_fm's integrator versus dysts' make_trajectory.

For each of Lorenz, Rossler, Aizawa, Thomas and SprottB: 256 parameter mutants (relative scale 0.1,
signs kept), 4096 samples over 40 dominant periods (plus a 4-period transient for ours), in this single
process (one core), timed side by side:

- ``compiled``: panda_fm's integrator as generation runs it, one member at a time in compiled code
  (:mod:`panda_fm.systems.compiled`; its first call per founder includes compiling the founder's field,
  about half a second);
- ``numpy``: the same integrator's numpy lockstep loop (``integrate_batch(..., compiled=False)``), the 256
  mutants as one batch; its trajectories are the same to the bit (checked here);
- ``dysts``: a sample of the same mutants one by one with dysts' ``make_trajectory`` (Radau, its defaults
  otherwise).

All use rtol 1e-9 and atol 1e-10. Last lines: ``speedup_vs_numpy_loop: X`` and ``speedup_vs_dysts: X``
(ratios of trajectories per second).

Usage: python benchmarks/generate.py [--mutants 256] [--dysts-sample 2]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from panda_fm.systems.founders import dysts_class, load_founders  # noqa: E402
from panda_fm.systems.integrate import IntegratorConfig, integrate_batch  # noqa: E402
from panda_fm.systems.skew import founder_genome, genome_field, mutate  # noqa: E402

SYSTEMS = ("Lorenz", "Rossler", "Aizawa", "Thomas", "SprottB")
N_POINTS = 4096
PERIODS = 40


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=256)
    parser.add_argument("--dysts-sample", type=int, default=2, help="mutants per system timed with dysts")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(0)
    cfg = IntegratorConfig(rtol=1e-9, atol=1e-10)
    ours_n, ours_s, loop_s, dysts_n, dysts_s = 0, 0.0, 0.0, 0, 0.0
    print(f"{'system':10s} {'compiled traj/s':>16s} {'numpy traj/s':>13s} {'ok':>8s} {'dysts traj/s':>13s}")
    for name in SYSTEMS:
        founder = load_founders()[name]
        genomes = [mutate(founder_genome(name), rng, 0.1, 1.0) for _ in range(args.mutants)]
        y0 = np.tile(founder.ic, (args.mutants, 1))
        runs, seconds = {}, {}
        for compiled in (True, False):
            t0 = time.perf_counter()
            runs[compiled] = integrate_batch(
                genome_field(genomes),
                y0,
                founder.period * PERIODS / N_POINTS,
                N_POINTS,
                transient=4 * founder.period,
                config=cfg,
                compiled=compiled,
            )
            seconds[compiled] = time.perf_counter() - t0
        res = runs[True]
        if not np.array_equal(res.trajectories, runs[False].trajectories, equal_nan=True):
            raise SystemExit(f"{name}: the compiled and numpy trajectories differ")
        ours_n += int(res.ok.sum())
        ours_s += seconds[True]
        loop_s += seconds[False]
        cls = dysts_class(name)
        t0 = time.perf_counter()
        done = 0
        for g in genomes[: args.dysts_sample]:
            sys_ = cls(parameters=g.params)
            traj = sys_.make_trajectory(
                N_POINTS,
                pts_per_period=N_POINTS // PERIODS,
                init_cond=np.array(founder.ic),
                method="Radau",
                rtol=1e-9,
                atol=1e-10,
            )
            done += traj is not None
        d_el = time.perf_counter() - t0
        dysts_n += args.dysts_sample
        dysts_s += d_el
        print(
            f"{name:10s} {res.ok.sum() / seconds[True]:16.2f} {res.ok.sum() / seconds[False]:13.2f}"
            f" {res.ok.sum():4d}/{args.mutants:<4d} {args.dysts_sample / d_el:13.3f}",
            flush=True,
        )
    ours_rate = ours_n / ours_s
    dysts_rate = dysts_n / dysts_s
    print(f"compiled: {ours_n} trajectories in {ours_s:.1f}s = {ours_rate:.2f}/s per core")
    print(f"numpy loop: {ours_n} trajectories in {loop_s:.1f}s = {ours_n / loop_s:.2f}/s per core")
    print(f"dysts: {dysts_n} trajectories in {dysts_s:.1f}s = {dysts_rate:.3f}/s per core")
    print(f"speedup_vs_numpy_loop: {loop_s / ours_s:.1f}")
    print(f"speedup_vs_dysts: {ours_rate / dysts_rate:.0f}")


if __name__ == "__main__":
    main()
