"""The benchmark's methods: classical baselines by name, and checkpoints as forecasters.

Baselines are the forecasters of :mod:`panda_fm.forecasters` with their default settings; a checkpoint
directory becomes a method through :class:`PipelineForecaster`. Every method has the signature of
:meth:`panda_fm.PandaPipeline.predict` (:class:`panda_fm.forecasters.Forecaster`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from panda_fm.forecasters import (
    AnalogueForecaster,
    ContextForecaster,
    Forecaster,
    LinearARForecaster,
    MeanForecaster,
    NaiveForecaster,
    NVARForecaster,
    QuadraticNVARForecaster,
    SelectorForecaster,
)

__all__ = ["BASELINES", "make_baselines", "PipelineForecaster", "checkpoint_forecasters"]

BASELINES: dict[str, type[ContextForecaster]] = {
    "mean": MeanForecaster,
    "naive": NaiveForecaster,
    "linear_ar": LinearARForecaster,
    "nvar": NVARForecaster,
    "nvar2": QuadraticNVARForecaster,
    "analogue": AnalogueForecaster,
    "selector": SelectorForecaster,
}


def make_baselines(names: list[str] | tuple[str, ...] | str = "all") -> list[Forecaster]:
    """Baselines by name with their default settings; ``"all"`` gives every one.

    Args:
        names: ``"all"``, or names from :data:`BASELINES`.
    """
    if isinstance(names, str):
        names = list(BASELINES) if names == "all" else [names]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; choose from {sorted(BASELINES)} or 'all'")
    return [BASELINES[n]() for n in names]


class PipelineForecaster:
    """A checkpoint directory as a :class:`~panda_fm.forecasters.Forecaster`, loaded on first use.

    Its wall time in a report therefore includes loading the checkpoint once.

    Args:
        path: checkpoint directory (anything :meth:`PandaPipeline.from_pretrained` reads locally).
        name: the method's name in reports; defaults to the directory's name.
        device: where the model runs ("cpu", "cuda", ...).
    """

    def __init__(self, path: str | Path, name: str | None = None, device: str = "cpu"):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"checkpoint {self.path} is not a directory; pass a saved checkpoint dir")
        self.name = name or self.path.name
        self.device = device
        self._pipe: Any = None

    def predict(self, context: np.ndarray, prediction_length: int) -> np.ndarray:
        """Forecast with the checkpoint: ``(B, T, C) -> (B, H, C)``."""
        if self._pipe is None:
            from panda_fm import PandaPipeline  # imported here: torch loads only when a checkpoint is used

            self._pipe = PandaPipeline.from_pretrained(self.path, device=self.device)
        return np.asarray(self._pipe.predict(np.asarray(context, dtype=np.float32), prediction_length))


def checkpoint_forecasters(paths: Sequence[str | Path], device: str = "cpu") -> list[PipelineForecaster]:
    """One forecaster per checkpoint directory, named by the directory, or by its last two path parts
    where two directories share a name (``run1/final``, ``run2/final``)."""
    resolved = [Path(p) for p in paths]
    short = [p.name for p in resolved]
    return [
        PipelineForecaster(
            p, name=n if short.count(n) == 1 else "/".join(p.resolve().parts[-2:]), device=device
        )
        for p, n in zip(resolved, short, strict=True)
    ]
