"""The field NVAR (experts version 5) on the stress suite's fields, against the forecasters it joins.

    PYTHONPATH=. python benchmarks/field_nvar.py [--windows 8] [--out benchmarks/results/stress/field_nvar.md]
        [--plot docs/figures/field_forecast.png]

Windows (context 512, 128 steps ahead) of the suite's Lorenz-96 (32 sites) and Kuramoto-Sivashinsky (32 grid
points) fields, whole and at every 4th site, drawn with a fixed seed. Median sMAPE@128 (truth and forecast
standardised by the context, as the benchmark) of:

- ``field_nvar``: one quadratic model of a site's radius-2 neighbourhood at 2 delays, shared by all sites, the
  channels standardised together (``FieldNVARForecaster``);
- ``field_nvar, per-channel units``: the same fitted to the context standardised per channel first (what the
  experts would see without the model's statistics, hence ``CONTEXT_UNITS``);
- ``version 5 nvar``: version 5's NVAR expert, the joint NVAR or the field NVAR by a 64-step backtest with a margin
  of 10 (``WideNVARForecaster``);
- ``nvar`` (joint, versions 1-4) and ``analogue`` for scale;

and the wall time of each on the whole batch (one thread). ``--plot`` draws the first Lorenz-96 window as space-time
images: the truth, and the shipped checkpoint's forecast with experts version 3 and version 5.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import write_markdown

from panda_fm.eval.metrics import smape
from panda_fm.eval.stress import kuramoto_sivashinsky, lorenz96
from panda_fm.forecasters import EXPERT_VERSIONS, AnalogueForecaster, FieldNVARForecaster, NVARForecaster
from panda_fm.forecasters.base import ContextForecaster

CONTEXT, HORIZON = 512, 128


class PerChannelUnits:
    """A forecaster run on the context standardised per channel (its forecast mapped back)."""

    def __init__(self, base: ContextForecaster):
        self.base = base

    def predict(self, x: np.ndarray, horizon: int) -> np.ndarray:
        m, s = x.mean(axis=1, keepdims=True), x.std(axis=1, keepdims=True)
        return self.base.predict((x - m) / s, horizon) * s + m


def windows(traj: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random windows of ``traj`` ``(K, T, C)``: contexts ``(count, CONTEXT, C)``, truths ``(count, H, C)``."""
    k = rng.integers(traj.shape[0], size=count)
    start = rng.integers(0, traj.shape[1] - CONTEXT - HORIZON, size=count)
    seg = np.stack([traj[i, s : s + CONTEXT + HORIZON] for i, s in zip(k, start, strict=True)])
    return seg[:, :CONTEXT], seg[:, CONTEXT:]


def plot_field(context: np.ndarray, truth: np.ndarray, path: str) -> None:
    """Space-time images of ``truth`` ``(H, C)`` and of the shipped checkpoint's forecasts from ``context`` with
    experts version 3 and 5, with their sMAPE, saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from _common import SHIPPED

    from panda_fm import PandaPipeline

    pipe = PandaPipeline.from_pretrained(SHIPPED)
    m, s = context.mean(axis=0), context.std(axis=0)
    panels = [("truth", truth)]
    for version in (3, 5):
        pipe.model.config.experts_version = version
        forecast = pipe.predict(context.astype(np.float32), HORIZON)
        panels.append(
            (f"experts version {version}: sMAPE {smape((truth - m) / s, (forecast - m) / s):.1f}", forecast)
        )
    lo, hi = truth.min(), truth.max()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharey=True)
    for ax, (title, values) in zip(axes, panels, strict=True):
        image = ax.imshow(values.T, aspect="auto", origin="lower", cmap="RdBu_r", vmin=lo, vmax=hi)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("steps ahead")
    axes[0].set_ylabel("site")
    fig.colorbar(image, ax=axes, shrink=0.8)
    fig.suptitle("panda-fm-small on Lorenz-96 (32 sites), 128 steps from a 512-step context", fontsize=11)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--windows", type=int, default=8, help="windows per field (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the table to this markdown file")
    p.add_argument(
        "--plot", default=None, help="also draw a Lorenz-96 forecast of the shipped checkpoint here"
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    l96, ks = lorenz96(), kuramoto_sivashinsky()
    fields = {
        "Lorenz-96, 32 sites": l96,
        "Kuramoto-Sivashinsky, 32 points": ks,
        "Lorenz-96, 8 sites": l96[..., ::4],
        "Kuramoto-Sivashinsky, 8 points": ks[..., ::4],
    }
    methods = {
        "field_nvar": FieldNVARForecaster(),
        "field_nvar, per-channel units": PerChannelUnits(FieldNVARForecaster()),
        "version 5 nvar": EXPERT_VERSIONS[5]["nvar"](),
        "nvar": NVARForecaster(),
        "analogue": AnalogueForecaster(),
    }
    rows = []
    for name, traj in fields.items():
        contexts, truths = windows(traj, args.windows, rng)
        if args.plot and name.startswith("Lorenz-96, 32"):
            plot_field(contexts[0], truths[0], args.plot)
        m, s = contexts.mean(axis=1, keepdims=True), contexts.std(axis=1, keepdims=True)
        cells = []
        for method in methods.values():
            t0 = time.perf_counter()
            out = method.predict(contexts, HORIZON)
            seconds = time.perf_counter() - t0
            scores = [smape((t - a) / b, (f - a) / b) for t, f, a, b in zip(truths, out, m, s, strict=True)]
            cells.append(f"{np.median(scores):.1f} ({seconds:.1f} s)")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    write_markdown(
        [
            "# The field NVAR on the stress suite's fields",
            "",
            f"`python benchmarks/field_nvar.py --windows {args.windows} --seed {args.seed}`",
            "",
            f"Median sMAPE@{HORIZON} over {args.windows} windows per field, and the wall time of the batch on one "
            "thread.",
            "",
            "| field | " + " | ".join(methods) + " |",
            "|---|" + "---|" * len(methods),
            *rows,
        ],
        args.out,
    )


if __name__ == "__main__":
    main()
