"""An echo-state network (reservoir computer) as a candidate expert for issue 17: one run on the stress suite, and
how much it could add to the shipped checkpoint if a chooser picked it on the right windows.

    PYTHONPATH=. python benchmarks/esn_probe.py --threads 1 --out benchmarks/results/stress/esn.md

The network: a fixed random reservoir of 300 tanh units (5% of the recurrent weights nonzero, spectral radius
0.9, input weights uniform in +-1 / sqrt(channels), biases in +-0.2) driven by the standardised context; a ridge
readout (penalty 1e-6 of the mean diagonal) from the state, its square, the input and a constant to the next
increment, after 50 steps of warm-up; then iterated on its own output, clipped like the other forecasters. The
leak rate is chosen per series among 0.1, 0.3 and 1 by a 64-step backtest on the context. Nothing was tuned on the
stress suite. The report gives, per set, the ESN's median sMAPE@128 with the checkpoint's and, as the headroom
an ideal per-window choice would have, the median of the smaller of the two; the same for the checkpoint's own
experts run alone (from the committed stress report ``--against``) as a control, since the smaller of any two
noisy scores is lower than either. ``--choice`` also runs what a backtest can realise of that headroom: per window,
the checkpoint or the ESN, whichever forecasts the context's last 64 steps better from the steps before them
(``backtest choice``; the checkpoint runs twice more per window).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _common import REPO, write_markdown

from panda_fm.eval.baselines import PipelineForecaster
from panda_fm.eval.stress import evaluate_stress
from panda_fm.forecasters.base import ContextForecaster

SETS = (
    "clean",
    "observed-x0",
    "projected",
    "coarse-4x",
    "fine-4x",
    "noise-10",
    "noise-20",
    "context-128",
    "spatiotemporal-sites",
    "nonpolynomial",
)
CONTROLS = ("analogue", "analogue_auto", "smap", "nvar", "selector")


@dataclass
class ESNForecaster(ContextForecaster):
    """An echo-state network fitted on each context alone; its leak rate chosen by a backtest on the context."""

    name: str = "esn"
    units: int = 300
    radius: float = 0.9
    leaks: tuple[float, ...] = (0.1, 0.3, 1.0)
    ridge: float = 1e-6
    warmup: int = 50
    backtest: int = 64
    seed: int = 0
    min_context = 96

    def _reservoir(self, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        w = rng.standard_normal((self.units, self.units)) * (rng.random((self.units, self.units)) < 0.05)
        w *= self.radius / np.max(np.abs(np.linalg.eigvals(w)))
        w_in = rng.uniform(-1, 1, (channels, self.units)) / np.sqrt(channels)
        return w, w_in, rng.uniform(-0.2, 0.2, self.units)

    def _fit_and_run(
        self, z: np.ndarray, leak: float, horizon: int, reservoir: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> np.ndarray:
        """Fit the readout on ``z (B, T, C)`` and iterate ``horizon`` steps: ``(B, H, C)``."""
        w, w_in, bias = reservoir
        B, T, _ = z.shape
        r = np.zeros((B, self.units))

        def features(r: np.ndarray, x: np.ndarray) -> np.ndarray:
            return np.concatenate([r, r * r, x, np.ones((B, 1))], axis=1)

        rows = []
        for t in range(T):
            r = (1 - leak) * r + leak * np.tanh(r @ w + z[:, t] @ w_in + bias)
            rows.append(features(r, z[:, t]))
        f = np.stack(rows[self.warmup : T - 1], axis=1)  # (B, N, F): the state after step t
        y = np.diff(z[:, self.warmup :], axis=1)  # (B, N, C): the increment to step t + 1
        gram = f.transpose(0, 2, 1) @ f
        penalty = self.ridge * np.trace(gram, axis1=1, axis2=2)[:, None, None] / gram.shape[1]
        w_out = np.linalg.solve(gram + penalty * np.eye(gram.shape[1]), f.transpose(0, 2, 1) @ y)  # (B, F, C)
        lo, hi = z.min(axis=1), z.max(axis=1)
        lo, hi = lo - (hi - lo), hi + (hi - lo)  # the context's range widened by its span, as the others clip
        x, feat, out = z[:, -1], rows[-1], []
        for _ in range(horizon):
            x = np.clip(x + np.einsum("bf,bfc->bc", feat, w_out), lo, hi)
            out.append(x)
            r = (1 - leak) * r + leak * np.tanh(r @ w + x @ w_in + bias)
            feat = features(r, x)
        return np.stack(out, axis=1)

    def _forecast(self, z: np.ndarray, horizon: int, trusted: np.ndarray | None = None) -> np.ndarray:
        T = z.shape[1]
        reservoir = self._reservoir(z.shape[2])  # one for every fit: the same seed gives the same network
        best = np.zeros(len(z), dtype=int)
        if T - self.backtest > self.warmup + 32:
            errors = [
                np.mean(
                    (
                        self._fit_and_run(z[:, : T - self.backtest], leak, self.backtest, reservoir)
                        - z[:, -self.backtest :]
                    )
                    ** 2,
                    axis=(1, 2),
                )
                for leak in self.leaks
            ]
            best = np.argmin(np.stack(errors), axis=0)
        out = np.zeros((len(z), horizon, z.shape[2]))
        for i, leak in enumerate(self.leaks):
            if (best == i).any():
                out[best == i] = self._fit_and_run(z[best == i], leak, horizon, reservoir)
        return out


@dataclass
class BacktestChoice:
    """Per window, whichever of two forecasters forecasts the context's last ``backtest`` steps better (mean
    squared error in context stds) from the steps before them; the first where the steps before them are too few
    for the second."""

    first: object
    second: object
    name: str = "backtest choice"
    backtest: int = 64

    def predict(self, context: np.ndarray, prediction_length: int) -> np.ndarray:
        x = np.asarray(context, dtype=np.float64)  # (B, T, C), as the suite passes it
        if x.shape[1] - self.backtest < getattr(self.second, "min_context", 0):
            return np.asarray(self.first.predict(x, prediction_length))  # too short to backtest the second
        past, recent = x[:, : -self.backtest], x[:, -self.backtest :]
        sd = x.std(axis=1, keepdims=True) + 1e-12
        errors = [
            np.mean(((m.predict(past, self.backtest) - recent) / sd) ** 2, axis=(1, 2))
            for m in (self.first, self.second)
        ]
        second = errors[1] < errors[0]  # (B,)
        out = np.array(self.first.predict(x, prediction_length), dtype=np.float64)
        if second.any():
            out[second] = self.second.predict(x[second], prediction_length)
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=list(SETS), help="stress sets (default: %(default)s)")
    p.add_argument(
        "--against",
        default=str(REPO / "benchmarks" / "results" / "stress" / "stress.json"),
        help="the committed stress report of the checkpoint and its experts, same windows (default: %(default)s)",
    )
    p.add_argument("--windows-per-system", type=int, default=3, help="as the report --against (default: 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument(
        "--choice",
        default=None,
        metavar="CHECKPOINT",
        help="also run the backtest choice between this checkpoint (the one --against reports) and the ESN",
    )
    p.add_argument("--out", default=None, help="also write the table to this markdown file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    against = json.loads(Path(args.against).read_text())
    model = against["methods"][0]
    methods = [ESNForecaster()]
    if args.choice:
        methods.append(BacktestChoice(PipelineForecaster(args.choice), methods[0]))
    report = evaluate_stress(methods, args.sets, None, args.windows_per_system, 0)
    lines = [
        f"`python benchmarks/esn_probe.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        "",
        f"Median sMAPE@128 per set: {model} (from `{Path(args.against).name}`), the ESN, and the median of the "
        f"smaller of {model}'s and each method's score per window (an ideal choice between the two).",
        "",
        f"| set | windows | {model} | esn | min with esn | "
        + " | ".join(f"min with {c}" for c in CONTROLS)
        + " |"
        + (" backtest choice |" if args.choice else ""),
        "|---|---|---|---|---|" + "---|" * (len(CONTROLS) + bool(args.choice)),
    ]
    for name in args.sets:
        scores = against["sets"][name]["paired"]
        m = np.asarray(scores[model], dtype=float)
        esn = np.asarray(report["sets"][name]["paired"]["esn"], dtype=float)
        if esn.shape != m.shape:
            raise SystemExit(f"{name}: {esn.shape[0]} windows here, {m.shape[0]} in {args.against}")
        cells = [np.median(np.minimum(m, np.asarray(scores[c], dtype=float))) for c in CONTROLS]
        lines.append(
            f"| {name} | {len(m)} | {np.median(m):.1f} | {np.median(esn):.1f} | {np.median(np.minimum(m, esn)):.1f} | "
            + " | ".join(f"{c:.1f}" for c in cells)
            + " |"
            + (
                f" {np.median(report['sets'][name]['paired']['backtest choice']):.1f} |"
                if args.choice
                else ""
            )
        )
    write_markdown(["# An echo-state network on the stress suite", "", *lines], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
