"""The zero-shot demo: forecast a held-out chaotic system and compare with classical baselines."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from panda_fm.eval import metrics
from panda_fm.eval.baselines import PipelineForecaster, make_baselines
from panda_fm.eval.runner import standardise_by_context
from panda_fm.eval.testsets import FounderTestsetConfig, founders_testset
from panda_fm.systems.store import open_dataset

logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """Errors of each method on the demo window (standardised by the context), and the plot's path."""

    system: str
    horizon: int
    scores: dict[str, dict[str, float]]  # method -> {"smape": ..., "mae": ...}
    plot: Path


def run_demo(
    checkpoint: str | Path = "panda-fm-small",
    out: str | Path = "demo",
    system: str = "Rossler",
    horizon: int = 256,
    context_length: int = 512,
    baselines: tuple[str, ...] = ("analogue", "nvar", "selector"),
) -> DemoResult:
    """Forecast the end of a held-out founder's trajectory from the ``context_length`` steps before it.

    The checkpoint is loaded first, so a wrong one fails before the trajectory is integrated with dysts (4096
    points, 100 per period) and cached under ``out/data``.

    Args:
        checkpoint: checkpoint directory, registered name or hub id; by default the checkpoint shipped in the
            package, so the demo runs from any directory.
        out: directory for the cached trajectory and the plot.
        system: a dysts flow, e.g. one of the held-out founders.
        horizon: steps forecast and scored.
        context_length: context steps every method sees.
        baselines: the classical forecasters compared, by name.

    Returns:
        Each method's errors and the plot's path.

    Raises:
        FileNotFoundError: the checkpoint does not exist (before any integration).
        ValueError: the checkpoint is corrupt, or the system or a baseline is unknown.
    """
    from panda_fm.eval.plots import plot_forecast

    methods = [PipelineForecaster(checkpoint, name="panda_fm").load(), *make_baselines(list(baselines))]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = founders_testset(out / "data" / system, FounderTestsetConfig(systems=(system,)))
    traj = np.asarray(open_dataset(data).load(system)[0], dtype=np.float64)  # (T, D)
    context, truth = traj[-(context_length + horizon) : -horizon], traj[-horizon:]
    scores, forecasts = {}, {}
    for method in methods:
        forecast = np.asarray(method.predict(context[None], horizon))[0]
        forecasts[method.name] = forecast
        y, f = standardise_by_context(context, truth, forecast)
        scores[method.name] = {"smape": metrics.smape(y, f), "mae": metrics.mae(y, f)}
    plot = plot_forecast(
        context,
        forecasts["panda_fm"],
        out / f"forecast_{system}.png",
        truth=truth,
        title=f"{system} (held out): panda_fm zero-shot, {horizon} steps, sMAPE {scores['panda_fm']['smape']:.1f}",
    )
    return DemoResult(system=system, horizon=horizon, scores=scores, plot=plot)
