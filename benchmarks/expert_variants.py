"""Classical expert variants on the stress suite: would a longer delay embedding or a different analogue help?

Two candidate kinds of expert, each scored alone (median sMAPE@128 over the stress suite's windows of ``--sets``,
the windows and noise of ``benchmarks/stress.py`` for the same ``--seed`` and ``--windows-per-system``), beside the
experts of version 6 they would join or replace:

- NVARs of a longer delay embedding, for contexts of few channels (one coordinate, a projection): ``d`` delays
  ``s`` steps apart (cubic where the feature count allows), and ``auto``: ``ceil(6 / C)`` delays at the stride of
  the analogue's automatic embedding (the correlation time over the delays);
- analogues with more neighbours (``k``) and other denoising (a Gaussian filter of width ``g``) or the automatic
  embedding.

A variant that cannot run on a window's context (too short) is scored as the version 6 ``nvar``.

    PYTHONPATH=. python benchmarks/expert_variants.py --threads 2 \\
        --out benchmarks/results/stress/expert_variants.md
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import median_report, write_markdown

from panda_fm.eval import metrics
from panda_fm.eval.runner import noisy_batches, standardise_by_context, system_windows
from panda_fm.eval.stress import stress_config, stress_dataset, stress_sets
from panda_fm.forecasters.experts import EXPERT_VERSIONS
from panda_fm.forecasters.tensor.analogue import analogue_forecast, correlation_time
from panda_fm.forecasters.tensor.denoise import gaussian_smooth
from panda_fm.forecasters.tensor.experts import tensor_expert
from panda_fm.forecasters.tensor.nvar import nvar_forecast
from panda_fm.systems.store import open_dataset

HORIZON = 128
SETS = ("observed-x0", "projected", "coarse-4x", "noise-10", "noise-20", "clean")
RIDGES = (1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
Forecast = Callable[[torch.Tensor], torch.Tensor]  # (B, T, C) float64 -> (B, HORIZON, C)


def delay_nvar(delays: int, stride: int) -> Forecast:
    """The version 6 NVAR's settings with ``delays`` delays ``stride`` steps apart."""
    return lambda x: nvar_forecast(x, HORIZON, delays=delays, stride=stride, degree=3, ridges=RIDGES)


def auto_nvar(x: torch.Tensor) -> torch.Tensor:
    """``ceil(6 / C)`` delays at each series' correlation time over the delays (the analogue's rule)."""
    delays = -(-6 // x.shape[2])
    z = (x - x.mean(dim=1, keepdim=True)) / x.std(dim=1, keepdim=True)
    strides = ((2 * correlation_time(z, 0.25) + delays) // (2 * delays)).clamp(1, 32)  # (B,)
    out = x.new_empty(x.shape[0], HORIZON, x.shape[2])
    for s in strides.unique().tolist():
        rows = (strides == s).nonzero().flatten()
        out[rows] = delay_nvar(delays, int(s))(x[rows])
    return out


def analogue(k: int, sigma: float | None, auto: bool = False) -> Forecast:
    """The version 6 analogue's settings with ``k`` neighbours, on the context Gaussian-filtered with width
    ``sigma`` (None: unfiltered), with the automatic embedding when ``auto``."""
    embedding = dict(embedding="auto", acf_threshold=0.25, min_embedding=12) if auto else dict(stride=4)

    def forecast(x: torch.Tensor) -> torch.Tensor:
        z = x if sigma is None else gaussian_smooth(x, sigma=sigma)
        return analogue_forecast(z, HORIZON, delays=4, k=k, clip=True, **embedding)

    return forecast


def variants() -> dict[str, Forecast]:
    shipped = {name: tensor_expert(make()) for name, make in EXPERT_VERSIONS[6].items()}
    out: dict[str, Forecast] = {
        name: (lambda x, e=shipped[name]: e(x, HORIZON)) for name in ("nvar", "analogue", "analogue_g2")
    }
    for d, s in ((3, 1), (3, 2), (4, 2), (4, 4), (6, 2), (6, 4)):
        out[f"nvar d{d} s{s}"] = delay_nvar(d, s)
    out["nvar auto"] = auto_nvar
    for k, sigma in ((8, None), (8, 2.0), (16, 2.0), (8, 3.0)):
        out[f"analogue k{k}" + ("" if sigma is None else f" g{sigma:g}")] = analogue(k, sigma)
    out["analogue auto k8 g2"] = analogue(8, 2.0, auto=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=list(stress_sets()), metavar="SET")
    p.add_argument("--windows-per-system", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache", default=None, help="the stress suite's cache (default ~/.cache/panda_fm)")
    p.add_argument("--out", default=None, help="write the table to this markdown file too")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(args.cache) if args.cache else Path.home() / ".cache" / "panda_fm"
    sets, methods = stress_sets(), variants()
    started = time.perf_counter()
    rows = []
    for name in args.sets:
        config = stress_config(sets[name], args.windows_per_system, args.seed)
        data = open_dataset(stress_dataset(name, cache))
        scores: dict[str, list[float]] = {m: [] for m in methods}
        for sid in data.ids("test"):
            for _, _, batch, seen in noisy_batches(sid, system_windows(data, sid, config), config):
                x = torch.as_tensor(seen, dtype=torch.float64)
                fallback = methods["nvar"](x)
                for method, forecast in methods.items():
                    try:
                        f = forecast(x).numpy()
                    except ValueError:  # a context too short for the variant
                        f = fallback.numpy()
                    for i, w in enumerate(batch):
                        truth, pred = standardise_by_context(w.context, w.truth[:HORIZON], f[i])
                        scores[method].append(metrics.smape(truth, pred))
        medians = [float(np.median(scores[m])) for m in methods]
        rows.append((name, len(scores["nvar"]), medians))
        print(name, " ".join(f"{m}={v:.1f}" for m, v in zip(methods, medians, strict=True)), flush=True)
    lines = median_report(
        f"Expert variants alone on the stress suite: median sMAPE@{HORIZON}",
        f"`python benchmarks/expert_variants.py {' '.join(sys.argv[1:] if argv is None else argv)}` "
        f"({time.perf_counter() - started:.0f} s)",
        ("set", "windows"),
        list(methods),
        rows,
    )
    write_markdown(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
